"""The topics: events in, dead letters and metrics out. Keys and values are raw bytes."""

from __future__ import annotations

from streams.worker.app import app, settings

__all__ = ["events_topic", "dlq_topic", "metrics_topic"]

events_topic = app.topic(
    settings.events_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.partitions,
)
dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
metrics_topic = app.topic(settings.metrics_topic, key_serializer="raw", value_serializer="raw", partitions=1)
