"""The Redis side: connections built from settings, and the writer of cached top-N lists.

Key format (``<p>`` is ``STREAMREC_REDIS_PREFIX``, default ``streamrec``):

* ``<p>:rec:<user_id>``: one user's list, a JSON object
  ``{"user_id", "items": [...], "scores": [...], "updated_ms", "model_version", "source": "personal"}``
  with a TTL of ``STREAMREC_REC_TTL_S``.
* ``<p>:popular``: the fallback list for unknown users, same shape, ``"source": "popular"``.
* ``<p>:popular:tag:<tag>``: trending within one community tag, ``"source": "popular_tag"``.
* ``<p>:worker:<worker_id>``: a worker's heartbeat (JSON: ready, started_ms, ready_ms, events).

All writes of one batch go out in one pipeline (one round trip).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import orjson
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from streams.settings import Settings

__all__ = ["redis_options", "async_redis", "sync_redis", "RecsWriter", "encode_list"]

logger = logging.getLogger(__name__)


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url``: credentials and TLS from settings, never from code."""
    options: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_url.startswith("rediss://"):
        if settings.redis_ssl_ca_certs:
            options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
        if settings.redis_ssl_certfile:
            options["ssl_certfile"] = settings.redis_ssl_certfile
        if settings.redis_ssl_keyfile:
            options["ssl_keyfile"] = settings.redis_ssl_keyfile
    return options


# redis-py retries a refused connection for seconds by default; the worker has its own
# backoff and readers answer "unavailable" at once, so one quick retry is enough.
def async_redis(settings: Settings) -> aioredis.Redis:
    retry = AsyncRetry(ExponentialBackoff(cap=0.1, base=0.01), retries=1)
    return aioredis.Redis.from_url(settings.redis_url, retry=retry, **redis_options(settings))


def sync_redis(settings: Settings) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=1)
    return redis.Redis.from_url(settings.redis_url, retry=retry, **redis_options(settings))


def encode_list(
    recs: Sequence[tuple[str, float]], *, source: str, updated_ms: int, model_version: str, user_id: str | None = None
) -> bytes:
    """The JSON value of one cached list.

    >>> encode_list([("i1", 0.91), ("i2", 0.5)], source="personal", updated_ms=7, model_version="v1", user_id="u1")
    b'{"user_id":"u1","items":["i1","i2"],"scores":[0.91,0.5],"updated_ms":7,"model_version":"v1","source":"personal"}'
    """
    return orjson.dumps(
        {
            "user_id": user_id,
            "items": [item for item, _ in recs],
            "scores": [round(float(score), 5) for _, score in recs],
            "updated_ms": updated_ms,
            "model_version": model_version,
            "source": source,
        }
    )


class RecsWriter:
    """Writes users' lists and the popular list to Redis, one pipeline per call."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    async def write(
        self,
        lists: Mapping[str, Sequence[tuple[str, float]]],
        *,
        popular: Sequence[tuple[str, float]] | None,
        model_version: str,
        updated_ms: int,
        popular_by_tag: Mapping[str, Sequence[tuple[str, float]]] | None = None,
    ) -> None:
        """Write every list in one round trip; raises ``redis.RedisError`` if Redis is unreachable."""
        settings = self.settings
        ttl = settings.rec_ttl_s
        pipe = self.client.pipeline(transaction=False)
        for user_id, recs in lists.items():
            value = encode_list(recs, source="personal", updated_ms=updated_ms, model_version=model_version, user_id=user_id)
            pipe.set(settings.rec_key(user_id), value, ex=ttl)
        if popular:
            value = encode_list(popular, source="popular", updated_ms=updated_ms, model_version=model_version)
            pipe.set(settings.popular_key, value, ex=ttl)
        for tag, recs in (popular_by_tag or {}).items():
            if recs:
                value = encode_list(recs, source="popular_tag", updated_ms=updated_ms, model_version=model_version)
                pipe.set(settings.tag_popular_key(tag), value, ex=ttl)
        await pipe.execute()

    async def heartbeat(self, worker_id: str, status: Mapping[str, Any], ttl_s: int = 30) -> None:
        await self.client.set(self.settings.worker_key(worker_id), orjson.dumps(dict(status)), ex=ttl_s)
