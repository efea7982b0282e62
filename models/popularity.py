"""All-time or recently-popular items: the cold-start fallback."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from . import _common as C
from .errors import InvalidInputError
from .idmap import IdMap
from .tags import TagIndex

__all__ = ["Popularity"]

_KIND = "streamrec.models.Popularity"
#: Re-base the decayed counts once the clock is this many half-lives past the base time.
_REBASE_HALF_LIVES = 256.0


class Popularity:
    r"""Rank items by (optionally time-decayed) weighted event counts; the user is ignored.

    Without ``half_life_s`` the score of item :math:`i` is the all-time sum of
    its event weights. With it, events decay exponentially in *event time*:

    .. math:: s_i(t) = \sum_{e \to i} w_e \, 2^{-(t - t_e)/h}

    where :math:`t` is the latest event time seen and :math:`h` the half-life.
    Internally counts are stored "forward decayed" against a base time
    (:math:`c_i = \sum w_e 2^{(t_e - t_0)/h}`), so the result does not depend
    on the order events arrive in, and batches equal one-by-one learning.
    Events without a timestamp are stamped with the current clock (the
    latest event time seen, 0 initially). Any user, known or not, gets the
    same list, which makes this the cold-start fallback.

    Items may carry tags (``item_tags=`` / ``tags=`` when learning, or
    :meth:`set_item_tags`): :meth:`top_n_for_tags` then ranks what is trending
    *within* some tags, e.g. the communities a new user picked, scoring item
    :math:`i` for tags :math:`T` as :math:`s_i(t) \, |T \cap \mathrm{tags}(i)|`.

    Parameters
    ----------
    half_life_s
        Half-life in seconds, or ``None`` for all-time counts.
    track_deltas
        Keep the counts learned since the last :meth:`take_deltas`: what a worker sends
        to the others, which add them with :meth:`add_counts`.

    Examples
    --------
    >>> pop = Popularity(half_life_s=3600)
    >>> pop.learn_batch(["u1", "u2", "u3"], ["old", "old", "new"], ts_ms=[0, 0, 7_200_000])
    >>> pop.top_n("anyone", 2)
    [('new', 1.0), ('old', 0.5)]
    >>> counts = Popularity()  # all-time
    >>> counts.learn_batch(["u1", "u2", "u2"], ["a", "b", "a"], weights=[1.0, 3.0, 1.0])
    >>> counts.top_n("u1", 5, exclude=["b"])
    [('a', 2.0)]
    >>> counts.set_item_tags(["a", "b"], [["jazz"], ["jazz", "rock"]])
    >>> counts.top_n_for_tags(["rock"], 5), counts.top_n_for_tags(["jazz", "rock"], 5)
    ([('b', 3.0)], [('b', 6.0), ('a', 2.0)])
    """

    def __init__(self, half_life_s: float | None = None, *, track_deltas: bool = False) -> None:
        if half_life_s is not None and not half_life_s > 0:
            raise InvalidInputError(f"half_life_s must be > 0 or None, got {half_life_s!r}")
        self.half_life_s = None if half_life_s is None else float(half_life_s)
        self.track_deltas = bool(track_deltas)
        self._items = IdMap()
        self._c = np.zeros(0)  # forward-decayed counts, float64
        self._dc = np.zeros(0)  # counts learned since the last take_deltas (same base), when tracked
        self._t0 = 0.0  # base time (ms) of the forward decay
        self._now = 0.0  # latest event time seen (ms)
        self._tags = TagIndex()

    @property
    def n_items(self) -> int:
        """Number of known items."""
        return len(self._items)

    @property
    def item_ids(self) -> list[str]:
        """Known item ids in index order (a copy)."""
        return self._items.ids

    def has_item(self, item: str) -> bool:
        """Whether ``item`` has been seen."""
        return item in self._items

    # ------------------------------------------------------------- learning
    def learn_one(
        self,
        user: str,
        item: str,
        weight: float = 1.0,
        ts_ms: float | None = None,
        *,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Count one event of ``item`` (``user`` is ignored) at ``ts_ms``; ``tags`` are the item's."""
        self._learn([item], np.array([C.check_weight(weight)]), None if ts_ms is None else [ts_ms],
                    None if tags is None else [tags])

    def learn_batch(
        self,
        users: Sequence[str],
        items: Sequence[str],
        weights: np.ndarray | Sequence[float] | None = None,
        ts_ms: np.ndarray | Sequence[float] | None = None,
        *,
        item_tags: Sequence[Iterable[str] | None] | None = None,
    ) -> None:
        """Count a batch of events; ``ts_ms`` (one per event) matters only with a half-life.

        ``item_tags[e]`` (optional) are the tags of ``items[e]``; an item keeps
        the first non-empty tags it is given (see :meth:`set_item_tags` to change them).
        """
        C.check_pairs(users, items)
        if item_tags is not None:
            C.check_tag_lists(item_tags, len(items))
        self._learn(items, C.as_weights(weights, len(items)), ts_ms, item_tags)

    def _learn(
        self,
        items: Sequence[str],
        w: np.ndarray,
        ts_ms: np.ndarray | Sequence[float] | None,
        item_tags: Sequence[Iterable[str] | None] | None = None,
    ) -> None:
        t = np.full(len(w), self._now) if ts_ms is None else np.array(ts_ms, dtype=np.float64)
        if t.shape != w.shape or not np.isfinite(t).all():
            raise InvalidInputError(f"ts_ms must be finite with shape {w.shape}")
        i = self._index(items)
        if item_tags is not None:
            self._tags.set_untagged(self._tags.pending(i, item_tags))
        if self.half_life_s is not None:
            w = w * self._forward_decay(t)
        np.add.at(self._c, i, w)
        if self.track_deltas:
            np.add.at(self._dc, i, w)

    def _index(self, items: Sequence[str]) -> np.ndarray:
        """Indices of ``items`` (new ones added), with room for their counts."""
        i = self._items.index(items)
        if len(self._c) < len(self._items):
            size = max(len(self._items), 2 * len(self._c), 16)
            c = np.zeros(size)
            c[: len(self._c)] = self._c
            self._c = c
            if self.track_deltas:
                dc = np.zeros(size)
                dc[: len(self._dc)] = self._dc
                self._dc = dc
        self._tags.grow(len(self._items))
        return i

    def _forward_decay(self, t: np.ndarray) -> np.ndarray:
        """Advance the clock to ``t`` (re-basing when far ahead); factors ``2^((t - t0)/h)``."""
        assert self.half_life_s is not None
        h = self.half_life_s * 1000.0
        self._now = max(self._now, float(t.max(initial=self._now)))
        if (self._now - self._t0) / h > _REBASE_HALF_LIVES:
            factor = 2.0 ** ((self._t0 - self._now) / h)
            self._c *= factor
            self._dc *= factor
            self._t0 = self._now
        return np.exp2((t - self._t0) / h)

    @property
    def clock_ms(self) -> float:
        """The latest event time seen (ms): the time the scores are decayed to."""
        return self._now

    def item_index(self, items: Sequence[str]) -> np.ndarray:
        """The indices of ``items`` (``-1`` for unknown ones); items are numbered in order of first sight."""
        C.check_ids(items, "items")
        return self._items.lookup(items)

    def index_items(self, items: Sequence[str]) -> np.ndarray:
        """The indices of ``items``, unknown ones added first (with a count of 0)."""
        C.check_ids(items, "items")
        return self._index(items)

    def item_ids_at(self, indices: np.ndarray) -> list[str]:
        """The ids of the items at ``indices``."""
        ids: list[str] = self._items._array()[np.asarray(indices, dtype=np.int64)].tolist()
        return ids

    def take_deltas(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Counts learned since the last call: item indices, their forward-decayed counts and the base time (ms).

        Only with ``track_deltas=True``. Another model adds them with :meth:`add_counts`.

        >>> a, b = Popularity(half_life_s=60, track_deltas=True), Popularity(half_life_s=60)
        >>> a.learn_batch(["u1", "u2"], ["x", "y"], ts_ms=[0, 60_000])
        >>> rows, counts, base = a.take_deltas()
        >>> b.add_counts(b.index_items(a.item_ids_at(rows)), counts, base, clock_ms=a.clock_ms)
        >>> b.top_n("", 2) == a.top_n("", 2), len(a.take_deltas()[0])
        (True, 0)
        """
        n = len(self._items)
        rows = np.flatnonzero(self._dc[:n]) if self.track_deltas else np.zeros(0, np.int64)
        counts = self._dc[rows]
        self._dc[rows] = 0.0
        return rows, counts, self._t0

    def peek_deltas(self, indices: np.ndarray) -> tuple[np.ndarray, float]:
        """The counts :meth:`take_deltas` would return for the items at ``indices`` (0 where none), and the base."""
        i = np.asarray(indices, dtype=np.int64)
        if not self.track_deltas:
            return np.zeros(len(i)), self._t0
        return self._dc[i], self._t0

    def add_counts(self, indices: np.ndarray, counts: np.ndarray, base_ms: float, clock_ms: float | None = None) -> None:
        """Add another model's :meth:`take_deltas` (counts forward-decayed to ``base_ms``) to the items at
        ``indices`` (repeats add up). ``clock_ms``, the other model's clock, moves this one's forward if it is
        later. Not recorded as this model's own counts."""
        i = np.asarray(indices, dtype=np.int64)
        c = np.asarray(counts, dtype=np.float64)
        if c.shape != i.shape or not np.isfinite(c).all():
            raise InvalidInputError(f"counts must be finite with shape {i.shape}")
        if len(i) and not (0 <= i.min() and i.max() < len(self._items)):
            raise InvalidInputError("item indices out of range")
        if self.half_life_s is not None:
            if clock_ms is not None and clock_ms > self._now:
                self._forward_decay(np.array([float(clock_ms)]))
            c = c * 2.0 ** ((float(base_ms) - self._t0) / (self.half_life_s * 1000.0))
        np.add.at(self._c, i, c)

    # -------------------------------------------------------------- scoring
    def _current(self) -> np.ndarray:
        """Counts decayed to the clock, for all known items."""
        c = self._c[: len(self._items)]
        if self.half_life_s is None:
            return c.copy()
        decayed: np.ndarray = c * 2.0 ** ((self._t0 - self._now) / (self.half_life_s * 1000.0))
        return decayed

    def score(self, user: str, items: Sequence[str] | None = None) -> np.ndarray:
        """(Decayed) counts of ``items`` (all known items if None); unknown items score 0."""
        s = self._current()
        if items is None:
            return s
        C.check_ids(items, "items")
        idx = self._items.lookup(items)
        return np.where(idx >= 0, s[np.maximum(idx, 0)] if len(s) else 0.0, 0.0)

    def top_n(self, user: str, n: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``n`` most popular ``(item, score)``, never an excluded item; fewer if fewer remain."""
        return self.top_n_batch([user], n, [exclude])[0]

    def top_n_batch(
        self, users: Sequence[str], n: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """:meth:`top_n` for many users: one shared ranking, filtered per user."""
        C.check_ids(users, "users")
        n = C.check_n(n)
        if exclude is not None and len(exclude) != len(users):
            raise InvalidInputError(f"exclude has {len(exclude)} entries for {len(users)} users")
        excluded: list[set[str]] = [set()] * len(users) if exclude is None else [C.id_set(e) for e in exclude]
        # the best n + |exclude| items always hold the best n non-excluded ones
        depth = min(self.n_items, n + max(map(len, excluded), default=0))
        best = C.select_top(self._current()[None, :], depth, self._items._ids)[0]
        return [[(i, s) for i, s in best if i not in ex][:n] for ex in excluded]

    def top_n_for_tags(
        self, tags: Iterable[str], n: int, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """The ``n`` best ``(item, score)`` among items carrying any of ``tags``: trending within them.

        The score is the item's (decayed) count times how many of ``tags`` it
        carries, so an item in two of a new user's communities outranks an
        equally popular item in one. Unknown tags are ignored; with no known
        tag the list is empty (fall back to :meth:`top_n`). Never returns an
        excluded item; ties go to the item seen first.
        """
        tags = C.tag_tuple(tags)
        n = C.check_n(n)
        excluded = C.id_set(exclude)
        groups = [self._tags.members[t] for t in map(self._tags.vocab.get, tags) if t is not None]
        if not groups or n == 0:
            return []
        cand, matches = np.unique(np.concatenate([np.array(g, dtype=np.int64) for g in groups]), return_counts=True)
        scores = self._current()[cand] * matches
        ids = self._items._ids
        if excluded:
            scores[[r for r, j in enumerate(cand.tolist()) if ids[j] in excluded]] = -np.inf
        best = C.select_top(scores[None, :], min(n, len(cand)), [ids[j] for j in cand.tolist()])[0]
        return best

    def item_tags(self, item: str) -> tuple[str, ...]:
        """The tags of ``item`` (``()`` if it has none or is unknown)."""
        return self._tags.names(self._items.get(item))

    def set_item_tags(self, items: Sequence[str], tags: Sequence[Iterable[str] | None]) -> None:
        """Set (replace) the tags of ``items``; unknown items are added with a count of 0.

        >>> pop = Popularity()
        >>> pop.set_item_tags(["new"], [["diy", "art"]])
        >>> pop.top_n_for_tags(["art"], 3)
        [('new', 0.0)]
        """
        C.check_ids(items, "items")
        C.check_tag_lists(tags, len(items))
        i = self._index(items)
        for x, t in zip(i.tolist(), tags):
            self._tags.set(x, C.tag_tuple(t))

    # -------------------------------------------------------- serialisation
    def to_bytes(self) -> bytes:
        """Serialise the counts, id map, tags and clock (no pickle)."""
        n = len(self._items)
        tags, tag_ptr, tag_idx = self._tags.to_arrays(n)
        meta = {"half_life_s": self.half_life_s, "t0": self._t0, "now": self._now, "items": self._items.to_list(),
                "tags": tags}
        return C.pack(_KIND, meta, {"c": self._c[:n], "tag_ptr": tag_ptr, "tag_idx": tag_idx})

    @classmethod
    def from_bytes(cls, data: bytes) -> Popularity:
        """Rebuild a model from :meth:`to_bytes`."""
        meta, a = C.unpack(data, _KIND)
        try:
            model = cls(meta["half_life_s"])
            model._items = IdMap.from_list(meta["items"])
            model._t0, model._now = float(meta["t0"]), float(meta["now"])
            model._c = np.array(a["c"], dtype=np.float64)
            if model._c.shape != (model.n_items,) or not (math.isfinite(model._t0) and math.isfinite(model._now)):
                raise ValueError("counts do not match the id map")
            model._tags = TagIndex.from_arrays(meta["tags"], a["tag_ptr"], a["tag_idx"], model.n_items)
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"corrupt {_KIND} bytes: {e}") from e
        return model

    # ------------------------------------------------------ per-item state
    def item_weights(self, items: Sequence[str]) -> tuple[np.ndarray, int]:
        """Scores of ``items`` at the clock, and the clock (ms): a per-item checkpoint.

        >>> pop = Popularity(half_life_s=1)
        >>> pop.learn_batch(["u"], ["a"], ts_ms=[1000])
        >>> other = Popularity(half_life_s=1)
        >>> other.set_item_weights(["a"], *pop.item_weights(["a"]))
        >>> other.top_n("anyone", 1) == pop.top_n("anyone", 1)
        True
        """
        return self.score("", items), int(self._now)

    def set_item_weights(self, items: Sequence[str], weights: np.ndarray, ts_ms: int) -> None:
        """Set the scores of ``items`` as they were at event time ``ts_ms`` (restoring a checkpoint)."""
        C.check_ids(items, "items")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(items),) or not np.isfinite(w).all():
            raise InvalidInputError(f"weights must be finite with shape ({len(items)},)")
        i = self._index(items)
        if self.half_life_s is not None:
            w = w * self._forward_decay(np.array([float(ts_ms)]))
        self._c[i] = w

    def __repr__(self) -> str:
        return f"Popularity(half_life_s={self.half_life_s}, n_items={self.n_items})"
