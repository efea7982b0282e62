"""Exact top-N for many users at once over a large catalog: a shared candidate pool, proven per user.

Brute force scores every item for every user (``P @ V.T + b``), which grows with the
catalog. :func:`pooled_top_n` scores the users of a batch against a few items only and
proves, user by user, that no other item could have made the list:

1. **Shared pool.** The ``pool_size`` items with the highest ``|q_i| * c + b_i``
   (``c`` the batch's median user norm) are the likeliest to score well for anyone.
   Every user is scored against this same pool: one matrix product.
2. **Ceiling per user.** By Cauchy-Schwarz an item outside the pool scores at most
   ``|p_u| * |q_i| + b_i`` for user ``u``. Bounding that over all outside items
   (grouped by norm, :func:`_score_ceiling`) gives each user a ceiling.
3. **Exactness.** Where a user's n-th best pool score reaches the ceiling, no outside
   item can enter the top-n: the pool's answer is the brute-force answer. The other
   users (a few percent on learned factors, none for most batches) go round again with
   a pool 8 times larger, up to the whole catalog (brute force), so every answer is exact.

:class:`~models.BPRMF` uses it from ``pooled_search_min_items`` items on.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> V, b = rng.standard_normal((5000, 8)), rng.standard_normal(5000)
>>> P = rng.standard_normal((40, 8))
>>> rows, scores = pooled_top_n(P, V, b, 10, pool_size=256)
>>> brute = np.argsort(-(P @ V.T + b), axis=1, kind="stable")[:, :10]
>>> rows.shape, bool((rows == brute).all())
((40, 10), True)

Excluded ``(user, item)`` pairs are never returned: here user 0 loses its best two items.

>>> rows, _ = pooled_top_n(P, V, b, 10, (np.array([0, 0]), brute[0, :2]), pool_size=256)
>>> rows[0].tolist() == np.argsort(-(P[0] @ V.T + b), kind="stable")[2:12].tolist()
True
"""

from __future__ import annotations

import numpy as np

from . import _common as C

__all__ = ["pooled_top_n"]

_POOL_BLOCK_SCORES = 1 << 21  # scores per block of users in pooled_top_n (8 MiB of float32)


_POOL_HEAD = 256  # pool columns ranked first; the rest only when one of them could enter the top-n


