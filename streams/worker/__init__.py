"""The worker: the Faust app and its bulk consumer, its topics, tables and agents, and what runs
inside: the service, the learner, the fences, the metrics, the item exchange and the supervisor of
several worker processes."""
