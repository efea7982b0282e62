"""Changelog-backed state: user state partitioned like the events, item state global.

``user_state`` is keyed by the UTF-8 user id and its changelog is partitioned with
Kafka's default partitioner (murmur2), exactly like the events topic (key = user_id),
so each worker owns, and recovers, the users of its partitions. ``item_state`` is a
global table: every worker keeps a full replica of the item factors (DESIGN-NOTES §6);
one partition, per Faust's advice for global tables with several workers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable, Mapping

import faust

from streams.app import app, settings
from streams.events import kafka_partition
from streams.kafka import BatchSender

__all__ = ["user_state", "item_state", "TableStateStore", "MARKER_KEY"]


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


#: Key of the marker record that ends each checkpoint's writes to a changelog partition. The
#: byte 0xff never occurs in UTF-8, so no user or item id (always valid UTF-8) can clash with it.
MARKER_KEY = b"\xffstreamrec.checkpoint"


class TableStateStore:
    """:class:`streams.state.StateStore` over the two Faust tables.

    Faust writes one changelog message per table assignment through its per-message
    producer path; a checkpoint writes tens of thousands. So :meth:`put_users` and
    :meth:`put_items` set the tables' local data directly and stage the changelog
    records, and :meth:`flush` sends them as whole record batches per partition and
    waits until the broker has them. Faust's recovery reads these changelogs as usual.
    """

    def __init__(self, sender: BatchSender) -> None:
        self.sender = sender
        self._staged: dict[tuple[str, int], list[tuple[bytes, bytes, None]]] = {}

    def get_user(self, user_id: str) -> bytes | None:
        return user_state.data.get(user_id.encode())

    def get_item(self, item_id: str) -> bytes | None:
        return item_state.data.get(item_id.encode())

    def put_users(self, blobs: Mapping[str, bytes]) -> None:
        data, topic, partitions = user_state.data, user_state.changelog_topic_name, settings.partitions
        for user_id, blob in blobs.items():
            key = user_id.encode()
            data[key] = blob
            self._staged.setdefault((topic, kafka_partition(key, partitions)), []).append((key, blob, None))

    def put_items(self, blobs: Mapping[str, bytes]) -> None:
        data = item_state.data
        staged = self._staged.setdefault((item_state.changelog_topic_name, 0), [])
        for item_id, blob in blobs.items():
            key = item_id.encode()
            data[key] = blob
            staged.append((key, blob, None))

    async def flush(self) -> None:
        staged, self._staged = self._staged, {}
        futures = []
        for (topic, partition), records in staged.items():
            futures.extend(await self.sender.send(topic, partition, records))
            # A one-record batch last: brokers that report the end of a partition as "base offset
            # of the last batch + 1" (Tansu 0.6, DESIGN-NOTES §8) then report it right, and Faust's
            # recovery, which reads up to that end, sees every state record.
            futures.extend(await self.sender.send(topic, partition, [(MARKER_KEY, b"", None)]))
        if futures:
            await asyncio.gather(*futures)

    def all_items(self) -> Iterable[tuple[str, bytes]]:
        return [(key.decode(), blob) for key, blob in item_state.data.items() if not key.startswith(b"\xff")]
