"""Unit tests of :mod:`models.covisit` and of the session pull it gives :class:`~models.BPRMF`."""

from __future__ import annotations

import numpy as np

from models import BPRMF
from models.covisit import CoVisitation
from tests.unit.planted import planted_stream


def test_counts_accumulate_and_a_full_row_replaces_its_weakest_neighbour() -> None:
    table = CoVisitation(neighbours=2)
    table.grow(5)
    table.add(np.array([0, 0, 0]), np.array([1, 1, 2]), np.ones(3))
    assert table.neighbours_of(0) == [(1, 2.0), (2, 1.0)]
    table.add(np.array([0]), np.array([3]), np.array([0.5]))  # space saving: starts from the floor it replaces
    assert table.neighbours_of(0) == [(1, 2.0), (3, 1.5)]
    assert table.neighbours_of(4) == []


def test_new_pairs_of_one_call_take_the_weakest_slots_heaviest_pair_the_weakest() -> None:
    table = CoVisitation(neighbours=4)
    table.grow(10)
    table.add(np.array([0] * 10), np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 4]), np.ones(10))  # counts 4, 3, 2, 1
    table.add(np.array([0, 0, 0, 5, 5]), np.array([6, 7, 1, 8, 9]), np.array([3.0, 1.0, 1.0, 2.0, 1.0]))
    # 6 (weight 3) takes 4's slot (count 1), 7 (weight 1) takes 3's (count 2); 1 is counted in place
    assert table.neighbours_of(0) == [(1, 5.0), (6, 4.0), (2, 3.0), (7, 3.0)]
    assert table.neighbours_of(5) == [(8, 2.0), (9, 1.0)]  # empty slots first
    table.add(np.full(6, 9), np.arange(1, 7), np.arange(6, 0, -1).astype(float))  # more new pairs than slots
    assert table.neighbours_of(9) == [(1, 6.0), (2, 5.0), (3, 4.0), (4, 3.0)]  # the heaviest keep them


def test_pull_adds_up_an_item_over_the_recent_items_that_lead_to_it() -> None:
    table = CoVisitation(neighbours=4)
    table.grow(4)
    table.add(np.array([0, 0, 1]), np.array([2, 3, 2]), np.array([1.0, 1.0, 4.0]))
    cand, pull = table.pull(np.array([[0, 1]]), np.array([[1.0, 1.0]]))
    per_item: dict[int, float] = {}
    for c, p in zip(cand[0].tolist(), pull[0].tolist()):
        if c >= 0:
            per_item[c] = per_item.get(c, 0.0) + p
    assert abs(float(pull.max()) - 1.0) < 1e-6  # the strongest column pulls 1
    assert max(per_item, key=per_item.__getitem__) == 2 and 0 < per_item[3] < per_item[2]


def test_blended_top_n_is_the_exact_top_of_the_dense_scores() -> None:
    users, items = planted_stream(3000, seed=5)
    for min_items in (None, 16):  # brute force, then the pooled search
        m = BPRMF(n_factors=8, seed=1, pooled_search_min_items=min_items)
        m.learn_batch(users, items)
        asked = list(dict.fromkeys(users))[:30]
        hist = [dict.fromkeys(i for u2, i in zip(users, items) if u2 == u) for u in asked]
        ids, scores = m.top_n_lists(asked, 10, hist)
        for u, row, h, s in zip(asked, ids, hist, scores):
            dense = m.score(u)
            dense[m.item_index(list(h))] = -np.inf
            best = np.sort(dense)[::-1][:10]
            np.testing.assert_allclose(s, best, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(m.score(u, row), s, rtol=1e-5, atol=1e-6)


def test_a_session_pulls_the_items_that_followed_its_items_for_others() -> None:
    m = BPRMF(n_factors=8, seed=0)
    rng = np.random.default_rng(0)
    background = [f"x{j}" for j in range(200)]
    for _ in range(20):  # many users watch a -> b -> c in a row, among random items
        for n in range(50):
            seq = [background[int(k)] for k in rng.integers(0, 200, 3)] + ["a", "b", "c"]
            m.learn_batch([f"u{n}"] * len(seq), seq)
    m.learn_batch(["new"], ["a"])
    with_session = [i for i, _ in m.top_n("new", 3, exclude=["a"])]
    m.session.covisit_weight = 0.0
    without = [i for i, _ in m.top_n("new", 3, exclude=["a"])]
    assert "b" in with_session and with_session.index("b") <= (without.index("b") if "b" in without else 3)


def test_session_and_counts_survive_serialisation() -> None:
    users, items = planted_stream(2000, seed=2)
    m = BPRMF(n_factors=8, seed=3)
    m.learn_batch(users, items)
    copy = BPRMF.from_bytes(m.to_bytes())
    u = users[0]
    np.testing.assert_array_equal(copy.score(u), m.score(u))
    m.learn_batch(users[:50], items[:50])
    copy.learn_batch(users[:50], items[:50])
    np.testing.assert_array_equal(copy.score(u), m.score(u))


def test_learn_batch_keeps_the_session_and_counts_learn_one_keeps() -> None:
    users, items = planted_stream(1200, seed=6)
    one, batch = BPRMF(n_factors=4, seed=0, covisit_neighbours=256), BPRMF(n_factors=4, seed=0, covisit_neighbours=256)
    for user, item in zip(users, items):
        one.learn_one(user, item)
    for lo in range(0, len(users), 100):
        batch.learn_batch(users[lo:lo + 100], items[lo:lo + 100])
    for user in set(users):
        for model in (one, batch):
            assert model.has_user(user)
        a, b = one._users.get(user), batch._users.get(user)
        assert one.session.n_events[a] == batch.session.n_events[b]
        assert sorted(one.session.recent[a].tolist()) == sorted(batch.session.recent[b].tolist())
    for item in range(one.n_items):
        assert dict(one.session.covisit.neighbours_of(item)) == dict(batch.session.covisit.neighbours_of(item))
