"""Changelog-backed state: user state partitioned like the events, item state global.

``user_state`` is keyed by the UTF-8 user id and its changelog is partitioned with
Kafka's default partitioner (murmur2), exactly like the events topic (key = user_id),
so each worker owns, and recovers, the users of its partitions. ``item_state`` is a
global table: every worker keeps a full replica of the item factors (DESIGN-NOTES §6);
one partition, per Faust's advice for global tables with several workers.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import faust
from aiokafka.partitioner import DefaultPartitioner

from streams.app import app, settings

__all__ = ["user_state", "item_state", "TableStateStore", "kafka_partition"]

_partitioner = DefaultPartitioner()


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (what producers of events use).

    >>> kafka_partition(b"u1", 4) == kafka_partition(b"u1", 4)
    True
    """
    every = list(range(partitions))
    return int(_partitioner(key, every, every))


class KeyPartitionedTable(faust.Table):
    """A table whose changelog partition is the key's Kafka partition, known without broker metadata."""

    def partition_for_key(self, key: Any) -> int:
        return kafka_partition(key, self.partitions or settings.partitions)


class SinglePartitionGlobalTable(faust.GlobalTable):
    """A global table with one changelog partition."""

    def partition_for_key(self, key: Any) -> int:
        return 0


user_state = app.tables.add(
    KeyPartitionedTable(
        app, name="user-state", key_type=bytes, value_type=bytes, partitions=settings.partitions,
        beacon=app.tables.beacon, help="per-user factors and engaged items",
    )
)
item_state = app.tables.add(
    SinglePartitionGlobalTable(
        app, name="item-state", key_type=bytes, value_type=bytes, partitions=1, recovery_buffer_size=1,
        beacon=app.tables.beacon, help="per-item factors, bias, popularity, creator and tags",
    )
)


class TableStateStore:
    """:class:`streams.state.StateStore` over the two Faust tables."""

    def get_user(self, user_id: str) -> bytes | None:
        return user_state.get(user_id.encode())

    def get_item(self, item_id: str) -> bytes | None:
        return item_state.get(item_id.encode())

    def put_users(self, blobs: Mapping[str, bytes]) -> None:
        for user_id, blob in blobs.items():
            user_state[user_id.encode()] = blob

    def put_items(self, blobs: Mapping[str, bytes]) -> None:
        for item_id, blob in blobs.items():
            item_state[item_id.encode()] = blob

    def all_items(self) -> Iterable[tuple[str, bytes]]:
        return [(key.decode(), blob) for key, blob in item_state.items()]
