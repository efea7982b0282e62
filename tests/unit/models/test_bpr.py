"""Unit tests of :mod:`models` (fast, seeded, no services)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import models
from models import (
    BPRMF,
    DEFAULT_KIND_WEIGHTS,
    IdMap,
    InvalidInputError,
    ModelError,
    Popularity,
    UnknownIdError,
    event_weight,
    event_weights,
)
from models.topn import pooled_top_n
from tests.unit.planted import planted_stream, planted_tag

ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------- IdMap
def test_idmap_grows_in_first_seen_order() -> None:
    m = IdMap()
    np.testing.assert_array_equal(m.index(["b", "a", "b", "c"]), [0, 1, 0, 2])
    assert m.index(["c", "d"]).dtype == np.int64
    assert m.ids == ["b", "a", "c", "d"] and len(m) == 4 and "a" in m and "z" not in m
    assert m.get("c") == 2 and m.get("z") is None
    np.testing.assert_array_equal(m.lookup(["d", "zz", "b"]), [3, -1, 0])
    assert len(m) == 4  # lookup never adds
    assert IdMap.from_list(m.to_list()).ids == m.ids
    ids = m.ids
    ids.append("x")  # a copy
    assert len(m) == 4


def test_idmap_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        IdMap().index("abc")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        IdMap.from_list(["a", "a"])
    assert IdMap().index([]).shape == (0,)


# -------------------------------------------------------------- weights
def test_event_weight_kinds_and_watch_time() -> None:
    assert [event_weight(k) for k in ("view", "like", "share")] == [1.0, 3.0, 5.0]
    assert event_weight("view", watch_ms=60_000) == 1.0  # watch time off by default
    assert event_weight("view", 15_000, watch_time_weight=0.5) == 1.5
    assert event_weight("view", 10**9, watch_time_weight=0.5) == 2.0  # ratio capped at 2
    assert event_weight("like", 5_000, 10_000, watch_time_weight=1.0) == 4.5  # half watched
    assert event_weight("view", None, watch_time_weight=1.0) == 1.0
    assert event_weight("view", -1, watch_time_weight=1.0) == 1.0
    assert event_weight("click", kind_weights={"click": 0.5}) == 0.5
    with pytest.raises(ModelError, match="unknown event kind 'click'"):
        event_weight("click")
    with pytest.raises(ModelError):
        event_weight("view", 1, watch_time_ref_ms=0)
    with pytest.raises(TypeError):
        DEFAULT_KIND_WEIGHTS["view"] = 2.0  # type: ignore[index]


def test_event_weights_matches_scalar_and_keeps_inputs() -> None:
    kinds = ["view", "like", "share", "view", "view", "like"]
    watch = np.array([-1, 30_000, np.nan, 5_000, 15_000, 1_000], dtype=float)
    dur = np.array([-1, 60_000, -1, np.nan, 0, 500], dtype=float)
    w0, d0 = watch.copy(), dur.copy()
    got = event_weights(kinds, watch, dur, watch_time_weight=0.8)
    assert got.dtype == np.float32 and got.shape == (6,)
    want = [
        event_weight(k, None if not t >= 0 else t, None if not d > 0 else d, watch_time_weight=0.8)
        for k, t, d in zip(kinds, watch, dur)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(watch, w0)
    np.testing.assert_array_equal(dur, d0)
    np.testing.assert_array_equal(event_weights(kinds), [1, 3, 5, 1, 1, 3])
    with pytest.raises(ModelError, match="'dislike'"):
        event_weights(["view", "dislike"])
    with pytest.raises(ModelError):
        event_weights(kinds, watch[:2], watch_time_weight=1.0)


# ---------------------------------------------------------------- BPRMF
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


def test_bpr_new_item_starts_from_its_tags() -> None:
    users, items = planted_stream(8000, seed=3)
    tags = [[planted_tag(i)] for i in items]
    fans = sorted({u for u in users if int(u[1:]) // 40 == 0})  # group 0 users like the g0 items
    ranks = {}
    for tag_init in (True, False):
        m = BPRMF(n_factors=8, seed=0, tag_init=tag_init)
        for lo in range(0, len(users), 500):
            m.learn_batch(users[lo : lo + 500], items[lo : lo + 500], item_tags=tags[lo : lo + 500])
        g0 = [i for i in m.item_ids if planted_tag(i) == "g0"]
        mean_vec, mean_bias = m.tag_vector(["g0"])
        np.testing.assert_allclose(mean_vec, m.item_vectors(g0)[0].mean(0), rtol=1e-5, atol=1e-6)
        assert mean_bias == pytest.approx(float(m.item_vectors(g0)[1].mean()), abs=1e-6)
        m.set_item_tags(["fresh"], [["g0"]])  # a new item nobody has engaged yet
        v, b = m.item_vectors(["fresh"])
        if tag_init:  # the prior plus init noise
            assert np.linalg.norm(v[0] - mean_vec) < 4 * m.init_std * np.sqrt(m.n_factors)
            assert b[0] == pytest.approx(mean_bias)
        else:
            assert b[0] == 0.0
        s = np.stack([m.score(u) for u in fans])
        ranks[tag_init] = float(np.mean((s > s[:, [m.item_ids.index("fresh")]]).sum(1)))
    # with its prior the new item sits among the 30 g0 items; as noise it sits below all of them
    # (a zero score still beats the other groups' items, which the fans score negatively)
    assert ranks[True] < 20 and ranks[False] > 25, ranks


def test_bpr_tags_validation_and_first_tags_win() -> None:
    m = BPRMF(n_factors=4)
    m.learn_batch(["a", "b"], ["x", "y"], item_tags=[["t1"], None])
    m.learn_batch(["a", "b"], ["x", "y"], item_tags=[["t2"], ("t1", "t1")])  # x keeps t1; y takes t1
    assert m._tags.names(m._items.get("x")) == ["t1"] and m._tags.names(m._items.get("y")) == ["t1"]
    m.learn_one("c", "z", tags=["t2"])
    assert m._tags.names(m._items.get("z")) == ["t2"]
    m.set_item_tags(["x"], [[]])  # untag
    assert m._tags.names(m._items.get("x")) == []
    with pytest.raises(ModelError):
        m.learn_batch(["a"], ["x"], item_tags=[["t"], ["u"]])  # one list per event
    with pytest.raises(ModelError):
        m.learn_batch(["a"], ["x"], item_tags=["t1"])  # a bare string is not a list of tags
    with pytest.raises(ModelError):
        m.set_item_tags(["x"], "t1")  # type: ignore[arg-type]
    vec, bias = BPRMF(n_factors=3).tag_vector(["nothing"])
    assert vec.tolist() == [0.0, 0.0, 0.0] and bias == 0.0


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
    src = BPRMF(n_factors=8, seed=2)
    src.learn_batch(users, items)
    us, its = src.user_ids, src.item_ids
    U = src.user_vectors(us)
    V, b = src.item_vectors(its)
    U[:] = 0  # copies, not views
    assert np.abs(src.user_vectors(us)).max() > 0
    dst = BPRMF(n_factors=8, seed=2)
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


# ----------------------------------------------------------- Popularity
def test_popularity_counts_and_cold_start() -> None:
    p = Popularity()
    p.learn_batch(["a", "b", "c"], ["x", "y", "x"], np.array([1.0, 5.0, 1.0]))
    p.learn_one("d", "z")
    assert p.top_n("never-seen-user", 5) == [("y", 5.0), ("x", 2.0), ("z", 1.0)]
    assert p.top_n("u", 5, exclude={"y"}) == [("x", 2.0), ("z", 1.0)]
    np.testing.assert_array_equal(p.score("u", ["z", "nope"]), [1.0, 0.0])
    assert p.n_items == 3 and p.has_item("x") and p.item_ids == ["x", "y", "z"]


def test_popularity_half_life_decay_is_order_free() -> None:
    h = 10.0  # seconds
    ts = [0, 10_000, 20_000, 20_000, 1_000_000_000]  # the last one forces a re-base
    items = ["old", "mid", "new", "new", "later"]
    a, b = Popularity(h), Popularity(h)
    a.learn_batch(["u"] * 5, items, ts_ms=ts)
    for n in (4, 2, 0, 3, 1):  # shuffled arrival
        b.learn_one("u", items[n], ts_ms=ts[n])
    np.testing.assert_allclose(a.score("u"), b.score("u", a.item_ids), rtol=1e-9)
    c = Popularity(h)
    c.learn_batch(["u"] * 4, items[:4], ts_ms=ts[:4])
    np.testing.assert_allclose(c.score("u", ["old", "mid", "new"]), [0.25, 0.5, 2.0])
    c.learn_one("u", "mid")  # no timestamp: stamped at the clock (20 s)
    np.testing.assert_allclose(c.score("u", ["mid"]), [1.5])
    assert [i for i, _ in c.top_n("u", 2)] == ["new", "mid"]


def test_popularity_trending_within_tags_for_cold_users() -> None:
    p = Popularity(half_life_s=10.0)
    p.learn_batch(["u"] * 6, ["a", "b", "c", "a", "d", "c"], ts_ms=[0, 0, 0, 0, 20_000, 20_000],
                  item_tags=[["jazz"], ["jazz", "rock"], ["rock"], None, ["pop"], ["jazz"]])  # c keeps ["rock"]
    # at t = 20 s (two half-lives): a 2 * 0.25, b 0.25, c 0.25 + 1, d 1
    assert p.top_n_for_tags(["jazz"], 5) == [("a", 0.5), ("b", 0.25)]
    assert p.top_n_for_tags(["rock"], 5) == [("c", 1.25), ("b", 0.25)]
    # an item carrying several of the tags counts once per tag; ties go to the item seen first
    assert p.top_n_for_tags(["jazz", "rock", "nope"], 5) == [("c", 1.25), ("a", 0.5), ("b", 0.5)]
    assert p.top_n_for_tags(["jazz", "rock"], 2, exclude={"c"}) == [("a", 0.5), ("b", 0.5)]
    assert p.top_n_for_tags(["nope"], 5) == [] and p.top_n_for_tags(["jazz"], 0) == []
    assert [i for i, _ in p.top_n("anyone", 2)] == ["c", "d"]  # the global list ignores tags
    # recent beats old: a burst on b later overtakes a
    p.learn_one("v", "b", ts_ms=40_000, tags=["ignored: b has tags"])
    assert [i for i, _ in p.top_n_for_tags(["jazz"], 2)] == ["b", "a"]
    p.set_item_tags(["a", "e"], [["rock"], ["jazz"]])  # retag a known item, add a new one (count 0)
    assert p.top_n_for_tags(["jazz"], 5) == [("b", pytest.approx(1.0625)), ("e", 0.0)]
    q = Popularity.from_bytes(p.to_bytes())
    assert q.top_n_for_tags(["rock", "jazz"], 9) == p.top_n_for_tags(["rock", "jazz"], 9)
    with pytest.raises(ModelError):
        p.top_n_for_tags("jazz", 3)  # a bare string is not a list of tags
    with pytest.raises(ModelError):
        p.learn_batch(["u"], ["a"], item_tags=[["x"], ["y"]])


# ------------------------------------------------------------ packaging
def test_import_pulls_in_no_service_clients() -> None:
    """models/ is pure: importing it (every module, River adapter included) loads no service client or River."""
    code = (
        "import json, sys; import models, models.evaluate, models.datasets, models.river_adapter; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'river', 'faust', 'aiokafka', 'redis', 'orjson', 'streams'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], out.stdout


def test_models_import_only_numpy_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) - {"pickle", "shelve", "marshal"} | {"numpy"}
    for path in (ROOT / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed | {"__future__"}, f"{path.name} imports {name}"


def test_public_api() -> None:
    assert set(models.__all__) >= {"BPRMF", "Popularity", "IdMap", "Recommender", "WorkerModel", "ModelError", "event_weight"}
    assert issubclass(InvalidInputError, ModelError) and issubclass(UnknownIdError, KeyError)
    assert (ROOT / "models" / "py.typed").exists()


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
