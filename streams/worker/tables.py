"""Changelog-backed user state, partitioned like the events.

``user_state`` is keyed by the UTF-8 user id and its changelog is partitioned with
Kafka's default partitioner (murmur2), exactly like the events topic (key = user_id),
so each worker owns, and recovers, the users of its partitions. The item side of the
model is not a table: every worker keeps a full replica, kept in step by the item
exchange (:mod:`streams.worker.exchange`, :mod:`streams.worker.item_log`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

import faust

from streams.events import kafka_partition
from streams.io.kafka import BatchSender
from streams.worker.app import app, settings

__all__ = ["user_state", "TableStateStore", "MARKER_KEY"]


class KeyPartitionedTable(faust.Table):
    """A table whose changelog partition is the key's Kafka partition, known without broker metadata."""

    def partition_for_key(self, key: Any) -> int:
        return kafka_partition(key, self.partitions or settings.partitions)


user_state = app.tables.add(
    KeyPartitionedTable(
        app, name="user-state", key_type=bytes, value_type=bytes, partitions=settings.partitions,
        beacon=app.tables.beacon, help="per-user factors and engaged items",
    )
)


#: Key of the marker record that ends each checkpoint's writes to a changelog partition. The
#: byte 0xff never occurs in UTF-8, so no user or item id (always valid UTF-8) can clash with it.
MARKER_KEY = b"\xffstreamrec.checkpoint"


class TableStateStore:
    """:class:`streams.state.store.StateStore` over the Faust user table.

    Faust writes one changelog message per table assignment through its per-message
    producer path; a checkpoint writes tens of thousands. So :meth:`put_users` sets the
    table's local data directly and stages the changelog records, and :meth:`flush`
    sends them as whole record batches per partition and waits until the broker has
    them. Faust's recovery reads the changelog as usual.
    """

    def __init__(self, sender: BatchSender) -> None:
        self.sender = sender
        self._staged: dict[tuple[str, int], list[tuple[bytes, bytes, None]]] = {}

    def get_user(self, user_id: str) -> bytes | None:
        return user_state.data.get(user_id.encode())

    def put_users(self, blobs: Mapping[str, bytes]) -> None:
        data, topic, partitions = user_state.data, user_state.changelog_topic_name, settings.partitions
        for user_id, blob in blobs.items():
            key = user_id.encode()
            data[key] = blob
            self._staged.setdefault((topic, kafka_partition(key, partitions)), []).append((key, blob, None))

    async def flush(self) -> None:
        staged, self._staged = self._staged, {}
        futures = []
        for (topic, partition), records in staged.items():
            futures.extend(await self.sender.send(topic, partition, records))
            # A one-record batch last: brokers that report the end of a partition as "base offset
            # of the last batch + 1" (Tansu 0.6, RELIABILITY.md) then report it right, and Faust's
            # recovery, which reads up to that end, sees every state record.
            futures.extend(await self.sender.send(topic, partition, [(MARKER_KEY, b"", None)]))
        if futures:
            await asyncio.gather(*futures)
