r"""Approximate top-N by maximum inner product over item factors: an updatable inverted-file index.

``bench/topn.py`` measures it against brute force; the worker does not use it (``BPRMF`` ranks
exactly). :class:`IVFIndex` answers "the best ``n`` items for each of these users" with a cost per user
that grows like the square root of the catalog instead of linearly, and takes item updates
(changed and new rows) every batch. Design notes, from ``bench/topn.py`` and its variants
(1,000 users, k = 64, one core; recall@50 against brute force):

* Batched list-major evaluation: the users' probes are grouped by list and each probed list
  costs one small ``(users, k+1) @ (k+1, list)`` product whose scores land straight in a
  per-user candidate row; one ``argpartition`` per search then picks the top ``n``. Python
  overhead is per *list*, not per user or item.
* Norm tiers are what make IVF work on learned factors. On BPR factors the top-50 of every
  user lies almost entirely in the ~5 % longest item vectors (large bias and norm). With
  plain L2 k-means those sit in lists whose mean is dominated by short vectors and rank low:
  on 100k learned items, recall@50 was 0.969 scanning 2.6 % of the catalog (n_probe = 8) and
  needed 5.2 % for 0.994. Split at the 0.9 and 0.98 norm quantiles, the same 2.6 % gives
  0.996 (42 ms against 67 ms for the 5.2 %).
* Ranking lists by mean score plus ``probe_slack`` times the user norm times the list's RMS
  radius (an optimistic estimate of the list's best score) beat the mean alone by up to 1.5
  points of recall at the same budget; a true upper bound (the largest radius) was worse.
* Also measured and dropped: the MIPS-to-L2 transform (an extra coordinate
  :math:`\sqrt{M^2 - \lVert x\rVert^2}` before k-means), 1-2 points better than plain L2
  k-means on ``[q, b]`` but far below norm tiers; clusters within equal-count norm strata,
  worse; twice as many lists, better recall per scored item but slower (per-list overhead).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from models import _common as C
from models.errors import InvalidInputError

__all__ = ["IVFIndex"]

#: rows of a chunk when assigning many vectors to centroids (bounds the temporary distance matrix).
_ASSIGN_CHUNK = 32768
#: spare room given to each list when the storage is (re)laid out, as a share of its length.
_SLACK = 0.125
#: most scores held at once by a search (users are processed in blocks below it): 64 MiB of float32.
_BUFFER_SCORES = 1 << 24


def _kmeans(x: np.ndarray, k: int, n_iter: int, rng: np.random.Generator, init: np.ndarray | None) -> np.ndarray:
    """Lloyd's k-means (squared L2) of the rows of ``x``; empty clusters take half of the largest one."""
    c = (x[np.sort(rng.choice(len(x), k, replace=False))] if init is None else init).astype(np.float32, copy=True)
    for _ in range(n_iter):
        a = _nearest(x, c)[0]
        count = np.bincount(a, minlength=k)
        full = count > 0
        order = np.argsort(a, kind="stable")
        total = np.add.reduceat(x[order].astype(np.float64), (np.cumsum(count) - count)[full], axis=0)
        c[full] = (total / count[full, None]).astype(np.float32)
        for e in np.flatnonzero(~full).tolist():  # rare: split the largest cluster in two
            big = int(count.argmax())
            jitter = 1e-3 * rng.standard_normal((x.shape[1],), dtype=np.float32) * (np.abs(c[big]) + 1e-6)
            c[e], c[big] = c[big] + jitter, c[big] - jitter
            count[e] = count[big] = count[big] // 2
    return c


