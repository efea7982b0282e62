"""Unit tests of :meth:`models.BPRMF.restore_sessions`: a user's session rebuilt from their engaged items."""

from __future__ import annotations

import numpy as np
import pytest

from models import BPRMF, InvalidInputError, UnknownIdError
from tests.unit.planted import planted_stream, planted_tag

#: ann's last events: eight distinct items of one taste group, seen once each (weight 1)
BINGE = [f"i{n}" for n in range(30, 38)]


def trained() -> BPRMF:
    """A tagged model that learned a planted stream, then ann's older events and her binge (views)."""
    users, items = planted_stream(3000)
    model = BPRMF(n_factors=8, seed=3)
    model.set_item_tags(sorted(set(items)), [[planted_tag(i)] for i in sorted(set(items))])
    for lo in range(0, 3000, 300):
        model.learn_batch(users[lo : lo + 300], items[lo : lo + 300])
    model.learn_batch(["ann"] * 5, ["i0", "i1", "i2", "i60", "i61"])
    model.learn_batch(["ann"] * len(BINGE), BINGE)
    return model


def without_session(model: BPRMF, user: str) -> BPRMF:
    """A copy of ``model`` (same factors, item rows, counts, generator) where ``user`` has no session."""
    copy = BPRMF.from_bytes(model.to_bytes())
    copy.set_user_vectors([user], model.user_vectors([user]))
    copy.restore_sessions([user], [[]])
    return copy


def test_a_restored_session_ranks_as_the_learned_one() -> None:
    learned = trained()
    restored = without_session(learned, "ann")
    history = ["i0", "i1", "i2", "i60", "i61", *BINGE]
    expected = learned.top_n("ann", 10, exclude=history)
    assert restored.top_n("ann", 10, exclude=history) != expected  # the session matters to this list
    restored.restore_sessions(["ann"], [history])
    got = restored.top_n("ann", 10, exclude=history)
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-6)
    np.testing.assert_allclose(restored.score("ann"), learned.score("ann"), rtol=1e-6)


def test_a_restored_session_goes_on_as_the_learned_one() -> None:
    """The ring's ages and event count are right: the next event lands, ages and co-visits the same."""
    learned = trained()
    restored = without_session(learned, "ann")
    restored.restore_sessions(["ann"], [["i0", "i1", "i2", "i60", "i61", *BINGE]])
    for model in (learned, restored):
        model.learn_batch(["ann", "ann"], ["i90", "i91"])
    assert learned.session.covisit.neighbours_of(90) == restored.session.covisit.neighbours_of(90)
    np.testing.assert_allclose(restored.score("ann"), learned.score("ann"), rtol=1e-5)


def test_only_the_last_known_items_fill_the_session() -> None:
    learned = trained()
    restored = without_session(learned, "ann")
    items_before = restored.n_items
    # unknown ids anywhere, and older items beyond the ring's eight: neither changes the session
    restored.restore_sessions(["ann"], [["i5", "gone-1", "i6", *BINGE[:4], "gone-2", *BINGE[4:], "gone-3"]])
    assert restored.n_items == items_before and not restored.has_item("gone-1")
    np.testing.assert_allclose(restored.score("ann"), learned.score("ann"), rtol=1e-6)


def test_restoring_counts_no_co_visits_and_leaves_the_generator_alone() -> None:
    model = without_session(trained(), "ann")
    counts = {k: v.copy() for k, v in model.session.covisit.to_arrays(model.n_items).items()}
    state = model._rng.bit_generator.state
    model.restore_sessions(["ann", "u1"], [BINGE, ["i1", "i2", "i3"]])
    after = model.session.covisit.to_arrays(model.n_items)
    assert counts.keys() == after.keys() and all(np.array_equal(counts[k], after[k]) for k in counts)
    assert model._rng.bit_generator.state == state


def test_an_empty_history_clears_the_session() -> None:
    learned = trained()
    restored = BPRMF.from_bytes(learned.to_bytes())
    restored.restore_sessions(["ann"], [[]])
    plain = BPRMF.from_bytes(learned.to_bytes())
    plain.session.covisit_weight = plain.session.tag_weight = 0.0  # factors alone
    np.testing.assert_allclose(restored.score("ann"), plain.score("ann"), rtol=1e-6)


def test_restore_sessions_checks_its_arguments() -> None:
    model = trained()
    with pytest.raises(UnknownIdError):
        model.restore_sessions(["nobody"], [BINGE])
    with pytest.raises(InvalidInputError):
        model.restore_sessions(["ann"], [BINGE, BINGE])
    with pytest.raises(InvalidInputError):
        model.restore_sessions(["ann"], ["i1"])  # a string is not a list of ids
    assert not model.has_user("nobody")
