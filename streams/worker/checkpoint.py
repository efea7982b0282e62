"""The worker's checkpoints: state, window counts and a fence made durable together, a slice at a time.

Every ``checkpoint_interval_s`` the state of the users changed since the last checkpoint is
handed to the store and flushed to the changelogs, a slice of users between two batches at a
time; then the window counts of exactly the events it covers go to the metrics topic in one
record batch with a fence (:mod:`streams.worker.fences`), and only then are those events'
offsets acknowledged to Faust for its next commit. A crash therefore replays events whose state
was not written, never the other way round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

from streams.settings import Settings
from streams.state.store import StateStore
from streams.worker.learner import Learner

__all__ = ["Checkpointer", "CHECKPOINT_SLICE"]

#: Users (and, for the item snapshots, items) encoded between two batches.
CHECKPOINT_SLICE = 4000

#: ``ack(tp, first_offset, last_offset)``: those offsets' effects are durable.
Acker = Callable[[Any, int, int], None]
#: ``async emit(records)``: metrics records, sent as one record batch.
Emit = Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]]


@dataclass
class _Checkpoint:
    users: list[str]
    offsets: dict[Any, tuple[int, int]]  # tp -> offsets whose effects this checkpoint makes durable
    records: list[dict[str, Any]]  # the window counts of exactly those events
    next_user: int = 0


class Checkpointer:
    """What changed since the last checkpoint, the one being written, and the fences written so far."""

    def __init__(self, settings: Settings, learner: Learner, store: StateStore, emit: Emit, *, worker_id: str,
                 ack: Acker | None = None) -> None:
        self.settings = settings
        self.learner = learner
        self.store = store
        self.emit = emit
        self.worker_id = worker_id
        self.ack = ack
        self.slice_users = CHECKPOINT_SLICE
        self.unacked: dict[Any, tuple[int, int]] = {}  # tp -> offsets processed, not yet checkpointed
        self.dirty_users: set[str] = set()
        self.last_started = time.monotonic()
        self.fences: dict[int, int] = {}  # events partition -> last offset whose effects are durable
        self._running: _Checkpoint | None = None  # the one being written, slice by slice

    def processed(self, ranges: Sequence[tuple[Any, int, int]], users: set[str]) -> None:
        """A batch covering the offsets ``ranges`` (tp, first, last) changed ``users``: for the next checkpoint."""
        for tp, first, last in ranges:
            if tp in self.unacked:
                first = self.unacked[tp][0]
            self.unacked[tp] = (first, last)
        self.dirty_users.update(users)

    @property
    def due(self) -> bool:
        """``checkpoint_interval_s`` has passed since the last checkpoint started."""
        return time.monotonic() - self.last_started >= self.settings.checkpoint_interval_s

    async def now(self) -> None:
        """Checkpoint everything changed so far, now (shutdown, rebalance)."""
        if self._running is not None:
            await self._advance(None)  # the running one first: its offsets come first
        self._running = self._start()
        await self._advance(None)

    async def step(self) -> None:
        """Advance the running checkpoint by one slice; start one every ``checkpoint_interval_s``.

        Encoding the state of tens of thousands of users takes a while; done in slices
        between batches it never holds a batch (and its users' freshness) back for long.
        """
        if self._running is None:
            if not self.due:
                return
            self._running = self._start()
        await self._advance(self.slice_users)

    def _start(self) -> _Checkpoint:
        """Snapshot what changed, the window counts and the offsets behind them; what comes later
        goes to the next checkpoint (the counts sent with a fence must be exactly those of the
        events it covers, even though later batches run between the slices of this one)."""
        windows = self.learner.windows
        records = [*windows.close_due(_now_ms()), *windows.flush_partials()]
        started = _Checkpoint(sorted(self.dirty_users), self.unacked, records)
        self.dirty_users, self.unacked = set(), {}
        self.last_started = time.monotonic()
        return started

    async def _advance(self, budget: int | None) -> None:
        cp = self._running
        assert cp is not None
        users = cp.users[cp.next_user :]
        if budget is not None:
            users = users[:budget]
        self.learner.checkpoint(users)
        cp.next_user += len(users)
        if cp.next_user < len(cp.users):
            return
        self._running = None
        await self.store.flush()  # the broker has every state record of this checkpoint
        for tp, (_, last) in cp.offsets.items():
            self.fences[tp.partition] = max(last, self.fences.get(tp.partition, -1))
        await self.emit([*cp.records, self._fence_record()])  # one record batch: counted and fenced together
        if self.ack is not None:
            for tp, (first, last) in cp.offsets.items():
                self.ack(tp, first, last)

    def _fence_record(self) -> dict[str, Any]:
        """The offsets up to which every effect is durable, per events partition of this worker."""
        return {
            "type": "fence",
            "worker_id": self.worker_id,
            "topic": self.settings.events_topic,
            "offsets": {str(p): offset for p, offset in sorted(self.fences.items())},
            "ts_ms": _now_ms(),
        }


def _now_ms() -> int:
    return int(time.time() * 1000)
