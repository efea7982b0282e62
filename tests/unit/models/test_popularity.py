"""Unit tests of :mod:`models.popularity` (the shared contract is in ``test_base.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from models import ModelError, Popularity


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
