"""Item-to-item co-visitation: which items users engage one after another, counted online.

The session signal of :class:`~models.BPRMF`: someone who has just engaged items ``a`` and ``b`` is
likely to engage next what other users engaged right after ``a`` and ``b``. Factors learn this too,
but slowly, through many small steps; the counts know it after one pass.

The table is bounded: each item keeps its ``neighbours`` most co-visited items with their counts
("space saving", Metwally et al. 2005): a pair not in the table takes the slot of the item's weakest
neighbour and starts from that neighbour's count, so a count over-estimates by at most that floor, and
a pair seen often enough always ends up in the table. The new pairs of one :meth:`add` call take an
item's weakest slots together, the heaviest pair the weakest slot. Memory: ``8 * neighbours`` bytes per item.

>>> import numpy as np
>>> table = CoVisitation(neighbours=2)
>>> table.grow(4)
>>> table.add(np.array([0, 0, 0]), np.array([1, 1, 2]), np.ones(3))
>>> table.neighbours_of(0)
[(1, 2.0), (2, 1.0)]
>>> table.add(np.array([0]), np.array([3]), np.ones(1))  # 3 takes the weakest slot, from its count
>>> table.neighbours_of(0)
[(1, 2.0), (3, 2.0)]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import run_ranks, run_sums

__all__ = ["CoVisitation", "find_slots"]


def find_slots(rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ``items[e]``, its slot among the neighbours ``rows[e]`` (a row of a table's ``nbr``) and
    whether it is there at all (where not, the slot is 0).

    >>> find_slots(np.array([[4, 7, -1], [4, 7, -1]]), np.array([7, 5]))
    (array([1, 0]), array([ True, False]))
    """
    match = rows == items[:, None]
    slot = match.argmax(1)
    return slot, match[np.arange(len(items)), slot]


