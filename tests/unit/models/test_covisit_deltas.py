"""Co-visit counts as deltas: what :class:`~models.BPRMF` counted since the last take, and merging another
learner's counts (how workers share them, :mod:`streams.worker.exchange`)."""

from __future__ import annotations

import numpy as np
import pytest

from models import BPRMF
from models.errors import InvalidInputError, UnknownIdError
from tests.unit.planted import planted_stream


def table(model: BPRMF, items: list[str]) -> dict[tuple[str, str], float]:
    """The co-visit counts of ``items``' rows, by item ids."""
    out = {}
    for item in items:
        (row,) = model.item_index([item]).tolist()
        for neighbour, count in model.session.covisit.neighbours_of(row):
            out[item, model.item_ids_at(np.array([neighbour]))[0]] = count
    return out


def stream(n: int = 3000, seed: int = 4) -> tuple[list[str], list[str]]:
    users, items = planted_stream(n, seed=seed)
    return users, items


def test_taken_deltas_rebuild_the_learners_table_on_another_model() -> None:
    """Fewer distinct neighbours than slots (no eviction): the counts taken batch after batch, added to a
    model that learned nothing, give exactly the learner's table."""
    users, items = stream()
    learner = BPRMF(n_factors=4, seed=0, track_item_deltas=True, covisit_neighbours=64)
    merged = BPRMF(n_factors=4, seed=0, covisit_neighbours=64)
    catalog = list(dict.fromkeys(items))  # an item co-visits the 29 others of its group at most
    learner.add_items(catalog)
    merged.add_items(catalog)  # the same rows
    for lo in range(0, len(users), 400):
        learner.learn_batch(users[lo:lo + 400], items[lo:lo + 400])
        src, dst, counts = learner.take_covisit_deltas()
        assert len(set(zip(src.tolist(), dst.tolist()))) == len(src)  # one row per pair
        merged.add_covisit_counts(src, dst, counts)
    assert (learner.session.covisit.nbr >= 0).sum(1).max() < 64  # no pair was evicted
    assert table(merged, catalog) == table(learner, catalog) != {}


def test_deltas_sum_every_batch_since_the_last_take_then_start_over() -> None:
    users, items = stream(20_000)
    model = BPRMF(n_factors=4, seed=0, track_item_deltas=True)
    alone = BPRMF(n_factors=4, seed=0, covisit_neighbours=64)
    model.learn_batch(users[:10], items[:10])
    model.take_covisit_deltas()
    for lo in range(10, len(users), 2000):  # many batches: summed as they come, memory stays bounded
        model.learn_batch(users[lo:lo + 2000], items[lo:lo + 2000])
    src, dst, counts = model.take_covisit_deltas()
    # every event after the first 10 pairs with the user's previous 2 events (if any, and other items), both ways
    history: dict[str, list[str]] = {}
    expected: dict[tuple[str, str], float] = {}
    for n, (user, item) in enumerate(zip(users, items)):
        for before in history.get(user, [])[-2:]:
            if before != item and n >= 10:
                for pair in ((before, item), (item, before)):
                    expected[pair] = expected.get(pair, 0.0) + 1.0
        history.setdefault(user, []).append(item)
    got = dict(zip(zip(model.item_ids_at(src), model.item_ids_at(dst)), counts.tolist()))
    assert got == expected
    assert [len(a) for a in model.take_covisit_deltas()] == [0, 0, 0]
    assert [len(a) for a in alone.take_covisit_deltas()] == [0, 0, 0]  # not tracked


def test_learn_one_is_tracked_like_a_batch() -> None:
    one, batch = BPRMF(n_factors=4, seed=0, track_item_deltas=True), BPRMF(n_factors=4, seed=0, track_item_deltas=True)
    for item in ("a", "b", "c", "a"):
        one.learn_one("u", item)
    batch.learn_batch(["u"] * 4, ["a", "b", "c", "a"])
    for model in (one, batch):
        src, dst, counts = model.take_covisit_deltas()
        pairs = dict(zip(zip(model.item_ids_at(src), model.item_ids_at(dst)), counts.tolist()))
        # b after a; c after b and a; a after c and b (the window: the previous 2 events)
        assert pairs == {("a", "b"): 2.0, ("b", "a"): 2.0, ("b", "c"): 1.0, ("c", "b"): 1.0, ("a", "c"): 2.0,
                         ("c", "a"): 2.0}


def test_merged_counts_are_not_taken_again() -> None:
    model = BPRMF(n_factors=4, track_item_deltas=True)
    model.add_items(["a", "b"])
    model.add_covisit_counts(model.item_index(["a"]), model.item_index(["b"]), np.array([2.0]))
    assert table(model, ["a"]) == {("a", "b"): 2.0}
    assert [len(a) for a in model.take_covisit_deltas()] == [0, 0, 0]


def test_events_whose_item_side_is_known_count_no_pairs() -> None:
    """``update_items`` False: the event's item changes, co-visits included, reached this model before."""
    model = BPRMF(n_factors=4, seed=0, track_item_deltas=True)
    model.learn_batch(["u", "u"], ["a", "b"])
    model.take_covisit_deltas()
    before = table(model, ["a", "b", "c"])
    model.learn_batch(["u", "u"], ["c", "a"], update_items=[False, False])
    model.learn_batch(["u"], ["b"], update_items=[False])  # one event: learn_one's path
    assert table(model, ["a", "b", "c"]) == before
    assert [len(a) for a in model.take_covisit_deltas()] == [0, 0, 0]
    model.learn_batch(["u"], ["c"])  # moving again: pairs with the session the skipped events left
    src, dst, _ = model.take_covisit_deltas()
    assert sorted(zip(model.item_ids_at(src), model.item_ids_at(dst))) == [("a", "c"), ("b", "c"), ("c", "a"),
                                                                            ("c", "b")]


def test_add_covisit_counts_checks_its_arguments() -> None:
    model = BPRMF(n_factors=4)
    model.add_items(["a", "b"])
    a, b = model.item_index(["a"]), model.item_index(["b"])
    with pytest.raises(UnknownIdError):
        model.add_covisit_counts(a, np.array([5]), np.ones(1))
    with pytest.raises(InvalidInputError):
        model.add_covisit_counts(a, b, np.array([-1.0]))
    with pytest.raises(InvalidInputError):
        model.add_covisit_counts(a, b, np.ones(2))
    model.add_covisit_counts(np.concatenate([a, a]), np.concatenate([a, b]), np.ones(2))  # a -> a: skipped
    assert table(model, ["a", "b"]) == {("a", "b"): 1.0}
    off = BPRMF(n_factors=4, covisit_weight=0.0)
    off.add_items(["a", "b"])
    off.add_covisit_counts(a, b, np.ones(1))
    assert table(off, ["a"]) == {}
