"""Unit tests of ``bench/ivf_index.py``, the approximate index ``bench/topn.py`` measures (fast, seeded, numpy only)."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import InvalidInputError

MODULE = Path(__file__).resolve().parents[2] / "bench" / "ivf_index.py"
_spec = importlib.util.spec_from_file_location("ivf_index", MODULE)
assert _spec is not None and _spec.loader is not None
ivf_index = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ivf_index
_spec.loader.exec_module(ivf_index)
IVFIndex = ivf_index.IVFIndex

K = 32


def clustered(n_items: int, n_users: int, k: int = K, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items from 50 communities (centroid + noise) with popularity-correlated norms and biases; users alike."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((50, k))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    weight = rng.permutation(1.0 / np.arange(1, 51) ** 0.7)
    weight /= weight.sum()
    pop = rng.standard_normal(n_items)  # standardised log-popularity
    noise = rng.standard_normal((n_items, k)) / np.sqrt(k)
    q = np.exp(0.25 * pop)[:, None] * (mu[rng.choice(50, n_items, p=weight)] + 0.7 * noise)
    b = 0.3 * pop + 0.1 * rng.standard_normal(n_items)
    mix = rng.dirichlet(np.full(50, 0.1), n_users)
    p = (mix @ mu + 0.5 * rng.standard_normal((n_users, k)) / np.sqrt(k)) * 2.0
    return p.astype(np.float32), q.astype(np.float32), b.astype(np.float32)


def exact(
    p: np.ndarray, q: np.ndarray, b: np.ndarray, n: int, exclude: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-n rows and scores (float64), -1 / -inf padded."""
    s = p.astype(np.float64) @ q.T.astype(np.float64) + b
    if exclude is not None:
        for u, e in enumerate(exclude):
            s[u, e] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :n]
    val = np.take_along_axis(s, order, 1)
    rows = np.where(np.isfinite(val), order, -1)
    pad = ((0, 0), (0, n - rows.shape[1]))
    return np.pad(rows, pad, constant_values=-1), np.pad(val, pad, constant_values=-np.inf)


