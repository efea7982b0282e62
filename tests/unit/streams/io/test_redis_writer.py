from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoPermissionError

from streams.io.redis import RecsWriter, _command_args, encode_list, encode_lists
from streams.settings import Settings


def reference(users, items, scores):
    return [encode_list(list(zip(i, s)), source="personal", updated_ms=17, model_version="v\"2", user_id=u)
            for u, i, s in zip(users, items, scores)]


def test_batch_values_are_byte_identical_to_encode_list():
    rng = np.random.default_rng(3)
    n, m = 300, 50
    raw = np.concatenate([rng.standard_normal(n * m // 2) * 10.0 ** rng.integers(-8, 8, n * m // 2),
                          rng.integers(-10**6, 10**6, n * m // 2) / 2e5 + 5e-6,  # many exact and near ties
                          ]).reshape(n, m)
    raw[0, :8] = [math.nan, math.inf, -math.inf, -0.0, 1e300, -1e-300, 2.675e-5, 0.000125]
    users = [f"u{j}\u00e9\"" for j in range(n)]
    items = [[f"i{k}" for k in rng.integers(0, 10**6, m)] for _ in range(n)]
    want = reference(users, items, raw.tolist())
    assert encode_lists(users, items, raw, source="personal", updated_ms=17, model_version="v\"2") == want
    with np.errstate(over="ignore"):
        as_float32 = raw.astype(np.float32)  # scores as the models give them
    assert encode_lists(users, items, list(as_float32), source="personal", updated_ms=17, model_version="v\"2") == \
        reference(users, items, as_float32.tolist())
    assert encode_lists(users, [tuple(i) for i in items], raw.tolist(), source="personal", updated_ms=17,
                        model_version="v\"2") == want


def test_ragged_empty_and_mismatched_inputs():
    users, items, scores = ["a", "b", "c"], [["x", "y"], [], ["z"]], [[0.123456, 2], [], [1 / 3]]
    assert encode_lists(users, items, scores, source="personal", updated_ms=17, model_version="v\"2") == \
        reference(users, items, scores)
    assert encode_lists([], [], [], source="personal", updated_ms=1, model_version="v") == []
    empty_rows = encode_lists(["a", "b"], [[], []], np.zeros((2, 0)), source="personal", updated_ms=17, model_version="v\"2")
    assert empty_rows == reference(["a", "b"], [[], []], [[], []])
    with pytest.raises(ValueError):
        encode_lists(["a"], [], [], source="personal", updated_ms=1, model_version="v")


# --- the writer on a Redis Cluster, with a fake cluster client -------------------------------------------------


def _split_commands(data: bytes) -> list[tuple[bytes, bytes]]:
    """(key, the whole packed command) of every ``*n`` RESP command in ``data``."""
    commands, pos = [], 0
    while pos < len(data):
        start = pos
        end = data.index(b"\r\n", pos)
        args = []
        pos = end + 2
        for _ in range(int(data[start + 1:end])):
            end = data.index(b"\r\n", pos)
            length = int(data[pos + 1:end])
            args.append(data[end + 2:end + 2 + length])
            pos = end + 4 + length
        commands.append((args[1], data[start:pos]))
    return commands


class FakeConnection:
    def __init__(self, node: "FakeNode") -> None:
        self.node = node
        self.replies: list[object] = []

    async def send_packed_command(self, data: bytes, check_health: bool = True) -> None:
        if self.node.unreachable:
            raise redis.ConnectionError(f"Error 111 connecting to {self.node.name}")
        self.node.sends.append(data)
        for key, _ in _split_commands(data):
            self.replies.append(self.node.replies.get(key, b"OK"))

    async def read_response(self) -> object:
        return self.replies.pop(0)

    async def disconnect(self) -> None:
        self.node.disconnects += 1


class FakeNode:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sends: list[bytes] = []
        self.replies: dict[bytes, object] = {}  # key -> reply other than b"OK"
        self.unreachable = False
        self.acquired = self.released = self.disconnects = 0

    def acquire_connection(self) -> FakeConnection:
        self.acquired += 1
        return FakeConnection(self)

    def release(self, conn: FakeConnection) -> None:
        self.released += 1

    def received(self) -> list[tuple[bytes, bytes]]:
        return [command for data in self.sends for command in _split_commands(data)]


class FakeNodesManager:
    def __init__(self, nodes: list[FakeNode]) -> None:
        self.nodes = nodes
        self.refreshes = 0

    def get_node_from_slot(self, slot: int) -> FakeNode:
        return self.nodes[slot * len(self.nodes) // 16384]

    async def initialize(self) -> None:
        self.refreshes += 1


class FakePipeline:
    def __init__(self, log: list[tuple[object, ...]]) -> None:
        self.log = log
        self.queued: list[tuple[object, ...]] = []

    def execute_command(self, *args: object) -> "FakePipeline":
        self.queued.append(args)
        return self

    async def execute(self, raise_on_error: bool = True) -> list[bool]:
        assert raise_on_error
        self.log.extend(self.queued)
        return [True] * len(self.queued)


class FakeCluster:
    """What RecsWriter uses of redis-py's asyncio RedisCluster: keyslot, the slot map, nodes' pools, a pipeline."""

    def __init__(self, n_nodes: int = 3) -> None:
        self.nodes = [FakeNode(f"127.0.0.1:{7000 + k}") for k in range(n_nodes)]
        self.nodes_manager = FakeNodesManager(self.nodes)
        self.piped: list[tuple[object, ...]] = []

    def keyslot(self, key: bytes) -> int:
        return key_slot(key)

    async def initialize(self) -> "FakeCluster":
        return self

    def pipeline(self) -> FakePipeline:
        return FakePipeline(self.piped)


class FakeSingleRedis:
    """A single Redis that records the packed stream RecsWriter sends it (every reply +OK)."""

    def __init__(self) -> None:
        self.node = FakeNode("single")
        self.connection_pool = self

    async def get_connection(self) -> FakeConnection:
        return self.node.acquire_connection()

    async def release(self, conn: FakeConnection) -> None:
        self.node.released += 1


LISTS = dict(popular=[("p1", 3.0)], model_version="m1", updated_ms=9,
             popular_by_tag={"dance": [("d1", 1.0)], "pets": [("c1", 0.5)], "empty": []})


def _write(client: object, users: list[str], settings: Settings | None = None,
           writer: RecsWriter | None = None) -> RecsWriter:
    settings = settings or Settings(redis_prefix="fk", redis_cluster=True)
    writer = writer or RecsWriter(client, settings)  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    items = [[f"i{k}" for k in rng.integers(0, 1000, 10)] for _ in users]
    scores = rng.standard_normal((len(users), 10)).astype(np.float32)
    asyncio.run(writer.write_lists(users, items, scores, **LISTS))  # type: ignore[arg-type]
    return writer


def test_cluster_writer_sends_each_node_on_one_connection_the_single_node_commands_for_the_keys_of_its_slots():
    users = [f"u{j}" for j in range(2_500)]
    single = FakeSingleRedis()
    _write(single, users, Settings(redis_prefix="fk"))
    expected = dict(single.node.received())  # key -> packed SET, as one Redis gets them
    assert len(expected) == len(users) + 3  # the users, popular, two tags (not the empty one)

    cluster = FakeCluster()
    _write(cluster, users)
    seen: list[bytes] = []
    for k, node in enumerate(cluster.nodes):
        received = node.received()
        assert received, "every node owns some of the keys"
        assert all(key_slot(key) * 3 // 16384 == k for key, _ in received)  # only keys of its slots
        assert [command for _, command in received] == [expected[key] for key, _ in received]  # the same bytes
        assert all(len(_split_commands(data)) <= 1000 for data in node.sends)  # in chunks of at most 1,000
        assert (node.acquired, node.released, node.disconnects) == (1, 1, 0)  # one pooled connection per node
        user_order = [int(key.rsplit(b":u", 1)[1]) for key, _ in received if key.startswith(b"fk:rec:")]
        assert user_order == sorted(user_order)  # in the order of the users
        seen += [key for key, _ in received]
    assert sorted(seen) == sorted(expected)  # every key once
    assert cluster.piped == [] and cluster.nodes_manager.refreshes == 0


def test_cluster_writer_writes_moved_and_ask_keys_again_through_the_pipeline_after_reading_the_slot_map_again():
    users = [f"u{j}" for j in range(50)]
    cluster = FakeCluster()
    moved_key, ask_key = b"fk:rec:u7", b"fk:popular"
    owner = {key: cluster.nodes_manager.get_node_from_slot(key_slot(key)) for key in (moved_key, ask_key)}
    owner[moved_key].replies[moved_key] = MovedError(f"{key_slot(moved_key)} 127.0.0.1:7009")
    owner[ask_key].replies[ask_key] = AskError(f"{key_slot(ask_key)} 127.0.0.1:7009")
    _write(cluster, users)
    assert cluster.nodes_manager.refreshes == 1  # a MOVED: the slot map is read again
    assert sorted(args[1] for args in cluster.piped) == sorted([moved_key, ask_key])
    for args in cluster.piped:  # the same SET key value EX ttl, now through redis-py's cluster pipeline
        key = args[1]
        packed = next(command for k, command in owner[key].received() if k == key)
        assert args == ("SET", *_command_args(packed)[1:])
    assert all(args[3:] == (b"EX", b"604800") for args in cluster.piped)


def test_cluster_writer_raises_after_reading_every_other_node_when_one_node_fails_and_rereads_the_slot_map_next_time():
    users = [f"u{j}" for j in range(300)]
    cluster = FakeCluster()
    cluster.nodes[1].unreachable = True
    writer = RecsWriter(cluster, Settings(redis_prefix="fk", redis_cluster=True))  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError):
        _write(cluster, users, writer=writer)
    assert cluster.nodes[0].received() and cluster.nodes[2].received()  # the other nodes got their lists
    assert cluster.nodes[1].disconnects == 1 and all(n.released == 1 for n in cluster.nodes)
    assert cluster.nodes_manager.refreshes == 0
    cluster.nodes[1].unreachable = False
    _write(cluster, users, writer=writer)
    assert cluster.nodes_manager.refreshes == 1  # before sending: a node failed, the slots may have moved
    _write(cluster, users, writer=writer)
    assert cluster.nodes_manager.refreshes == 1  # only once


def test_cluster_writer_raises_an_error_reply_that_is_not_a_redirect_without_writing_through_the_pipeline():
    cluster = FakeCluster()
    denied = b"fk:popular:tag:pets"
    cluster.nodes_manager.get_node_from_slot(key_slot(denied)).replies[denied] = NoPermissionError("NOPERM no")
    with pytest.raises(NoPermissionError):
        _write(cluster, ["u1", "u2"])
    assert cluster.piped == []


@pytest.mark.parametrize("ask_at", range(4))
def test_set_replies_are_all_read_when_the_first_read_ends_between_cr_and_lf(ask_at):
    from redis._parsers import _AsyncRESP2Parser

    from streams.io.redis import _read_set_replies

    ask = b"-ASK 3999 127.0.0.1:6380\r\n"  # 26 bytes: the 5-byte-per-reply first read ends inside some reply
    replies = [b"+OK\r\n"] * 9
    replies.insert(ask_at, ask)

    class Conn:
        host, port, socket_timeout = "127.0.0.1", 6379, 1.0

    async def run() -> list:
        conn = Conn()
        conn._reader = asyncio.StreamReader()
        conn._reader.feed_data(b"".join(replies))
        conn._parser = _AsyncRESP2Parser(socket_read_size=65536)
        return await _read_set_replies(conn, len(replies))

    errors = asyncio.run(run())
    assert [(j, type(e)) for j, e in errors] == [(ask_at, AskError)]


def test_set_replies_read_one_by_one_keep_the_error_replies_a_parser_raises():
    from streams.io.redis import _read_set_replies

    class RaisingParserConnection:  # hiredis' parser: error replies are raised, not returned
        def __init__(self, replies):
            self.replies = list(replies)

        async def read_response(self):
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply

    ask = AskError("4465 127.0.0.1:7001")
    conn = RaisingParserConnection([b"OK", ask, b"OK"])
    assert asyncio.run(_read_set_replies(conn, 3)) == [(1, ask)] and conn.replies == []
