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

Redis Cluster (``STREAMREC_REDIS_CLUSTER``): :func:`async_redis` / :func:`sync_redis` return
redis-py's cluster clients, and the writer keeps its packed commands but groups them by the
node that owns each key's slot (the client's slot map), one connection and one read of the
replies per node, the nodes in parallel. A key whose slot moved (a ``MOVED`` or ``ASK``
reply: resharding, failover) is not lost: after a ``MOVED`` the slot map is read again, and
every redirected key is written once more through the cluster client, which follows
redirects. Anything else (a node down, ``CLUSTERDOWN``) raises ``redis.RedisError``, and the
worker writes those lists later as it does when a single Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import orjson
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AskError, MovedError, RedisClusterException
from redis.retry import Retry

from streams.settings import Settings

__all__ = ["redis_options", "async_redis", "sync_redis", "RecsWriter", "encode_list", "encode_lists", "REDIS_ERRORS"]

#: What a Redis call can raise when Redis is down or refuses: redis-py's cluster clients raise
#: ``RedisClusterException`` (not a ``RedisError``) when they cannot reach any node.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError, RedisClusterException)

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
def async_redis(settings: Settings) -> aioredis.Redis | aiocluster.RedisCluster:
    """An asyncio client; with ``redis_cluster``, a cluster client (it connects on first use)."""
    retry = AsyncRetry(ExponentialBackoff(cap=0.1, base=0.01), retries=1)
    if settings.redis_cluster:
        return aiocluster.RedisCluster.from_url(settings.redis_url, retry=retry, **redis_options(settings))
    return aioredis.Redis.from_url(settings.redis_url, retry=retry, **redis_options(settings))


