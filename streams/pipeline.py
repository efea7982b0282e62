"""The processing core, free of Faust: decode a batch, learn from it, say what to refresh.

The Faust agent (:mod:`streams.agents`) stays thin: it hands each batch of raw Kafka
messages to :meth:`Pipeline.process`, routes the dead letters, writes the refreshed
lists to Redis and the checkpoints to the changelog tables. Everything here is
unit-tested without a broker.

>>> from streams.settings import Settings
>>> from streams.state import MemoryStateStore
>>> pipe = Pipeline(Settings(n_factors=8), MemoryStateStore())
>>> msg = RawMessage(b"u1", b'{"event_id":"e1","user_id":"u1","item_id":"i1","kind":"view","ts":1000}', "t", 0, 0)
>>> bad = RawMessage(b"u1", b"not json", "t", 0, 1)
>>> outcome = pipe.process([msg, bad])
>>> len(outcome.events), [d.reason for d in outcome.dead_letters], sorted(outcome.dirty_users)
(1, ['not_json'], ['u1'])
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from models import BPRMF, Popularity, event_weights
from streams.events import Event, InvalidEvent, decode_event
from streams.metrics import EngagementWindows, HealthCounters
from streams.settings import Settings
from streams.state import ItemState, StateStore, decode_item, decode_user, encode_item, encode_user

__all__ = ["Pipeline", "RawMessage", "DeadLetter", "BatchOutcome", "EventIdWindow"]

logger = logging.getLogger(__name__)

Recs = list[tuple[str, float]]


@dataclass(slots=True)
class RawMessage:
    """One Kafka message as it came off the topic."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be applied, with why."""

    message: RawMessage
    reason: str
    detail: str

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter copy (its key and value are the original bytes)."""
        m = self.message
        return [
            ("streamrec.reason", self.reason.encode()),
            ("streamrec.error", self.detail.encode("utf-8", "replace")[:1000]),
            ("streamrec.source.topic", m.topic.encode()),
            ("streamrec.source.partition", str(m.partition).encode()),
            ("streamrec.source.offset", str(m.offset).encode()),
            ("streamrec.dead_lettered_ms", str(int(time.time() * 1000)).encode()),
        ]


@dataclass
class BatchOutcome:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    dirty_users: set[str] = field(default_factory=set)
    dirty_items: set[str] = field(default_factory=set)


class EventIdWindow:
    """Remembers the last ``capacity`` event ids, so redelivered events are applied once.

    >>> seen = EventIdWindow(capacity=2)
    >>> [seen.check_and_add(e) for e in ("a", "b", "a", "c", "a")]
    [False, False, True, False, False]
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, event_id: str) -> bool:
        """True if ``event_id`` was seen within the window (a duplicate), else remember it."""
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False