def pooled_top_n(
    P: np.ndarray,
    V: np.ndarray,
    b: np.ndarray,
    n: int,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    pool_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n item rows and scores of each user vector of ``P`` for items ``V`` (rows) and biases ``b``, exact.

    The score of item ``i`` for user ``r`` is ``P[r] @ V[i] + b[i]``. Returns ``(rows, scores)``,
    both ``(len(P), min(n, len(V)))``, best first, padded with ``-1`` / ``-inf`` where a user has
    fewer items left. ``excluded`` holds the ``(row of P, item row)`` pairs never to return, rows of
    ``P`` ascending (:func:`models._common.flatten_exclude`). ``pool_size`` is the size of the first
    round's shared pool (see the module docstring).
    """
    ni = len(V)
    if n == 0:  # nothing to rank, and no n-th score to prove
        return np.zeros((len(P), 0), np.int64), np.zeros((len(P), 0), V.dtype)
    m = min(ni, max(pool_size, 4 * n))
    user_norms = np.sqrt(np.einsum("ij,ij->i", P, P))
    item_norms = np.sqrt(np.einsum("ij,ij->i", V, V))
    key = item_norms * np.median(user_norms) + b
    pool = np.argpartition(key, ni - m)[ni - m :] if m < ni else np.arange(ni)
    pool = pool[np.argsort(-key[pool], kind="stable")]  # likeliest first: see the head below
    pool_vectors, pool_bias = np.ascontiguousarray(V[pool].T), b[pool]
    head = min(m, max(4 * n, _POOL_HEAD))
    slot = None
    if excluded is not None:
        slot = np.full(ni, -1, np.int64)
        slot[pool] = np.arange(m)
    width = min(n, m)
    rows = np.empty((len(P), width), np.int64)
    vals = np.empty((len(P), width), V.dtype)
    block = max(1, _POOL_BLOCK_SCORES // m)  # bounded memory, cache-sized blocks
    for lo in range(0, len(P), block):
        hi = min(lo + block, len(P))
        scores = P[lo:hi] @ pool_vectors + pool_bias
        if slot is not None and excluded is not None:  # slot is set exactly when there are exclusions
            eu, er = excluded
            a, z = np.searchsorted(eu, [lo, hi])
            es = slot[er[a:z]]
            hit = es >= 0
            scores[eu[a:z][hit] - lo, es[hit]] = -np.inf
        cols, block_vals = _top_with_head(scores, n, head)
        vals[lo:hi] = block_vals
        rows[lo:hi] = np.where(cols >= 0, pool[np.maximum(cols, 0)], -1)
    if m == ni:
        return rows, vals
    outside = np.ones(ni, bool)
    outside[pool] = False
    ceiling = _score_ceiling(user_norms, item_norms[outside], b[outside])
    nth = vals[:, n - 1] if vals.shape[1] >= n else np.full(len(P), -np.inf, vals.dtype)
    unproven = np.flatnonzero(~(nth >= ceiling))
    if len(unproven):
        sub = None
        if excluded is not None:  # the unproven users' pairs, renumbered 0, 1, 2, ... (still ascending)
            eu, er = excluded
            at = np.full(len(P), -1, np.int64)
            at[unproven] = np.arange(len(unproven))
            keep = at[eu] >= 0
            sub = at[eu[keep]], er[keep]
        rows[unproven], vals[unproven] = pooled_top_n(P[unproven], V, b, n, sub, pool_size=8 * m)
    return rows, vals


def _top_with_head(scores: np.ndarray, n: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`models._common.top_arrays` of ``scores``, cheaper when the best columns come first.

    The top-n of the first ``head`` columns is the top-n of the row when no later
    column beats its n-th score (one max per row instead of a selection over all).
    """
    if head >= scores.shape[1]:
        return C.top_arrays(scores, n)
    cols, vals = C.top_arrays(scores[:, :head], n)
    nth = vals[:, n - 1] if vals.shape[1] >= n else np.full(len(scores), -np.inf, scores.dtype)
    redo = np.flatnonzero(~(nth >= scores[:, head:].max(axis=1)))
    if len(redo):
        cols[redo], vals[redo] = C.top_arrays(scores[redo], n)
    return cols, vals


def _score_ceiling(user_norms: np.ndarray, norms: np.ndarray, biases: np.ndarray, groups: int = 64) -> np.ndarray:
    """Per user, an upper bound of ``|p_u| * |q_i| + b_i`` over the given items (with a float margin).

    Items are binned by norm (equal widths up to the largest); a bin's upper edge and
    its largest bias bound every member, so the bound is ``max_g |p_u| * N_g + B_g``.
    Linear in the items (a radix sort of 8-bit bin numbers): ~10 ms at 1M items.
    """
    if len(norms) == 0:
        return np.full(len(user_norms), -np.inf)
    top = float(norms.max()) or 1.0
    group = np.minimum(norms * (groups / top), groups - 1).astype(np.uint8)
    order = np.argsort(group, kind="stable")
    sorted_groups = group[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_groups[1:] != sorted_groups[:-1])))
    top_bias = np.maximum.reduceat(biases[order], starts).astype(np.float64)
    top_norm = (sorted_groups[starts].astype(np.float64) + 1.0) * (top / groups)
    ceiling = (user_norms[:, None].astype(np.float64) * top_norm + top_bias).max(axis=1)
    bound: np.ndarray = ceiling + 1e-4 * (np.abs(ceiling) + user_norms * top) + 1e-6
    return bound
