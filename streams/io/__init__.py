"""Connections to the services, built from settings: Kafka (SASL/SSL options, topic creation, the
record-batch sender) and Redis (clients, the list encoders and the writer of cached lists)."""
