"""Unit tests of :mod:`models.base` (fast, seeded, no services): the contract every model honours
(:class:`~models.Recommender`), what the worker calls (:class:`~models.WorkerModel`), event weights."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models import (
    BPRMF,
    DEFAULT_KIND_WEIGHTS,
    ModelError,
    Popularity,
    Recommender,
    WorkerModel,
    event_weight,
    event_weights,
)
from tests.unit.planted import planted_stream

FACTORIES: dict[str, Callable[[], Recommender]] = {
    "bprmf": lambda: BPRMF(n_factors=8, seed=7),
    "bprmf-classic": lambda: BPRMF(  # uniform negatives, linear raw weights, no decay: plain BPR
        n_factors=8, seed=7, negative_candidates=1, weight_exponent=1.0, normalize_weights=False, user_decay=0.0,
        user_lr_scale=1.0,
    ),
    "popularity": lambda: Popularity(),
    "popularity-decayed": lambda: Popularity(half_life_s=60.0),
}


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> Callable[[], Recommender]:
    return FACTORIES[request.param]


def held_out_hr(model: Recommender, users: list[str], items: list[str], n_train: int, n: int = 10) -> float:
    """HR@n of events after ``n_train`` whose item the user has not engaged before (no learning)."""
    seen: dict[str, set[str]] = {}
    for u, i in zip(users[:n_train], items[:n_train]):
        seen.setdefault(u, set()).add(i)
    test = [(u, i) for u, i in zip(users[n_train:], items[n_train:]) if u in seen and i not in seen[u]]
    tops = model.top_n_batch([u for u, _ in test], n, [seen[u] for u, _ in test])
    return sum(i in {x for x, _ in top} for (_, i), top in zip(test, tops)) / len(test)


PROTOCOL_METHODS = ("learn_one", "learn_batch", "score", "top_n", "top_n_batch", "to_bytes")


def test_is_a_recommender(make: Callable[[], Recommender]) -> None:
    """Each verb of :class:`Recommender` takes the protocol's arguments and returns the protocol's types."""
    m = make()
    for name in PROTOCOL_METHODS:  # the protocol's parameters first, in order, same kind and default
        want = list(inspect.signature(getattr(Recommender, name)).parameters.values())[1:]  # without self
        got = list(inspect.signature(getattr(m, name)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in got[: len(want)]] == [
            (p.name, p.kind, p.default) for p in want], name
        assert all(p.default is not inspect.Parameter.empty for p in got[len(want):]), f"{name}: extras are optional"

    assert m.learn_one("u1", "i1") is None
    assert m.learn_one("u1", "i2", 2.0) is None
    assert m.learn_batch(["u1", "u2", "u2"], ["i3", "i1", "i4"]) is None
    assert m.learn_batch(["u2", "u3"], ["i2", "i1"], np.array([1.0, 3.0], np.float32)) is None

    every, some = m.score("u1"), m.score("u1", ["i4", "i1"])
    assert isinstance(every, np.ndarray) and every.shape == (4,) and np.issubdtype(every.dtype, np.floating)
    assert isinstance(some, np.ndarray) and some.shape == (2,) and np.isfinite(every).all()

    top = m.top_n("u1", 3, exclude=["i1"])
    assert isinstance(top, list) and len(top) == 3 and "i1" not in {item for item, _ in top}
    assert all(type(item) is str and type(value) is float for item, value in top)
    assert [value for _, value in top] == sorted((value for _, value in top), reverse=True)

    lists = m.top_n_batch(["u1", "u2"], 3, [["i1"], []])
    assert isinstance(lists, list) and len(lists) == 2
    assert all(isinstance(row, list) and all(isinstance(pair, tuple) and len(pair) == 2 for pair in row)
               for row in lists)
    for row, alone in ((lists[0], top), (lists[1], m.top_n("u2", 3))):  # the same lists as one user at a time
        assert [item for item, _ in row] == [item for item, _ in alone]
        np.testing.assert_allclose([value for _, value in row], [value for _, value in alone], rtol=1e-5, atol=1e-6)

    blob = m.to_bytes()
    assert isinstance(blob, bytes) and blob
    copy = type(m).from_bytes(blob)  # type: ignore[attr-defined]  # a classmethod of each model, not a verb
    assert type(copy) is type(m) and copy.top_n("u1", 3, exclude=["i1"]) == top


def test_deterministic(make: Callable[[], Recommender]) -> None:
    users, items = planted_stream(1500)
    a, b = make(), make()
    for m in (a, b):
        m.learn_batch(users[:1000], items[:1000])
        for u, i in zip(users[1000:1100], items[1000:1100]):
            m.learn_one(u, i, 2.0)
    np.testing.assert_array_equal(a.score("u3"), b.score("u3"))
    assert a.top_n_batch(users[:50], 5) == b.top_n_batch(users[:50], 5)
    assert a.to_bytes() == b.to_bytes()


def test_round_trip_same_scores_and_same_future(make: Callable[[], Recommender]) -> None:
    users, items = planted_stream(3000, seed=1)
    a = make()
    a.learn_batch(users[:2000], items[:2000])
    b = type(a).from_bytes(a.to_bytes())  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a.score("u5"), b.score("u5"))
    assert a.top_n("u5", 10, exclude=["i0"]) == b.top_n("u5", 10, exclude=["i0"])
    for m in (a, b):  # new ids, repeated users, weights: both must evolve identically
        m.learn_batch(users[2000:] + ["new-user"], items[2000:] + ["new-item"], np.linspace(0.5, 3, 1001))
        m.learn_one("u1", "i2")
    np.testing.assert_array_equal(a.score("new-user"), b.score("new-user"))
    assert a.to_bytes() == b.to_bytes()


def test_from_bytes_rejects_garbage(make: Callable[[], Recommender]) -> None:
    m = make()
    cls = type(m)
    for bad in (b"", b"not a model", m.to_bytes()[:-5]):
        with pytest.raises(ModelError):
            cls.from_bytes(bad)  # type: ignore[attr-defined]
    other = Popularity() if isinstance(m, BPRMF) else BPRMF()
    with pytest.raises(ModelError):
        cls.from_bytes(other.to_bytes())  # type: ignore[attr-defined]


def test_top_n_never_returns_excluded(make: Callable[[], Recommender]) -> None:
    users, items = planted_stream(2000, seed=2)
    m = make()
    m.learn_batch(users, items)
    all_items = sorted(set(items))
    exclude = all_items[::2] + ["never-seen"]
    top = m.top_n("u0", len(all_items), exclude=exclude)
    assert [i for i, _ in top] and not set(i for i, _ in top) & set(exclude)
    assert len(top) == len(all_items) - len(all_items[::2])  # fewer than n when fewer remain
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    batch = m.top_n_batch(["u0", "u1", "u2"], 10, [exclude, [], all_items])
    assert not {i for i, _ in batch[0]} & set(exclude)
    assert len(batch[1]) == 10 and batch[2] == []
    assert m.top_n("u0", 0) == []


def test_exclusions_may_be_any_iterable(make: Callable[[], Recommender]) -> None:
    """``exclude`` entries are iterables of ids: iterators exclude what lists do."""
    users, items = planted_stream(2000, seed=2)
    m = make()
    m.learn_batch(users, items)
    exclude = sorted(set(items))[::3]
    as_list = m.top_n_batch(["u0", "u1"], 10, [exclude, []])
    assert m.top_n_batch(["u0", "u1"], 10, [iter(exclude), iter([])]) == as_list
    assert m.top_n("u0", 10, exclude=(item for item in exclude)) == m.top_n("u0", 10, exclude=exclude)
    if isinstance(m, BPRMF):  # the pooled search too (from 1 item on)
        m.pooled_search_min_items = 1
        pooled = m.top_n_batch(["u0", "u1"], 10, [exclude, []])
        assert [[i for i, _ in row] for row in pooled] == [[i for i, _ in row] for row in as_list]
        assert m.top_n_batch(["u0", "u1"], 10, [iter(exclude), iter([])]) == pooled


def test_inputs_not_mutated(make: Callable[[], Recommender]) -> None:
    users, items = planted_stream(500, seed=3)
    u_arr, i_list = np.array(users), list(items)
    weights = np.linspace(0.0, 4.0, len(users))
    exclude = [set(items[:20]), ["i1", "i2"]]
    copies = (u_arr.copy(), list(i_list), weights.copy(), [set(e) for e in exclude])
    m = make()
    m.learn_batch(u_arr, i_list, weights)  # type: ignore[arg-type]
    m.top_n_batch(["u0", "u1"], 5, exclude)
    m.score("u0", i_list[:10])
    np.testing.assert_array_equal(u_arr, copies[0])
    np.testing.assert_array_equal(weights, copies[2])
    assert i_list == copies[1] and [set(e) for e in exclude] == copies[3]


def test_learn_batch_matches_learn_one_in_expectation(make: Callable[[], Recommender]) -> None:
    users, items = planted_stream(6000, seed=4)
    one, batch = make(), make()
    for u, i in zip(users[:5000], items[:5000]):
        one.learn_one(u, i)
    for lo in range(0, 5000, 500):
        batch.learn_batch(users[lo : lo + 500], items[lo : lo + 500])
    hr_one, hr_batch = held_out_hr(one, users, items, 5000), held_out_hr(batch, users, items, 5000)
    assert abs(hr_one - hr_batch) < 0.1
    if isinstance(one, Popularity):  # counting is exact (and taste-blind, so no better than chance here)
        np.testing.assert_allclose(one.score("x"), batch.score("x"))
    else:  # ~100 unseen candidates per user: chance is about 0.1
        assert min(hr_one, hr_batch) > 0.3


def test_bad_inputs_raise_model_error(make: Callable[[], Recommender]) -> None:
    m = make()
    with pytest.raises(ModelError):
        m.learn_batch(["a", "b"], ["x"])
    with pytest.raises(ModelError):
        m.learn_batch(["a"], ["x"], np.array([-1.0]))
    with pytest.raises(ModelError):
        m.learn_batch("ab", "xy")  # a string is not a sequence of ids
    with pytest.raises(ModelError):
        m.learn_one("a", "x", float("nan"))


# ----------------------------------------------------------- WorkerModel
ROOT = Path(__file__).resolve().parents[3]
#: The streams modules that hold the worker's model: the pipeline, the item exchange, and two readers of its counts.
WORKER_SOURCES = ("streams/worker/learner.py", "streams/worker/exchange.py", "streams/worker/service.py",
                  "streams/worker/item_log.py", "streams/worker/checkpoint.py")


def worker_model_members() -> set[str]:
    """The members :class:`WorkerModel` declares: attributes, properties and methods."""
    return set(WorkerModel.__annotations__) | {
        name for name, value in vars(WorkerModel).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_worker_model_is_what_the_worker_calls() -> None:
    """Every ``model.<member>`` in the worker's modules is declared, and nothing else is."""
    used = {m for path in WORKER_SOURCES for m in re.findall(r"\bmodel\.([A-Za-z_]\w*)", (ROOT / path).read_text())}
    assert used == worker_model_members()


