"""Engagement aggregates per tumbling window of event time, and pipeline health.

Records are plain dicts, sent as JSON to ``<prefix>.metrics`` (schema in the README):

* ``type`` ``item`` / ``creator`` / ``tag``: views, likes, shares, unique users, like
  and share rates of one id in one window ``[window_start_ms, window_end_ms)`` of
  event time. A window is emitted once the wall clock passes its end plus a grace
  period. Events that arrive after their window was emitted are not dropped: they are
  emitted as a further record for the same window with ``revision`` 1, 2, ...
  (counts in revisions add up; ``unique_users`` is unique within one record).
* ``type`` ``health``: one per worker per window of wall-clock time (see
  :class:`HealthCounters`).

>>> from streams.events import Event
>>> windows = EngagementWindows(window_ms=10_000, grace_ms=0)
>>> windows.add([Event("e1", "u1", "i1", "view", 1_000, None, "c1", ("dance",)),
...              Event("e2", "u1", "i1", "like", 2_000, None, "c1", ("dance",))])
>>> [(r["type"], r["id"], r["views"], r["likes"], r["like_rate"]) for r in windows.close_due(now_ms=10_000)]
[('item', 'i1', 1, 1, 1.0), ('creator', 'c1', 1, 1, 1.0), ('tag', 'dance', 1, 1, 1.0)]
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from streams.events import Event

if TYPE_CHECKING:
    from streams.worker.online import OnlineCheck

__all__ = ["EngagementWindows", "HealthCounters", "HealthTotals", "BucketCounts", "percentiles_ms", "KIND_CODES",
           "FRESHNESS_BUCKETS_S", "BATCH_BUCKETS_S"]

#: Event kind -> the int8 code :meth:`EngagementWindows.add_columns` takes.
KIND_CODES = {"view": 0, "like": 1, "share": 2}

_EVENT_COLUMNS = attrgetter("ts", "kind", "user_id", "item_id", "creator_id", "tags")


class _Window:
    """One open window: interned keys plus per-batch code columns, aggregated at close.

    ``keys`` maps each distinct ``(item_id, creator_id, tags)`` to the row number of its
    first event, so insertion order (and code order) is order of first appearance.
    ``users`` maps each distinct user id to itself: ``id()`` of that kept string is the
    user's code, unique while the window lives. A batch appends three arrays (key code
    int64, user code int64, kind int8): 17 bytes per event.
    """

    __slots__ = ("start_ms", "revision", "keys", "users", "rows", "codes", "user_codes", "kinds")

    def __init__(self, start_ms: int, revision: int) -> None:
        self.start_ms = start_ms
        self.revision = revision
        self.keys: dict[tuple[str, str | None, tuple[str, ...]], int] = {}
        self.users: dict[str, str] = {}
        self.rows = 0
        self.codes: list[np.ndarray] = []
        self.user_codes: list[np.ndarray] = []
        self.kinds: list[np.ndarray] = []


class EngagementWindows:
    """Per-window counts of views, likes, shares and unique users per item, creator and tag.

    Adding costs a few dict operations per event (no per-id counter objects); the counting
    and the unique users are numpy work when a window closes. Memory of an open window:
    about 17 bytes per event plus its distinct ids (and ``(item, creator, tags)`` keys);
    a window is freed when it is emitted, so memory is bounded by the events of the open
    windows (event rate x (window + grace), plus late events' revision windows). At most
    10,000 emitted windows' revision numbers are remembered.
    """

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be > 0")
        self.window_ms = int(window_ms)
        self.grace_ms = int(grace_ms)
        self._open: dict[int, _Window] = {}
        self._revisions: dict[int, int] = {}  # window start -> records emitted so far
        self._closed: set[int] = set()  # window starts past their end + grace (bounded like _revisions)
        self.late_events = 0

    def add(self, events: Iterable[Event]) -> None:
        """Count ``events`` into their windows (see :meth:`add_columns`)."""
        rows = list(map(_EVENT_COLUMNS, events))
        if not rows:
            return
        ts, kinds, users, items, creators, tags = zip(*rows)
        codes = np.fromiter(map(KIND_CODES.__getitem__, kinds), np.int8, len(kinds))
        self.add_columns(np.array(ts, dtype=np.int64), codes, users, items, creators, tags)

    def add_columns(
        self,
        ts: np.ndarray,
        kinds: np.ndarray,
        users: Sequence[str],
        items: Sequence[str],
        creators: Sequence[str | None],
        tags: Sequence[tuple[str, ...]],
    ) -> None:
        """Count a batch given as columns: event time (int64 ms), kind codes (int8, :data:`KIND_CODES`),
        user, item and creator ids, and tag tuples.

        >>> w = EngagementWindows(window_ms=1_000, grace_ms=0)
        >>> w.add_columns(np.array([10, 20, 1_500]), np.array([0, 1, 0], dtype=np.int8),
        ...               ["u1", "u2", "u1"], ["i1", "i1", "i2"], ["c1", "c1", None], [("a",), ("a",), ()])
        >>> [(r["window_start_ms"], r["type"], r["id"], r["views"], r["likes"], r["unique_users"]) for r in w.close_all()]
        [(0, 'item', 'i1', 1, 1, 2), (0, 'creator', 'c1', 1, 1, 2), (0, 'tag', 'a', 1, 1, 2), (1000, 'item', 'i2', 1, 0, 1)]
        """
        n = len(users)
        ts = np.asarray(ts, dtype=np.int64)
        kinds = np.asarray(kinds, dtype=np.int8)
        if not (ts.shape == kinds.shape == (n,) and len(items) == len(creators) == len(tags) == n):
            raise ValueError("add_columns needs columns of one length")
        if n == 0:
            return
        if int(kinds.min()) < 0 or int(kinds.max()) > 2:
            raise ValueError("kind codes must be 0 (view), 1 (like) or 2 (share)")
        starts = ts - ts % self.window_ms
        first = int(starts[0])
        if int(starts.min()) == first == int(starts.max()):  # the common case: one window
            self._add_window(first, kinds, users, items, creators, tags)
            return
        values, first_rows = np.unique(starts, return_index=True)
        for start in values[np.argsort(first_rows)].tolist():
            rows = np.flatnonzero(starts == start)
            sel = rows.tolist()
            self._add_window(start, kinds[rows], [users[i] for i in sel], [items[i] for i in sel],
                             [creators[i] for i in sel], [tags[i] for i in sel])

    def _add_window(
        self,
        start: int,
        kinds: np.ndarray,
        users: Sequence[str],
        items: Sequence[str],
        creators: Sequence[str | None],
        tags: Sequence[tuple[str, ...]],
    ) -> None:
        window = self._open.get(start)
        if window is None:
            window = self._open[start] = _Window(start, self._revisions.get(start, 0))
        n = len(users)
        if start in self._closed:
            self.late_events += n
        keys = window.keys
        try:
            codes = np.fromiter(map(keys.setdefault, zip(items, creators, tags), count(window.rows)), np.int64, n)
        except TypeError:  # tags given as lists; keys already added got the same codes they get again
            tuples = [tuple(t) for t in tags]
            codes = np.fromiter(map(keys.setdefault, zip(items, creators, tuples), count(window.rows)), np.int64, n)
        canonical = window.users
        user_codes = np.fromiter(map(id, map(canonical.setdefault, users, users)), np.int64, n)
        window.rows += n
        window.codes.append(codes)
        window.user_codes.append(user_codes)
        window.kinds.append(kinds)

    def close_due(self, now_ms: int) -> list[dict[str, Any]]:
        """Records of every window whose end plus grace is at or before ``now_ms``."""
        due = [s for s in self._open if s + self.window_ms + self.grace_ms <= now_ms]
        return self._close(sorted(due))

    def close_all(self) -> list[dict[str, Any]]:
        """Records of every open window, all closed now (tests and benchmarks; the worker closes
        windows as they fall due, at its checkpoints)."""
        return self._close(sorted(self._open))

    def flush_partials(self) -> list[dict[str, Any]]:
        """Records of the counts gathered so far in every window, which stay open (revision + 1).

        The worker calls this at each checkpoint, before it acknowledges the offsets of
        the events counted: what a crash replays was never emitted, what was emitted is
        never replayed, so the counts of all revisions of a window add up exactly.

        >>> from streams.events import Event

if TYPE_CHECKING:
    from streams.worker.online import OnlineCheck
        >>> w = EngagementWindows(window_ms=10_000, grace_ms=0)
        >>> w.add([Event("e1", "u1", "i1", "view", 1_000)])
        >>> [(r["id"], r["views"], r["revision"]) for r in w.flush_partials()]
        [('i1', 1, 0)]
        >>> w.add([Event("e2", "u2", "i1", "view", 2_000)])
        >>> [(r["id"], r["views"], r["revision"]) for r in w.close_due(now_ms=10_000)]
        [('i1', 1, 1)]
        """
        return self._close(sorted(self._open), keep_open=True)

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def _close(self, starts: Sequence[int], keep_open: bool = False) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for start in starts:
            window = self._open.pop(start)
            if not keep_open:
                self._closed.add(start)
            if not window.rows:
                continue  # nothing counted since the last records of this window
            self._revisions[start] = window.revision + 1
            head = {"window_start_ms": start, "window_end_ms": start + self.window_ms, "revision": window.revision}
            _window_records(window, head, records)
            if keep_open:
                self._open[start] = _Window(start, window.revision + 1)
        # Remember revisions and closed windows for the last 10,000 windows: bounded memory.
        if len(self._revisions) > 10_000:
            for start in sorted(self._revisions)[:-10_000]:
                del self._revisions[start]
        if len(self._closed) > 10_000:
            self._closed = set(sorted(self._closed)[-10_000:])
        return records


def _unique_per_group(groups: np.ndarray, users: np.ndarray, n_users: int, n_groups: int) -> np.ndarray:
    """Distinct users per group, from (group, user) pairs with dense codes."""
    pairs = np.sort(groups * n_users + users)
    if pairs.size:
        pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
    return np.bincount(pairs // n_users, minlength=n_groups)


def _window_records(window: _Window, head: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Append the item, creator and tag records of one window, each in order of first appearance."""
    keys = window.keys
    n_keys = len(keys)
    key_codes = np.fromiter(keys.values(), np.int64, n_keys)  # ascending: codes are first row numbers
    key_of_row = np.searchsorted(key_codes, np.concatenate(window.codes))
    kinds = np.concatenate(window.kinds)
    _, user_of_row = np.unique(np.concatenate(window.user_codes), return_inverse=True)
    n_users = len(window.users)
    key_counts = np.bincount(key_of_row * 3 + kinds, minlength=3 * n_keys).reshape(n_keys, 3)
    # distinct (key, user) pairs
    pairs = np.sort(key_of_row * n_users + user_of_row.reshape(-1))
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
    pair_key, pair_user = np.divmod(pairs, n_users)

    items: dict[str, int] = {}
    creators: dict[str | None, int] = {}
    tag_index: dict[str, int] = {}
    item_meta: list[tuple[str | None, tuple[str, ...]]] = []
    item_list: list[int] = []
    creator_list: list[int] = []
    tag_of_entry: list[int] = []
    tag_lengths: list[int] = []
    for item, creator, tags in keys:
        index = items.setdefault(item, len(items))
        if index == len(item_meta):
            item_meta.append((creator, tags))
        item_list.append(index)
        creator_list.append(-1 if creator is None else creators.setdefault(creator, len(creators)))
        tag_lengths.append(len(tags))
        for tag in tags:
            tag_of_entry.append(tag_index.setdefault(tag, len(tag_index)))
    key_item = np.array(item_list, dtype=np.int64)
    key_creator = np.array(creator_list, dtype=np.int64)
    tags_per_key = np.array(tag_lengths, dtype=np.int64)

    # items
    if len(items) == n_keys:  # one key per item (the usual case): key k is item k
        item_counts = key_counts
        item_users = np.bincount(pair_key, minlength=n_keys)
    else:
        item_counts = np.zeros((len(items), 3), np.int64)
        np.add.at(item_counts, key_item, key_counts)
        item_users = _unique_per_group(key_item[pair_key], pair_user, n_users, len(items))
    # creators
    creator_counts = np.zeros((len(creators), 3), np.int64)
    has_creator = key_creator >= 0
    np.add.at(creator_counts, key_creator[has_creator], key_counts[has_creator])
    pair_creator = key_creator[pair_key]
    with_creator = pair_creator >= 0
    creator_users = _unique_per_group(pair_creator[with_creator], pair_user[with_creator], n_users, len(creators))
    # tags: one entry per (key, tag), expanded to one per (pair, tag)
    n_tags = len(tag_index)
    entry_tag = np.array(tag_of_entry, dtype=np.int64)
    entry_key = np.repeat(np.arange(n_keys), tags_per_key)
    tag_counts = np.zeros((n_tags, 3), np.int64)
    np.add.at(tag_counts, entry_tag, key_counts[entry_key])
    first_entry = np.cumsum(tags_per_key) - tags_per_key
    per_pair = tags_per_key[pair_key]
    pair_of = np.repeat(np.arange(pair_key.size), per_pair)
    offset = np.arange(pair_of.size) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    pair_tags = entry_tag[first_entry[pair_key[pair_of]] + offset] if pair_of.size else entry_tag[:0]
    tag_users = _unique_per_group(pair_tags, pair_user[pair_of], n_users, n_tags)

    for item, (creator, tags), row, unique in zip(items, item_meta, item_counts.tolist(), item_users.tolist()):
        record = _record("item", item, head, row, unique)
        record["creator_id"] = creator
        record["tags"] = list(tags)
        records.append(record)
    for scope, ids, counts, users in (("creator", creators, creator_counts, creator_users),
                                      ("tag", tag_index, tag_counts, tag_users)):
        for key, row, unique in zip(ids, counts.tolist(), users.tolist()):
            records.append(_record(scope, key, head, row, unique))


def _record(scope: str, key: str | None, head: dict[str, Any], counts: list[int], unique_users: int) -> dict[str, Any]:
    views, likes, shares = counts
    return {
        "type": scope,
        "id": key,
        **head,
        "views": views,
        "likes": likes,
        "shares": shares,
        "unique_users": unique_users,
        "like_rate": likes / views if views else None,
        "share_rate": shares / views if views else None,
    }


def percentiles_ms(samples: Sequence[np.ndarray], qs: Sequence[float] = (50, 99)) -> list[float | None]:
    """Percentiles of concatenated latency samples, rounded to 0.1 ms (None without samples)."""
    if not samples:
        return [None for _ in qs]
    values = np.concatenate(samples)
    if values.size == 0:
        return [None for _ in qs]
    return [round(float(v), 1) for v in np.percentile(values, qs)]


#: Upper bounds (seconds) of the freshness histogram: event ``ts`` to the Redis write of its user's list.
FRESHNESS_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Upper bounds (seconds) of the histogram of batch processing times.
BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BucketCounts:
    """A histogram of millisecond samples over fixed upper bounds in seconds, filled in bulk with numpy
    (one ``searchsorted`` per array, never a Python call per sample), read as Prometheus buckets.

    >>> h = BucketCounts((0.01, 0.1))
    >>> h.add_ms([np.array([5.0, 10.0, 50.0]), np.array([2_000.0])])
    >>> h.buckets(), h.count, round(h.sum_s, 3)
    ([(0.01, 2), (0.1, 3), (inf, 4)], 4, 2.065)
    """

    def __init__(self, bounds_s: Sequence[float]) -> None:
        self.bounds_s = tuple(float(b) for b in bounds_s)
        self._bounds_ms = np.asarray(self.bounds_s) * 1000.0
        self.counts = np.zeros(len(self.bounds_s) + 1, np.int64)  # per bucket, the last one above every bound
        self.sum_s = 0.0

    def add_ms(self, samples: Sequence[np.ndarray]) -> None:
        """Count every value (ms) of ``samples``; a value equal to a bound falls in that bound's bucket."""
        if not samples:
            return
        values = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples])
        if values.size:
            slots = np.searchsorted(self._bounds_ms, values, side="left")
            self.counts += np.bincount(slots, minlength=self.counts.size)
            self.sum_s += float(values.sum()) / 1000.0

    def copy(self) -> "BucketCounts":
        other = BucketCounts(self.bounds_s)
        other.counts = self.counts.copy()
        other.sum_s = self.sum_s
        return other

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, samples at or below it), the last bound ``inf``: Prometheus' ``le`` buckets."""
        return list(zip((*self.bounds_s, float("inf")), np.cumsum(self.counts).tolist()))


