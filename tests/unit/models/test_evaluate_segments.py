"""The prequential evaluator's HR@10 split by history length and by item age."""

from __future__ import annotations

import numpy as np
import pytest

from models import BPRMF, Popularity
from models.datasets import EventStream
from models.evaluate import HISTORY_BUCKETS, ITEM_AGE_BUCKETS, prequential

HOUR = 3_600_000


def _groups_stream(n: int = 3000, seed: int = 0) -> EventStream:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 100, n)
    items = [f"i{x % 4}-{y}" for x, y in zip(u, rng.integers(0, 25, n))]
    return EventStream.from_pairs([f"u{x}" for x in u], items, ts_ms=np.arange(n) * 60_000)  # one event a minute


@pytest.mark.parametrize("model", [BPRMF(n_factors=8, seed=0), Popularity()], ids=["bpr", "popularity"])
def test_split_buckets_partition_the_headline_tests_and_their_hits(model):
    result = prequential(model, _groups_stream())
    history, age = result.segments["history"], result.segments["item_age"]
    assert list(history) == [name for _, name in HISTORY_BUCKETS] and list(age) == [name for _, name in ITEM_AGE_BUCKETS]
    # Item-age buckets split exactly the headline tests; history buckets too, plus the first events ("1").
    assert sum(b["evaluated"] for b in age.values()) == result.evaluated
    assert sum(b["evaluated"] for k, b in history.items() if k != "1") == result.evaluated
    for split in (history, {k: b for k, b in age.items()}):
        tested = {k: b for k, b in split.items() if k != "1"}
        hits = sum(b["hr_at_10"] * b["evaluated"] for b in tested.values() if b["evaluated"])
        assert hits == pytest.approx(result.hr_at_10 * result.evaluated)
    assert all((b["hr_at_10"] is None) == (b["evaluated"] == 0) for s in (history, age) for b in s.values())
    # Over 50 hours of events, items are tested at every age up to a day or more.
    assert age["<1h"]["evaluated"] > 0 and age["1h-1d"]["evaluated"] > 0


def test_first_events_are_tested_by_models_that_rank_unknown_users_and_left_empty_by_the_others():
    stream = _groups_stream()
    users = stream.users
    firsts, seen = 0, set()
    known: set[str] = set()
    for user, item in zip(users, stream.items):
        firsts += user not in known and item in seen
        known.add(user)
        seen.add(item)
    assert firsts > 0
    assert prequential(Popularity(), stream).segments["history"]["1"]["evaluated"] == firsts
    assert prequential(BPRMF(n_factors=8, seed=0), stream).segments["history"]["1"] == {"evaluated": 0, "hr_at_10": None}


def test_history_bucket_is_the_events_number_among_the_users_distinct_items_and_age_the_items_time_since_first_seen():
    # "a" engages x0, x1, ..., x6 in turn (its 1st..7th items), "b" engaged each item first, hours earlier;
    # every "a" event from the 2nd on is a test.
    users = ["b"] * 7 + ["a"] * 7
    items = [f"x{k}" for k in range(7)] * 2
    ts = [k * HOUR for k in range(7)] + [10 * HOUR + k for k in range(7)]
    result = prequential(Popularity(), EventStream.from_pairs(users, items, ts_ms=ts))
    history, age = result.segments["history"], result.segments["item_age"]
    assert {k: b["evaluated"] for k, b in history.items()} == {"1": 1, "2-5": 4, "6-20": 2, "21-100": 0, ">100": 0}
    # x1..x6 are 4 to 9 hours old at "a"'s events (x0's event is "a"'s first: not in the headline).
    assert {k: b["evaluated"] for k, b in age.items()} == {"<1h": 0, "1h-1d": 6, "1d-7d": 0, ">7d": 0}
