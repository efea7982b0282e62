"""Unit tests of :mod:`models.bpr`: the learner (fast, seeded, no services).

Its ranking is tested in ``test_topn.py``, its tag priors in ``test_tags.py``, the
protocols every model honours in ``test_base.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from models import BPRMF, ModelError, Popularity, UnknownIdError
from tests.unit.planted import planted_stream, planted_tag


def test_bpr_sgd_lowers_training_loss() -> None:
    users, items = planted_stream(4000)
    m = BPRMF(n_factors=8, seed=1)
    m.learn_batch(users[:200], items[:200])
    before = m.loss(users[:200], items[:200])
    for lo in range(200, 4000, 200):
        m.learn_batch(users[lo : lo + 200], items[lo : lo + 200])
    after = m.loss(users[:200], items[:200])
    assert after < 0.5 * before, (before, after)
    assert m.loss(users[:200], items[:200]) == after  # fixed-seed negatives, model RNG untouched


def test_bpr_ids_grow_and_rows_initialised() -> None:
    m = BPRMF(n_factors=4, init_std=0.1)
    assert m.n_users == m.n_items == 0 and m.user_ids == [] and not m.has_user("a")
    m.learn_one("a", "x")  # a single item: no negative exists yet, rows are still created
    assert (m.n_users, m.n_items) == (1, 1) and m.has_user("a") and m.has_item("x")
    vx, bx = m.item_vectors(["x"])
    assert vx.shape == (1, 4) and bx.tolist() == [0.0] and np.abs(vx).max() > 0
    names = [f"i{n}" for n in range(1000)]  # far past the initial capacity
    m.learn_batch(["b"] * 1000, names)
    assert m.n_items == 1001 and m.item_ids[:2] == ["x", "i0"] and m.user_ids == ["a", "b"]
    assert m.score("b").shape == (1001,) and m.score("b").dtype == np.float32
    assert np.isfinite(m.score("b")).all()


def test_bpr_learn_one_is_a_batch_of_one() -> None:
    users, items = planted_stream(300)
    a, b = BPRMF(n_factors=8, seed=3), BPRMF(n_factors=8, seed=3)
    for u, i in zip(users, items):
        a.learn_one(u, i, 2.0)
        b.learn_batch([u], [i], np.array([2.0]))
    assert a.to_bytes() == b.to_bytes()


def test_bpr_seeds_differ_and_weights_are_relative() -> None:
    users, items = planted_stream(500)
    mixed = np.resize([1.0, 3.0, 5.0], len(users))
    runs: dict[tuple[int, str], list[np.ndarray]] = {}
    for seed, name, w in ((0, "one", 1.0), (0, "one", 1.0), (1, "one", 1.0), (0, "three", 3.0), (0, "mixed", mixed)):
        m = BPRMF(n_factors=8, seed=seed)
        m.learn_batch(users, items, np.broadcast_to(w, len(users)))
        runs.setdefault((seed, name), []).append(m.score("u1"))
    np.testing.assert_array_equal(*runs[(0, "one")])
    assert not np.array_equal(runs[(0, "one")][0], runs[(1, "one")][0])
    # weights count relative to their running mean: scaling all of them changes nothing...
    np.testing.assert_allclose(runs[(0, "one")][0], runs[(0, "three")][0], rtol=1e-4, atol=1e-6)
    # ... but their differences do
    assert not np.allclose(runs[(0, "one")][0], runs[(0, "mixed")][0], rtol=1e-3)
    raw = [BPRMF(n_factors=8, normalize_weights=False) for _ in range(2)]
    for m, w in zip(raw, (1.0, 3.0)):
        m.learn_batch(users, items, np.full(len(users), w))
    assert not np.allclose(raw[0].score("u1"), raw[1].score("u1"), rtol=1e-3)
    m = BPRMF(n_factors=8)
    m.learn_batch(users, items)
    before = m.to_bytes()
    m.learn_batch(users[:50], items[:50], np.zeros(50))  # zero weight: no step at all
    assert m.to_bytes() == before


def test_bpr_adaptive_negatives_are_the_best_scored_candidates() -> None:
    users, items = planted_stream(3000, seed=6)
    m = BPRMF(n_factors=8, seed=0, negative_candidates=1)
    m.learn_batch(users, items)
    u, i = m._users.lookup(users[:500]), m._items.lookup(items[:500])

    def mean_score(c: int) -> float:
        m.negative_candidates = c
        j = m._negatives(u, i)
        assert j.shape == (500, m.n_negatives) and not (j == i[:, None]).any()
        return float(np.mean(np.einsum("bk,bmk->bm", m._U[u], m._V[j]) + m._b[j]))

    uniform, adaptive, harder = mean_score(1), mean_score(2), mean_score(4)
    assert uniform < adaptive < harder, (uniform, adaptive, harder)
    # c = 1 is plain uniform sampling: the generator's draws, shifted past the positive
    m.negative_candidates = 1
    state = m._rng.bit_generator.state
    j = m._negatives(u, i)
    m._rng.bit_generator.state = state
    want = m._rng.integers(0, m.n_items - 1, size=(500, m.n_negatives))
    np.testing.assert_array_equal(j, want + (want >= i[:, None]))


def test_bpr_user_decay_per_event_and_by_time() -> None:
    kw = {"n_factors": 4, "learning_rate": 1e-9, "regularization": 0.0}  # steps negligible: decay alone
    m = BPRMF(user_decay=0.25, **kw)
    m.learn_batch(["a", "b"], ["x", "y"])
    p = m.user_vectors(["a"])
    m.learn_one("a", "y")
    np.testing.assert_allclose(m.user_vectors(["a"]), 0.75 * p, rtol=1e-5)
    t = BPRMF(user_decay=0.0, user_decay_half_life_s=10.0, **kw)
    t.learn_batch(["a", "b"], ["x", "y"], ts_ms=[0, 0])
    p = t.user_vectors(["a"])
    t.learn_batch(["a", "a"], ["y", "x"], ts_ms=[10_000, 30_000])  # 1 then 2 half-lives, one after another
    np.testing.assert_allclose(t.user_vectors(["a"]), p / 8, rtol=1e-5)
    t.learn_one("a", "y")  # no time given: no time decay
    np.testing.assert_allclose(t.user_vectors(["a"]), p / 8, rtol=1e-5)
    t.learn_one("a", "x", ts_ms=20_000)  # out of order: no negative gap, no decay
    np.testing.assert_allclose(t.user_vectors(["a"]), p / 8, rtol=1e-5)
    with pytest.raises(ModelError):
        t.learn_batch(["a"], ["x"], ts_ms=[1.0, 2.0])
    with pytest.raises(ModelError):
        t.learn_one("a", "x", ts_ms=float("nan"))


def test_bpr_round_trip_keeps_tags_times_and_weight_stats() -> None:
    users, items = planted_stream(2000, seed=8)
    tags = [[planted_tag(i)] for i in items]
    ts = np.arange(len(users)) * 1000.0
    a = BPRMF(n_factors=8, seed=4, user_decay_half_life_s=60.0)
    a.learn_batch(users[:1500], items[:1500], np.resize([1.0, 3.0], 1500), item_tags=tags[:1500], ts_ms=ts[:1500])
    b = BPRMF.from_bytes(a.to_bytes())
    for m in (a, b):
        m.learn_batch(users[1500:] + ["u1"], items[1500:] + ["brand-new"], item_tags=tags[1500:] + [["g1"]],
                      ts_ms=np.r_[ts[1500:], 3e6])
        m.set_item_tags(["newer"], [["g2"]])
    assert a.to_bytes() == b.to_bytes()
    np.testing.assert_array_equal(a.tag_vector(["g1"])[0], b.tag_vector(["g1"])[0])


def test_bpr_planted_tastes_beat_popularity() -> None:
    users, items = planted_stream(8000, seed=5)
    group = {f"u{n}": n // 40 for n in range(160)}
    bpr, pop = BPRMF(n_factors=8, seed=0), Popularity()
    n_train = 6000
    for lo in range(0, n_train, 500):
        bpr.learn_batch(users[lo : lo + 500], items[lo : lo + 500])
        pop.learn_batch(users[lo : lo + 500], items[lo : lo + 500])
    seen: dict[str, set[str]] = {}
    for u, i in zip(users[:n_train], items[:n_train]):
        seen.setdefault(u, set()).add(i)
    # group-A users' top-10 among unseen items is mostly group-A items
    group_a = [u for u in seen if group[u] == 0]
    tops = bpr.top_n_batch(group_a, 10, [seen[u] for u in group_a])
    in_group = np.mean([int(i[1:]) // 30 == 0 for top in tops for i, _ in top])
    assert in_group > 0.9, in_group
    # held-out prequential pass: test each batch, then learn it
    hits = {"bpr": 0, "pop": 0}
    total = 0
    for lo in range(n_train, len(users), 100):
        us, its = users[lo : lo + 100], items[lo : lo + 100]
        ev = [(u, i) for u, i in zip(us, its) if u in seen and i not in seen[u]]
        total += len(ev)
        for name, model in (("bpr", bpr), ("pop", pop)):
            for (_, i), top in zip(ev, model.top_n_batch([u for u, _ in ev], 10, [seen[u] for u, _ in ev])):
                hits[name] += i in {x for x, _ in top}
            model.learn_batch(us, its)
        for u, i in zip(us, its):
            seen.setdefault(u, set()).add(i)
    hr = {k: v / total for k, v in hits.items()}
    assert total > 200 and hr["bpr"] > hr["pop"] + 0.3, hr


def test_bpr_unknown_ids() -> None:
    m = BPRMF(n_factors=4)
    m.learn_batch(["a", "b"], ["x", "y"])
    with pytest.raises(UnknownIdError, match="unknown user 'zz'") as exc:
        m.score("zz")
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, ModelError)
    with pytest.raises(KeyError):
        m.top_n("zz", 3)
    with pytest.raises(UnknownIdError):
        m.user_vectors(["a", "zz"])
    with pytest.raises(UnknownIdError):
        m.item_vectors(["nope"])
    assert m.top_n_batch(["zz", "a"], 2)[0] == [] and len(m.top_n_batch(["zz", "a"], 2)[1]) == 2
    s = m.score("a", ["x", "nope", "y"])  # unknown items score 0 (a fresh item's expected score)
    assert s[1] == 0.0 and s[0] == m.score("a")[0] and s[2] == m.score("a")[1]


def test_bpr_row_access_round_trip() -> None:
    users, items = planted_stream(1000)
    src = BPRMF(n_factors=8, seed=2, covisit_weight=0.0)  # rows carry the factors, not the session
    src.learn_batch(users, items)
    us, its = src.user_ids, src.item_ids
    U = src.user_vectors(us)
    V, b = src.item_vectors(its)
    U[:] = 0  # copies, not views
    assert np.abs(src.user_vectors(us)).max() > 0
    dst = BPRMF(n_factors=8, seed=2, covisit_weight=0.0)
    dst.set_user_vectors(us, src.user_vectors(us))
    dst.set_item_vectors(its, V, b)
    assert dst.user_ids == us and dst.item_ids == its
    np.testing.assert_array_equal(dst.score("u1"), src.score("u1"))
    # restoring rows consumed no randomness: the next learning step matches a restored RNG state
    assert dst._rng.bit_generator.state == BPRMF(seed=2)._rng.bit_generator.state
    dst.set_user_vectors(["u1"], np.ones((1, 8)))
    np.testing.assert_array_equal(dst.user_vectors(["u1"]), np.ones((1, 8), np.float32))
    with pytest.raises(ModelError):
        dst.set_user_vectors(["u1"], np.ones((1, 3)))
    with pytest.raises(ModelError):
        dst.set_item_vectors(["i1"], np.ones((1, 8)), np.array([np.nan]))


def test_bpr_hyperparameters_round_trip_and_validation() -> None:
    m = BPRMF(n_factors=6, learning_rate=0.2, n_negatives=3, seed=None, dtype=np.float64, max_user_steps=4)
    m.learn_batch(["a", "a", "b"], ["x", "y", "z"])
    m2 = BPRMF.from_bytes(m.to_bytes())
    assert (m2.n_factors, m2.learning_rate, m2.n_negatives, m2.dtype, m2.max_user_steps) == (
        6, 0.2, 3, np.dtype(np.float64), 4,
    )
    assert m2.score("a").dtype == np.float64
    bad_params = (
        {"n_factors": 0}, {"learning_rate": 0}, {"n_negatives": -1}, {"dtype": np.int32},
        {"negative_candidates": 0}, {"weight_exponent": -1}, {"user_lr_scale": 0}, {"user_decay": 1.0},
        {"user_decay_half_life_s": 0},
    )
    for bad in bad_params:
        with pytest.raises(ModelError):
            BPRMF(**bad)  # type: ignore[arg-type]


def test_bpr_extreme_weights_and_hot_rows_stay_finite() -> None:
    m = BPRMF(n_factors=8)
    m.learn_batch([f"u{n}" for n in range(50)], [f"i{n}" for n in range(50)])
    for _ in range(20):  # one viral item, one bot user, huge weights
        m.learn_batch(["bot"] * 1000 + [f"u{n}" for n in range(1000)], ["viral"] * 2000, np.full(2000, 1e6))
    U, (V, b) = m.user_vectors(m.user_ids), m.item_vectors(m.item_ids)
    assert np.isfinite(U).all() and np.isfinite(V).all() and np.isfinite(b).all()
    assert m.top_n("u3", 1)[0][0] == "viral"