def _nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the L2-nearest row of ``c`` for each row of ``x`` and the squared distance to it."""
    a = np.empty(len(x), np.int64)
    d2 = np.empty(len(x), np.float64)
    c2 = np.einsum("kd,kd->k", c, c)
    c_t = (-2.0 * c).T
    for lo in range(0, len(x), _ASSIGN_CHUNK):
        xs = x[lo : lo + _ASSIGN_CHUNK]
        dist = xs @ c_t
        dist += c2  # |x - c|^2 - |x|^2
        best = dist.argmin(1)
        a[lo : lo + len(xs)] = best
        d2[lo : lo + len(xs)] = np.einsum("bd,bd->b", xs, xs) + dist[np.arange(len(xs)), best]
    np.maximum(d2, 0.0, out=d2)
    return a, d2


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair (vectorised)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


class IVFIndex:
    r"""Updatable inverted-file index for top-N by score :math:`\mathbf{p}_u^\top \mathbf{q}_i + b_i`.

    Items are identified by their integer row in the model's item matrix.
    Each is stored as :math:`\mathbf{x}_i = [\mathbf{q}_i, b_i]` and a user
    as :math:`[\mathbf{p}_u, 1]`, so the score is one inner product
    (maximum inner product search, MIPS). The items are split into lists:

    * a coarse k-means (squared L2 on :math:`\mathbf{x}`) with ``n_lists``
      centroids (default :math:`\approx\sqrt{N}`), each item going to its
      nearest centroid;
    * within each cluster, *norm tiers*: the items whose :math:`\lVert
      \mathbf{x}_i\rVert` is above the catalog's ``tiers`` quantiles get
      lists of their own. The few long vectors (popular items: large bias
      and norm) are where most users' top-N lives; in their own small lists
      their centroid is long too, so they are probed first.

    A query ranks the lists by the estimate
    :math:`\mathbf{u}^\top\boldsymbol{\mu}_l + \alpha \lVert\mathbf{u}\rVert
    r_l` of their best score (:math:`\boldsymbol{\mu}_l` the mean and
    :math:`r_l` the RMS radius of the list's current members, :math:`\alpha`
    = ``probe_slack``), scores every item of the best lists *exactly* until
    ``n_probe`` average clusters' worth of items (plus the user's excluded
    items) have been scored, and returns the best ``n``. The cost per user
    is therefore about ``n_probe * sqrt(N)`` item scores instead of ``N``.
    Queries are answered in batches, list by list (one small matrix
    product per probed list), which is what makes a numpy-only index fast.

    Updates (:meth:`upsert`) overwrite rows in place, move an item whose
    nearest centroid or tier changed to its new list, append new rows and
    keep each list's mean and radius current, in time proportional to the
    number of rows given. The centroids and tier thresholds stay fixed until
    :meth:`rebuild`, which runs by itself (unless ``auto_rebuild=False``)
    once the catalog has grown or shrunk by ``rebuild_growth`` since the last
    build, or the mean squared distance of the items to their centroid has
    risen by ``rebuild_drift``. Until the catalog has ``exact_below`` items
    nothing is clustered and every search is exact brute force; a search
    whose budget covers the whole catalog is exact too.

    Memory: a float32 copy of :math:`[\mathbf{q}_i, b_i]` per item in list
    order with about 12 % spare room per list, plus three int64 per item
    (about 1.4 times the factors themselves at k = 64). A rebuild costs
    :math:`O(N \sqrt{N} k)` (about 5 s at a million items on one core) and
    runs inside the call that triggers it; with ``auto_rebuild=False``,
    check :attr:`rebuild_due` and call :meth:`rebuild` when convenient.

    Everything is deterministic given ``seed`` and the sequence of calls.

    Parameters
    ----------
    n_factors
        Latent dimension ``k`` of the item and user vectors.
    n_lists
        Number of coarse clusters; ``None`` picks :math:`\mathrm{round}(\sqrt{N})` at each build.
    n_probe
        Search effort, in average clusters' worth of items scored per user.
    seed
        Seed of the generator used for k-means sampling and initialisation.
    tiers
        Increasing quantiles of the item norms at which clusters are split.
    probe_slack
        :math:`\alpha` in the list ranking (0 ranks by the centroid score alone).
    exact_below
        Catalog size below which the index is not clustered (exact search).
    train_per_list
        k-means trains on at most ``train_per_list * n_lists`` sampled items.
    n_iter
        k-means iterations.
    rebuild_growth
        Relative change of the catalog size that triggers an automatic rebuild.
    rebuild_drift
        Relative rise of the mean squared item-to-centroid distance that triggers one.
    auto_rebuild
        Whether :meth:`upsert` and :meth:`remove` rebuild by themselves.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> index = IVFIndex(n_factors=4, exact_below=100, seed=0)
    >>> vectors = rng.standard_normal((500, 4)).astype(np.float32)
    >>> index.upsert(np.arange(500), vectors, np.zeros(500))
    >>> len(index), index.n_lists
    (500, 22)
    >>> user = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    >>> rows, scores = index.search(user, 3, exclude=[np.array([int(vectors[:, 0].argmax())])])
    >>> bool((rows[0] == np.argsort(-vectors[:, 0])[1:4]).all()), bool(np.allclose(scores[0], vectors[rows[0], 0]))
    (True, True)
    """

    def __init__(
        self,
        n_factors: int,
        n_lists: int | None = None,
        n_probe: int = 8,
        seed: int | None = 0,
        *,
        tiers: Sequence[float] = (0.9, 0.98),
        probe_slack: float = 0.25,
        exact_below: int = 4096,
        train_per_list: int = 64,
        n_iter: int = 10,
        rebuild_growth: float = 0.5,
        rebuild_drift: float = 0.25,
        auto_rebuild: bool = True,
    ) -> None:
        tiers = [float(t) for t in tiers]
        checks = {
            "n_factors": int(n_factors) == n_factors and n_factors >= 1,
            "n_lists": n_lists is None or (int(n_lists) == n_lists and n_lists >= 1),
            "n_probe": int(n_probe) == n_probe and n_probe >= 1,
            "tiers": all(0 < t < 1 for t in tiers) and all(a < b for a, b in pairwise(tiers)),
            "probe_slack": probe_slack >= 0,
            "exact_below": int(exact_below) == exact_below and exact_below >= 2,
            "train_per_list": int(train_per_list) == train_per_list and train_per_list >= 1,
            "n_iter": int(n_iter) == n_iter and n_iter >= 0,
            "rebuild_growth": rebuild_growth > 0,
            "rebuild_drift": rebuild_drift > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise InvalidInputError(f"invalid {name}: {locals()[name]!r}")
        self.n_factors = int(n_factors)
        self.n_lists_param = None if n_lists is None else int(n_lists)
        self.n_probe = int(n_probe)
        self.seed = seed
        self.tiers = tuple(tiers)
        self.probe_slack = float(probe_slack)
        self.exact_below = int(exact_below)
        self.train_per_list = int(train_per_list)
        self.n_iter = int(n_iter)
        self.rebuild_growth = float(rebuild_growth)
        self.rebuild_drift = float(rebuild_drift)
        self.auto_rebuild = bool(auto_rebuild)
        self._rng = np.random.default_rng(seed)
        d = self.n_factors + 1
        # slot storage: list l owns slots [start[l], start[l] + cap[l]), the first size[l] of them live
        self._X = np.zeros((0, d), np.float32)
        self._slot_row = np.zeros(0, np.int64)  # -1: free
        self._end = 0  # first slot not owned by any list
        self._row_slot = np.zeros(0, np.int64)  # -1: row not in the index
        self._row_list = np.zeros(0, np.int64)
        self._n = 0
        self._set_lists(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64))
        # clustering: list id = cluster * n_tiers + tier
        self._centroids: np.ndarray | None = None
        self._thresholds = np.zeros(0)
        self._n_tiers = 1
        self._n_built = 0
        self._qerr_built = 0.0
        self._qerr = 0.0  # sum over items of the squared distance to their centroid
        self._probe_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._lists_per_item = 0.0
        self._builds = 0

    # ------------------------------------------------------------ properties
    def __len__(self) -> int:
        return self._n

    @property
    def n_lists(self) -> int:
        """Number of coarse clusters (0 while unclustered)."""
        return 0 if self._centroids is None else len(self._centroids)

    @property
    def is_clustered(self) -> bool:
        """Whether searches use the inverted lists (else they are exact brute force)."""
        return self._centroids is not None

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays."""
        arrays = (self._X, self._slot_row, self._row_slot, self._row_list, self._start, self._cap,
                  self._size, self._sum, self._sumsq, self._thresholds)
        extra = 0 if self._centroids is None else self._centroids.nbytes
        return int(sum(a.nbytes for a in arrays)) + extra

    @property
    def n_builds(self) -> int:
        """How many times the index has (re)clustered, automatically or by :meth:`rebuild`."""
        return self._builds

    @property
    def rebuild_due(self) -> bool:
        """Whether growth or drift since the last build calls for :meth:`rebuild` (see the class docstring)."""
        n = self._n
        if self._centroids is None:
            return n >= self.exact_below
        g = 1.0 + self.rebuild_growth
        drift = self._qerr / max(n, 1) > (1.0 + self.rebuild_drift) * self._qerr_built
        return n > g * self._n_built or n * g < self._n_built or drift

    def __contains__(self, row: object) -> bool:
        if isinstance(row, (bool, np.bool_)) or not isinstance(row, (int, np.integer)):
            return False
        return 0 <= int(row) < len(self._row_slot) and bool(self._row_slot[int(row)] >= 0)

    def rows(self) -> np.ndarray:
        """The rows in the index, ascending."""
        return np.flatnonzero(self._row_slot >= 0).astype(np.int64)

    def vectors(self, rows: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored ``(vectors (n, k), biases (n,))`` of ``rows``; raises for rows not in the index."""
        r = self._check_rows(rows)
        if len(r) and (r.max() >= len(self._row_slot) or (self._row_slot[r] < 0).any()):
            raise InvalidInputError("some rows are not in the index")
        x = self._X[self._row_slot[r]]
        return x[:, :-1].copy(), x[:, -1].copy()

    # -------------------------------------------------------------- updates
    def upsert(
        self, rows: np.ndarray | Sequence[int], vectors: np.ndarray, biases: np.ndarray | Sequence[float]
    ) -> None:
        """Insert new rows or overwrite existing ones (a repeated row: the last occurrence wins).

        Costs about ``len(rows) * n_lists * k`` operations (the nearest
        centroid of each vector); items that change list are moved. May
        trigger :meth:`rebuild` (see the class docstring).
        """
        r = self._check_rows(rows)
        v = np.asarray(vectors, dtype=np.float32)
        b = np.asarray(biases, dtype=np.float32)
        if v.shape != (len(r), self.n_factors) or b.shape != (len(r),):
            raise InvalidInputError(
                f"need vectors ({len(r)}, {self.n_factors}) and biases ({len(r)},), got {v.shape} and {b.shape}"
            )
        if not (np.isfinite(v).all() and np.isfinite(b).all()):
            raise InvalidInputError("vectors and biases must be finite")
        if len(r) == 0:
            return
        x = np.empty((len(r), self.n_factors + 1), np.float32)
        x[:, :-1], x[:, -1] = v, b
        if len(r) > 1:  # keep the last occurrence of each row
            last = len(r) - 1 - np.unique(r[::-1], return_index=True)[1]
            if len(last) < len(r):
                last.sort()
                r, x = r[last], x[last]
        self._grow_rows(int(r.max()) + 1)
        old_slot = self._row_slot[r]
        exists = old_slot >= 0
        lists, d2 = self._assign(x)
        self._account(old_slot[exists], -1.0)
        stay = exists.copy()
        stay[exists] = self._row_list[r[exists]] == lists[exists]
        self._X[old_slot[stay]] = x[stay]
        move = exists & ~stay
        if move.any():
            self._remove_slots(old_slot[move])
        if not stay.all():
            self._append(r[~stay], x[~stay], lists[~stay])
        self._n += int((~exists).sum())
        self._add_stats(lists, x, +1.0)
        self._qerr += float(d2.sum())
        self._maybe_rebuild()

    def remove(self, rows: np.ndarray | Sequence[int]) -> None:
        """Remove rows from the index (rows not in it are ignored); may trigger :meth:`rebuild`."""
        r = self._check_rows(rows)
        r = np.unique(r[r < len(self._row_slot)])
        slots = self._row_slot[r]
        slots = slots[slots >= 0]
        if len(slots) == 0:
            return
        self._account(slots, -1.0)
        self._remove_slots(slots)
        self._n -= len(slots)
        self._maybe_rebuild()

    def rebuild(self) -> None:
        """Re-cluster every item now: k-means (warm-started from the current centroids), tiers, layout."""
        rows = self.rows()  # by row, so that the result does not depend on the storage's history
        x = self._X[self._row_slot[rows]]
        n = len(rows)
        if n < self.exact_below:
            self._centroids, self._thresholds, self._n_tiers = None, np.zeros(0), 1
            lists, d2 = np.zeros(n, np.int64), np.zeros(n)
        else:
            k = self.n_lists_param or max(1, round(n**0.5))
            k = min(k, n)
            m = min(n, self.train_per_list * k)
            sample = x if m == n else x[np.sort(self._rng.choice(n, m, replace=False))]
            init = self._centroids if self._centroids is not None and len(self._centroids) == k else None
            self._centroids = _kmeans(sample, k, self.n_iter, self._rng, init)
            norms = np.sqrt(np.einsum("nd,nd->n", x, x, dtype=np.float64))
            self._thresholds = np.quantile(norms, self.tiers) if self.tiers else np.zeros(0)
            self._n_tiers = len(self.tiers) + 1
            lists, d2 = self._assign(x)
        self._layout(rows, x, lists)
        self._qerr = float(d2.sum())
        self._n_built = n
        self._qerr_built = self._qerr / max(n, 1)
        self._builds += 1

    # --------------------------------------------------------------- search
    def search(
        self, user_vectors: np.ndarray, n: int, exclude: Sequence[np.ndarray | Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``n`` rows for each user, best first, with their exact scores.

        Parameters
        ----------
        user_vectors
            ``(b, k)`` user factors.
        n
            List length.
        exclude
            ``None`` or one array of rows per user that must not be returned
            (rows not in the index are ignored).

        Returns
        -------
        rows : numpy.ndarray
            ``(b, n)`` int64 rows, ``-1`` where fewer than ``n`` items remain.
        scores : numpy.ndarray
            ``(b, n)`` float32 :math:`\\mathbf{p}^\\top\\mathbf{q} + b` of those rows (``-inf`` padding).

        Notes
        -----
        Each user scores its ``n_probe`` clusters' worth of items plus one
        more item per excluded row in the index, so exclusions never leave a
        user short of candidates. When the exclusions cover a user's best
        items (a long history), the answer lies deeper in the ranking and
        recall drops: raise ``n_probe`` for such users.
        """
        p = np.asarray(user_vectors, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != self.n_factors:
            raise InvalidInputError(f"user_vectors must be finite with shape (b, {self.n_factors}), got {p.shape}")
        if exclude is not None and len(exclude) != len(p):
            raise InvalidInputError(f"exclude has {len(exclude)} entries for {len(p)} users")
        eu, erow = self._flatten_exclude(exclude, len(p))
        return self._search_flat(p, n, eu, erow)

    def _search_flat(
        self, p: np.ndarray, n: int, eu: np.ndarray | None, erow: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with the exclusions given as ``(user, row)`` pairs (``eu`` ascending)."""
        n = C.check_n(n)
        p = np.asarray(p, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != self.n_factors or not np.isfinite(p).all():
            raise InvalidInputError(f"user_vectors must be finite with shape (b, {self.n_factors}), got {p.shape}")
        nb = len(p)
        if eu is None or erow is None:
            eu, erow = np.zeros(0, np.int64), np.zeros(0, np.int64)
        ok = erow < len(self._row_slot)
        eu, eslot = eu[ok], self._row_slot[erow[ok]]
        ok = eslot >= 0
        eu, eslot = eu[ok], eslot[ok]
        out_rows = np.full((nb, n), -1, np.int64)
        out_scores = np.full((nb, n), -np.inf, np.float32)
        if nb == 0 or n == 0 or self._n == 0:
            return out_rows, out_scores
        q = np.ones((nb, self.n_factors + 1), np.float32)
        q[:, :-1] = p
        # budget: items scored per user; excluded items do not count against it
        base = max(n, int(np.ceil(self.n_probe * self._n / max(self.n_lists, 1))))
        budget = base + np.bincount(eu, minlength=nb)
        # users in blocks so that the (users, candidates) score buffer stays bounded
        step = max(1, _BUFFER_SCORES // (int(budget.max()) + int(self._size.max())))
        cut = np.searchsorted(eu, np.arange(0, nb + step, step))
        for blk, lo in enumerate(range(0, nb, step)):
            hi = min(lo + step, nb)
            e = slice(cut[blk], cut[blk + 1])
            rows, scores = self._search_block(q[lo:hi], n, eu[e] - lo, eslot[e], budget[lo:hi])
            out_rows[lo:hi, : rows.shape[1]], out_scores[lo:hi, : rows.shape[1]] = rows, scores
        return out_rows, out_scores

    def _search_block(
        self, q: np.ndarray, n: int, eu: np.ndarray, eslot: np.ndarray, budget: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``min(n, width)`` rows and scores of the users ``q`` (augmented); see :meth:`search`."""
        nb, n_lists = len(q), len(self._size)
        pu, pl, offset, width = self._probe(q, budget)
        # Each user's candidates fill a row of width `width` of `buf`, list after list in probe order
        # (pair (user, list) starts at column `offset`). Computed list by list: one product per list.
        by_list = np.argsort(pl.astype(np.int16) if n_lists < 2**15 else pl, kind="stable")  # radix sort
        pl_sorted = pl[by_list]
        first = np.flatnonzero(np.diff(pl_sorted, prepend=-1))
        bounds = np.append(first, len(by_list)).tolist()
        lists = pl_sorted[first].tolist()
        pair_pos = pu * width + offset  # flat position of each pair's first column, ascending
        dest = pair_pos[by_list][:, None]
        users = pu[by_list]
        buf = np.full(nb * width, -np.inf, np.float32)
        cols = np.arange(int(self._size.max()))
        X, start, size = self._X, self._start.tolist(), self._size.tolist()
        for j, lst in enumerate(lists):
            lo, hi = bounds[j], bounds[j + 1]
            s0, m = start[lst], size[lst]
            buf[dest[lo:hi] + cols[:m]] = q[users[lo:hi]] @ X[s0 : s0 + m].T
        if len(eu):  # excluded rows inside probed lists score -inf
            el = self._row_list[self._slot_row[eslot]]
            key = pu * n_lists + pl
            order = np.argsort(key)
            skey = key[order]
            ekey = eu * n_lists + el
            pos = np.minimum(np.searchsorted(skey, ekey), len(skey) - 1)
            hit = skey[pos] == ekey
            pair = order[pos[hit]]
            buf[pair_pos[pair] + eslot[hit] - self._start[el[hit]]] = -np.inf
        scores = buf.reshape(nb, width)
        kk = min(n, width)
        if kk < width:
            top = np.argpartition(scores, width - kk, axis=1)[:, width - kk :]
        else:
            top = np.broadcast_to(np.arange(width), (nb, width))
        val = np.take_along_axis(scores, top, 1)
        order = np.argsort(-val, axis=1, kind="stable")
        top, val = np.take_along_axis(top, order, 1), np.take_along_axis(val, order, 1)
        # column of a user's row -> (pair, offset in the list) -> slot -> row
        found = np.isfinite(val)
        gpos = (np.arange(nb)[:, None] * width + top)[found]
        pair = np.searchsorted(pair_pos, gpos, side="right") - 1
        rows = np.full((nb, kk), -1, np.int64)
        rows[found] = self._slot_row[self._start[pl[pair]] + gpos - pair_pos[pair]]
        return rows, val

    # ------------------------------------------------------------ internals
    def _check_rows(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        r = np.asarray(rows)
        if r.ndim != 1 or (len(r) and not np.issubdtype(r.dtype, np.integer)):
            raise InvalidInputError(f"rows must be a 1-D integer array, got {r.dtype} {r.shape}")
        r = r.astype(np.int64)
        if len(r) and r.min() < 0:
            raise InvalidInputError("rows must be >= 0")
        return r

    def _set_lists(self, start: np.ndarray, cap: np.ndarray, size: np.ndarray) -> None:
        self._start, self._cap, self._size = start, cap, size
        d = self.n_factors + 1
        self._sum = np.zeros((len(size), d))  # float64 running sums for each list's mean and radius
        self._sumsq = np.zeros(len(size))
        self._probe_cache = None

    def _grow_rows(self, n: int) -> None:
        if n > len(self._row_slot):
            cap = max(n, 2 * len(self._row_slot), 1024)
            self._row_slot = np.concatenate([self._row_slot, np.full(cap - len(self._row_slot), -1, np.int64)])
            self._row_list = np.concatenate([self._row_list, np.zeros(cap - len(self._row_list), np.int64)])

    def _assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """List of each vector and its squared distance to its centroid."""
        if self._centroids is None:
            return np.zeros(len(x), np.int64), np.zeros(len(x))
        cluster, d2 = _nearest(x, self._centroids)
        if self._n_tiers == 1:
            return cluster, d2
        norms = np.sqrt(np.einsum("nd,nd->n", x, x, dtype=np.float64))
        return cluster * self._n_tiers + np.searchsorted(self._thresholds, norms, side="right"), d2

    def _account(self, slots: np.ndarray, sign: float) -> None:
        """Add (``sign=+1``) or take out (``-1``) the stored vectors at ``slots`` from the list statistics."""
        if len(slots) == 0:
            return
        x = self._X[slots]
        lists = self._row_list[self._slot_row[slots]]
        self._add_stats(lists, x, sign)
        if self._centroids is not None:
            c = self._centroids[lists // self._n_tiers]
            diff = (x - c).astype(np.float64)
            self._qerr += sign * float(np.einsum("nd,nd->", diff, diff))

    def _add_stats(self, lists: np.ndarray, x: np.ndarray, sign: float) -> None:
        if len(lists) == 0:
            return
        order = np.argsort(lists, kind="stable")
        for lo in range(0, len(order), _ASSIGN_CHUNK):  # float64 copies of bounded size
            part = order[lo : lo + _ASSIGN_CHUNK]
            uniq, first = np.unique(lists[part], return_index=True)
            xd = x[part].astype(np.float64)
            self._sum[uniq] += sign * np.add.reduceat(xd, first, axis=0)
            self._sumsq[uniq] += sign * np.add.reduceat(np.einsum("nd,nd->n", xd, xd), first)
        self._probe_cache = None

    def _probe_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Each list's mean ``(L, k+1)`` and RMS radius ``(L,)`` (float32), from the running sums."""
        if self._probe_cache is None:
            size = np.maximum(self._size, 1)[:, None]
            mean = self._sum / size
            var = self._sumsq / size[:, 0] - np.einsum("ld,ld->l", mean, mean)
            self._probe_cache = mean.astype(np.float32), np.sqrt(np.maximum(var, 0.0)).astype(np.float32)
        return self._probe_cache

    def _probe(self, q: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Lists each user scans: pairs ``(user, list, offset in the user's row)`` user-major, and the row width.

        Each user takes its lists best estimate first until ``budget[user]``
        items are covered (all non-empty lists when that is the whole catalog).
        """
        nb, size = len(q), self._size
        nonempty = np.flatnonzero(size > 0)
        if self._centroids is None or budget.min() >= self._n:
            order = np.broadcast_to(nonempty, (nb, len(nonempty)))
        else:
            mean, radius = self._probe_stats()
            est = q @ mean.T
            if self.probe_slack:
                est += (self.probe_slack * np.sqrt(np.einsum("bd,bd->b", q, q)))[:, None] * radius
            est[:, size == 0] = -np.inf
            n_lists = len(nonempty)
            # how many lists to rank: a guess from the last search (lists per unit of budget), doubled if short
            k = min(n_lists, int(self._lists_per_item * budget.max()) + 32)
            while True:
                part = np.argpartition(-est, k - 1, axis=1)[:, :k] if k < len(size) else \
                    np.broadcast_to(np.arange(len(size)), (nb, len(size)))
                order = np.take_along_axis(part, np.argsort(-np.take_along_axis(est, part, 1), 1, kind="stable"), 1)
                if k >= n_lists or (np.cumsum(size[order], axis=1)[:, -1] >= budget).all():
                    break
                k = min(n_lists, 2 * k)
            order = order[:, : min(k, n_lists)]
        cum = np.cumsum(size[order], axis=1)
        take = np.minimum((cum < budget[:, None]).sum(1) + 1, order.shape[1])
        self._lists_per_item = 1.25 * float((take / budget).max())
        pu, pj = np.nonzero(np.arange(order.shape[1]) < take[:, None])
        pl = order[pu, pj]
        offset = cum[pu, pj] - size[pl]
        width = int(cum[np.arange(nb), take - 1].max())
        return pu, pl, offset, width

    def _flatten_exclude(
        self, exclude: Sequence[np.ndarray | Sequence[int]] | None, nb: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(user, row)`` of every excluded row (repeats are kept)."""
        if exclude is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        parts = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
        lens = np.array([len(e) for e in parts], np.int64)
        if lens.sum() == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        er = np.concatenate(parts)
        eu = np.repeat(np.arange(nb), lens)
        ok = er >= 0
        return eu[ok], er[ok]

    # -------------------------------------------------------------- storage
    def _layout(self, rows: np.ndarray, x: np.ndarray, lists: np.ndarray) -> None:
        """Lay out every item afresh, list after list, each list with spare room."""
        n_lists = len(self._centroids) * self._n_tiers if self._centroids is not None else 1
        size = np.bincount(lists, minlength=n_lists).astype(np.int64)
        cap = size + np.ceil(size * _SLACK).astype(np.int64) + 4
        start = np.cumsum(cap) - cap
        self._set_lists(start, cap, np.zeros(n_lists, np.int64))
        total = int(cap.sum())
        self._X = np.zeros((total + total // 8, self.n_factors + 1), np.float32)
        self._slot_row = np.full(len(self._X), -1, np.int64)
        self._end = total
        self._row_slot[:] = -1
        self._n = len(rows)
        if len(rows):
            self._append(rows, x, lists)
            self._add_stats(lists, x, +1.0)

    def _append(self, rows: np.ndarray, x: np.ndarray, lists: np.ndarray) -> None:
        """Put new items at the end of their lists (moving full lists to the end of the storage)."""
        order = np.argsort(lists, kind="stable")
        rows, x, lists = rows[order], x[order], lists[order]
        uniq, first, count = np.unique(lists, return_index=True, return_counts=True)
        need = self._size.copy()
        need[uniq] += count
        full = uniq[need[uniq] > self._cap[uniq]]
        if len(full):
            self._relocate(full, need)
        slots = self._start[lists] + self._size[lists] + np.arange(len(lists)) - np.repeat(first, count)
        self._X[slots] = x
        self._slot_row[slots] = rows
        self._row_slot[rows] = slots
        self._row_list[rows] = lists
        self._size = need

    def _relocate(self, lists: np.ndarray, need: np.ndarray) -> None:
        """Move ``lists`` to the end of the storage with room for ``need[list]`` items each.

        ``need`` holds every list's coming size; when the storage is out of
        room, every list is laid out afresh with room for its ``need``.
        """
        cap = need[lists] + np.ceil(need[lists] * _SLACK).astype(np.int64) + 4
        if self._end + int(cap.sum()) > len(self._X):
            self._compact(need)
            return
        src = _ranges(self._start[lists], self._size[lists])
        new_start = self._end + np.cumsum(cap) - cap
        dst = _ranges(new_start, self._size[lists])
        self._X[dst] = self._X[src]
        moved = self._slot_row[src]
        self._slot_row[dst] = moved
        self._slot_row[src] = -1
        self._row_slot[moved] = dst
        self._start[lists], self._cap[lists] = new_start, cap
        self._end += int(cap.sum())

    def _compact(self, need: np.ndarray) -> None:
        """Lay out all lists afresh, contiguously, each with room for ``need[list]`` items plus slack."""
        new_cap = need + np.ceil(need * _SLACK).astype(np.int64) + 4
        new_start = np.cumsum(new_cap) - new_cap
        total = int(new_cap.sum())
        X = np.zeros((total + total // 2, self.n_factors + 1), np.float32)
        slot_row = np.full(len(X), -1, np.int64)
        src = _ranges(self._start, self._size)
        dst = _ranges(new_start, self._size)
        X[dst] = self._X[src]
        slot_row[dst] = self._slot_row[src]
        self._row_slot[slot_row[dst]] = dst
        self._X, self._slot_row, self._end = X, slot_row, total
        self._start, self._cap = new_start, new_cap

    def _remove_slots(self, slots: np.ndarray) -> None:
        """Free the (distinct) ``slots``: the last live items of each list fill the holes."""
        slots = np.sort(slots)
        rows = self._slot_row[slots]
        lists = self._row_list[rows]
        uniq, inv, count = np.unique(lists, return_inverse=True, return_counts=True)
        new_size = self._size[uniq] - count
        cut = self._start[uniq] + new_size  # slots at or past the cut are the lists' tails
        holes = slots[slots < cut[inv]]
        tail = _ranges(cut, count)
        fill = np.sort(tail[~np.isin(tail, slots)])
        self._row_slot[rows] = -1
        if len(holes):
            self._X[holes] = self._X[fill]
            moved = self._slot_row[fill]
            self._slot_row[holes] = moved
            self._row_slot[moved] = holes
        self._slot_row[tail] = -1
        self._size[uniq] = new_size

    def _maybe_rebuild(self) -> None:
        if self.auto_rebuild and self.rebuild_due:
            self.rebuild()

    def __repr__(self) -> str:
        return (f"IVFIndex(n_factors={self.n_factors}, n_items={self._n}, n_lists={self.n_lists}, "
                f"n_probe={self.n_probe})")
