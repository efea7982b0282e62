"""The bulk hand-over loop of ``streams.worker.app._Consumer``, driven by scripted fetches (no broker).

What it must never do: lose records. A fetch that returns while the flow is stopped (a
rebalance raced it) is not handed over, so the position goes back to the committed offsets;
a hand-over that a rebalance interrupts does not count as read.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, NamedTuple

from streams.worker.app import _Consumer


class TP(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    offset: int


EVENTS = TP("t.events", 0)


class ScriptedLoop(_Consumer):
    """The real ``_drain_messages`` around stand-ins for Faust's consumer state and the fetcher.

    ``script`` is a list of steps, one per fetch: ``(records, flow_active)``; ``handler`` is the
    bulk handler. The loop stops once the script is exhausted.
    """

    def __init__(self, script: list[tuple[dict[TP, list[Record]], bool]], handler: Any) -> None:  # no super(): no Faust app
        self.script = list(script)
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self._read_offset = defaultdict(lambda: None)
        self._buffered_partitions: set[TP] = set()
        self.flow_active = True
        self.suspend_flow = asyncio.Event()
        self.seeks = 0
        self.app = SimpleNamespace(
            bulk_handlers={EVENTS.topic: handler}, consumer_generation_id=1,
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        )  # fmt: skip
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=True))
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.callback = self._to_message = None  # Faust's per-message path: not taken for a bulk topic

    def __repr__(self) -> str:
        return f"ScriptedLoop(seeks={self.seeks}, read_offset={dict(self._read_offset)})"

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Record]] | None, set[TP] | None]:
        if not self.script:
            self._stopped.set()
            return None, None
        records, self.flow_active = self.script.pop(0)
        return records, None

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def perform_seek(self) -> None:
        self.seeks += 1

    def highwater(self, tp: TP) -> int:
        return 0

    async def wait_first(self, *coros: Any) -> Any:  # mode's contract: the first to finish wins, the rest are cancelled
        futures = [asyncio.ensure_future(c if asyncio.iscoroutine(c) else c.wait()) for c in coros]
        done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        return SimpleNamespace(stopped=False, done=[futures.index(f) for f in done])


def drain(loop: ScriptedLoop) -> None:
    asyncio.run(loop._drain_messages(SimpleNamespace(_stopped=asyncio.Event())))


def test_records_are_handed_over_in_bulk_and_the_read_offset_follows():
    handed: list[list[int]] = []

    async def handler(tp, records):
        handed.append([r.offset for r in records])

    loop = ScriptedLoop([({EVENTS: [Record(0), Record(1)]}, True), ({EVENTS: [Record(1), Record(2)]}, True)], handler)
    drain(loop)
    assert handed == [[0, 1], [1, 2]]  # as in Faust: the record at the read offset is handed again
    assert loop._read_offset[EVENTS] == 2 and loop.seeks == 0


def test_a_fetch_returned_while_the_flow_is_stopped_is_read_again_from_the_committed_offsets():
    handed: list[list[int]] = []

    async def handler(tp, records):
        handed.append([r.offset for r in records])

    loop = ScriptedLoop([({EVENTS: [Record(5), Record(6)]}, False)], handler)
    drain(loop)
    assert handed == [] and loop.seeks == 1  # not handed over, and the position goes back
    assert loop._read_offset[EVENTS] is None


def test_a_hand_over_interrupted_by_a_rebalance_does_not_count_as_read():
    other = TP("t.events", 1)
    handed: list[tuple[int, list[int]]] = []

    async def handler(tp, records):
        if tp == EVENTS:
            loop.stop_flow_now()
            await asyncio.sleep(3600)  # waiting for room in the intake when the rebalance starts
        handed.append((tp.partition, [r.offset for r in records]))

    loop = ScriptedLoop([({EVENTS: [Record(7)], other: [Record(3)]}, True)], handler)
    loop.stop_flow_now = lambda: (setattr(loop, "flow_active", False), loop.suspend_flow.set())
    drain(loop)
    assert handed == []  # the first hand-over was cancelled, the next partition not started
    assert loop._read_offset[EVENTS] is None and loop._read_offset[other] is None
