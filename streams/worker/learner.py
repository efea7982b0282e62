"""The processing core, free of Faust: decode a batch, learn from it, say what to refresh.

The service (:mod:`streams.worker.service`) hands each batch of raw Kafka messages to
:meth:`Learner.process`, routes the dead letters, writes the refreshed lists to Redis and
the checkpoints to the changelog tables. Everything here is unit-tested without a broker.

>>> from streams.settings import Settings, load_model_class
>>> from streams.state.store import MemoryStateStore
>>> learner = Learner(Settings(n_factors=8), MemoryStateStore())
>>> msg = RawMessage(b"u1", b'{"event_id":"e1","user_id":"u1","item_id":"i1","kind":"view","ts":1000}', "t", 0, 0)
>>> bad = RawMessage(b"u1", b"not json", "t", 0, 1)
>>> outcome = learner.process([msg, bad])
>>> len(outcome.events), [d.reason for d in outcome.dead_letters], sorted(outcome.dirty_users)
(1, ['not_json'], ['u1'])
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Protocol, Sequence

import numpy as np
import orjson

from models import Popularity, event_weights
from streams.events import Event, InvalidEvent, decode_batch, decode_event, is_batch, kafka_partition, validate_event
from streams.settings import Settings, load_model_class
from streams.state.codecs import StateCorrupt, decode_user, encode_users
from streams.state.store import StateStore
from streams.worker.exchange import ItemExchange
from streams.worker.metrics import KIND_CODES, EngagementWindows, HealthCounters
from streams.worker.online import HIT_LONG, CachedLists

if TYPE_CHECKING:
    from models.base import WorkerModel

__all__ = ["Learner", "RawMessage", "MessageLike", "DeadLetter", "BatchOutcome", "EventIdWindow"]

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
    headers: Sequence[tuple[str, bytes]] = ()


class MessageLike(Protocol):
    """What :meth:`Learner.process` reads of a message: a :class:`RawMessage` or an aiokafka record."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes]]


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be applied, with why."""

    message: MessageLike
    reason: str
    detail: str
    batch_index: int | None = None  # the event's position in a batch message
    value: bytes | None = None  # that event alone, as JSON (batch messages only)

    @property
    def key(self) -> bytes | None:
        return self.message.key

    def copy_value(self) -> bytes | None:
        """The dead-letter copy's value: the original bytes (or the one bad event of a batch)."""
        return self.message.value if self.batch_index is None else self.value

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter copy (its key and value are the original bytes)."""
        m = self.message
        headers = [
            ("streamrec.reason", self.reason.encode()),
            ("streamrec.error", self.detail.encode("utf-8", "replace")[:1000]),
            ("streamrec.source.topic", m.topic.encode()),
            ("streamrec.source.partition", str(m.partition).encode()),
            ("streamrec.source.offset", str(m.offset).encode()),
            ("streamrec.dead_lettered_ms", str(int(time.time() * 1000)).encode()),
        ]
        if self.batch_index is not None:
            headers.append(("streamrec.source.batch_index", str(self.batch_index).encode()))
        return headers


@dataclass
class BatchOutcome:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    dirty_users: set[str] = field(default_factory=set)
    ts_ms: np.ndarray | None = None  # event times of ``events`` (int64), once learned


class _Columns(NamedTuple):
    """A batch of events as columns (the fields of :class:`~streams.events.Event`)."""

    event_ids: tuple[str, ...]
    users: tuple[str, ...]
    items: tuple[str, ...]
    kinds: tuple[str, ...]
    ts: tuple[int, ...]
    watch: tuple[int | None, ...]
    creators: tuple[str | None, ...]
    tags: tuple[tuple[str, ...], ...]


class EventIdWindow:
    """Remembers the last ``capacity`` event ids, so redelivered events are applied once.

    >>> seen = EventIdWindow(capacity=2)
    >>> [seen.check_and_add(e) for e in ("a", "b", "a", "c", "a")]
    [False, False, True, False, False]
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def check_and_add(self, event_id: str) -> bool:
        """True if ``event_id`` was seen within the window (a duplicate), else remember it."""
        if event_id in self._ids:
            return True
        self.add_many((event_id,))
        return False

    def add_many(self, event_ids: Iterable[str]) -> None:
        """Remember ``event_ids`` (the most recent ``capacity`` ids are kept)."""
        ids = self._ids
        ids.update(dict.fromkeys(event_ids))
        while len(ids) > self.capacity:
            ids.popitem(last=False)


