"""All configuration of streamrec, in one frozen object built from the environment.

Every field names its environment variable and default; nothing else in the
package reads the environment. Secrets (passwords) come only from the
environment and never appear in ``repr``.

>>> s = Settings.from_env({"STREAMREC_TOP_N": "20", "STREAMREC_TOPIC_PREFIX": "demo"})
>>> s.top_n, s.events_topic, s.dlq_topic, s.metrics_topic
(20, 'demo.events', 'demo.events.dlq', 'demo.metrics')
>>> s.rec_key("u1")
'streamrec:rec:u1'
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, get_args, get_type_hints

from streams.errors import StreamrecError

__all__ = ["Settings", "SettingsError", "ENV_PREFIX", "describe_settings", "load_model_class", "worker_model_methods"]

ENV_PREFIX = "STREAMREC_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SettingsError(StreamrecError, ValueError):
    """A setting in the environment has a value that cannot be used (also a :class:`ValueError`)."""


def _setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, repr=not secret, metadata={"doc": doc, "secret": secret})


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """streamrec settings; the environment variable of field ``x`` is ``STREAMREC_X``."""

    # --- Kafka -----------------------------------------------------------------------------
    app_id: str = _setting("streamrec", "Faust app id: the Kafka consumer group and changelog topic prefix.")
    broker_url: str = _setting(
        "kafka://127.0.0.1:9092", "Kafka bootstrap servers, comma-separated (kafka://host:port,host:port)."
    )
    topic_prefix: str = _setting("streamrec", "Prefix of every topic: <prefix>.events, .events.dlq, .metrics.")
    partitions: int = _setting(
        12, "Partitions of the events topic, the state changelogs and the item topics: the most worker processes "
        "that can share the work (12 divides evenly among 1, 2, 3, 4, 6 or 12 of them)."
    )
    replication_factor: int = _setting(1, "Replication factor of the topics streamrec creates.")
    security_protocol: SecurityProtocol = _setting("PLAINTEXT", "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: SaslMechanism = _setting("PLAIN", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str = _setting("", "SASL user name.")
    sasl_password: str = _setting("", "SASL password (secret: environment only).", secret=True)
    ssl_cafile: str = _setting("", "CA bundle to verify the brokers (SSL / SASL_SSL).")
    ssl_certfile: str = _setting("", "Client certificate for mutual TLS with the brokers.")
    ssl_keyfile: str = _setting("", "Private key of the client certificate.")
    session_timeout_s: float = _setting(10.0, "Kafka consumer session timeout: how fast a dead worker's partitions move.")
    rebalance_timeout_s: float = _setting(10.0, "Kafka rebalance timeout (Faust's 60 s default makes joins slow).")
    fetch_max_wait_ms: int = _setting(25, "Longest a fetch waits at the broker for new events; bounds added latency.")

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0", "Redis URL; rediss:// turns TLS on. Put no password in it: use STREAMREC_REDIS_PASSWORD."
    )
    redis_username: str = _setting("", "Redis ACL user name (AUTH username password).")
    redis_password: str = _setting("", "Redis password (secret: environment only).", secret=True)
    redis_ssl_ca_certs: str = _setting("", "CA bundle to verify a TLS Redis (rediss://).")
    redis_ssl_certfile: str = _setting("", "Client certificate for a TLS Redis.")
    redis_ssl_keyfile: str = _setting("", "Private key of the Redis client certificate.")
    redis_prefix: str = _setting("streamrec", "Prefix of every Redis key: <prefix>:rec:<user_id>, <prefix>:popular, ...")
    redis_cluster: bool = _setting(
        False, "Treat STREAMREC_REDIS_URL as one node of a Redis Cluster: lists are spread over the cluster's nodes "
        "by key slot."
    )

    # --- Recommendations -------------------------------------------------------------------
    top_n: int = _setting(50, "Length of each cached top-N list.")
    rec_ttl_s: int = _setting(7 * 24 * 3600, "Time to live of a cached list in Redis, seconds.")
    popular_half_life_s: float = _setting(3600.0, "Half-life of the 'popular recently' fallback list, seconds of event time.")
    max_history: int = _setting(5000, "Items remembered per user (most recent) to exclude from their list.")

    # --- Learning (online SGD, BPR matrix factorisation) ----------------------------------
    model: str = _setting(
        "models.bpr:BPRMF", "The worker's model class, as module:Class: built with the learning settings below, it "
        "must have the methods the worker calls (models.base.WorkerModel)."
    )
    n_factors: int = _setting(32, "Latent factors per user and per item.")
    learning_rate: float = _setting(0.075, "SGD learning rate (item step; users take half of it).")
    regularization: float = _setting(0.01, "L2 regularisation.")
    n_negatives: int = _setting(10, "Negative items sampled per positive event.")
    init_std: float = _setting(0.03, "Standard deviation of the initial factors of new users and items.")
    seed: int = _setting(0, "Seed of the model's random generator.")
    session_covisit_weight: float = _setting(
        0.5, "Pull of the items other users engaged next to a user's last events on their list (co-visitation); 0 turns it off."
    )
    session_tag_weight: float = _setting(
        1.0, "Pull of the best items of the community tags of a user's last events on their list; 0 turns it off."
    )
    session_boost: float = _setting(
        4.0, "How much more the session pulls for users with few events: 1 + this / n times after n events; 0: the same for all."
    )
    weight_view: float = _setting(1.0, "Learning weight of a view.")
    weight_like: float = _setting(3.0, "Learning weight of a like.")
    weight_share: float = _setting(5.0, "Learning weight of a share.")
    watch_time_weight: float = _setting(0.0, "Extra weight for watch time: w *= 1 + this * min(watch_ms / ref, 2); 0 turns it off.")
    watch_time_ref_ms: float = _setting(15000.0, "Watch time that counts as one full unit for watch_time_weight, ms.")

    # --- Processing --------------------------------------------------------------------------
    batch_max_events: int = _setting(20000, "Most events processed as one batch (the worker takes what has arrived, up to this).")
    batch_within_s: float = _setting(0.01, "Once a message has arrived, how long to gather more before processing it, seconds.")
    batch_budget_ms: float = _setting(
        100.0, "Processing time a batch aims for: batches are sized by the measured cost per event (at most "
        "STREAMREC_BATCH_MAX_EVENTS), so a backlog never holds lists and the item exchange back for seconds."
    )
    checkpoint_interval_s: float = _setting(
        1.0, "How often changed user and item state goes to the changelogs; offsets are committed only after it, seconds."
    )
    max_message_bytes: int = _setting(65536, "Messages larger than this are dead-lettered before decoding.")
    max_clock_skew_s: float = _setting(
        300.0, "Events whose ts is further ahead of the worker's clock are dead-lettered (future_ts); late ones are kept."
    )
    max_batch_bytes: int = _setting(1048576, "Batch messages (many events, see the event contract) larger than this are dead-lettered.")
    metrics_window_s: float = _setting(10.0, "Tumbling window of the engagement aggregates, seconds of event time.")
    metrics_grace_s: float = _setting(2.0, "Wall-clock wait after a window's end before it is emitted, seconds.")
    worker_id: str = _setting("", "Name of this worker in health records and Redis; default <hostname>-<pid>.")
    item_exchange_interval_s: float = _setting(
        0.25, "How often a worker publishes what it learned about items to the others (bounds their staleness), seconds."
    )
    item_partitions: int = _setting(
        1, "Partitions of the item-updates and item-state topics. Every worker reads all of them; one is enough "
        "below ~20 MB/s of item updates (see the capacity model), more spread that load over brokers."
    )
    item_snapshot_interval_s: float = _setting(
        10.0, "How often each worker writes the changed items of its partitions to the item-state topic (bounds the "
        "item-updates log a restarting worker replays), seconds."
    )

    # --- Faust worker --------------------------------------------------------------------
    web_enabled: bool = _setting(False, "Start Faust's web server (off by default; its table views stay disabled).")
    web_host: str = _setting("127.0.0.1", "Address Faust's web server binds to when enabled.")
    web_port: int = _setting(6066, "Port of Faust's web server when enabled.")
    log_level: str = _setting("info", "Worker log level.")
    metrics_host: str = _setting(
        "127.0.0.1", "Address the worker's Prometheus endpoint (/metrics) binds to; 0.0.0.0 only inside a "
        "private network (the compose file's)."
    )
    metrics_port: int = _setting(
        9464, "Port of the worker's Prometheus endpoint; 0 turns it off. With --processes N, worker <id>-i binds "
        "this port + i - 1; a port already taken is logged once and the worker runs on without it."
    )

    # --- HTTP API (streamrec serve) -------------------------------------------------------
    serve_host: str = _setting(
        "127.0.0.1", "Address `streamrec serve` binds to (--host overrides); a non-loopback one needs API keys."
    )
    serve_port: int = _setting(8080, "Port of `streamrec serve` (--port overrides).")
    api_keys_read: str = _setting(
        "", "Bearer keys that may read lists over HTTP, comma-separated (secret: environment only). With no "
        "key at all, only localhost is served.", secret=True
    )
    api_keys_write: str = _setting(
        "", "Bearer keys that may post events over HTTP (and read), comma-separated (secret: environment only).",
        secret=True,
    )
    serve_max_body_bytes: int = _setting(1048576, "Largest request body `streamrec serve` reads; larger ones get 413.")
    serve_rate_limit: float = _setting(
        0.0, "Requests per second each client (API key, else remote address) may make to /v1/ routes of `streamrec "
        "serve`, in bursts of STREAMREC_SERVE_RATE_BURST; over it: 429 with Retry-After. 0 turns it off (the default).",
    )
    serve_rate_burst: int = _setting(100, "Requests a client of `streamrec serve` may make at once before its rate limit applies.")
    serve_tls_cert: str = _setting("", "PEM certificate (chain) file: `streamrec serve` answers HTTPS (--tls-cert overrides).")
    serve_tls_key: str = _setting("", "PEM private key file of STREAMREC_SERVE_TLS_CERT (--tls-key overrides).")
    serve_workers: int = _setting(1, "Processes of `streamrec serve` (--workers overrides); each has its own rate-limit buckets.")
    serve_access_log: bool = _setting(False, "Log one line per request of `streamrec serve` (uvicorn's access log).")

    # --- derived names -------------------------------------------------------------------
    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.events.dlq"

    @property
    def metrics_topic(self) -> str:
        return f"{self.topic_prefix}.metrics"

    @property
    def item_updates_topic(self) -> str:
        """Where workers exchange their item deltas (one model for the group ``app_id``)."""
        return f"{self.app_id}-item-updates"

    @property
    def item_state_topic(self) -> str:
        """Compacted snapshots of the item side of the model, as of offsets of the item-updates topic."""
        return f"{self.app_id}-item-state"

    @property
    def bootstrap_servers(self) -> list[str]:
        """``broker_url`` as plain ``host:port`` strings for aiokafka."""
        servers = []
        for part in self.broker_url.split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                servers.append(part.rstrip("/"))
        return servers

    @property
    def kind_weights(self) -> dict[str, float]:
        return {"view": self.weight_view, "like": self.weight_like, "share": self.weight_share}

    @property
    def effective_worker_id(self) -> str:
        return self.worker_id or _default_worker_id()

    def rec_key(self, user_id: str) -> str:
        """Redis key of a user's cached top-N list."""
        return f"{self.redis_prefix}:rec:{user_id}"

    @property
    def popular_key(self) -> str:
        """Redis key of the non-personalised fallback list."""
        return f"{self.redis_prefix}:popular"

    def tag_popular_key(self, tag: str) -> str:
        """Redis key of the list trending within one community tag (for new users who chose it)."""
        return f"{self.redis_prefix}:popular:tag:{tag}"

    def worker_key(self, worker_id: str) -> str:
        """Redis key of a worker's health heartbeat."""
        return f"{self.redis_prefix}:worker:{worker_id}"

    # --- construction -------------------------------------------------------------------
    @classmethod
    def env_name(cls, field_name: str) -> str:
        return ENV_PREFIX + field_name.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is not None:
                values[f.name] = _parse(f.name, hints[f.name], raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """These settings as ``STREAMREC_*`` environment variables (secrets included: for child processes)."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            env[self.env_name(f.name)] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def validate(self) -> None:
        """Raise :class:`SettingsError` for values that cannot work."""
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            allowed = get_args(hints[f.name]) if getattr(hints[f.name], "__origin__", None) is Literal else ()
            if allowed and getattr(self, f.name) not in allowed:
                raise SettingsError(f"{self.env_name(f.name)} must be one of {', '.join(allowed)}")
        positive = ("partitions", "item_partitions", "replication_factor", "top_n", "rec_ttl_s", "n_factors", "batch_max_events",
                    "max_message_bytes", "max_batch_bytes", "max_history", "serve_max_body_bytes",
                    "serve_rate_burst", "serve_workers")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{self.env_name(name)} must be > 0, got {getattr(self, name)}")
        if self.metrics_window_s <= 0:
            raise SettingsError("STREAMREC_METRICS_WINDOW_S must be > 0")
        if self.max_clock_skew_s < 0:
            raise SettingsError("STREAMREC_MAX_CLOCK_SKEW_S must be >= 0")
        if self.batch_within_s < 0 or self.checkpoint_interval_s < 0:
            raise SettingsError("STREAMREC_BATCH_WITHIN_S and STREAMREC_CHECKPOINT_INTERVAL_S must be >= 0")
        if self.batch_budget_ms <= 0:
            raise SettingsError("STREAMREC_BATCH_BUDGET_MS must be > 0")
        if self.item_exchange_interval_s <= 0 or self.item_snapshot_interval_s <= 0:
            raise SettingsError("STREAMREC_ITEM_EXCHANGE_INTERVAL_S and STREAMREC_ITEM_SNAPSHOT_INTERVAL_S must be > 0")
        if not 0 <= self.metrics_port < 65536:
            raise SettingsError(f"STREAMREC_METRICS_PORT must be in 0..65535 (0: off), got {self.metrics_port}")
        if not 0 < self.serve_port < 65536:
            raise SettingsError(f"STREAMREC_SERVE_PORT must be in 1..65535, got {self.serve_port}")
        if self.serve_rate_limit < 0:
            raise SettingsError(f"STREAMREC_SERVE_RATE_LIMIT must be >= 0 (0 = off), got {self.serve_rate_limit}")
        if bool(self.serve_tls_cert) != bool(self.serve_tls_key):
            raise SettingsError("STREAMREC_SERVE_TLS_CERT and STREAMREC_SERVE_TLS_KEY go together: set both or neither")
        if not self.bootstrap_servers:
            raise SettingsError("STREAMREC_BROKER_URL names no server")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("STREAMREC_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.redis_cluster and not self.redis_url.startswith(("redis://", "rediss://")):
            raise SettingsError("STREAMREC_REDIS_CLUSTER needs a redis:// or rediss:// STREAMREC_REDIS_URL (a node's address)")
        load_model_class(self.model)


def worker_model_methods() -> tuple[str, ...]:
    """The methods the worker calls on its model: those of :class:`models.base.WorkerModel`.

    >>> "top_n_matrix" in worker_model_methods()
    True
    """
    from models.base import WorkerModel

    return tuple(sorted(name for name, member in vars(WorkerModel).items()
                        if not name.startswith("_") and inspect.isfunction(member)))


def load_model_class(spec: str) -> type[Any]:
    """The class ``spec`` (``module:Class``, as ``STREAMREC_MODEL``) names.

    Raises :class:`SettingsError` if it cannot be imported or lacks a method the worker calls.

    >>> load_model_class("models.bpr:BPRMF").__name__
    'BPRMF'
    >>> load_model_class("models.popularity:Popularity")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streams.settings.SettingsError: STREAMREC_MODEL=models.popularity:Popularity lacks methods the worker calls: add_covisit_counts, ...
    """
    module_name, colon, class_name = spec.partition(":")
    if not (module_name and colon and class_name):
        raise SettingsError(f"STREAMREC_MODEL must be module:Class (an import path), got {spec!r}")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or an error while importing it
        raise SettingsError(f"STREAMREC_MODEL={spec}: cannot import {module_name} ({exc!r})") from None
    for name in class_name.split("."):
        found = getattr(found, name, None)
    if not isinstance(found, type):
        raise SettingsError(f"STREAMREC_MODEL={spec}: {module_name} has no class {class_name}")
    missing = [method for method in worker_model_methods() if not callable(getattr(found, method, None))]
    if missing:
        raise SettingsError(f"STREAMREC_MODEL={spec} lacks methods the worker calls: {', '.join(missing)}")
    return found


def _parse(name: str, hint: Any, raw: str) -> Any:
    env = Settings.env_name(name)
    try:
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs and ``--help``."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = "" if f.metadata["secret"] else str(f.default)
        rows.append((Settings.env_name(f.name), default, f.metadata["doc"]))
    return rows