class GcPauses:
    """Time the worker spends in Python's cyclic garbage collector (every thread waits meanwhile).

    A callback for :data:`gc.callbacks`:

    >>> import gc
    >>> pauses = GcPauses()
    >>> gc.callbacks.append(pauses)
    >>> _ = gc.collect()
    >>> gc.callbacks.remove(pauses)
    >>> pauses.count, pauses.total_s > 0
    (1, True)
    """

    def __init__(self) -> None:
        self.total_s = self.max_s = 0.0
        self.count = 0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            pause = time.perf_counter() - self._started
            self.total_s += pause
            self.max_s = max(self.max_s, pause)
            self.count += 1
            self._started = None

    def reset(self) -> None:
        self.total_s = self.max_s = 0.0
        self.count = 0


#: HealthCounters' per-window counts that :meth:`HealthCounters.totals` also keeps since the start.
_COUNTED = ("events_processed", "events_dead_lettered", "duplicates_skipped", "replayed_skipped", "users_refreshed",
            "redis_errors", "state_quarantined", "batch_events")


@dataclass(frozen=True)
class HealthTotals:
    """What a worker counted since it started (the windows' counts added up): Prometheus counters.

    ``counts`` has the names of :data:`_COUNTED` plus ``batches``; ``freshness`` and ``batch_seconds``
    are histograms in seconds.
    """

    counts: dict[str, int]
    dead_letter_reasons: dict[str, int]
    freshness: BucketCounts
    batch_seconds: BucketCounts