class Learner:
    """Learning, history and aggregation state of one worker."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        #: The model ``settings.model`` names (default :class:`models.BPRMF`).
        self.model: WorkerModel = load_model_class(settings.model)(
            n_factors=settings.n_factors,
            learning_rate=settings.learning_rate,
            regularization=settings.regularization,
            n_negatives=settings.n_negatives,
            init_std=settings.init_std,
            seed=settings.seed,
            covisit_weight=settings.session_covisit_weight,
            session_tag_weight=settings.session_tag_weight,
            session_boost=settings.session_boost,
            track_item_deltas=True,
        )
        self.popularity = Popularity(half_life_s=settings.popular_half_life_s, track_deltas=True)
        self.history: dict[str, dict[str, None]] = {}  # engaged items per user, oldest first
        self.item_meta: dict[str, tuple[str | None, tuple[str, ...]]] = {}
        self.windows = EngagementWindows(
            window_ms=int(settings.metrics_window_s * 1000), grace_ms=int(settings.metrics_grace_s * 1000)
        )
        self.health = HealthCounters(worker_id=settings.effective_worker_id, started_ms=_now_ms())
        self.seen_event_ids = EventIdWindow()
        #: The lists last written for each user, which its next events are checked against (online quality).
        self.cached_lists = CachedLists(depth=min(HIT_LONG, settings.top_n))
        self.run_id = format(_now_ms(), "x") + secrets.token_hex(2)  # unique per worker incarnation
        #: The item side of the model, shared with the other workers (see :mod:`streams.worker.exchange`).
        self.exchange = ItemExchange(self.model, self.popularity, self.item_meta, partitions=settings.item_partitions,
                                     origin=f"{settings.effective_worker_id}/{self.run_id}")
        self.batches = 0
        self.events_total = 0

    # --- the batch path ------------------------------------------------------------------
    def process(self, messages: Iterable[MessageLike]) -> BatchOutcome:
        """Validate, deduplicate and learn one batch; nothing in it is dropped silently.

        All or nothing for what is counted: if learning raises, no history, window count,
        health counter or seen event id has changed (the model's factors may have moved:
        they are approximate anyway), and the caller dead-letters the whole batch, which
        can then be replayed as it is.
        """
        outcome = BatchOutcome()
        events = outcome.events
        dead = outcome.dead_letters
        is_duplicate = self._duplicate_check()
        horizon = self._horizon_ms()
        covers: dict[int, int] = {}  # events partition -> last offset of this batch
        moves_items: list[bool] = []  # per event: its item side is not in the item log yet
        items_published = self.exchange.items_published
        with self.health.cpu("decode"):
            duplicates = self._decode(messages, outcome, is_duplicate, horizon, covers, moves_items, items_published)
        outcome.duplicates = duplicates
        if events:
            self._learn(events, outcome, moves_items, covers)
        self.seen_event_ids.add_many([event.event_id for event in events])
        health = self.health
        health.duplicates_skipped += duplicates
        for letter in dead:
            health.dead_lettered(letter.reason)
        return outcome

    def _decode(
        self, messages: Iterable[MessageLike], outcome: BatchOutcome, is_duplicate: Callable[[str], bool],
        horizon: int, covers: dict[int, int], moves_items: list[bool], items_published: Callable[[int], int],
    ) -> int:
        """Validate the messages into ``outcome`` (events, dead letters); returns the duplicates skipped."""
        events, dead = outcome.events, outcome.dead_letters
        max_bytes = self.settings.max_message_bytes
        duplicates = 0
        for message in messages:
            partition, offset = message.partition, message.offset
            if offset > covers.get(partition, -1):
                covers[partition] = offset
            fresh = offset > items_published(partition)
            before = len(events)
            if message.headers and is_batch(message.headers):
                duplicates += self._process_batch_message(message, outcome, horizon, is_duplicate)
                moves_items.extend([fresh] * (len(events) - before))
                continue
            try:
                event = decode_event(message.key, message.value, max_bytes)
                if event.ts > horizon:
                    raise _future(event, horizon)
            except InvalidEvent as exc:
                dead.append(DeadLetter(message, exc.reason, exc.detail))
                continue
            if is_duplicate(event.event_id):
                duplicates += 1
            else:
                events.append(event)
                moves_items.append(fresh)
        return duplicates

    def _duplicate_check(self) -> Callable[[str], bool]:
        """``is_duplicate(event_id)`` for one batch: seen before, or earlier in the batch (nothing is marked
        seen until the batch is applied)."""
        seen, in_batch = self.seen_event_ids, set()

        def is_duplicate(event_id: str) -> bool:
            if event_id in in_batch or event_id in seen:
                return True
            in_batch.add(event_id)
            return False

        return is_duplicate

    def _horizon_ms(self) -> int:
        """Latest acceptable event time: the clock plus the allowed skew (late events are all kept)."""
        return _now_ms() + int(self.settings.max_clock_skew_s * 1000)

    def _process_batch_message(
        self, message: MessageLike, outcome: BatchOutcome, horizon: int, is_duplicate: Callable[[str], bool]
    ) -> int:
        """The events of one batch message; returns how many were duplicates."""
        try:
            items = decode_batch(message.value, self.settings.max_batch_bytes)
        except InvalidEvent as exc:
            outcome.dead_letters.append(DeadLetter(message, exc.reason, exc.detail))
            return 0
        partition, partitions = message.partition, self.settings.partitions
        duplicates = 0
        for index, item in enumerate(items):
            try:
                event = validate_event(item)
                user_partition = kafka_partition(event.user_id.encode(), partitions)
                if event.ts > horizon:
                    raise _future(event, horizon)
                if user_partition != partition:
                    raise InvalidEvent(
                        "wrong_partition",
                        f"user {event.user_id[:40]!r} belongs to partition {user_partition}, "
                        f"the batch was sent to {partition}",
                    )
            except InvalidEvent as exc:
                outcome.dead_letters.append(DeadLetter(message, exc.reason, exc.detail, index, _dumps_loose(item)))
                continue
            if is_duplicate(event.event_id):
                duplicates += 1
            else:
                outcome.events.append(event)
        return duplicates

    def _learn(self, events: list[Event], outcome: BatchOutcome, moves_items: list[bool],
               covers: dict[int, int]) -> None:
        """Learn ``events``, then count them; those of ``moves_items`` False only move their users (their item
        side reached the item log before: a crashed owner learned them after its last checkpoint, see
        :meth:`~streams.worker.exchange.ItemExchange.items_published`)."""
        # One pass to columns (an Event is a tuple: zip(*events) transposes in C).
        columns = _Columns(*zip(*events))
        ts = np.array(columns.ts, dtype=np.int64)
        with self.health.cpu("online"):  # before learning: the lists as the users were served them
            check = self.cached_lists.check(columns.users, columns.items, ts, item_index=self.model.item_index)
        with self.health.cpu("learn"):
            self._learn_columns(columns, ts, moves_items)
        with self.health.cpu("count"):
            self._count(columns, ts, outcome, covers)
        self.health.online(check)

    def _learn_columns(self, c: _Columns, ts: np.ndarray, moves_items: list[bool]) -> None:
        """The model and popularity learn (``ts``: the event times, int64 ms)."""
        self._hydrate(set(c.users))
        weights = event_weights(
            c.kinds,
            np.array([-1 if w is None else w for w in c.watch], dtype=np.float64),
            kind_weights=self.settings.kind_weights,
            watch_time_weight=self.settings.watch_time_weight,
            watch_time_ref_ms=self.settings.watch_time_ref_ms,
        )
        # New items first (tagged ones start from their tags): their starting point goes to the other workers.
        self.exchange.note_new_items(self.model.add_items(c.items, c.tags))
        moves = None if all(moves_items) else np.array(moves_items)
        self.model.learn_batch(c.users, c.items, weights, item_tags=c.tags, update_items=moves)
        self.popularity.learn_batch(c.users, c.items, weights if moves is None else weights * moves, ts_ms=ts,
                                    item_tags=c.tags)

    def _count(self, c: _Columns, ts: np.ndarray, outcome: BatchOutcome, covers: dict[int, int]) -> None:
        """Windows, histories, item meta and counters (the window counts validate before they change)."""
        self.windows.add_columns(ts, np.array([KIND_CODES[k] for k in c.kinds], np.int8), c.users, c.items,
                                 c.creators, c.tags)
        # Only plain dict updates from here on: nothing below fails halfway.
        self.exchange.note_learned(_now_ms(), covers)
        max_history = self.settings.max_history
        histories, item_meta, note_meta = self.history, self.item_meta, self.exchange.note_meta
        for user_id, item_id, creator_id, item_tags in zip(c.users, c.items, c.creators, c.tags):
            history = histories.get(user_id)
            if history is None:
                history = histories[user_id] = {}
            elif item_id in history:
                del history[item_id]  # re-inserted below: most recent last
            history[item_id] = None
            if len(history) > max_history:
                del history[next(iter(history))]
            if creator_id is not None or item_tags:
                meta = (creator_id, item_tags)
                if item_meta.get(item_id) != meta:
                    item_meta[item_id] = meta
                    note_meta(item_id, creator_id, item_tags)
        n = len(c.users)
        outcome.ts_ms = ts
        outcome.dirty_users.update(c.users)
        self.batches += 1
        self.events_total += n
        self.health.events_processed += n

    def _hydrate(self, users: Iterable[str]) -> None:
        """Load the checkpointed state of users this worker has not seen since it started (or since they
        came back with a rebalance): the factor vector, the history and, from the history's last items,
        the session (the user's recent events, each with weight 1). A corrupt state record is quarantined:
        logged, counted, the user starts afresh."""
        restored: list[str] = []
        vectors: list[np.ndarray] = []
        for user_id in users:
            if user_id not in self.history:  # new here, or forgotten at a rebalance
                blob = self.store.get_user(user_id)
                if blob is None:
                    continue
                try:
                    vector, history = decode_user(blob)
                    if vector.shape != (self.model.n_factors,):
                        raise StateCorrupt(f"user state has {vector.shape[0]} factors, the model {self.model.n_factors}")
                except StateCorrupt as exc:
                    self.health.state_quarantined += 1
                    logger.warning("quarantined the state of user %r (%s): the user starts afresh", user_id[:80], exc)
                    continue
                self.history[user_id] = dict.fromkeys(history)
                restored.append(user_id)
                vectors.append(vector)
        if restored:
            self.model.set_user_vectors(restored, np.stack(vectors))
            self.model.restore_sessions(restored, [list(self.history[u]) for u in restored])

    def forget_partitions(self, partitions: set[int]) -> int:
        """Forget the history of users of ``partitions`` (revoked): if they come back, :meth:`_hydrate`
        reads their state again from the store, as their last owner left it. Returns how many."""
        if not partitions:
            return 0
        n = self.settings.partitions
        gone = [u for u in self.history if kafka_partition(u.encode(), n) in partitions]
        for user_id in gone:
            del self.history[user_id]
        self.cached_lists.forget([u for u in self.cached_lists.users() if kafka_partition(u.encode(), n) in partitions])
        return len(gone)

    # --- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, users: Sequence[str]) -> None:
        """Hand the current state of ``users`` to the store (``store.flush()`` makes it durable).

        Items are not checkpointed here: the item exchange snapshots them (:mod:`streams.worker.item_log`)."""
        if users:
            with self.health.cpu("checkpoint"):
                vectors = self.model.user_vectors(users)
                self.store.put_users(dict(zip(users, encode_users(vectors, [self.history[u] for u in users]))))

    # --- recommendations -----------------------------------------------------------------
    def recommendations(self, users: Sequence[str]) -> dict[str, Recs]:
        """Top-N of each user from the current factors, excluding what they engaged with."""
        known, items, scores = self.recommendation_lists(users)
        return {user: list(zip(i, s)) for user, i, s in zip(known, items, scores)}

    def recommendation_lists(
        self, users: Sequence[str]
    ) -> tuple[list[str], list[list[str]], list[list[float]] | np.ndarray]:
        """The known ones of ``users`` with their top-N item ids and scores: one array when every list is
        full, else lists (the forms the writer takes)."""
        with self.health.cpu("topn"):
            known = [u for u in users if self.model.has_user(u)]
            if not known:
                return [], [], []
            history = self.history
            items, matrix = self.model.top_n_matrix(known, self.settings.top_n, [history.get(u, ()) for u in known])
            if matrix.size and not np.isfinite(matrix[:, -1]).all():  # someone has fewer items left
                return known, items, [row[: len(ids)] for row, ids in zip(matrix.tolist(), items)]
        return known, items, matrix

    def lists_written(self, users: Sequence[str], items: Sequence[Sequence[str]], written_ms: int) -> None:
        """Remember the lists just written for ``users`` (item ids, best first): their next events are
        checked against them (see :mod:`streams.worker.online`)."""
        n = len(users)
        if not n:
            return
        with self.health.cpu("online"):
            depth = self.cached_lists.depth
            lengths = np.fromiter(map(len, items), np.int64, n)
            width = int(lengths.max())
            if width > depth:
                items, lengths, width = [row[:depth] for row in items], np.minimum(lengths, depth), depth
            flat = self.model.item_index(list(chain.from_iterable(items)))
            if flat.size == n * width:  # every list full: one reshape
                matrix = flat.reshape(n, width)
            else:
                matrix = np.full((n, width), -1, np.int64)
                matrix[np.arange(width) < lengths[:, None]] = flat
            self.cached_lists.remember(users, matrix, written_ms)

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


def _future(event: Event, horizon: int) -> InvalidEvent:
    return InvalidEvent("future_ts", f"ts {event.ts} is {event.ts - horizon} ms past the allowed clock skew")


def _dumps_loose(item: Any) -> bytes:
    """JSON of a decoded batch item, for its dead-letter copy (never raises)."""
    try:
        return orjson.dumps(item)
    except TypeError:
        return repr(item).encode("utf-8", "replace")
