"""Event records between the consumer and the worker's processing loop: the :class:`Intake` queue.

The consumer hands each fetched list of records of one partition to
:meth:`~streams.worker.service.RecommenderService.offer`, which puts it here; the processing
loop takes whatever has arrived, up to a batch's worth of events, as one batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from streams.events import MAX_BATCH_EVENTS, is_batch

__all__ = ["Intake"]


class Intake:
    """Event records between the consumer and the processing loop, bounded by events.

    A record counts as the number of events it carries: one, or for a batch message
    the occurrences of ``"event_id"`` in its bytes (a cheap estimate, capped, made
    before decoding; it only sizes batches and bounds memory). A take holds whole
    records, in order per partition; a partition's list of records is split when it
    alone holds more events than asked for.

    >>> from types import SimpleNamespace as Record
    >>> async def demo():
    ...     intake = Intake(max_events=10)
    ...     await intake.put("tp0", [Record(value=b"{}", headers=())] * 3)
    ...     await intake.put("tp1", [Record(value=b"{}", headers=())])
    ...     first = await intake.take(max_events=2, within_s=0)
    ...     second = await intake.take(max_events=3, within_s=0)
    ...     return [[(tp, len(records)) for tp, records in take] for take in (first, second)]
    >>> asyncio.run(demo())
    [[('tp0', 2)], [('tp0', 1), ('tp1', 1)]]
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        # tp, records, events per record, when offered (ms)
        self._chunks: deque[tuple[Any, list[Any], list[int], float]] = deque()
        self.taken_offered_ms = 0.0  # when the oldest chunk of the last take was offered
        self._events = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, tp: Any, records: list[Any]) -> None:
        """Add the records of one partition; waits while the intake is full (back-pressure)."""
        while self._events >= self.max_events:
            self._room.clear()
            await self._room.wait()
        counts = [
            min(max(record.value.count(b'"event_id"'), 1), MAX_BATCH_EVENTS)
            if record.headers and record.value and is_batch(record.headers) else 1
            for record in records
        ]
        self._chunks.append((tp, records, counts, time.time() * 1000.0))
        self._events += sum(counts)
        self._arrived.set()

    async def take(self, max_events: int, within_s: float) -> list[tuple[Any, list[Any]]]:
        """At least one record, at most about ``max_events`` events.

        Once something has arrived, waits up to ``within_s`` for more to gather. A rebalance may
        :meth:`drop` everything meanwhile: then it waits for records again.
        """
        while True:
            while not self._chunks:
                self._arrived.clear()
                await self._arrived.wait()
            if within_s > 0 and self._events < max_events:
                await asyncio.sleep(within_s)
            if self._chunks:
                break
        taken: list[tuple[Any, list[Any]]] = []
        count = 0
        self.taken_offered_ms = self._chunks[0][3]
        while self._chunks and count < max_events:
            tp, records, counts, offered = self._chunks.popleft()
            self.taken_offered_ms = min(self.taken_offered_ms, offered)
            events = sum(counts)
            if count + events > max_events:  # split: what fits (at least one record), the rest stays first
                room, fits = max_events - count, 0
                while fits < len(records) and ((fits == 0 and not taken) or counts[fits] <= room):
                    room -= counts[fits]
                    fits += 1
                if fits == 0:
                    self._chunks.appendleft((tp, records, counts, offered))
                    break
                if fits < len(records):
                    self._chunks.appendleft((tp, records[fits:], counts[fits:], offered))
                    records, events = records[:fits], sum(counts[:fits])
            taken.append((tp, records))
            count += events
        self._events -= count
        self._room.set()
        return taken

    def drop(self, tps: set[Any]) -> int:
        """Forget buffered records of ``tps`` (revoked: their next owner reads them again)."""
        kept = deque(chunk for chunk in self._chunks if chunk[0] not in tps)
        dropped = self._events - sum(sum(chunk[2]) for chunk in kept)
        self._chunks = kept
        self._events -= dropped
        self._room.set()
        return dropped