class CoVisitation:
    """Bounded co-visitation counts between item rows (see the module docstring).

    Parameters
    ----------
    neighbours
        Neighbours kept per item.
    """

    def __init__(self, neighbours: int = 32) -> None:
        if neighbours < 1:
            raise ValueError("neighbours must be >= 1")
        self.k = int(neighbours)
        self.nbr = np.full((0, self.k), -1, np.int32)  # neighbour item rows, -1 = empty slot
        self.cnt = np.zeros((0, self.k), np.float32)  # their counts (0 for an empty slot)

    def grow(self, n_items: int) -> None:
        """Make room for item rows ``0 .. n_items - 1``."""
        n = len(self.nbr)
        if n_items <= n:
            return
        size = max(n_items, 2 * n, 16)
        nbr = np.full((size, self.k), -1, np.int32)
        cnt = np.zeros((size, self.k), np.float32)
        nbr[:n], cnt[:n] = self.nbr, self.cnt
        self.nbr, self.cnt = nbr, cnt

    def add(self, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> None:
        """Count ``weight[e]`` for the pair ``src[e] -> dst[e]`` (item rows; one direction)."""
        if len(src) == 0:
            return
        n = len(self.nbr)
        key, inv = np.unique(src * n + dst, return_inverse=True)
        w = np.bincount(inv, weight, len(key)).astype(np.float32)
        s, d = key // n, key % n
        slot, found = find_slots(self.nbr[s], d)
        self.cnt[s[found], slot[found]] += w[found]
        s, d, w = s[~found], d[~found], w[~found]
        if len(s) == 0:
            return
        order = np.lexsort((-w, s))  # per item, heaviest new pair first
        s, d, w = s[order], d[order], w[order]
        rank = run_ranks(s)
        keep = rank < self.k  # more new pairs than slots would only take each other's
        s, d, w, rank = s[keep], d[keep], w[keep], rank[keep]
        # the r-th heaviest new pair of an item takes its r-th weakest slot (empty slots first); most
        # items take one pair, and their weakest slot needs no sort
        starts = np.flatnonzero(rank == 0)
        size = np.diff(np.append(starts, len(s)))
        many = np.repeat(size > 1, size)
        slot = np.empty(len(s), np.int64)
        slot[~many] = self.cnt[s[~many]].argmin(1)
        if many.any():
            weakest = np.argsort(self.cnt[s[starts[size > 1]]], axis=1)
            slot[many] = weakest[np.repeat(np.arange(len(weakest)), size[size > 1]), rank[many]]
        self.nbr[s, slot] = d
        self.cnt[s, slot] += w

    def neighbours_of(self, item: int) -> list[tuple[int, float]]:
        """``(item row, count)`` of ``item``'s neighbours, strongest first (ties: lower row first)."""
        keep = self.nbr[item] >= 0
        rows, counts = self.nbr[item][keep], self.cnt[item][keep]
        order = np.lexsort((rows, -counts))
        return [(int(rows[j]), float(counts[j])) for j in order]

    def set_rows(self, rows: np.ndarray, nbr: np.ndarray, cnt: np.ndarray) -> None:
        """Replace the neighbours of the items ``rows`` (``(n,)``) by ``nbr`` / ``cnt`` (``(n, m)``: distinct
        item rows per row, -1 for none, and their counts); the ``k`` strongest are kept, counts <= 0 left out.

        >>> table = CoVisitation(neighbours=2)
        >>> table.grow(4)
        >>> table.set_rows(np.array([0]), np.array([[1, 2, 3]]), np.array([[1.0, 5.0, 3.0]]))
        >>> table.neighbours_of(0)
        [(2, 5.0), (3, 3.0)]
        """
        keep = (nbr >= 0) & (cnt > 0)
        order = np.argsort(np.where(keep, -cnt, np.inf), axis=1, kind="stable")[:, : self.k]
        keep = np.take_along_axis(keep, order, 1)
        m = order.shape[1]
        self.nbr[rows] = -1
        self.cnt[rows] = 0.0
        self.nbr[rows, :m] = np.where(keep, np.take_along_axis(nbr, order, 1), -1)
        self.cnt[rows, :m] = np.where(keep, np.take_along_axis(cnt, order, 1), 0.0)

    def pull(self, recent: np.ndarray, coef: np.ndarray, per_item: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Candidates and their pull for users whose recent items are the rows of ``recent``.

        ``recent`` is ``(B, R)`` item rows, ``coef`` ``(B, R)`` how much each counts (0 for none; an item
        in several slots counts their sum). Each recent item ``i`` brings its ``per_item`` strongest
        neighbours ``j``, pulled by ``coef * count(i -> j) / sqrt(1 + total count of i)``, scaled so that
        each user's strongest column pulls 1. Returns ``(cand, pull)``, both ``(B, R * per_item)``:
        candidate rows (-1 where none) and their pull; an item may fill several columns (its pull is
        their sum).
        """
        B, R = recent.shape
        P = min(per_item, self.k)
        order = np.argsort(recent, axis=1, kind="stable")  # an item's slots side by side: the last one counts
        recent = np.take_along_axis(recent, order, 1)
        last, sums = run_sums(recent, np.take_along_axis(coef, order, 1))
        coef = np.where(last, sums, 0.0).astype(np.float32)
        live = coef > 0
        items, inv = np.unique(recent[live], return_inverse=True)
        cnt = self.cnt[items]
        top = np.argpartition(-cnt, P - 1, axis=1)[:, :P] if P < self.k else np.broadcast_to(np.arange(P), (len(items), P))
        top_cnt = np.take_along_axis(cnt, top, 1) / np.sqrt(1.0 + cnt.sum(1))[:, None]
        top_nbr = np.take_along_axis(self.nbr[items], top, 1)
        cand3 = np.full((B, R, P), -1, np.int64)
        pull3 = np.zeros((B, R, P), np.float32)
        cand3[live] = top_nbr[inv]
        pull3[live] = top_cnt[inv] * coef[live][:, None]
        cand, pull = cand3.reshape(B, -1), pull3.reshape(B, -1)
        pull[cand < 0] = 0.0
        best = pull.max(1, initial=0.0)
        pull /= np.where(best > 0, best, 1.0)[:, None]
        return np.where(pull > 0, cand, -1), pull

    def to_arrays(self, n_items: int) -> dict[str, np.ndarray]:
        """The table of the first ``n_items`` rows, for serialisation."""
        return {"covisit_nbr": self.nbr[:n_items], "covisit_cnt": self.cnt[:n_items]}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], n_items: int) -> CoVisitation:
        """Rebuild from :meth:`to_arrays`."""
        nbr = np.asarray(arrays["covisit_nbr"], np.int32)
        cnt = np.asarray(arrays["covisit_cnt"], np.float32)
        if nbr.ndim != 2 or nbr.shape != cnt.shape or len(nbr) != n_items:
            raise ValueError("co-visitation arrays do not match the items")
        table = cls(max(1, nbr.shape[1]))
        table.nbr, table.cnt = nbr.copy(), cnt.copy()
        return table
