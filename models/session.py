"""The session of :class:`~models.BPRMF`: each user's last events and what they pull into the user's ranking.

Factors move by small steps, so a user's first lists, and the lists of a user whose taste just turned,
follow their last few events only slowly. The session keeps, per user row, a ring of the ``events``
most recent engaged item rows with their relative weights, and the item-to-item co-visitation counts
(:mod:`models.covisit`) of every user's consecutive events. Ranking asks :meth:`Session.pull` for each
user's candidates and how much each is pulled up; the model adds the pull, in units of the user's score
spread, to its factor scores (``BPRMF._blend``). Users and items are the model's rows: the model grows
the session with its id maps.

>>> import numpy as np
>>> from models.tags import TagIndex
>>> session = Session()
>>> session.grow_users(2)
>>> session.grow_items(4)
>>> # user 0 engages item 0, then item 1 (the events in user order, each one's number among its user's)
>>> session.remember(np.array([0, 0]), np.array([0, 1]), np.ones(2), np.array([0, 1]), np.array([0, 1]))
>>> session.covisit.neighbours_of(0), session.covisit.neighbours_of(1)
([(1, 1.0)], [(0, 1.0)])
>>> session.remember(np.array([1]), np.array([0]), np.ones(1), np.array([0]), np.array([0]))  # user 1: item 0
>>> cand, pull = session.pull(np.array([1]), TagIndex(), np.zeros(4), learn_calls=2)
>>> cand[pull > 0].tolist()  # what followed item 0 for user 0
[1]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _common as C
from .covisit import CoVisitation
from .tags import TagIndex

__all__ = ["Session", "STATS_EVERY"]

#: The session's catalog statistics (score scale, tag shares, each tag's best items) are recomputed every
#: this many learn calls: they move slowly, and computing them is O(items).
STATS_EVERY = 16


class Session:
    """Users' recent events, co-visitation counts and the pull they give ranking (see the module docstring).

    The parameters are :class:`~models.BPRMF`'s ``covisit_*`` and ``session_*`` ones (documented there),
    ``dtype`` that of the weights, and ``track_pairs`` whether the pairs counted are kept for
    :meth:`take_pairs` (the model's ``track_item_deltas``).
    """

    def __init__(
        self,
        covisit_weight: float = 0.5,
        covisit_neighbours: int = 64,
        covisit_window: int = 2,
        covisit_candidates: int = 16,
        events: int = 8,
        decay: float = 0.3,
        tag_weight: float = 1.0,
        tags: int = 2,
        tag_items: int = 25,
        boost: float = 4.0,
        dtype: Any = np.float32,
        track_pairs: bool = False,
    ) -> None:
        self.covisit_weight = float(covisit_weight)
        self.covisit_window = int(covisit_window)
        self.covisit_candidates = int(covisit_candidates)
        self.events = int(events)
        self.decay = float(decay)
        self.tag_weight = float(tag_weight)
        self.tags = int(tags)
        self.tag_items = int(tag_items)
        self.boost = float(boost)
        self.track_pairs = bool(track_pairs)
        self.covisit = CoVisitation(int(covisit_neighbours))
        self.recent = np.zeros((0, self.events), np.int64)  # per user: ring of the latest engaged items
        self.recent_w = np.zeros((0, self.events), np.dtype(dtype))  # their weights (0: empty slot)
        self.n_events = np.zeros(0, np.int64)  # per user: events learned
        self._tag_top: dict[int, tuple[int, np.ndarray]] = {}  # tag -> (learn call, its best items by bias)
        self._tag_share_cache: tuple[int, np.ndarray] | None = None  # (learn call, each tag's share of the items)
        # The co-visit pairs counted since the last take_pairs (when tracked): keys src << 32 | dst summed into
        # _pair_keys/_pair_counts, the latest batches' pairs waiting in _pairs_new until they are summed in
        self._pair_keys = np.zeros(0, np.int64)
        self._pair_counts = np.zeros(0, np.float32)
        self._pairs_new: list[tuple[np.ndarray, np.ndarray]] = []
        self._pairs_new_rows = 0

    @property
    def active(self) -> bool:
        """Whether the session pulls anything into ranking (a co-visitation or a tag weight above 0)."""
        return self.covisit_weight > 0 or self.tag_weight > 0

    def grow_users(self, n_users: int) -> None:
        """Make room for user rows ``0 .. n_users - 1``."""
        if len(self.n_events) < n_users:
            self.recent = C.grow_rows(self.recent, n_users)
            self.recent_w = C.grow_rows(self.recent_w, n_users)
            self.n_events = C.grow_rows(self.n_events, n_users)

    def grow_items(self, n_items: int) -> None:
        """Make room for item rows ``0 .. n_items - 1``."""
        self.covisit.grow(n_items)

    # ------------------------------------------------------------------ learning
    def remember(
        self, u: np.ndarray, i: np.ndarray, ws: np.ndarray, by_user: np.ndarray, ranked: np.ndarray,
        items_move: np.ndarray | None = None,
    ) -> None:
        """Count each event's item as co-visited with the user's previous ``covisit_window`` items (both
        ways), then push the events into their users' rings of recent items with their relative weights
        ``ws``. ``by_user`` orders the events by user (stably), ``ranked`` is each one's number among its
        user's events of the batch, in that order. Events of ``items_move`` False count no pairs (their
        item side, co-visits included, is known already); tracked pairs are kept for the next take."""
        if len(u) == 0:
            return
        R, L = self.events, min(self.covisit_window, self.events)
        if len(u) == 1:  # learn_one: the same steps on scalars, without the batch's sorting
            user, item, n = int(u[0]), int(i[0]), int(self.n_events[u[0]])
            if self.covisit_weight and L > 0 and (items_move is None or items_move[0]):
                prev = [p for p in self.recent[user, [(n - d) % R for d in range(1, min(L, n) + 1)]].tolist() if p != item]
                if prev:
                    self._count(np.array(prev + [item] * len(prev)), np.array([item] * len(prev) + prev))
            self.recent[user, n % R] = item
            self.recent_w[user, n % R] = ws[0]
            self.n_events[user] = n + 1
            return
        su, si = u[by_user], i[by_user]
        pos = np.arange(len(su))
        seq = self.n_events[su] + ranked  # each event's number among all its user's events
        if self.covisit_weight and L > 0:
            src, dst = [], []
            moving = None if items_move is None else items_move[by_user]
            for d in range(1, L + 1):
                in_batch = ranked >= d
                before = np.where(in_batch, si[np.maximum(pos - d, 0)], self.recent[su, (seq - d) % R])
                ok = (in_batch | (seq - d >= 0)) & (before != si)
                if moving is not None:
                    ok &= moving
                src.append(before[ok])
                dst.append(si[ok])
            a, b = np.concatenate(src), np.concatenate(dst)
            if len(a):
                self._count(np.concatenate([a, b]), np.concatenate([b, a]))
        self.recent[su, seq % R] = si  # a user's later events overwrite earlier ones in the same slot
        self.recent_w[su, seq % R] = ws[by_user]
        starts = np.flatnonzero(ranked == 0)
        self.n_events[su[starts]] += np.diff(np.append(starts, len(su)))

    def restore(self, user: int, rows: list[int], n_events: int) -> None:
        """Make ``rows`` (item rows, oldest first, at most ``events``) the user's recent events, each with
        weight 1, the last one event number ``n_events - 1`` (``n_events`` >= ``len(rows)``)."""
        R = self.events
        slots = (n_events - len(rows) + np.arange(len(rows))) % R  # the newest in the slot of its event (age 0)
        self.recent[user] = 0
        self.recent_w[user] = 0
        self.recent[user, slots] = rows
        self.recent_w[user, slots] = 1.0
        self.n_events[user] = n_events if rows else 0

    # ------------------------------------------------------------------ ranking
    def pull(
        self, uidx: np.ndarray, tags: TagIndex, bias: np.ndarray, learn_calls: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of users (rows) from their recent items and the pull of each, in units of the user's
        score spread: co-visited items (``covisit_weight``) and the best items (by ``bias``) of the user's
        recent tags (``tag_weight``), both ``1 + boost / n`` times stronger for a user with ``n`` events.
        Returns ``(cand, pull)``, both ``(len(uidx), columns)``: item rows (-1: none) and their pull; the
        same item may appear in several columns (its pull is the sum). ``learn_calls`` dates the cached
        catalog statistics."""
        R = self.events
        age = (self.n_events[uidx, None] - 1 - np.arange(R)) % R
        coef = self.recent_w[uidx] * (1.0 - self.decay) ** age
        recent = self.recent[uidx]
        parts = []
        if self.covisit_weight:
            cand, pull = self.covisit.pull(recent, coef, self.covisit_candidates)
            parts.append((cand, pull * np.float32(self.covisit_weight)))
        if self.tag_weight and len(tags.vocab):
            parts.append(self._tag_pull(recent, coef, tags, bias, learn_calls))
        if not parts:
            return np.full((len(uidx), 0), -1, np.int64), np.zeros((len(uidx), 0), np.float32)
        pull = np.concatenate([p for _, p in parts], 1)
        if self.boost:
            pull *= (1.0 + self.boost / np.maximum(self.n_events[uidx], 1)).astype(np.float32)[:, None]
        return np.concatenate([c for c, _ in parts], 1), pull

    def _tag_pull(
        self, recent: np.ndarray, coef: np.ndarray, index: TagIndex, bias: np.ndarray, learn_calls: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``tag_items`` best items (by bias) of each user's ``tags`` strongest recent tags (an item's
        first two tags count), each pulled by ``tag_weight`` times the lift of the tag's share of the user's
        recent weight over its share of the catalog."""
        T, M, B = self.tags, self.tag_items, len(recent)
        tags = index.first_tags[recent].reshape(B, -1)  # (B, R * FIRST_TAGS)
        weight = np.repeat(coef, index.first_tags.shape[1], axis=1)
        weight[tags < 0] = 0.0
        order = np.argsort(tags, axis=1)
        tags = np.take_along_axis(tags, order, 1)
        last, sums = C.run_sums(tags, np.take_along_axis(weight, order, 1))
        share = np.where(last & (tags >= 0), sums, 0.0) / np.maximum(coef.sum(1), 1e-30)[:, None]
        # lift over the tag's share of the (tagged) catalog: a broad tag pulls little, a niche one fully
        base = self._tag_shares(index, len(bias), learn_calls)[np.maximum(tags, 0)]
        lift = np.where(share > 0, (share - base) / np.maximum(1.0 - base, 1e-12), 0.0)
        k = min(T, tags.shape[1])
        pick = np.argpartition(-lift, k - 1, axis=1)[:, :k]
        lift, tags = np.take_along_axis(lift, pick, 1), np.take_along_axis(tags, pick, 1)
        on = lift > 0
        cand = np.full((B, k, M), -1, np.int64)
        pull = np.zeros((B, k, M), np.float32)
        if on.any():
            wanted, which = np.unique(tags[on], return_inverse=True)
            best = np.full((len(wanted), M), -1, np.int64)
            for row, t in enumerate(wanted.tolist()):
                items = self._best_of_tag(index, t, bias, learn_calls)
                best[row, : len(items)] = items
            cand[on] = best[which]
            pull[on] = np.where(best[which] >= 0, self.tag_weight * lift[on][:, None], 0.0)
        return cand.reshape(B, -1), pull.reshape(B, -1)

    def _tag_shares(self, index: TagIndex, n_items: int, learn_calls: int) -> np.ndarray:
        """Each tag's share of the tagged items, recomputed every ``STATS_EVERY`` learn calls (or when tags appear)."""
        cached = self._tag_share_cache
        if cached is None or learn_calls - cached[0] >= STATS_EVERY or len(cached[1]) < len(index.members):
            sizes = np.array([len(m) for m in index.members], np.float64)
            shares = sizes / max(int(index.tagged[:n_items].sum()), 1)
            self._tag_share_cache = cached = (learn_calls, shares)
        return cached[1]

    def _best_of_tag(self, index: TagIndex, tag: int, bias: np.ndarray, learn_calls: int) -> np.ndarray:
        """The ``tag_items`` items of ``tag`` with the highest bias, recomputed every ``STATS_EVERY`` learn calls."""
        cached = self._tag_top.get(tag)
        if cached is not None and learn_calls - cached[0] < STATS_EVERY:
            return cached[1]
        members = np.array(index.members[tag], np.int64)
        M = self.tag_items
        if len(members) > M:
            members = members[np.argpartition(-bias[members], M - 1)[:M]]
        self._tag_top[tag] = (learn_calls, members)
        return members

    # ------------------------------------------------------------------ pairs shared with other learners
    def _count(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Count one co-visit of each pair ``src[e] -> dst[e]``, kept for :meth:`take_pairs` when tracked."""
        self.covisit.add(src, dst, np.ones(len(src)))
        if self.track_pairs:
            self._pairs_new.append(((src.astype(np.int64) << 32) | dst, np.ones(len(src), np.float32)))
            self._pairs_new_rows += len(src)
            if self._pairs_new_rows > max(1 << 16, len(self._pair_keys)):  # memory: about twice the distinct pairs
                self._sum_pairs()

    def _sum_pairs(self) -> None:
        """Sum the waiting pairs into one row per pair."""
        if not self._pairs_new:
            return
        keys = np.concatenate([self._pair_keys, *(k for k, _ in self._pairs_new)])
        counts = np.concatenate([self._pair_counts, *(c for _, c in self._pairs_new)])
        self._pairs_new, self._pairs_new_rows = [], 0
        self._pair_keys, inv = np.unique(keys, return_inverse=True)
        self._pair_counts = np.bincount(inv, counts, len(self._pair_keys)).astype(np.float32)

    def peek_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs counted since the last :meth:`take_pairs`: source rows, destination rows, counts (summed)."""
        self._sum_pairs()
        keys = self._pair_keys
        return keys >> 32, keys & 0xFFFFFFFF, self._pair_counts.copy()

    def take_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`peek_pairs`, then forget them."""
        out = self.peek_pairs()
        self._pair_keys, self._pair_counts = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return out

    # ------------------------------------------------------------------ serialisation
    def to_arrays(self, n_users: int, n_items: int) -> dict[str, np.ndarray]:
        """The rings of the first ``n_users`` users and the counts of the first ``n_items`` items."""
        return {"recent": self.recent[:n_users], "recent_w": self.recent_w[:n_users],
                "n_events": self.n_events[:n_users], **self.covisit.to_arrays(n_items)}

    def load_arrays(self, arrays: dict[str, Any], n_users: int, n_items: int) -> None:
        """Take the state of :meth:`to_arrays`; ``ValueError`` if it does not match the sizes."""
        recent, recent_w = np.array(arrays["recent"], np.int64), np.array(arrays["recent_w"], self.recent_w.dtype)
        n_events = np.array(arrays["n_events"], np.int64)
        if recent.shape != (n_users, self.events) or recent_w.shape != recent.shape or n_events.shape != (n_users,):
            raise ValueError("session arrays do not match the id map")
        self.covisit = CoVisitation.from_arrays(arrays, n_items)
        self.recent, self.recent_w, self.n_events = recent, recent_w, n_events