class Pipeline:
    """Learning, history and aggregation state of one worker."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.model = BPRMF(
            n_factors=settings.n_factors,
            learning_rate=settings.learning_rate,
            regularization=settings.regularization,
            n_negatives=settings.n_negatives,
            init_std=settings.init_std,
            seed=settings.seed,
        )
        self.popularity = Popularity(half_life_s=settings.popular_half_life_s)
        self.history: dict[str, OrderedDict[str, None]] = {}
        self.item_meta: dict[str, tuple[str | None, tuple[str, ...]]] = {}
        self.windows = EngagementWindows(
            window_ms=int(settings.metrics_window_s * 1000), grace_ms=int(settings.metrics_grace_s * 1000)
        )
        self.health = HealthCounters(worker_id=settings.effective_worker_id, started_ms=_now_ms())
        self.seen_event_ids = EventIdWindow()
        self.run_id = format(_now_ms(), "x")
        self.batches = 0
        self.events_total = 0

    # --- the batch path ------------------------------------------------------------------
    def process(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Validate, deduplicate and learn one batch; nothing in it is dropped silently."""
        outcome = BatchOutcome()
        max_bytes = self.settings.max_message_bytes
        for message in messages:
            try:
                event = decode_event(message.key, message.value, max_bytes)
            except InvalidEvent as exc:
                outcome.dead_letters.append(DeadLetter(message, exc.reason, exc.detail))
                self.health.dead_lettered(exc.reason)
                continue
            if self.seen_event_ids.check_and_add(event.event_id):
                outcome.duplicates += 1
                continue
            outcome.events.append(event)
        self.health.duplicates_skipped += outcome.duplicates
        if outcome.events:
            self._learn(outcome.events, outcome)
        return outcome

    def _learn(self, events: list[Event], outcome: BatchOutcome) -> None:
        users = [e.user_id for e in events]
        items = [e.item_id for e in events]
        self._hydrate(set(users), set(items))
        weights = event_weights(
            [e.kind for e in events],
            np.array([-1 if e.watch_ms is None else e.watch_ms for e in events], dtype=np.float64),
            kind_weights=self.settings.kind_weights,
            watch_time_weight=self.settings.watch_time_weight,
            watch_time_ref_ms=self.settings.watch_time_ref_ms,
        )
        tags = [e.tags for e in events]  # new items start from their tags' vectors (cold start)
        self.model.learn_batch(users, items, weights, item_tags=tags)
        ts = np.fromiter((e.ts for e in events), dtype=np.int64, count=len(events))
        self.popularity.learn_batch(users, items, weights, ts_ms=ts, item_tags=tags)
        max_history = self.settings.max_history
        for event in events:
            history = self.history.get(event.user_id)
            if history is None:
                history = self.history[event.user_id] = OrderedDict()
            history[event.item_id] = None
            history.move_to_end(event.item_id)
            if len(history) > max_history:
                history.popitem(last=False)
            if event.creator_id is not None or event.tags:
                self.item_meta[event.item_id] = (event.creator_id, event.tags)
        self.windows.add(events)
        outcome.dirty_users.update(users)
        outcome.dirty_items.update(items)
        self.batches += 1
        self.events_total += len(events)
        self.health.events_processed += len(events)

    def _hydrate(self, users: Iterable[str], items: Iterable[str]) -> None:
        """Load checkpointed state of users and items this worker has not seen since it started."""
        for item_id in items:
            if not self.model.has_item(item_id):
                blob = self.store.get_item(item_id)
                if blob is not None:
                    self.restore_item(item_id, blob)
        for user_id in users:
            if not self.model.has_user(user_id):
                blob = self.store.get_user(user_id)
                if blob is not None:
                    vector, history = decode_user(blob)
                    self.model.set_user_vectors([user_id], vector[None, :])
                    self.history[user_id] = OrderedDict.fromkeys(history)

    def restore_item(self, item_id: str, blob: bytes) -> None:
        state = decode_item(blob)
        self.model.set_item_vectors([item_id], state.vector[None, :], np.array([state.bias], dtype=np.float32))
        self.popularity.set_item_weights([item_id], np.array([state.popularity]), state.popularity_ts_ms)
        if state.tags:
            self.model.set_item_tags([item_id], [state.tags])
            self.popularity.set_item_tags([item_id], [state.tags])
        self.item_meta[item_id] = (state.creator_id, state.tags)

    def restore_all_items(self) -> int:
        """Load every checkpointed item (after start-up or a rebalance), so top-N sees the whole catalog."""
        count = 0
        for item_id, blob in self.store.all_items():
            if not self.model.has_item(item_id):
                self.restore_item(item_id, blob)
                count += 1
        return count

    # --- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, outcome: BatchOutcome) -> None:
        """Write the state of every user and item the batch changed to the store."""
        if not outcome.events:
            return
        users = sorted(outcome.dirty_users)
        vectors = self.model.user_vectors(users)
        self.store.put_users({u: encode_user(v, list(self.history[u])) for u, v in zip(users, vectors)})
        items = sorted(outcome.dirty_items)
        item_vectors, biases = self.model.item_vectors(items)
        pop_weights, pop_ts = self.popularity.item_weights(items)
        blobs = {}
        for i, item_id in enumerate(items):
            creator_id, tags = self.item_meta.get(item_id, (None, ()))
            blobs[item_id] = encode_item(
                ItemState(item_vectors[i], float(biases[i]), creator_id, tags, float(pop_weights[i]), pop_ts)
            )
        self.store.put_items(blobs)

    # --- recommendations -----------------------------------------------------------------
    def recommendations(self, users: Sequence[str]) -> dict[str, Recs]:
        """Top-N of each user from the current factors, excluding what they engaged with."""
        users = [u for u in users if self.model.has_user(u)]
        if not users:
            return {}
        excludes = [self.history.get(u, ()) for u in users]
        lists = self.model.top_n_batch(users, self.settings.top_n, excludes)
        return dict(zip(users, lists))

    def popular(self) -> Recs:
        """The non-personalised fallback: recently popular items."""
        return self.popularity.top_n("", self.settings.top_n)

    def popular_by_tag(self, tags: Iterable[str]) -> dict[str, Recs]:
        """Recently popular items within each community tag (the cold-start list for that community)."""
        return {tag: self.popularity.top_n_for_tags([tag], self.settings.top_n) for tag in tags}

    @property
    def model_version(self) -> str:
        """Identifies the model snapshot that produced a list: run id and batch count."""
        return f"bpr-{self.run_id}-{self.batches}"


def _now_ms() -> int:
    return int(time.time() * 1000)
