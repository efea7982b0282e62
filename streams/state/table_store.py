"""The user store of the worker: :class:`~streams.state.store.StateStore` over the changelog-backed
user table (:mod:`streams.worker.tables`), written to Kafka as whole record batches."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Mapping

from streams.events import kafka_partition

if TYPE_CHECKING:
    from streams.io.kafka import BatchSender

__all__ = ["TableStateStore", "MARKER_KEY"]


#: Key of the marker record that ends each checkpoint's writes to a changelog partition. The
#: byte 0xff never occurs in UTF-8, so no user or item id (always valid UTF-8) can clash with it.
MARKER_KEY = b"\xffstreamrec.checkpoint"


class TableStateStore:
    """:class:`streams.state.store.StateStore` over the Faust user table ``table``.

    Faust writes one changelog message per table assignment through its per-message
    producer path; a checkpoint writes tens of thousands. So :meth:`put_users` sets the
    table's local data directly and stages the changelog records, and :meth:`flush`
    sends them as whole record batches per partition and waits until the broker has
    them. Faust's recovery reads the changelog as usual.
    """

    def __init__(self, table: Any, sender: BatchSender) -> None:
        self.table = table
        self.sender = sender
        self._staged: dict[tuple[str, int], list[tuple[bytes, bytes, None]]] = {}

    def get_user(self, user_id: str) -> bytes | None:
        return self.table.data.get(user_id.encode())

    def put_users(self, blobs: Mapping[str, bytes]) -> None:
        table = self.table
        data, topic, partitions = table.data, table.changelog_topic_name, table.partitions
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
