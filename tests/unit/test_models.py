"""Unit tests of :mod:`models` (fast, seeded, no services)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

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
from tests.unit.planted import planted_stream

ROOT = Path(__file__).resolve().parents[2]


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


def test_bpr_seeds_differ_and_weights_matter() -> None:
    users, items = planted_stream(500)
    runs: dict[tuple[int, float], list[np.ndarray]] = {}
    for seed, w in ((0, 1.0), (0, 1.0), (1, 1.0), (0, 3.0)):
        m = BPRMF(n_factors=8, seed=seed)
        m.learn_batch(users, items, np.full(len(users), w))
        runs.setdefault((seed, w), []).append(m.score("u1"))
    np.testing.assert_array_equal(*runs[(0, 1.0)])
    assert not np.array_equal(runs[(0, 1.0)][0], runs[(1, 1.0)][0])
    assert not np.array_equal(runs[(0, 1.0)][0], runs[(0, 3.0)][0])
    m = BPRMF(n_factors=8)
    m.learn_batch(users, items)
    before = m.to_bytes()
    m.learn_batch(users[:50], items[:50], np.zeros(50))  # zero weight: no step at all
    assert m.to_bytes() == before


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
    for bad in ({"n_factors": 0}, {"learning_rate": 0}, {"n_negatives": -1}, {"dtype": np.int32}):
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


# ------------------------------------------------------------ packaging
def test_import_pulls_in_no_service_clients() -> None:
    code = (
        "import json, sys; import models; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'faust', 'aiokafka', 'redis', 'orjson', 'streams'})))"
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
    assert set(models.__all__) >= {"BPRMF", "Popularity", "IdMap", "Recommender", "ModelError", "event_weight"}
    assert issubclass(InvalidInputError, ModelError) and issubclass(UnknownIdError, KeyError)
    assert (ROOT / "models" / "py.typed").exists()
