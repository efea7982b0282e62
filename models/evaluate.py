r"""Prequential (test-then-train) evaluation: one loop, the same for every model.

Events are replayed in time order. Each event is first a test of the model as it is, then a
lesson: if the user has engaged something before and the item has been seen before, all
known items except the user's past ones are ranked for the user and the event's item is the
single held-out answer; then the model learns the event. The ranking, history and weighting
are the same whatever the model, so the numbers of different models are comparable.

With :math:`r` the 0-based rank of the held-out item over :math:`E` evaluated events:

.. math::

    \mathrm{HR@10} = \tfrac{1}{E}\sum [r < 10], \qquad
    \mathrm{NDCG@10} = \tfrac{1}{E}\sum \frac{[r < 10]}{\log_2(r + 2)}, \qquad
    \mathrm{recall@20} = \tfrac{1}{E}\sum [r < 20]

(with one relevant item, recall@20 is HR@20).

Set-based figures, for comparison with papers that report them: each evaluated event's
held-out set is its one item, so per event precision@10 is hits / 10 and recall@10 is the
hit itself, and F1@10 is their harmonic mean (2/11 for a hit, else 0):

.. math::

    \mathrm{precision@10} = \tfrac{1}{E}\sum \frac{[r < 10]}{10}, \qquad
    \mathrm{recall@10} = \mathrm{HR@10}, \qquad
    \mathrm{F1@10} = \tfrac{1}{E}\sum \frac{2 \cdot \frac{[r < 10]}{10} \cdot [r < 10]}
        {\frac{[r < 10]}{10} + [r < 10]} = \tfrac{2}{11}\,\mathrm{HR@10}

(0/0 counts as 0; with one held-out item per event, precision@10 is at most 0.1).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .base import Recommender, event_weights
from .datasets import EventStream
from .errors import InvalidInputError, UnknownIdError

__all__ = ["IncrementalRecallResult", "PrequentialResult", "ProgressCallback", "ScoresAllItems", "incremental_recall", "prequential"]

#: ``progress(events_done, events_total)``, called after learning (at most ~200 times per run).
ProgressCallback = Callable[[int, int], None]

_HR_AT = 10
_RECALL_AT = 20


@runtime_checkable
class ScoresAllItems(Protocol):
    """A model whose ``score(user)`` covers every known item, in the order of ``item_ids``.

    Item ids must keep their index once assigned (new ones are appended), as
    :class:`~models.IdMap` guarantees. Such models are ranked by the evaluator itself with
    numpy, instead of one :meth:`~models.Recommender.top_n` call per event.
    """

    @property
    def n_items(self) -> int: ...

    @property
    def item_ids(self) -> list[str]: ...

    def score(self, user: str, items: Sequence[str] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class PrequentialResult:
    """Outcome of :func:`prequential`.

    Attributes
    ----------
    model
        Name of the model.
    events
        Events replayed (all were learned).
    evaluated
        Events used as tests: the user had history, the item had been seen and the user had
        not engaged it before (all three as of the model the test ran against).
    hr_at_10, ndcg_at_10, recall_at_20
        Mean metrics over the evaluated events (0 when none was evaluated).
    precision_at_10, recall_at_10, f1_at_10
        The set-based figures of the module docstring, over the same events: HR@10 / 10,
        HR@10, and 2/11 HR@10.
    learn_events_per_s
        Events learned per second spent inside the model's learn calls.
    seconds
        Wall time of the whole run, scoring and bookkeeping included.
    batch_size
        Events per learn call (1: ``learn_one``, else ``learn_batch``).
    unit_weights
        Whether every event was learned with weight 1 (else by kind).
    repeats
        Events skipped as tests because the user had already engaged the item.
    learn_seconds, score_seconds
        Time inside the learn calls, and spent testing (scoring and ranking).
    segments
        HR@10 split two ways, ``{"history": {bucket: {"evaluated", "hr_at_10"}}, "item_age": {...}}``:
        by the event's number among the user's distinct items (``"1"`` the first, ``"2-5"``,
        ``"6-20"``, ``"21-100"``, ``">100"``) and by the item's age at the event, its time since
        its first event in the stream (``"<1h"``, ``"1h-1d"``, ``"1d-7d"``, ``">7d"``). First
        events are not in the headline figures (there is no history to learn from); they are
        tested here, against every seen item, by models that rank users they have never seen
        (:class:`~models.Popularity`); for the others the bucket stays empty (the worker serves
        such users the popular lists). ``hr_at_10`` is ``None`` for an empty bucket.
    """

    model: str
    events: int
    evaluated: int
    hr_at_10: float
    ndcg_at_10: float
    recall_at_20: float
    learn_events_per_s: float
    seconds: float
    precision_at_10: float = 0.0
    recall_at_10: float = 0.0
    f1_at_10: float = 0.0
    batch_size: int = 1
    unit_weights: bool = False
    repeats: int = 0
    learn_seconds: float = 0.0
    score_seconds: float = 0.0
    segments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


#: Upper bounds (inclusive) and names of the history buckets: the event's number among the user's items.
HISTORY_BUCKETS: tuple[tuple[float, str], ...] = ((1, "1"), (5, "2-5"), (20, "6-20"), (100, "21-100"), (math.inf, ">100"))
#: Upper bounds (exclusive, ms) and names of the item-age buckets: time since the item's first event.
ITEM_AGE_BUCKETS: tuple[tuple[float, str], ...] = (
    (3_600_000, "<1h"), (86_400_000, "1h-1d"), (7 * 86_400_000, "1d-7d"), (math.inf, ">7d"),
)


def _bucket(value: float, buckets: tuple[tuple[float, str], ...], inclusive: bool) -> str:
    return next(name for bound, name in buckets if (value <= bound if inclusive else value < bound))


class _Segments:
    """Hits and tests per bucket, for :attr:`PrequentialResult.segments`."""

    def __init__(self) -> None:
        self.tests = {"history": dict.fromkeys((n for _, n in HISTORY_BUCKETS), 0),
                      "item_age": dict.fromkeys((n for _, n in ITEM_AGE_BUCKETS), 0)}
        self.hits = {split: dict.fromkeys(counts, 0) for split, counts in self.tests.items()}

    def add(self, history: int, age_ms: float, hit: bool, *, headline: bool = True) -> None:
        """One test: the event is the user's ``history``-th item; the item is ``age_ms`` old."""
        keys = [("history", _bucket(history, HISTORY_BUCKETS, True))]
        if headline:  # item-age buckets split the headline figure only
            keys.append(("item_age", _bucket(age_ms, ITEM_AGE_BUCKETS, False)))
        for split, key in keys:
            self.tests[split][key] += 1
            self.hits[split][key] += hit

    def result(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {split: {key: {"evaluated": n, "hr_at_10": self.hits[split][key] / n if n else None}
                        for key, n in counts.items()}
                for split, counts in self.tests.items()}


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean of ``precision`` and ``recall`` (0 when both are 0).

    With one held-out item per event every hit has the same F1 (2/11 at 10), so the mean of the
    per-event F1s equals the F1 of the mean precision and recall computed here.
    """
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _accepts(method: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


class _ItemIndex:
    """Position of each item in a :class:`ScoresAllItems` model's ``score`` vector."""

    def __init__(self, model: ScoresAllItems) -> None:
        self.model = model
        self.pos: dict[str, int] = {}

    def sync(self) -> None:
        """Append the ids the model added since the last call (ids never move)."""
        n = self.model.n_items
        if n != len(self.pos):
            ids = self.model.item_ids
            for j in range(len(self.pos), n):
                self.pos[ids[j]] = j

    def position(self, item: str) -> int:
        try:
            return self.pos[item]
        except KeyError:
            raise InvalidInputError(
                f"{type(self.model).__name__} learned item {item!r} but it is not in item_ids: use fast=False"
            ) from None


def prequential(
    model: Recommender,
    stream: EventStream,
    *,
    name: str | None = None,
    batch_size: int = 1,
    progress: ProgressCallback | None = None,
    fast: bool | None = None,
    unit_weights: bool = False,
) -> PrequentialResult:
    """Replay ``stream`` through ``model``: test on each event, then learn it.

    Parameters
    ----------
    model
        A fresh model speaking :class:`~models.Recommender`. Learning weights are
        :func:`~models.event_weights` of the kinds and watch times with the default
        weighting (view 1, like 3, share 5, watch time ignored); timestamps are passed as
        ``ts_ms=`` when the learn method accepts it (:class:`~models.Popularity`).
    stream
        Events in time order (:mod:`models.datasets`).
    name
        Name in the result (default: the model's class name).
    batch_size
        1 (default): test then ``learn_one`` each event. ``B > 1``: the events of each
        consecutive block of ``B`` are all tested against the model as it was before the
        block, then learned with one ``learn_batch`` call, as the streaming worker does.
        History, seen items and exclusions are those before the block too.
    progress
        Called as ``progress(events_done, len(stream))`` now and then, and at the end.
    fast
        Rank with numpy from ``score(user)`` (``True``) or with ``top_n(user, 20,
        exclude=history)`` (``False``). Default: fast when the model is
        :class:`ScoresAllItems`. Both give the same ranks except for exact score ties at
        the cut-off, where the fast path always puts the lower item index first.
    unit_weights
        Learn every event with weight 1, whatever its kind: plain implicit feedback, the
        setting of the plain per-event BPR reference figure in BENCHMARKS.md.

    Returns
    -------
    PrequentialResult

    Notes
    -----
    An event whose item the user engaged before (a like after a view, a re-watch) is learned
    but not tested, since it is not a discovery; it is counted in ``repeats``.

    Examples
    --------
    Four taste groups of 25 users, each engaging its own 25 items: matrix factorisation
    finds the groups, popularity cannot.

    >>> import numpy as np
    >>> from models import BPRMF, Popularity
    >>> rng = np.random.default_rng(0)
    >>> u = rng.integers(0, 100, 3000)
    >>> items = [f"i{x % 4}-{y}" for x, y in zip(u, rng.integers(0, 25, 3000))]
    >>> stream = EventStream.from_pairs([f"u{x}" for x in u], items)
    >>> bpr = prequential(BPRMF(n_factors=8, seed=0), stream)
    >>> pop = prequential(Popularity(), stream)
    >>> bpr.events, bpr.evaluated == pop.evaluated, bpr.evaluated + bpr.repeats < bpr.events
    (3000, True, True)
    >>> bpr.hr_at_10 > 0.4 > 0.2 > pop.hr_at_10
    True
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if fast is None:
        fast = isinstance(model, ScoresAllItems)
    elif fast and not isinstance(model, ScoresAllItems):
        raise InvalidInputError(f"{type(model).__name__} has no item_ids / n_items: use fast=False")
    index = _ItemIndex(model) if fast and isinstance(model, ScoresAllItems) else None  # fast: checked just above
    users, items, n = stream.users, stream.items, len(stream)
    weights = np.ones(n) if unit_weights else event_weights(stream.kinds, stream.watch_ms).astype(np.float64)
    ts = stream.ts_ms.astype(np.float64)
    learn = model.learn_one if batch_size == 1 else model.learn_batch
    with_ts = _accepts(learn, "ts_ms")
    # Item tags (content features for cold start) go to models that take them.
    tag_arg = "tags" if batch_size == 1 else "item_tags"
    extra: dict[str, Any] = {}
    with_tags = stream.tags is not None and _accepts(learn, tag_arg)

    history: dict[str, set[str]] = {}
    history_pos: dict[str, list[int]] = {}  # the same, as positions in the score vector (fast path)
    seen: set[str] = set()
    first_ts: dict[str, float] = {}  # each item's first event time
    segments = _Segments()
    cold_ok = True  # the model ranks users it has never seen (until it raises UnknownIdError once)
    evaluated = repeats = hits = recalled = 0
    ndcg = learn_s = score_s = 0.0
    report_every = max(1, n // 200)
    reported = 0
    started = time.perf_counter()
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        # 1) test every event of the block against the model as it is
        t0 = time.perf_counter()
        masked: dict[str, np.ndarray] = {}  # per user: scores with history masked (valid within this block)
        for e in range(lo, hi):
            user, item = users[e], items[e]
            past = history.get(user)
            if item not in seen:
                continue
            if not past:
                if cold_ok:  # a first event: tested for the history split only
                    try:
                        if index is not None:
                            cold = np.asarray(model.score(user), dtype=np.float64)
                            j = index.pos[item]
                            hit = int(np.count_nonzero(cold > cold[j]) + np.count_nonzero(cold[:j] == cold[j])) < _HR_AT
                        else:
                            hit = item in [i for i, _ in model.top_n(user, _HR_AT)]
                    except UnknownIdError:
                        cold_ok = False
                    else:
                        segments.add(1, 0.0, hit, headline=False)
                continue
            if item in past:
                repeats += 1
                continue
            if index is not None:
                s = masked.get(user)
                if s is None:
                    s = np.array(model.score(user), dtype=np.float64)
                    s[history_pos[user]] = -np.inf
                    masked[user] = s
                j = index.pos[item]
                t = s[j]
                # ties go to the lower index, as in top_n; a NaN score never ranks
                rank = _RECALL_AT if math.isnan(t) else int(np.count_nonzero(s > t) + np.count_nonzero(s[:j] == t))
            else:
                top = [i for i, _ in model.top_n(user, _RECALL_AT, exclude=past)]
                rank = top.index(item) if item in top else _RECALL_AT
            evaluated += 1
            segments.add(len(past) + 1, ts[e] - first_ts[item], rank < _HR_AT)
            if rank < _RECALL_AT:
                recalled += 1
                if rank < _HR_AT:
                    hits += 1
                    ndcg += 1.0 / math.log2(rank + 2)
        t1 = time.perf_counter()
        score_s += t1 - t0
        # 2) learn the block
        if with_tags:
            assert stream.tags is not None
            extra[tag_arg] = stream.tags[lo] if batch_size == 1 else stream.tags[lo:hi]
        if batch_size == 1:
            if with_ts:
                extra["ts_ms"] = ts[lo]
            model.learn_one(users[lo], items[lo], weights[lo], **extra)
        else:
            if with_ts:
                extra["ts_ms"] = ts[lo:hi]
            model.learn_batch(users[lo:hi], items[lo:hi], weights[lo:hi], **extra)
        learn_s += time.perf_counter() - t1
        # 3) what the next block is tested against
        if index is not None:
            index.sync()
        for e in range(lo, hi):
            user, item = users[e], items[e]
            past = history.setdefault(user, set())
            if item not in past:
                past.add(item)
                if index is not None:
                    history_pos.setdefault(user, []).append(index.position(item))
            seen.add(item)
            first_ts.setdefault(item, ts[e])
        if progress is not None and (hi - reported >= report_every or hi == n):
            reported = hi
            progress(hi, n)
    per = 1.0 / evaluated if evaluated else 0.0
    return PrequentialResult(
        model=name or type(model).__name__,
        events=n,
        evaluated=evaluated,
        hr_at_10=hits * per,
        ndcg_at_10=ndcg * per,
        recall_at_20=recalled * per,
        precision_at_10=hits * per / _HR_AT,
        recall_at_10=hits * per,
        f1_at_10=_f1(hits * per / _HR_AT, hits * per),
        learn_events_per_s=n / learn_s if learn_s > 0 else 0.0,
        seconds=time.perf_counter() - started,
        batch_size=batch_size,
        unit_weights=unit_weights,
        repeats=repeats,
        learn_seconds=learn_s,
        score_seconds=score_s,
        segments=segments.result(),
    )


# ------------------------------------------------- incremental recall (Vinagre / Kitazawa)
@dataclass(frozen=True)
class IncrementalRecallResult:
    """Outcome of :func:`incremental_recall`.

    Attributes
    ----------
    model
        Name of the model.
    positives
        Positive events kept from the stream (the rest are not used).
    warmup
        Positives learned before testing starts.
    tested
        Positives tested (all those after the warm-up).
    recall_at_10
        Mean of recall@10 over the tested events (with one held-out item, recall@10 is a hit).
    window
        Events in the sliding window.
    window_recall_at_10
        recall@10 over the last ``window`` tested events: ``last``, and the ``min`` / ``max`` it took
        once the first window was full (``None`` with fewer tested events than ``window``).
    seconds
        Wall time of the run.
    """

    model: str
    positives: int
    warmup: int
    tested: int
    recall_at_10: float
    window: int
    window_recall_at_10: dict[str, float | None]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def incremental_recall(
    model: Recommender,
    stream: EventStream,
    *,
    positive_kinds: Sequence[str] = ("share",),
    warmup: float = 0.2,
    window: int = 5000,
    name: str | None = None,
) -> IncrementalRecallResult:
    """The test-then-learn protocol of Vinagre et al. (2014) as Kitazawa (2016) runs it on MovieLens.

    Only the events of ``positive_kinds`` are kept (on MovieLens loaded by
    :func:`~models.datasets.load_movielens`, ``share`` is a 5-star rating) and learned with weight 1.
    The first ``warmup`` share of them is learned without tests. Then, for each event ``(u, i)``:
    the user and the item are registered (learned with weight 0, which only adds their ids: a new
    user or item gets the model's initial vector, as the reference implementation adds them before
    recommending); every item seen so far that ``u`` has not engaged, plus ``i``, is ranked;
    recall@10 is whether ``i`` is in the top 10; then the model learns the event. Unlike
    :func:`prequential`, first events of users and first events of items are tested too.

    Kitazawa, "Incremental factorization machines for persistently cold-starting online item
    recommendation" (2016, arXiv:1607.02858) reports on MovieLens-100k: static MF 0.021,
    incremental MF 0.026, incremental FMs 0.035.

    >>> import numpy as np
    >>> from models import BPRMF
    >>> rng = np.random.default_rng(0)
    >>> u = rng.integers(0, 100, 3000)
    >>> stream = EventStream.from_pairs([f"u{x}" for x in u], [f"i{x % 4}-{y}" for x, y in zip(u, rng.integers(0, 25, 3000))])
    >>> r = incremental_recall(BPRMF(n_factors=8, seed=0), stream, positive_kinds=("view",), window=500)
    >>> r.positives, r.warmup, r.tested, r.recall_at_10 > 0.2
    (3000, 600, 2400, True)
    """
    if not 0 <= warmup < 1:
        raise InvalidInputError(f"warmup must be in [0, 1), got {warmup!r}")
    if int(window) != window or window < 1:
        raise InvalidInputError(f"window must be a positive integer, got {window!r}")
    if not isinstance(model, ScoresAllItems):
        raise InvalidInputError(f"{type(model).__name__} has no item_ids / n_items: it cannot rank every item")
    started = time.perf_counter()
    kinds = set(positive_kinds)
    keep = [e for e, kind in enumerate(stream.kinds) if kind in kinds]
    users = [stream.users[e] for e in keep]
    items = [stream.items[e] for e in keep]
    n_warm = int(len(keep) * warmup)
    index = _ItemIndex(model)
    known: dict[str, list[int]] = {}  # per user: positions of their items in the score vector
    for user, item in zip(users[:n_warm], items[:n_warm]):
        model.learn_one(user, item, 1.0)
    index.sync()
    for user, item in zip(users[:n_warm], items[:n_warm]):
        known.setdefault(user, []).append(index.position(item))
    hits = np.zeros(len(keep) - n_warm, bool)
    for t, (user, item) in enumerate(zip(users[n_warm:], items[n_warm:])):
        model.learn_one(user, item, 0.0)
        index.sync()
        s = np.array(model.score(user), dtype=np.float64)
        past = known.setdefault(user, [])
        j = index.position(item)
        held_out = s[j]
        s[past] = -np.inf
        s[j] = held_out  # a re-engaged item is still the one to find
        # ties go to the lower index; a NaN score never ranks
        rank = _HR_AT if math.isnan(s[j]) else int(np.count_nonzero(s > s[j]) + np.count_nonzero(s[:j] == s[j]))
        hits[t] = rank < _HR_AT
        model.learn_one(user, item, 1.0)
        past.append(j)
    curve: dict[str, float | None] = {"last": None, "min": None, "max": None}
    if len(hits) >= window:
        sums = np.convolve(hits.astype(np.float64), np.ones(int(window)), "valid") / window
        curve = {"last": float(sums[-1]), "min": float(sums.min()), "max": float(sums.max())}
    return IncrementalRecallResult(
        model=name or type(model).__name__, positives=len(keep), warmup=n_warm, tested=len(hits),
        recall_at_10=float(hits.mean()) if len(hits) else 0.0, window=int(window), window_recall_at_10=curve,
        seconds=time.perf_counter() - started,
    )