@pytest.mark.parametrize("name", sorted(worker_model_members()))
def test_bprmf_implements_worker_model(name: str) -> None:
    """Same kind of member; a method takes the protocol's parameters (name, kind, default), its extras optional."""
    assert isinstance(BPRMF(), WorkerModel)
    want, got = inspect.getattr_static(WorkerModel, name, None), inspect.getattr_static(BPRMF, name, None)
    if name in WorkerModel.__annotations__:  # a data attribute
        assert hasattr(BPRMF(), name) and not callable(getattr(BPRMF(), name))
        return
    if isinstance(want, property):
        assert isinstance(got, property)
        return
    assert callable(got) and not isinstance(got, (staticmethod, classmethod, property))
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    want_params = list(inspect.signature(want).parameters.values())
    got_params = list(inspect.signature(got).parameters.values())
    got_by_name = {p.name: p for p in got_params}
    for p in want_params:
        q = got_by_name.get(p.name)
        assert q is not None, f"{name}: no parameter {p.name}"
        assert (q.kind, q.default) == (p.kind, p.default), f"{name}({p.name})"
    n_positional = sum(p.kind in positional for p in want_params)
    assert [p.name for p in got_params if p.kind in positional][:n_positional] == [
        p.name for p in want_params if p.kind in positional], f"{name}: positional order"
    extras = [p for p in got_params if p.name not in {w.name for w in want_params}]
    assert all(p.default is not inspect.Parameter.empty for p in extras), f"{name}: extras are optional"


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
