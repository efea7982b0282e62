"""TableStateStore over a stand-in for the Faust table and the batch sender (no broker)."""

from __future__ import annotations

import asyncio

from streams.events import kafka_partition
from streams.state.table_store import MARKER_KEY, TableStateStore


class Table:
    """What the store uses of the Faust table: its local data, changelog topic and partition count."""

    def __init__(self, partitions: int) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog_topic_name = "app-user-state-changelog"
        self.partitions = partitions


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list]] = []

    async def send(self, topic, partition, records):
        self.sent.append((topic, partition, list(records)))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return [delivered]


def test_users_are_read_at_once_and_written_per_partition_with_a_marker_last() -> None:
    table, sender = Table(partitions=4), Sender()
    store = TableStateStore(table, sender)
    blobs = {f"u{n}": f"state{n}".encode() for n in range(20)}
    store.put_users(blobs)
    assert store.get_user("u3") == b"state3" and store.get_user("nobody") is None
    assert sender.sent == []  # staged until flushed

    asyncio.run(store.flush())
    partitions = {kafka_partition(user.encode(), 4) for user in blobs}
    assert len(sender.sent) == 2 * len(partitions)  # the users' records, then a one-record marker batch
    written = {}
    for (topic, partition, records), (_, marker_partition, marker) in zip(sender.sent[::2], sender.sent[1::2]):
        assert topic == "app-user-state-changelog" and marker_partition == partition
        assert marker == [(MARKER_KEY, b"", None)]
        for key, value, _ in records:
            assert kafka_partition(key, 4) == partition
            written[key.decode()] = value
    assert written == blobs
    asyncio.run(store.flush())
    assert len(sender.sent) == 2 * len(partitions)  # nothing staged, nothing sent
