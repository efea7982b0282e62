"""The worker: the Faust app and its bulk consumer, the topics, tables and agents declared on it,
the one module that wires them together (:mod:`.wiring`, the module-level app), and what runs
inside: the service, the learner, the fences, the metrics, the item exchange and the supervisor of
several worker processes."""
