"""Unit tests of :mod:`models.topn`, the exact pooled top-N search, through :class:`~models.BPRMF` and alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models import BPRMF
from models.topn import pooled_top_n
from tests.unit.planted import planted_stream


def test_top_n_lists_matches_top_n_batch_and_skips_unknown_users() -> None:
    users, items = planted_stream(3000, seed=3)
    for min_items in (None, 16):  # brute force, then the pooled search
        m = BPRMF(n_factors=8, seed=1, pooled_search_min_items=min_items)
        m.learn_batch(users, items)
        asked = [*users[:40], "nobody"]
        hist = [dict.fromkeys(i for u2, i in zip(users, items) if u2 == u) for u in asked]
        ids, scores = m.top_n_lists(asked, 10, hist)
        assert ids[-1] == [] and scores[-1] == []
        tuples = m.top_n_batch(asked, 10, hist)
        assert [[i for i, _ in t] for t in tuples] == ids
        assert [[s for _, s in t] for t in tuples] == scores
        for u, row, h in zip(asked, ids, hist):
            assert not set(row) & set(h)
            if row:
                np.testing.assert_allclose(scores[asked.index(u)], m.score(u, row), rtol=1e-5, atol=1e-6)


def test_pooled_search_follows_learning_and_set_item_vectors() -> None:
    users, items = planted_stream(4000, seed=4)
    m = BPRMF(n_factors=8, seed=2, pooled_search_min_items=16)
    m.learn_batch(users[:2000], items[:2000])
    m.top_n_lists(users[:5], 5)  # ranked once before the factors change
    m.learn_batch(users[2000:], items[2000:])
    best = m.item_ids[0]
    m.set_item_vectors([best], 10 * m.user_vectors([users[0]]), np.array([10.0]))
    ids, scores = m.top_n_lists(users[:20], 5)
    assert ids[0][0] == best
    for u, row, sc in zip(users[:20], ids, scores):
        np.testing.assert_allclose(sc, m.score(u, row), rtol=1e-5, atol=1e-5)


def count_rounds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pool size of each round of the pooled search, in call order (the model's call, then the search's own)."""
    rounds: list[int] = []

    def spy(*args: Any, pool_size: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        rounds.append(pool_size)
        return pooled_top_n(*args, pool_size=pool_size, **kwargs)

    monkeypatch.setattr("models.bpr.pooled_top_n", spy)
    monkeypatch.setattr("models.topn.pooled_top_n", spy)  # the later rounds
    return rounds


def test_pooled_top_n_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above pooled_search_min_items, a shared pool ranks everyone; a per-user ceiling proves no outside
    item is missed, and users it cannot prove go round again with a larger pool."""
    rng = np.random.default_rng(7)
    n_items, n_users = 6000, 300
    m = BPRMF(n_factors=8, seed=3, pooled_search_min_items=4096, pool_size=64)
    items = [f"i{j}" for j in rng.integers(n_items, size=40_000)]  # flat: few items stand out, proofs are hard
    users = [f"u{j}" for j in rng.integers(n_users, size=40_000)]
    for lo in range(0, 40_000, 2000):
        m.learn_batch(users[lo : lo + 2000], items[lo : lo + 2000])
    asked = sorted(set(users))[:200]
    hist = [dict.fromkeys(i for u2, i in zip(users, items) if u2 == u) for u in asked]
    rounds = count_rounds(monkeypatch)
    fast_ids, fast_scores = m.top_n_lists(asked, 20, hist)
    m.pooled_search_min_items = None
    exact_ids, exact_scores = m.top_n_lists(asked, 20, hist)
    assert m.n_items > 4096 and rounds[0] == 64 and len(rounds) > 1  # some users needed a second round
    assert fast_ids == exact_ids
    np.testing.assert_allclose(np.array(fast_scores), np.array(exact_scores), rtol=1e-5, atol=1e-6)
    assert all(not set(row) & set(h) for row, h in zip(fast_ids, hist))


def test_pooled_search_reads_iterator_exclusions_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exclusions given as one-shot iterators still hold for users who need a second, larger pool."""
    rng = np.random.default_rng(7)
    m = BPRMF(n_factors=8, seed=3, pooled_search_min_items=1, pool_size=64)
    items = [f"i{j}" for j in rng.integers(6000, size=40_000)]
    users = [f"u{j}" for j in rng.integers(300, size=40_000)]
    for lo in range(0, 40_000, 2000):
        m.learn_batch(users[lo : lo + 2000], items[lo : lo + 2000])
    asked = sorted(set(users))[:200]
    hist = [list(dict.fromkeys(i for u2, i in zip(users, items) if u2 == u)) for u in asked]
    rounds = count_rounds(monkeypatch)
    as_lists = m.top_n_lists(asked, 20, hist)
    assert len(rounds) > 1  # some users went round again
    assert m.top_n_lists(asked, 20, [iter(h) for h in hist]) == as_lists
    assert all(not set(row) & set(h) for row, h in zip(as_lists[0], hist))


def test_pooled_search_of_zero_items() -> None:
    """n = 0 with a catalog larger than the pool: empty lists, as brute force gives."""
    m = BPRMF(n_factors=4, pooled_search_min_items=1, pool_size=8)
    m.learn_batch(["u"] * 50, [f"i{j}" for j in range(50)])
    ids, scores = m.top_n_matrix(["u"], 0)
    assert ids == [[]] and scores.shape == (1, 0)
    assert m.top_n("u", 0) == [] and m.top_n_lists(["u"], 0, [["i1"]]) == ([[]], [[]])


def test_pooled_top_n_matrix_equals_brute_force_with_a_fixed_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``top_n_matrix``, the worker's call, gives the same items with the pooled search as with brute force."""
    users, items = planted_stream(40_000, n_groups=10, items_per_group=600, seed=11)
    m = BPRMF(n_factors=16, seed=5, pooled_search_min_items=4096, pool_size=256)
    for lo in range(0, len(users), 2000):
        m.learn_batch(users[lo : lo + 2000], items[lo : lo + 2000])
    asked = sorted(set(users))[:300]
    hist = [dict.fromkeys(i for u2, i in zip(users, items) if u2 == u) for u in asked]
    assert m.n_items >= 4096
    rounds = count_rounds(monkeypatch)
    for n in (1, 10, 100):
        pooled_ids, pooled_scores = m.top_n_matrix(asked, n, hist)
        m.pooled_search_min_items = None
        exact_ids, exact_scores = m.top_n_matrix(asked, n, hist)
        m.pooled_search_min_items = 4096
        assert pooled_ids == exact_ids
        assert pooled_scores.shape == exact_scores.shape == (len(asked), n)
        assert pooled_scores.dtype == exact_scores.dtype == np.float32
        np.testing.assert_allclose(pooled_scores, exact_scores, rtol=1e-5, atol=1e-6)
    assert len(rounds) > 3  # some users needed a second round


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooled_top_n_alone_equals_brute_force(dtype: type[np.floating[Any]]) -> None:
    """The function over plain arrays: small pools (several rounds), exclusions, more items asked than remain."""
    rng = np.random.default_rng(3)
    V = rng.standard_normal((3000, 8)).astype(dtype)
    b = (0.5 * rng.standard_normal(3000)).astype(dtype)
    P = rng.standard_normal((120, 8)).astype(dtype)
    eu = np.sort(rng.integers(0, len(P), 4000))
    er = rng.integers(0, len(V), 4000)
    brute = P @ V.T + b
    brute[eu, er] = -np.inf
    for n, pool_size in ((1, 16), (10, 32), (25, 1000)):
        want = np.argsort(-brute, axis=1, kind="stable")[:, :n]
        rows, scores = pooled_top_n(P, V, b, n, (eu, er), pool_size=pool_size)
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_allclose(scores, np.take_along_axis(brute, want, 1), rtol=1e-5, atol=1e-6)
        assert scores.dtype == dtype
    few, fb = V[:5], b[:5]  # 5 items, 7 asked; user 0 excludes 2 of them
    rows, scores = pooled_top_n(P[:2], few, fb, 7, (np.array([0, 0]), np.array([1, 3])), pool_size=2)
    assert rows.shape == (2, 5) and rows[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    assert sorted(rows[0, :3].tolist()) == [0, 2, 4] and sorted(rows[1].tolist()) == [0, 1, 2, 3, 4]