def sync_redis(settings: Settings) -> redis.Redis | redis.cluster.RedisCluster:
    """A blocking client; with ``redis_cluster``, a cluster client, which reads the slot map as it is built
    (so this raises ``RedisClusterException`` if no node answers)."""
    retry = Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=1)
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, retry=retry, **redis_options(settings))
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
    """Writes users' lists and the popular lists to Redis, all in one round trip per call (per node of a cluster).

    ``client`` is :func:`async_redis`'s: a single Redis, or a cluster client (anything with a
    ``nodes_manager``), whose commands are then sent to the node owning each key's slot.
    """

    def __init__(self, client: aioredis.Redis | aiocluster.RedisCluster, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.cluster = hasattr(client, "nodes_manager")
        self._slots_stale = False  # a cluster write failed: read the slot map again before the next one

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
        shared_keys: list[str] = []
        if popular:
            shared_keys.append(settings.popular_key)
            shared.append(_set_command(settings.popular_key, encode_list(
                popular, source="popular", updated_ms=updated_ms, model_version=model_version), command_tail))
        for tag, recs in (popular_by_tag or {}).items():
            if recs:
                shared_keys.append(settings.tag_popular_key(tag))
                shared.append(_set_command(shared_keys[-1], encode_list(
                    recs, source="popular_tag", updated_ms=updated_ms, model_version=model_version), command_tail))

        def user_commands(start: int) -> list[bytes]:  # the SETs of users[start:start + _CHUNK]
            stop = start + _CHUNK
            user_json, items_json, scores_json, tail = _json_pieces(
                users[start:stop], items[start:stop], scores[start:stop], "personal", updated_ms, model_version)
            fixed = len(b'{"user_id":,"items":,"scores":[') + len(tail)
            return [
                b'*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n{"user_id":%b,"items":%b,"scores":[%b%b%b' % (
                    len(key), key, fixed + len(u) + len(i) + len(sc), u, i, sc, tail, command_tail)
                for key, u, i, sc in zip([base + user.encode() for user in users[start:stop]],
                                         user_json, items_json, scores_json)
            ]

        def chunks() -> Iterator[bytes]:  # encoded lazily: Redis works on one chunk while the next is encoded
            for start in range(0, len(users), _CHUNK):
                yield b"".join(user_commands(start))
            if shared:
                yield b"".join(shared)

        n_commands = len(users) + len(shared)
        if not n_commands:
            return
        if not self.cluster:
            await self._send_sets(chunks(), n_commands)
            return
        commands = [command for start in range(0, len(users), _CHUNK) for command in user_commands(start)]
        keys = [base + user.encode() for user in users]
        keys += [key.encode() for key in shared_keys]
        await self._write_cluster(keys, commands + shared)

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
            raise errors[0][1]

    # --- Redis Cluster -------------------------------------------------------------------
    async def _write_cluster(self, keys: Sequence[bytes], commands: Sequence[bytes]) -> None:
        """Send ``commands[j]`` (a packed SET of ``keys[j]``) to the node owning the key's slot, all nodes at
        once, and check every reply; keys redirected by ``MOVED`` / ``ASK`` are written again through the cluster
        client. Raises ``redis.RedisError`` (``ConnectionError`` if no node answers) if a list may be unwritten."""
        client = self.client
        try:
            if self._slots_stale:
                await client.nodes_manager.initialize()
                self._slots_stale = False
            await client.initialize()  # reads the slot map on first use; a no-op after
            groups = self._group_by_node(keys)
            outcomes = await asyncio.gather(
                *(_send_to_node(node, [commands[j] for j in indices]) for node, indices in groups),
                return_exceptions=True,
            )  # fmt: skip
            failures: list[BaseException] = []
            redirected: list[int] = []
            moved = False
            for (_, indices), outcome in zip(groups, outcomes):
                if isinstance(outcome, BaseException):
                    failures.append(outcome)
                    continue
                for k, error in outcome:
                    if isinstance(error, AskError):  # MovedError is an AskError
                        redirected.append(indices[k])
                        moved |= isinstance(error, MovedError)
                    else:
                        failures.append(error)
            if failures:
                raise next((f for f in failures if not isinstance(f, Exception)), failures[0])
            if redirected:
                await self._write_redirected(redirected, commands, refresh=moved)
        except RedisClusterException as exc:  # no node reachable, a slot not covered: Redis is unavailable
            self._slots_stale = True
            raise redis.ConnectionError(f"Redis Cluster unavailable: {exc}") from exc
        except BaseException:
            self._slots_stale = True
            raise

    def _group_by_node(self, keys: Sequence[bytes]) -> list[tuple[Any, list[int]]]:
        """``(node, indices of its keys)`` for every primary that owns the slot of some key, per the slot map."""
        client = self.client
        node_of_slot = client.nodes_manager.get_node_from_slot
        slot_nodes: dict[int, Any] = {}
        groups: dict[str, tuple[Any, list[int]]] = {}
        for j, key in enumerate(keys):
            slot = client.keyslot(key)
            node = slot_nodes.get(slot)
            if node is None:
                node = slot_nodes[slot] = node_of_slot(slot)
            group = groups.get(node.name)
            if group is None:
                group = groups[node.name] = (node, [])
            group[1].append(j)
        return list(groups.values())

    async def _write_redirected(self, indices: Sequence[int], commands: Sequence[bytes], *, refresh: bool) -> None:
        """Write the commands a node redirected: after a ``MOVED``, read the slot map again (so the next writes go
        to the new owners), then send them with the cluster client's pipeline, which follows ``MOVED`` / ``ASK``."""
        logger.info("Redis Cluster redirected %d of %d writes (slot migration or failover); writing them again",
                    len(indices), len(commands))
        if refresh:
            await self.client.nodes_manager.initialize()
        pipe = self.client.pipeline()
        for j in indices:
            name, *args = _command_args(commands[j])
            pipe.execute_command(name.decode(), *args)
        await pipe.execute(raise_on_error=True)

    async def heartbeat(self, worker_id: str, status: Mapping[str, Any], ttl_s: int = 30) -> None:
        try:
            await self.client.set(self.settings.worker_key(worker_id), orjson.dumps(dict(status)), ex=ttl_s)
        except RedisClusterException as exc:  # a cluster client that reaches no node
            raise redis.ConnectionError(f"Redis Cluster unavailable: {exc}") from exc


async def _send_to_node(node: Any, commands: Sequence[bytes]) -> list[tuple[int, Exception]]:
    """Send packed commands on one connection of a cluster node's pool (in chunks of ``_CHUNK``); the error
    replies among them, by position (see :func:`_read_set_replies`)."""
    conn = node.acquire_connection()
    try:
        reconnect = getattr(node, "disconnect_if_needed", None)  # redis-py >= 6: recycles it after a topology change
        if reconnect is not None:
            await reconnect(conn)
        for start in range(0, len(commands), _CHUNK):
            await conn.send_packed_command(b"".join(commands[start:start + _CHUNK]), check_health=False)
        return await _read_set_replies(conn, len(commands))
    except BaseException:
        await conn.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        node.release(conn)


def _command_args(command: bytes) -> list[bytes]:
    """The arguments of one packed command (RESP array of bulk strings), to send it again through redis-py.

    >>> _command_args(_set_command("k", b"v\\r\\n", b"\\r\\n$2\\r\\nEX\\r\\n$2\\r\\n60\\r\\n"))
    [b'SET', b'k', b'v\\r\\n', b'EX', b'60']
    """
    end = command.index(b"\r\n")
    count, pos, args = int(command[1:end]), end + 2, []
    for _ in range(count):
        end = command.index(b"\r\n", pos)
        start = end + 2
        pos = start + int(command[pos + 1:end])
        args.append(command[start:pos])
        pos += 2
    return args


async def _read_set_replies(conn: Any, n: int) -> list[tuple[int, Exception]]:
    """Read ``n`` replies to SET; the error replies among them (as redis-py's exceptions), with their positions.

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
                if data.endswith(b"\r"):  # the read ended between a reply's \r and \n: complete that line
                    data += await reader.readexactly(1)
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
        return [(j, parser.parse_error(line[1:].decode("utf-8", errors="replace")))
                for j, line in enumerate(lines) if line != b"+OK"]
    errors: list[tuple[int, Exception]] = []
    for j in range(n):  # redis-py raises an error reply (hiredis' parser), or may return it
        try:
            reply = await conn.read_response()
        except redis.ResponseError as exc:
            reply = exc
        if isinstance(reply, Exception):
            errors.append((j, reply))
    return errors
