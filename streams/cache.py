"""The Redis side: connections built from settings, and the writer of cached top-N lists.

Key format (``<p>`` is ``STREAMREC_REDIS_PREFIX``, default ``streamrec``):

* ``<p>:rec:<user_id>``: one user's list, a JSON object
  ``{"user_id", "items": [...], "scores": [...], "updated_ms", "model_version", "source": "personal"}``
  with a TTL of ``STREAMREC_REC_TTL_S``.
* ``<p>:popular``: the fallback list for unknown users, same shape, ``"source": "popular"``.
* ``<p>:popular:tag:<tag>``: trending within one community tag, ``"source": "popular_tag"``.
* ``<p>:worker:<worker_id>``: a worker's heartbeat (JSON: ready, started_ms, ready_ms, events).

All writes of one batch go out in one round trip: :meth:`RecsWriter.write_lists` packs
``SET <key> <value> EX <ttl>`` commands itself (RESP, in chunks of 1,000 lists sent
back to back) and reads the ``+OK`` replies in one read, a few microseconds per list
less than a redis-py pipeline. The only command it needs is ``SET`` (ACL: ``+set`` or
``+@write`` on ``~<p>:*``); the heartbeat also uses ``SET``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import orjson
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from streams.settings import Settings

__all__ = ["redis_options", "async_redis", "sync_redis", "RecsWriter", "encode_list", "encode_lists"]

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


def encode_lists(
    users: Sequence[str | None],
    items: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]] | np.ndarray,
    *,
    source: str,
    updated_ms: int,
    model_version: str,
) -> list[bytes]:
    """The JSON values of many lists at once, byte for byte what :func:`encode_list` gives.

    >>> encode_lists(["u1", "u2"], [["i1", "i2"], ["i3"]], [[0.912345678, 0.5], [1.0]], source="personal",
    ...              updated_ms=7, model_version="v1")[1]
    b'{"user_id":"u2","items":["i3"],"scores":[1.0],"updated_ms":7,"model_version":"v1","source":"personal"}'
    """
    user_json, items_json, scores_json, tail = _json_pieces(users, items, scores, source, updated_ms, model_version)
    return [b'{"user_id":%b,"items":%b,"scores":[%b%b' % (u, i, sc, tail)
            for u, i, sc in zip(user_json, items_json, scores_json)]


def _json_pieces(
    users: Sequence[str | None],
    items: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]] | np.ndarray,
    source: str,
    updated_ms: int,
    model_version: str,
) -> tuple[list[bytes], list[bytes], list[bytes], bytes]:
    """JSON of each user id and item list, the rounded scores of each list without the opening ``[``,
    ending in ``],``, and the rest of every value (``"updated_ms":...}``)."""
    if not len(users) == len(items) == len(scores):
        raise ValueError("users, items and scores must have one length")
    dumps = orjson.dumps
    tail = dumps({"updated_ms": updated_ms, "model_version": model_version, "source": source})[1:]
    user_json = list(map(dumps, users))
    items_json = [dumps(row if isinstance(row, list) else list(row)) for row in items]
    return user_json, items_json, _scores_json(scores), tail


def _scores_json(scores: Sequence[Sequence[float]] | np.ndarray) -> list[bytes]:
    """``[...],`` of each row of scores rounded to 5 decimals as ``round(float(s), 5)`` does, without the ``[``."""
    n = len(scores)
    if n == 0:
        return []
    try:
        matrix = np.asarray(scores, dtype=np.float64)
    except ValueError:  # rows of different lengths
        matrix = None
    if matrix is not None and matrix.ndim == 2:
        rows = orjson.dumps(_round5(matrix), option=orjson.OPT_SERIALIZE_NUMPY).split(b"[")[2:]  # "1.5,2.0],"
        rows[-1] = rows[-1][:-1] + b","  # the last ends in "]]"
        return rows
    lengths = [len(row) for row in scores]
    flat = _round5(np.array([float(s) for row in scores for s in row], dtype=np.float64))
    ends = np.cumsum(lengths).tolist()
    return [orjson.dumps(flat[end - length:end], option=orjson.OPT_SERIALIZE_NUMPY)[1:] + b","
            for end, length in zip(ends, lengths)]


_NEAR_TIE = 1e-14  # relative to |x * 1e5|: ~45 ulps, far more than the error of one multiplication


def _round5(values: np.ndarray) -> np.ndarray:
    """``round(v, 5)`` elementwise: ``rint(v * 1e5) / 1e5`` is exact unless ``v * 1e5`` is within a few ulps of
    a half (or huge, or not finite); those few values are rounded by Python."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values * 1e5
        rounded = np.rint(scaled) / 1e5
        magnitude = np.abs(scaled)
        risky = ~(magnitude < 2.0**52) | (np.abs(scaled - np.floor(scaled) - 0.5) <= magnitude * _NEAR_TIE)
    if risky.any():
        where = np.nonzero(risky)
        rounded[where] = [round(v, 5) for v in values[where].tolist()]
    return rounded


def _set_command(key: str, value: bytes, command_tail: bytes) -> bytes:
    encoded = key.encode()
    return b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b%b" % (len(encoded), encoded, len(value), value, command_tail)


_OK = b"+OK\r\n"
_CHUNK = 1000  # SET commands per socket write (~1 MB of 1 KB lists)


class RecsWriter:
    """Writes users' lists and the popular lists to Redis, all in one round trip per call."""

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
        users = list(lists)
        recs = [lists[u] for u in users]
        await self.write_lists(
            users,
            [[item for item, _ in r] for r in recs],
            [[score for _, score in r] for r in recs],
            popular=popular,
            model_version=model_version,
            updated_ms=updated_ms,
            popular_by_tag=popular_by_tag,
        )

    async def write_lists(
        self,
        users: Sequence[str],
        items: Sequence[Sequence[str]],
        scores: Sequence[Sequence[float]] | np.ndarray,
        *,
        popular: Sequence[tuple[str, float]] | None,
        model_version: str,
        updated_ms: int,
        popular_by_tag: Mapping[str, Sequence[tuple[str, float]]] | None = None,
    ) -> None:
        """Write user ``users[j]``'s list ``items[j]`` / ``scores[j]`` (best first; ``scores`` may be one
        ``(n_users, n)`` array), the popular list and the per-tag lists, every key with the TTL.

        Values are exactly :func:`encode_list`'s. One round trip: ``SET key value EX ttl`` per list.
        Raises ``redis.RedisError`` (or ``OSError``) if Redis is unreachable or refuses a write.
        """
        settings = self.settings
        if not len(users) == len(items) == len(scores):
            raise ValueError("users, items and scores must have one length")
        ttl = b"%d" % settings.rec_ttl_s
        command_tail = b"\r\n$2\r\nEX\r\n$%d\r\n%b\r\n" % (len(ttl), ttl)
        base = settings.rec_key("").encode()
        shared: list[bytes] = []
        if popular:
            shared.append(_set_command(settings.popular_key, encode_list(
                popular, source="popular", updated_ms=updated_ms, model_version=model_version), command_tail))
        for tag, recs in (popular_by_tag or {}).items():
            if recs:
                shared.append(_set_command(settings.tag_popular_key(tag), encode_list(
                    recs, source="popular_tag", updated_ms=updated_ms, model_version=model_version), command_tail))

        def chunks() -> Iterator[bytes]:  # encoded lazily: Redis works on one chunk while the next is encoded
            for start in range(0, len(users), _CHUNK):
                stop = start + _CHUNK
                user_json, items_json, scores_json, tail = _json_pieces(
                    users[start:stop], items[start:stop], scores[start:stop], "personal", updated_ms, model_version)
                fixed = len(b'{"user_id":,"items":,"scores":[') + len(tail)
                yield b"".join([
                    b'*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n{"user_id":%b,"items":%b,"scores":[%b%b%b' % (
                        len(key), key, fixed + len(u) + len(i) + len(sc), u, i, sc, tail, command_tail)
                    for key, u, i, sc in zip([base + user.encode() for user in users[start:stop]],
                                             user_json, items_json, scores_json)
                ])
            if shared:
                yield b"".join(shared)

        n_commands = len(users) + len(shared)
        if n_commands:
            await self._send_sets(chunks(), n_commands)

    async def _send_sets(self, chunks: Iterable[bytes], n_commands: int) -> None:
        """Send packed SET commands on one pooled connection and check that every reply is ``+OK``."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            for chunk in chunks:
                await conn.send_packed_command(chunk, check_health=False)
            errors = await _read_set_replies(conn, n_commands)
        except BaseException:
            await conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            await pool.release(conn)
        if errors:
            raise errors[0]

    async def heartbeat(self, worker_id: str, status: Mapping[str, Any], ttl_s: int = 30) -> None:
        await self.client.set(self.settings.worker_key(worker_id), orjson.dumps(dict(status)), ex=ttl_s)


async def _read_set_replies(conn: Any, n: int) -> list[Exception]:
    """Read ``n`` replies to SET; the error replies among them (as redis-py's exceptions).

    With redis-py's pure-Python parser (which never reads ahead of the reply it parses)
    all ``n`` replies are read from the stream in one read and compared with ``+OK`` n
    times; otherwise, or when some reply is not ``+OK``, reply by reply.
    """
    reader = getattr(conn, "_reader", None)
    parser = getattr(conn, "_parser", None)
    if (
        isinstance(reader, asyncio.StreamReader)
        and type(parser).__name__ in ("_AsyncRESP2Parser", "_AsyncRESP3Parser")
        and not getattr(parser, "_buffer", b"")
        and not getattr(parser, "_chunks", None)
    ):
        try:
            async with asyncio.timeout(conn.socket_timeout):
                data = await reader.readexactly(len(_OK) * n)
                if data == _OK * n:
                    return []
                lines = data.split(b"\r\n")
                partial = lines.pop()  # the start of a line not yet complete ("" if none)
                while len(lines) < n:
                    line = await reader.readuntil(b"\r\n")
                    lines.append(partial + line[:-2])
                    partial = b""
        except asyncio.TimeoutError:
            raise redis.TimeoutError(f"Timeout reading from {conn.host}:{conn.port}") from None
        except asyncio.IncompleteReadError:
            raise redis.ConnectionError("Connection closed by server.") from None
        return [parser.parse_error(line[1:].decode("utf-8", errors="replace")) for line in lines if line != b"+OK"]
    replies = [await conn.read_response() for _ in range(n)]
    return [reply for reply in replies if isinstance(reply, Exception)]