@dataclass
class HealthCounters:
    """Pipeline health over one wall-clock window; :meth:`record` emits and resets it."""

    worker_id: str
    started_ms: int
    events_processed: int = 0
    events_dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    duplicates_skipped: int = 0
    replayed_skipped: int = 0  # redelivered records at or below a fence (already applied)
    users_refreshed: int = 0
    redis_errors: int = 0
    state_quarantined: int = 0  # corrupt user state records set aside (the user started afresh)
    freshness_samples: list[np.ndarray] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)  # processing time of each batch
    batch_events: int = 0  # messages of those batches
    stage_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds of the worker's thread, per stage
    stage_ms: dict[str, list[float]] = field(default_factory=dict)  # wall ms of each batch's stages
    broker_ms: list[np.ndarray] = field(default_factory=list)  # per event: from its ts to the worker's intake
    thread_cpu_s: float = field(default_factory=time.thread_time)  # the thread's CPU clock at the window's start
    gc: GcPauses = field(default_factory=GcPauses)  # counts only once registered in gc.callbacks (the worker does)
    # Since the start: the counts of the windows already recorded (see totals()), and the lock that keeps a
    # reader on another thread (the Prometheus endpoint) from seeing a window both recorded and not yet reset.
    _done: dict[str, int] = field(default_factory=dict, repr=False)
    _done_reasons: dict[str, int] = field(default_factory=dict, repr=False)
    _done_freshness: BucketCounts = field(default_factory=lambda: BucketCounts(FRESHNESS_BUCKETS_S), repr=False)
    _done_batch: BucketCounts = field(default_factory=lambda: BucketCounts(BATCH_BUCKETS_S), repr=False)
    _totals_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # Online quality (streams.worker.online): events checked against their user's cached list, hits, list ages
    online_checked: int = 0
    online_hits_10: int = 0
    online_hits_50: int = 0
    online_ages_ms: list[np.ndarray] = field(default_factory=list)

    def online(self, check: OnlineCheck) -> None:
        """Count one batch's check of its events against the cached lists."""
        if check.checked:
            self.online_checked += check.checked
            self.online_hits_10 += check.hits_short
            self.online_hits_50 += check.hits_long
            self.online_ages_ms.append(check.ages_ms)

    def latency(self, stage: str, seconds: float) -> None:
        """One batch spent ``seconds`` (wall clock) in ``stage`` (queue, learn, topn, redis)."""
        self.stage_ms.setdefault(stage, []).append(seconds * 1000.0)

    @contextmanager
    def cpu(self, stage: str) -> Iterator[None]:
        """Count the CPU time of the enclosed (synchronous) code as ``stage``'s."""
        started = time.thread_time()
        try:
            yield
        finally:
            self.stage_cpu_s[stage] = self.stage_cpu_s.get(stage, 0.0) + time.thread_time() - started

    def batch_done(self, messages: int, seconds: float) -> None:
        self.batch_ms.append(seconds * 1000.0)
        self.batch_events += messages

    def dead_lettered(self, reason: str) -> None:
        self.events_dead_lettered += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1

    def totals(self) -> HealthTotals:
        """Counts and histograms since the start: the recorded windows' plus the open one's.

        Safe to call from another thread: it copies under a lock that :meth:`record` holds while it
        adds a window to the totals and resets it; the counters on the hot path take no lock.

        >>> h = HealthCounters("w", started_ms=0)
        >>> h.events_processed, h.redis_errors = 5, 1
        >>> _ = h.record(now_ms=1_000)
        >>> h.events_processed = 2
        >>> h.dead_lettered("not_json")
        >>> t = h.totals()
        >>> t.counts["events_processed"], t.counts["redis_errors"], t.dead_letter_reasons
        (7, 1, {'not_json': 1})
        """
        with self._totals_lock:
            counts = {name: self._done.get(name, 0) + getattr(self, name) for name in _COUNTED}
            counts["batches"] = self._done.get("batches", 0) + len(self.batch_ms)
            reasons = dict(self._done_reasons)
            for reason, n in list(self.dead_letter_reasons.items()):
                reasons[reason] = reasons.get(reason, 0) + n
            freshness, open_freshness = self._done_freshness.copy(), list(self.freshness_samples)
            batch, open_batch = self._done_batch.copy(), list(self.batch_ms)
        freshness.add_ms(open_freshness)  # numpy work outside the lock: on copies
        batch.add_ms([np.asarray(open_batch)] if open_batch else [])
        return HealthTotals(counts, reasons, freshness, batch)

    def _latencies(self) -> dict[str, dict[str, float | None]]:
        """p50 / p99 ms of where an event's freshness goes: at the broker (its ts to the worker's intake,
        per event), queued in the intake, then per batch learning, ranking (top-N) and the Redis write."""
        out = {}
        for stage, samples in (("broker", self.broker_ms), *((s, [np.asarray(v)]) for s, v in self.stage_ms.items())):
            p50, p99 = percentiles_ms(samples)
            if p50 is not None:
                out[stage] = {"p50": p50, "p99": p99}
        return out

    def record(self, now_ms: int, **extra: Any) -> dict[str, Any]:
        p50, p99 = percentiles_ms(self.freshness_samples)
        thread_cpu = time.thread_time()
        busy = thread_cpu - self.thread_cpu_s
        per_event = 1e6 / self.events_processed if self.events_processed else None
        stages = {stage: round(seconds * per_event, 2) for stage, seconds in sorted(self.stage_cpu_s.items())} \
            if per_event else {}
        if per_event:
            stages["other"] = round((busy - sum(self.stage_cpu_s.values())) * per_event, 2)
        batch_p50, batch_p99 = percentiles_ms([np.asarray(self.batch_ms)] if self.batch_ms else [])
        elapsed_s = max((now_ms - self.started_ms) / 1000.0, 1e-3)
        checked = self.online_checked
        record = {
            "type": "health",
            "worker_id": self.worker_id,
            "window_start_ms": self.started_ms,
            "window_end_ms": now_ms,
            "events_processed": self.events_processed,
            "events_dead_lettered": self.events_dead_lettered,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "duplicates_skipped": self.duplicates_skipped,
            "replayed_skipped": self.replayed_skipped,
            "events_per_s": round(self.events_processed / elapsed_s, 1),
            "users_refreshed": self.users_refreshed,
            "redis_errors": self.redis_errors,
            "state_quarantined": self.state_quarantined,
            "freshness_p50_ms": p50,
            "freshness_p99_ms": p99,
            "freshness_samples": int(sum(s.size for s in self.freshness_samples)),
            "batches": len(self.batch_ms),
            "batch_messages_mean": round(self.batch_events / len(self.batch_ms), 1) if self.batch_ms else None,
            "batch_p50_ms": batch_p50,
            "batch_p99_ms": batch_p99,
            "worker_cpu_pct": round(100.0 * busy / elapsed_s, 1),
            "latency_ms": self._latencies(),
            "cpu_us_per_event": stages,
            "gc_ms": round(self.gc.total_s * 1000.0, 1),
            "gc_pause_max_ms": round(self.gc.max_s * 1000.0, 1),
            "gc_collections": self.gc.count,
            "online_checked": checked,
            "online_hit_at_10": round(self.online_hits_10 / checked, 4) if checked else None,
            "online_hit_at_50": round(self.online_hits_50 / checked, 4) if checked else None,
            "online_list_age_ms_p50": percentiles_ms(self.online_ages_ms, (50,))[0],
            **extra,
        }
        with self._totals_lock:
            self._add_to_totals()
            self.events_processed = self.events_dead_lettered = self.duplicates_skipped = self.replayed_skipped = 0
            self.users_refreshed = self.redis_errors = self.state_quarantined = 0
            self.dead_letter_reasons = {}
            self.freshness_samples = []
            self.batch_ms = []
            self.batch_events = 0
        self.started_ms = now_ms
        self.stage_cpu_s = {}
        self.thread_cpu_s = thread_cpu
        self.stage_ms = {}
        self.broker_ms = []
        self.gc.reset()
        self.online_checked = self.online_hits_10 = self.online_hits_50 = 0
        self.online_ages_ms = []
        return record

    def _add_to_totals(self) -> None:
        done = self._done
        for name in _COUNTED:
            done[name] = done.get(name, 0) + getattr(self, name)
        done["batches"] = done.get("batches", 0) + len(self.batch_ms)
        for reason, n in self.dead_letter_reasons.items():
            self._done_reasons[reason] = self._done_reasons.get(reason, 0) + n
        self._done_freshness.add_ms(self.freshness_samples)
        self._done_batch.add_ms([np.asarray(self.batch_ms)] if self.batch_ms else [])
