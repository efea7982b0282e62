"""Can the command line reach Kafka and Redis? One-line answers instead of tracebacks.

Commands check the services they need before they start (:func:`check_kafka`, :func:`check_redis`),
within a few seconds, and :func:`explain` turns a connection error raised later (by aiokafka or
redis-py) into a :class:`~streams.errors.ServiceUnavailable` naming the address and the setting.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from streams.errors import ServiceUnavailable
from streams.settings import Settings

__all__ = ["check_kafka", "check_redis", "explain", "quick_redis", "short_reason", "redis_setting_for", "kafka_address", "redis_address", "CONNECT_TIMEOUT_S"]

#: How long a check waits for one server to accept a connection.
CONNECT_TIMEOUT_S = 3.0

BROKER_SETTING = "STREAMREC_BROKER_URL"
REDIS_SETTING = "STREAMREC_REDIS_URL"


def redis_setting_for(reason: str, setting: str = REDIS_SETTING) -> str:
    """The setting to change: the password's when Redis refused the credentials, else ``setting``."""
    if reason.startswith("authentication "):  # a short_reason of a refused AUTH
        return "STREAMREC_REDIS_PASSWORD"
    return setting


def kafka_address(settings: Settings) -> str:
    return ",".join(settings.bootstrap_servers)


def redis_address(url: str) -> str:
    """``host:port`` (or the socket path) of a Redis URL, without its credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        return parts.hostname or url
    return f"{parts.hostname or '127.0.0.1'}:{port}"


def short_reason(exc: BaseException | str) -> str:
    """A short reason: "Connection refused", "no answer in 3 s", not a repr or a traceback."""
    if isinstance(exc, str):
        return _short_text(exc)
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer in {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _short_text(str(exc)) or type(exc).__name__


def _short_text(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    if text.startswith(("Timeout reading", "Timeout connecting", "Timeout writing")):  # redis-py
        return f"no answer in {CONNECT_TIMEOUT_S:g} s"
    lowered = text.lower()
    if "username-password" in lowered or "wrongpass" in lowered:
        return "authentication failed: wrong user name or password"
    if "authenticat" in lowered or "noauth" in lowered:  # "Authentication required.", "HELLO must be called ..."
        return "authentication required: a password is needed"
    # redis-py: "Error 111 connecting to 127.0.0.1:1. Connection refused."
    match = re.match(r"Error -?\d+ connecting to \S+?\. (.*?)\.?$", text)
    if match:
        return match.group(1)
    # aiokafka: "KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1, <AddressFamily...>)]"
    text = re.sub(r"^\w+Error: ", "", text)
    if text.startswith("Unable to bootstrap"):
        return "no broker answered"
    return text[:200]


def check_kafka(settings: Settings, setting: str = BROKER_SETTING) -> None:
    """Raise :class:`ServiceUnavailable` unless some bootstrap server accepts a TCP connection and
    answers a Kafka metadata request (with the TLS / SASL settings), each within :data:`CONNECT_TIMEOUT_S`
    (aiokafka alone would wait ``request_timeout_ms``, 40 s, and log each failure)."""
    last: BaseException | None = None
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or server, int(port or 9092)), CONNECT_TIMEOUT_S):
                break
        except (OSError, ValueError) as exc:
            last = exc
    else:
        raise ServiceUnavailable("Kafka", kafka_address(settings), setting,
                                 short_reason(last) if last else "no server given")
    reason = asyncio.run(_kafka_bootstrap(settings))
    if reason is not None:
        raise ServiceUnavailable("Kafka", kafka_address(settings), setting, reason)


class _Failures(logging.Handler):
    """aiokafka logs why each bootstrap server failed, then raises "Unable to bootstrap": keep the why."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and record.args:
            self.errors.append(record.args[-1])


async def _kafka_bootstrap(settings: Settings) -> str | None:
    """None if a bootstrap server answers a metadata request, else a short reason."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from streams.io.kafka import aiokafka_options

    aiokafka_log = logging.getLogger("aiokafka")
    failures = _Failures()
    propagate, aiokafka_log.propagate = aiokafka_log.propagate, False  # the reason is said once, by the caller
    aiokafka_log.addHandler(failures)
    client = AIOKafkaClient(**aiokafka_options(settings), request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000))
    try:
        await client.bootstrap()
        return None
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        why = failures.errors[-1] if failures.errors else exc
        return short_reason(why if isinstance(why, BaseException) else str(why))
    finally:
        await client.close()
        aiokafka_log.removeHandler(failures)
        aiokafka_log.propagate = propagate


def quick_redis(settings: Settings) -> Any:
    """A blocking Redis client that gives up after :data:`CONNECT_TIMEOUT_S`, without a retry (the
    services' clients wait 5 s and retry once: a command would wait 10 s for a Redis that does not answer)."""
    import redis
    import redis.cluster
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from streams.io.redis import redis_options

    options = {**redis_options(settings), "socket_timeout": CONNECT_TIMEOUT_S,
               "socket_connect_timeout": CONNECT_TIMEOUT_S, "retry": Retry(NoBackoff(), 0)}
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def check_redis(settings: Settings, setting: str = REDIS_SETTING) -> None:
    """Raise :class:`ServiceUnavailable` unless Redis answers a PING within :data:`CONNECT_TIMEOUT_S`."""
    from streams.io.redis import REDIS_ERRORS

    try:
        client = quick_redis(settings)
        try:
            client.ping()
        finally:
            client.close()
    except REDIS_ERRORS as exc:
        reason = short_reason(exc)
        raise ServiceUnavailable("Redis", redis_address(settings.redis_url), redis_setting_for(reason, setting),
                                 reason) from None


def explain(exc: BaseException, settings: Settings, *, kafka_setting: str = BROKER_SETTING,
            redis_setting: str = REDIS_SETTING) -> ServiceUnavailable | None:
    """A :class:`ServiceUnavailable` for an aiokafka or redis-py error, else None (not a connection error)."""
    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisClusterException, RedisError, ResponseError

    if isinstance(exc, ServiceUnavailable):
        return exc
    if isinstance(exc, KafkaError):
        return ServiceUnavailable("Kafka", kafka_address(settings), kafka_setting, short_reason(exc))
    if isinstance(exc, RedisError | RedisClusterException) and not isinstance(exc, ResponseError):
        reason = short_reason(exc)
        return ServiceUnavailable("Redis", redis_address(settings.redis_url), redis_setting_for(reason, redis_setting),
                                  reason)
    return None
