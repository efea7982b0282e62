"""Unit tests of :mod:`models.tags`: the tag index and where a new tagged item starts."""

from __future__ import annotations

import numpy as np
import pytest

from models import BPRMF, ModelError
from models.tags import TagIndex, register_tags
from tests.unit.planted import planted_stream, planted_tag


def test_bpr_new_item_starts_from_its_tags() -> None:
    users, items = planted_stream(8000, seed=3)
    tags = [[planted_tag(i)] for i in items]
    fans = sorted({u for u in users if int(u[1:]) // 40 == 0})  # group 0 users like the g0 items
    ranks = {}
    for tag_init in (True, False):
        m = BPRMF(n_factors=8, seed=0, tag_init=tag_init, covisit_weight=0.0, session_tag_weight=0.0)  # factors alone
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
    assert m.item_tags("x") == ("t1",) and m.item_tags("y") == ("t1",)
    m.learn_one("c", "z", tags=["t2"])
    assert m.item_tags("z") == ("t2",)
    m.set_item_tags(["x"], [[]])  # untag
    assert m.item_tags("x") == ()
    with pytest.raises(ModelError):
        m.learn_batch(["a"], ["x"], item_tags=[["t"], ["u"]])  # one list per event
    with pytest.raises(ModelError):
        m.learn_batch(["a"], ["x"], item_tags=["t1"])  # a bare string is not a list of tags
    with pytest.raises(ModelError):
        m.set_item_tags(["x"], "t1")  # type: ignore[arg-type]
    vec, bias = BPRMF(n_factors=3).tag_vector(["nothing"])
    assert vec.tolist() == [0.0, 0.0, 0.0] and bias == 0.0


def test_tag_index_first_tags_win_and_round_trip() -> None:
    index = TagIndex()
    index.grow(4)
    V, b = np.zeros((4, 2), np.float32), np.zeros(4, np.float32)
    register_tags(index, V, b, np.array([0, 1, 0]), [("a", "b"), None, ("c",)], fresh=0, priors=False)
    assert index.names(0) == ("a", "b") and index.names(1) == () and index.names(3) == () and index.names(None) == ()
    index.set(2, ("b",))
    vocab, ptr, idx = index.to_arrays(4)
    copy = TagIndex.from_arrays(vocab, ptr, idx, 4)
    assert [copy.names(x) for x in range(4)] == [("a", "b"), (), ("b",), ()]
    assert copy.members == index.members == [[0], [0, 2]] and copy.tagged[:4].tolist() == [True, False, True, False]
    with pytest.raises(ValueError):
        TagIndex.from_arrays(vocab, ptr[:-1], idx, 4)
    with pytest.raises(ValueError):
        TagIndex.from_arrays(vocab, ptr, idx + 10, 4)