def assert_exact(
    rows: np.ndarray, scores: np.ndarray, p: np.ndarray, q: np.ndarray, b: np.ndarray, n: int,
    exclude: list[np.ndarray] | None = None,
) -> None:
    """``rows`` are a true top-n, best first (float32 near-ties may swap) and ``scores`` their scores."""
    want_rows, want_scores = exact(p, q, b, n, exclude)
    np.testing.assert_array_equal(rows == -1, want_rows == -1)
    got = np.where(rows >= 0, np.einsum("uk,unk->un", p.astype(np.float64), q[rows].astype(np.float64)) + b[rows],
                   -np.inf)
    np.testing.assert_allclose(got, want_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    if exclude is not None:
        assert not any(np.isin(r, e).any() for r, e in zip(rows, exclude))


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(sum(len(np.intersect1d(g[g >= 0], t[t >= 0])) for g, t in zip(got, truth)) / (truth >= 0).sum())


def build(q: np.ndarray, b: np.ndarray, **kw: object) -> IVFIndex:
    index = IVFIndex(q.shape[1], **kw)  # type: ignore[arg-type]
    index.upsert(np.arange(len(q)), q, b)
    return index


@pytest.fixture(scope="module")
def world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return clustered(20_000, 300, seed=1)


@pytest.fixture(scope="module")
def index20k(world: tuple[np.ndarray, np.ndarray, np.ndarray]) -> IVFIndex:
    _, q, b = world
    return build(q, b, seed=0)


def test_tiny_catalog_is_exact_brute_force() -> None:
    p, q, b = clustered(300, 40, seed=2)
    index = build(q, b)
    assert not index.is_clustered and len(index) == 300
    exclude = [np.random.default_rng(u).choice(300, 20, replace=False) for u in range(40)]
    for n in (1, 10, 50, 290, 400):  # n above what is left: -1 padding
        rows, scores = index.search(p, n, exclude)
        assert_exact(rows, scores, p, q, b, n, exclude)
        assert rows.shape == scores.shape == (40, n) and rows.dtype == np.int64 and scores.dtype == np.float32
    assert (index.search(p, 400, exclude)[0] == -1).sum(1).tolist() == [120] * 40


def test_clustered_index_is_exact_when_its_budget_covers_the_catalog() -> None:
    p, q, b = clustered(3000, 30, seed=3)
    index = build(q, b, exact_below=500, n_probe=10_000)
    assert index.is_clustered and index.n_lists == 55
    assert_exact(*index.search(p, 20), p, q, b, 20)


def test_recall_at_50_on_a_clustered_20k_catalog(world, index20k) -> None:
    p, q, b = world
    assert index20k.is_clustered and len(index20k) == 20_000
    exclude = [np.random.default_rng(u).choice(20_000, 50, replace=False) for u in range(len(p))]
    rows, _ = index20k.search(p, 50, exclude)
    assert recall(rows, exact(p, q, b, 50, exclude)[0]) >= 0.95


def test_scores_are_exact_and_sorted(world, index20k) -> None:
    p, q, b = world
    rows, scores = index20k.search(p[:50], 50)
    want = np.einsum("uk,unk->un", p[:50].astype(np.float64), q[rows].astype(np.float64)) + b[rows]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert all(len(set(r)) == 50 for r in rows.tolist())


def test_exclusions_never_returned_even_when_they_cover_the_best_lists(world, index20k) -> None:
    p, q, b = world
    best = exact(p[:40], q, b, 600)[0]  # exclude each user's 600 best items: whole probed lists go
    exclude = [np.concatenate([r, r[:10], [-5, 10**9]]) for r in best]  # repeats and foreign rows are ignored
    rows, scores = index20k.search(p[:40], 50, exclude)
    assert (rows >= 0).all() and np.isfinite(scores).all()
    for r, e in zip(rows, best):
        assert not np.isin(r, e).any()
    # the answer lies at ranks 601-650, far deeper than usual: more probes bring the recall back
    deep = build(q, b, seed=0, n_probe=32)  # the same lists as index20k (same seed), probed 4x deeper
    assert recall(deep.search(p[:40], 50, exclude)[0], exact(p[:40], q, b, 50, list(best))[0]) >= 0.95


def test_upserted_new_and_changed_items_are_found_with_their_new_scores() -> None:
    p, q, b = clustered(6000, 20, seed=4)
    index = build(q, b, seed=0)
    assert index.is_clustered
    # a new item aimed at user 0 and an old one moved to user 1: both must top their lists
    new_row, moved_row = 7000, 123
    vec = np.stack([p[0] * 3.0, p[1] * 3.0])
    index.upsert(np.array([new_row, moved_row]), vec, np.array([1.0, 1.0]))
    assert len(index) == 6001 and new_row in index and 6500 not in index
    rows, scores = index.search(p[:2], 5)
    assert rows[0, 0] == new_row and rows[1, 0] == moved_row
    np.testing.assert_allclose(scores[:, 0], [p[0] @ vec[0] + 1.0, p[1] @ vec[1] + 1.0], rtol=1e-5)
    np.testing.assert_allclose(index.vectors([moved_row])[0], vec[1:])
    # a batch of new items from the same distribution is searchable as well as the old ones
    _, q2, b2 = clustered(2000, 20, seed=5)
    index.upsert(np.arange(10_000, 12_000), q2, b2)
    allq, allb = np.concatenate([q, q2]), np.concatenate([b, b2])
    allq[moved_row], allb[moved_row] = vec[1], 1.0
    rowids = np.concatenate([np.arange(6000), np.arange(10_000, 12_000)])
    truth = rowids[exact(p, allq, allb, 50)[0]]
    truth[0, 0], truth[1, 0] = new_row, moved_row
    rows, _ = index.search(p, 50)
    assert recall(rows, truth) >= 0.95


def test_removed_rows_are_gone() -> None:
    p, q, b = clustered(5000, 10, seed=6)
    index = build(q, b, seed=0)
    top = index.search(p, 10)[0]
    index.remove(np.concatenate([top[:, 0], [99_999]]))
    rows, _ = index.search(p, 10)
    assert not np.isin(rows, top[:, 0]).any()
    assert len(index) == 5000 - len(np.unique(top[:, 0]))


def test_recall_holds_under_drift_and_growth() -> None:
    p, q, b = clustered(12_000, 200, seed=7)
    index = build(q[:10_000], b[:10_000], seed=0)
    rng = np.random.default_rng(0)
    q, b = q.copy(), b.copy()
    changed = rng.choice(10_000, 500, replace=False)  # 5 % of the items move, and 20 % more arrive
    q[changed] += 0.3 * np.linalg.norm(q[changed], axis=1, keepdims=True) * rng.standard_normal((500, K)) / np.sqrt(K)
    b[changed] += 0.1 * rng.standard_normal(500).astype(np.float32)
    index.upsert(changed, q[changed], b[changed])
    index.upsert(np.arange(10_000, 12_000), q[10_000:], b[10_000:])
    rows, scores = index.search(p, 50)
    assert recall(rows, exact(p, q, b, 50)[0]) >= 0.95
    np.testing.assert_allclose(scores[:, 0], np.einsum("uk,uk->u", p, q[rows[:, 0]]) + b[rows[:, 0]], rtol=1e-5)


def test_rebuilds_by_itself_when_the_catalog_grows() -> None:
    _, q, b = clustered(9000, 1, seed=8)
    index = IVFIndex(K, exact_below=1000, rebuild_growth=0.5)
    index.upsert(np.arange(999), q[:999], b[:999])
    assert not index.is_clustered
    index.upsert([999], q[999:1000], b[999:1000])
    assert index.is_clustered and index.n_lists == 32 and not index.rebuild_due
    index.upsert(np.arange(1000, 1500), q[1000:1500], b[1000:1500])
    assert index.n_lists == 32  # +50 %: not yet
    index.upsert(np.arange(1500, 9000), q[1500:], b[1500:])
    assert index.n_lists == 95 and len(index) == 9000


def test_deterministic(world) -> None:
    p, q, b = world
    runs = []
    for _ in range(2):
        index = build(q[:8000], b[:8000], seed=3)
        index.upsert(np.arange(7000, 9000), q[7000:9000] * 1.1, b[7000:9000])
        runs.append((index.search(p, 20), index.n_lists, index.nbytes))
    (r1, s1), lists1, bytes1 = runs[0]
    (r2, s2), lists2, bytes2 = runs[1]
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    assert lists1 == lists2 and bytes1 == bytes2 > 9000 * (K + 1) * 4


def test_bad_inputs_raise() -> None:
    index = IVFIndex(4)
    with pytest.raises(InvalidInputError):
        index.upsert([0, 1], np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(InvalidInputError):
        index.upsert([-1], np.zeros((1, 4)), np.zeros(1))
    with pytest.raises(InvalidInputError):
        index.upsert([0], np.full((1, 4), np.nan), np.zeros(1))
    with pytest.raises(InvalidInputError):
        index.search(np.zeros((1, 5)), 3)
    with pytest.raises(InvalidInputError):
        index.search(np.zeros((2, 4)), 3, exclude=[np.array([1])])
    with pytest.raises(InvalidInputError):
        IVFIndex(4, n_probe=0)
    rows, scores = index.search(np.zeros((2, 4)), 3)  # empty index: all padding
    assert (rows == -1).all() and np.isneginf(scores).all()
    index.upsert([5, 5], np.ones((2, 4)), [1.0, 2.0])  # a repeated row: the last one wins
    assert len(index) == 1 and index.vectors([5])[1].tolist() == [2.0]


def test_docstring_examples() -> None:
    result = doctest.testmod(ivf_index)
    assert result.attempted > 0 and result.failed == 0, result
