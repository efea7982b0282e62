"""Datasets, the prequential evaluator, the River adapter and ``streamrec eval`` (no services)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import BPRMF, Popularity
from models.datasets import (
    FORMATS,
    DatasetError,
    EventStream,
    load_events,
    load_events_csv,
    load_events_jsonl,
    load_movielens,
)
from models.evaluate import PrequentialResult, ScoresAllItems, prequential
from models.river_adapter import RiverKind, RiverMF, river_available
from streams.tools import eval as eval_cli
from streams.tools.cli import main as cli_main
from tests.unit.planted import planted_stream

REQUIRED_KEYS = {"model", "events", "evaluated", "hr_at_10", "ndcg_at_10", "recall_at_20", "precision_at_10",
                 "recall_at_10", "f1_at_10", "learn_events_per_s", "seconds", "batch_size"}
needs_river = pytest.mark.skipif(not river_available(), reason="River is not installed (streamrec[bench])")


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


# ------------------------------------------------------------------ MovieLens
def test_u_data_sorted_by_time_stably_with_kinds_from_ratings(tmp_path: Path) -> None:
    f = write(tmp_path / "u.data", "1\t10\t5\t300\n2\t11\t4\t100\n3\t12\t3\t300\n\n4\t13\t1\t200\n")
    s = load_movielens(f)
    assert len(s) == 4
    assert s.users == ["2", "4", "1", "3"]  # ties (300) keep file order
    assert s.items == ["11", "13", "10", "12"]
    assert s.kinds == ["like", "view", "share", "view"]
    assert s.ts_ms.dtype == np.int64 and s.ts_ms.tolist() == [100_000, 200_000, 300_000, 300_000]
    assert np.isnan(s.watch_ms).all() and s.tags is None and s.creators is None


def test_half_star_ratings_map_at_the_thresholds(tmp_path: Path) -> None:
    rows = "userId,movieId,rating,timestamp\n" + "".join(
        f"u,{i},{r},{i}\n" for i, r in enumerate([5.0, 4.5, 4.0, 3.5, 3.0, 0.5])
    )
    s = load_movielens(write(tmp_path / "ratings.csv", rows))
    assert s.kinds == ["share", "share", "like", "like", "view", "view"]


def test_ratings_dat_and_a_directory(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    for path in (tmp_path / "ratings.dat", tmp_path):
        s = load_movielens(path)
        assert s.items == ["1193", "661"] and s.kinds == ["share", "view"]


def test_layout_sniffed_from_content_when_the_name_says_nothing(tmp_path: Path) -> None:
    assert load_movielens(write(tmp_path / "a.txt", "1\t2\t4\t5\n")).kinds == ["like"]
    assert load_movielens(write(tmp_path / "b.txt", "1::2::4::5\n")).kinds == ["like"]
    with pytest.raises(DatasetError, match="not a MovieLens ratings file"):
        load_movielens(write(tmp_path / "c.txt", "hello world\n"))


def test_u_item_genres_as_tags(tmp_path: Path) -> None:
    write(tmp_path / "u.data", "1\t1\t4\t5\n1\t2\t4\t6\n1\t9\t4\t7\n")
    write(tmp_path / "u.genre", "unknown|0\nAction|1\nComedy|2\n\n")
    write(tmp_path / "u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n2|Heat|01-Jan-1995||http://y|0|1|1\n",
          encoding="latin-1")
    assert load_movielens(tmp_path / "u.data").tags is None
    s = load_movielens(tmp_path / "u.data", with_tags=True)
    assert s.tags == [("Comedy",), ("Action", "Comedy"), ()]  # item 9 is not in u.item


def test_with_tags_needs_the_movie_list(tmp_path: Path) -> None:
    write(tmp_path / "u.data", "1\t1\t4\t5\n")
    with pytest.raises(DatasetError, match="u.item: no such file"):
        load_movielens(tmp_path / "u.data", with_tags=True)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("u.data", "1\t2\t3\t4\n1\t2\t3\n", r"u.data:2: expected 4 tab-separated fields .* got 3"),
        ("u.data", "1\t2\tfive\t4\n", r"u.data:1: rating 'five' is not a number"),
        ("u.data", "1\t2\t3\t4\n\n1\t2\t3\t4.5\n", r"u.data:3: timestamp '4.5' is not an integer"),
        ("ratings.dat", "1::2::3\n", r"ratings.dat:1: expected 4 '::'-separated fields"),
        ("ratings.csv", "user,item\n1,2\n", r"ratings.csv:1: expected the header userId,movieId,rating,timestamp"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3\n", r"ratings.csv:2: expected 4 comma-separated"),
    ],
)
def test_malformed_ratings_name_the_line_and_the_reason(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_movielens(write(tmp_path / name, text))


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.data: no such file"):
        load_movielens(tmp_path / "nope.data")
    with pytest.raises(DatasetError, match="no MovieLens ratings file"):
        load_movielens(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        load_events_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="unknown dataset format 'xml'"):
        load_events(tmp_path / "x", "xml")
    assert FORMATS == eval_cli._FORMATS


# ---------------------------------------------------------------- our events
JSONL = (
    '{"event_id":"e2","user_id":"u1","item_id":"i2","kind":"view","ts":20,"watch_ms":1500,"creator_id":"c1"}\n'
    "\n"
    '{"event_id":"e1","user_id":"u2","item_id":"i1","kind":"share","ts":10,"tags":["a","b","a"],"extra":1}\n'
    '{"event_id":"e3","user_id":"u1","item_id":"i1","kind":"like","ts":20,"watch_ms":null}\n'
)


def test_events_jsonl(tmp_path: Path) -> None:
    s = load_events_jsonl(write(tmp_path / "e.jsonl", JSONL))
    assert s.users == ["u2", "u1", "u1"] and s.items == ["i1", "i2", "i1"]
    assert s.kinds == ["share", "view", "like"] and s.ts_ms.tolist() == [10, 20, 20]
    assert s.watch_ms[1] == 1500 and np.isnan(s.watch_ms[[0, 2]]).all()
    assert s.tags == [("a", "b"), (), ()] and s.creators == [None, "c1", None]


def test_events_csv(tmp_path: Path) -> None:
    text = ("event_id,user_id,item_id,kind,ts,watch_ms,creator_id,tags\n"
            "e2,u1,i2,view,20,1500,c1,\n"
            "e1,u2,i1,share,10,,,a|b|a\n")
    s = load_events_csv(write(tmp_path / "e.csv", text))
    assert s.users == ["u2", "u1"] and s.kinds == ["share", "view"] and s.ts_ms.tolist() == [10, 20]
    assert s.tags == [("a", "b"), ()] and s.creators == [None, "c1"]
    assert np.isnan(s.watch_ms[0]) and s.watch_ms[1] == 1500
    minimal = load_events_csv(write(tmp_path / "m.csv", "event_id,user_id,item_id,kind,ts\ne,u,i,like,1\n"))
    assert minimal.tags is None and minimal.creators is None and minimal.kinds == ["like"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"e.jsonl:2: not JSON"),
        ("[1, 2]", r"e.jsonl:2: expected a JSON object, got list"),
        ('{"user_id":"u","item_id":"i","kind":"view"}', r"e.jsonl:2: missing field\(s\) ts"),
        ('{"user_id":"u","item_id":"i","kind":"poke","ts":1}', r"e.jsonl:2: kind must be one of view, like, share"),
        ('{"user_id":"u","item_id":"i","kind":["view"],"ts":1}', r"e.jsonl:2: kind must be one of"),
        ('{"user_id":"u","item_id":"i","kind":"view","ts":1.5}', r"e.jsonl:2: ts must be a non-negative integer"),
        ('{"user_id":"","item_id":"i","kind":"view","ts":1}', r"e.jsonl:2: user_id must be a non-empty string"),
        ('{"user_id":"u","item_id":"i","kind":"view","ts":1,"watch_ms":-3}', r"e.jsonl:2: watch_ms must be"),
        ('{"user_id":"u","item_id":"i","kind":"view","ts":1,"tags":"a"}', r"e.jsonl:2: tags must be a list"),
        ('{"user_id":"u","item_id":"i","kind":"view","ts":NaN}', r"e.jsonl:2: not JSON: NaN is not valid JSON"),
    ],
)
def test_malformed_jsonl_names_the_line_and_the_reason(tmp_path: Path, line: str, message: str) -> None:
    good = '{"user_id":"u","item_id":"i","kind":"view","ts":1}'
    with pytest.raises(DatasetError, match=message):
        load_events_jsonl(write(tmp_path / "e.jsonl", good + "\n" + line + "\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user_id,item_id,kind,ts\nu,i,view,1\n", r"e.csv:1: the header lacks column\(s\) event_id"),
        ("event_id,user_id,item_id,kind,ts\ne,u,i,view,1\ne,u,i,view\n", r"e.csv:3: expected 5 fields, got 4"),
        ("event_id,user_id,item_id,kind,ts\ne,u,i,view,soon\n", r"e.csv:2: ts must be a non-negative integer"),
        ("event_id,user_id,item_id,kind,ts,watch_ms\ne,u,i,view,1,x\n", r"e.csv:2: watch_ms must be"),
    ],
)
def test_malformed_csv_names_the_line_and_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_events_csv(write(tmp_path / "e.csv", text))


def test_stream_columns_must_agree() -> None:
    with pytest.raises(DatasetError, match="column items has 1 entries for 2 events"):
        EventStream(["a", "b"], ["x"], ["view"] * 2, np.zeros(2, np.int64), np.zeros(2))


# ------------------------------------------------------------------ evaluator
def planted(n_events: int, seed: int = 0) -> EventStream:
    users, items = planted_stream(n_events, seed=seed)
    return EventStream.from_pairs(users, items)


def test_bpr_beats_popularity_on_planted_tastes() -> None:
    stream = planted(6000)
    bpr = prequential(BPRMF(n_factors=16, seed=1), stream)
    pop = prequential(Popularity(), stream)
    assert bpr.evaluated == pop.evaluated > 1000
    assert bpr.hr_at_10 > pop.hr_at_10 + 0.15, (bpr, pop)
    assert bpr.ndcg_at_10 > pop.ndcg_at_10 and bpr.recall_at_20 > pop.recall_at_20
    for r in (bpr, pop):
        assert r.ndcg_at_10 <= r.hr_at_10 <= r.recall_at_20 <= 1.0
        assert r.learn_events_per_s > 0 and r.seconds >= r.learn_seconds + r.score_seconds - 1e-6


def test_what_counts_as_a_test() -> None:
    # a: first event of a user (no history) -> not a test; b: first sighting of "y" -> not a test;
    # a re-engaged item -> a repeat, not a test; everything else -> a test
    users = ["a", "b", "a", "b", "c", "a", "c"]
    items = ["x", "x", "y", "y", "x", "x", "y"]
    #        new  new  unseen test new  repeat test
    r = prequential(Popularity(), EventStream.from_pairs(users, items))
    assert (r.events, r.evaluated, r.repeats) == (7, 2, 1)
    # b: only y is left to rank (x is b's own) -> rank 0; c: x excluded, y is the only one -> rank 0
    assert r.hr_at_10 == r.ndcg_at_10 == r.recall_at_20 == 1.0


@pytest.mark.parametrize(("target", "hr", "ndcg"), [("i10", 1.0, 1 / math.log2(9 + 2)), ("i11", 0.0, 0.0)])
def test_rank_metrics_are_exact(target: str, hr: float, ndcg: float) -> None:
    # user p<k> engages i<k> 12 - k times (repeats, not tests): i0 is the most popular, i11 the least.
    # Then z engages i0 (z's first event: no test) and the target, ranked among i1..i11:
    # i10 is 10th (rank 9, a hit at 10), i11 is 11th (rank 10: missed at 10, recalled at 20).
    users = [f"p{k}" for k in range(12) for _ in range(12 - k)] + ["z", "z"]
    items = [f"i{k}" for k in range(12) for _ in range(12 - k)] + ["i0", target]
    r = prequential(Popularity(), EventStream.from_pairs(users, items), name="pop")
    assert (r.model, r.evaluated, r.repeats) == ("pop", 1, sum(11 - k for k in range(12)))
    assert (r.hr_at_10, r.recall_at_20) == (hr, 1.0)
    assert r.ndcg_at_10 == pytest.approx(ndcg)
    # one held-out item: a hit is precision 1/10, recall 1, F1 = 2 * 0.1 * 1 / (0.1 + 1) = 2/11; a miss is 0
    assert (r.precision_at_10, r.recall_at_10) == (hr / 10, hr)
    assert r.f1_at_10 == pytest.approx(2 / 11 * hr)


def test_precision_and_f1_at_10_follow_hr_at_10_over_many_tests() -> None:
    r = prequential(BPRMF(n_factors=8, seed=0), planted(3000))
    assert 0 < r.hr_at_10 < 1 and r.evaluated > 500
    assert r.recall_at_10 == r.hr_at_10
    assert r.precision_at_10 == pytest.approx(r.hr_at_10 / 10)
    p, rec = r.precision_at_10, r.recall_at_10
    assert r.f1_at_10 == pytest.approx(2 * p * rec / (p + rec)) == pytest.approx(2 / 11 * r.hr_at_10)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_fast_ranking_agrees_with_top_n(batch_size: int) -> None:
    stream = planted(1500, seed=3)
    fast = prequential(BPRMF(n_factors=8, seed=5), stream, batch_size=batch_size, fast=True)
    slow = prequential(BPRMF(n_factors=8, seed=5), stream, batch_size=batch_size, fast=False)
    keys = ("evaluated", "repeats", "hr_at_10", "ndcg_at_10", "recall_at_20")
    assert [getattr(fast, k) for k in keys] == pytest.approx([getattr(slow, k) for k in keys], rel=1e-12)
    assert fast.evaluated > 300


class Spy(BPRMF):
    """BPRMF recording the calls the evaluator makes."""

    def __init__(self) -> None:
        super().__init__(n_factors=4, seed=0)
        self.calls: list[tuple[str, Any]] = []

    def learn_one(self, user: str, item: str, weight: float = 1.0) -> None:
        self.calls.append(("learn_one", (user, item, weight)))
        super().learn_one(user, item, weight)

    def learn_batch(self, users: Any, items: Any, weights: Any = None) -> None:
        self.calls.append(("learn_batch", (list(users), list(items), list(weights))))
        super().learn_batch(users, items, weights)

    def score(self, user: str, items: Any = None) -> np.ndarray:
        self.calls.append(("score", (user, self.n_items)))
        return super().score(user, items)


def test_batches_are_tested_against_the_model_before_them() -> None:
    users = ["a", "b", "a", "b", "a", "b", "c", "a", "b"]
    items = ["x", "y", "y", "x", "z", "z", "x", "w", "w"]
    kinds = ["view", "like", "share", "view", "view", "view", "view", "view", "like"]
    stream = EventStream.from_pairs(users, items, kinds=kinds)
    # one event at a time: a-y, b-x, b-z and b-w are tests
    assert prequential(Spy(), stream).evaluated == 4
    # blocks of 4, each tested against the model, histories and items as they were before it:
    # block 1 (events 0-3): nobody has history yet; block 2 (4-7): z and w were not seen before
    # the block, c is new; block 3 (8): b-w is a test, against the 4 items known after block 2
    spy = Spy()
    r = prequential(spy, stream, batch_size=4)
    assert (r.evaluated, r.batch_size) == (1, 4)
    # c's first event (x was seen) is tried for the history split: BPRMF does not rank an unknown user,
    # so it is the only such call of the run
    assert [c for c, _ in spy.calls] == ["learn_batch", "score", "learn_batch", "score", "learn_batch"]
    assert spy.calls[0][1] == (users[:4], items[:4], [1.0, 3.0, 5.0, 1.0])  # weights by kind
    assert spy.calls[1][1] == ("c", 2)
    assert spy.calls[3][1] == ("b", 4)


def test_batched_result_matches_the_per_event_protocol_in_spirit() -> None:
    stream = planted(4000, seed=2)
    one = prequential(BPRMF(n_factors=16, seed=1), stream)
    batched = prequential(BPRMF(n_factors=16, seed=1), stream, batch_size=64)
    pop = prequential(Popularity(), stream, batch_size=64)
    assert batched.evaluated <= one.evaluated
    assert batched.hr_at_10 > pop.hr_at_10 + 0.1


def test_popularity_gets_timestamps_and_unit_weights() -> None:
    users = ["a", "b", "c", "d", "e"]
    items = ["old", "old", "new", "new", "new"]
    stream = EventStream.from_pairs(users, items, kinds=["share", "share", "view", "view", "view"],
                                    ts_ms=[0, 0, 10 * 3_600_000, 10 * 3_600_000, 10 * 3_600_000])
    recent = Popularity(half_life_s=3600)
    prequential(recent, stream)
    assert [i for i, _ in recent.top_n("z", 2)] == ["new", "old"]  # decayed by event time
    weighted, unit = Popularity(), Popularity()
    prequential(weighted, stream)
    r = prequential(unit, stream, unit_weights=True)
    assert r.unit_weights and weighted.score("z", ["old", "new"]).tolist() == [10.0, 3.0]
    assert unit.score("z", ["old", "new"]).tolist() == [2.0, 3.0]


def test_progress_and_result_dict() -> None:
    seen: list[tuple[int, int]] = []
    r = prequential(Popularity(), planted(1000), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (1000, 1000) and len(seen) <= 201
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    d = r.to_dict()
    assert REQUIRED_KEYS <= set(d) and json.loads(json.dumps(d)) == d
    assert isinstance(r, PrequentialResult)


def test_bad_arguments() -> None:
    from models import InvalidInputError

    with pytest.raises(InvalidInputError, match="batch_size"):
        prequential(Popularity(), planted(10), batch_size=0)


# ------------------------------------------------------------- River adapter
@needs_river
@pytest.mark.parametrize("kind", ["BiasedMF", "FunkMF"])
def test_river_adapter_agrees_with_river(kind: RiverKind) -> None:
    model = RiverMF(kind, n_factors=4, seed=3, learning_rate=0.02)
    users, items = planted_stream(800, seed=1)
    model.learn_batch(users, items, [1.0 + (k % 5) for k in range(len(users))])
    river = model.river_model
    pairs = [(users[k], items[j]) for k in range(0, 800, 97) for j in range(0, 800, 131)]
    for user, item in pairs:
        assert model.score(user, [item])[0] == pytest.approx(river.predict_one(user, item), rel=1e-9, abs=1e-12)
    full = model.score(users[0])
    assert full.shape == (model.n_items,)
    assert full.tolist() == pytest.approx([river.predict_one(users[0], i) for i in model.item_ids], rel=1e-9)
    top = model.top_n(users[0], 5, exclude=[model.item_ids[int(np.argmax(full))]])
    assert len(top) == 5 and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert np.argmax(full) not in [model.item_ids.index(i) for i, _ in top]
    assert model.top_n_batch([users[0], "nobody"], 5, [[top[0][0]], []])[1] == []
    with pytest.raises(KeyError, match="unknown user"):
        model.score("nobody")
    assert "nobody" not in river.u_latents  # scoring never creates River state
    with pytest.raises(NotImplementedError, match="never"):
        model.to_bytes()


@needs_river
def test_river_adapter_docstring_example() -> None:  # the docstring skips it: River is optional
    model = RiverMF("BiasedMF", seed=42)
    for _ in range(50):
        model.learn_batch(["ann", "ann", "bob"], ["jazz", "blues", "metal"], [5.0, 4.0, 1.0])
    assert [item for item, _ in model.top_n("bob", 2, exclude=["metal"])] == ["jazz", "blues"]


@needs_river
def test_river_adapter_in_the_evaluator() -> None:
    """The evaluator ranks RiverMF's score vector (its default, fast path) exactly as RiverMF's own
    top_n ranks (the per-event path), on the same tests as any other model."""
    stream = planted(2000)
    assert isinstance(RiverMF("BiasedMF", seed=0), ScoresAllItems)
    fast = prequential(RiverMF("BiasedMF", seed=0), stream)
    slow = prequential(RiverMF("BiasedMF", seed=0), stream, fast=False)
    same_tests = prequential(Popularity(), stream)
    assert (fast.evaluated, fast.repeats) == (slow.evaluated, slow.repeats)
    assert (fast.evaluated, fast.repeats) == (same_tests.evaluated, same_tests.repeats) and fast.evaluated > 1000
    assert (fast.hr_at_10, fast.ndcg_at_10, fast.recall_at_20) == (slow.hr_at_10, slow.ndcg_at_10, slow.recall_at_20)
    assert fast.hr_at_10 > 0  # it learned something to rank by


def test_river_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "river", None)  # makes `import river` fail
    monkeypatch.setitem(sys.modules, "river.reco", None)
    from models.river_adapter import RiverNotInstalledError

    assert not river_available()
    with pytest.raises(RiverNotInstalledError, match=r"pip install 'streamrec\[bench\]'"):
        RiverMF()


# ------------------------------------------------------------------------ CLI
@pytest.fixture
def ratings(tmp_path: Path) -> Path:
    users, items = planted_stream(600, seed=4)
    lines = [f"{u[1:]}\t{i[1:]}\t{1 + k % 5}\t{880000000 + k}\n" for k, (u, i) in enumerate(zip(users, items))]
    return write(tmp_path / "u.data", "".join(lines))


def test_cli_json_lines(ratings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--model", "bpr", "popularity",
                     "--model", "recent-popularity", "--json", "--limit", "500"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["model"] for r in rows] == ["bpr", "popularity", "recent-popularity"]
    for r in rows:
        assert REQUIRED_KEYS <= set(r) and r["events"] == 500 and r["batch_size"] == 1
        assert r["evaluated"] > 0
        assert r["precision_at_10"] == pytest.approx(r["hr_at_10"] / 10)
        assert r["f1_at_10"] == pytest.approx(2 / 11 * r["hr_at_10"])
    assert "500 events" in err


def test_cli_batch_size_and_table(ratings: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns when not on a terminal
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--model", "popularity",
                     "--batch-size", "50"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "popularity" in out and "HR@10" in out and "batch size 50" in out
    assert "precision@10" in out and "F1@10" in out
    assert "by the event's number among the user's items" in out and "2-5" in out and "by the item's age" in out


def test_cli_default_models_skip_river_when_absent(ratings: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "river", None)
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--json", "--limit", "100"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [json.loads(line)["model"] for line in out.splitlines()] == ["bpr", "popularity", "recent-popularity"]
    assert "River is not installed" in err and "skipping river-biasedmf" in err
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--model", "river-funkmf"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "pip install 'streamrec[bench]'" in err


@needs_river
def test_cli_river_models(ratings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--model", "river-biasedmf",
                     "river-funkmf", "--json", "--limit", "300"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [json.loads(line)["model"] for line in out.splitlines()] == ["river-biasedmf", "river-funkmf"]


@pytest.mark.parametrize(
    ("name", "text", "fmt", "message"),
    [
        ("missing.data", None, "movielens", "missing.data: no such file"),
        ("u.data", "1\t2\t3\n", "movielens", "u.data:1: expected 4 tab-separated fields"),
        ("e.jsonl", '{"user_id":"u"}\n', "jsonl", "e.jsonl:1: missing field(s) item_id, kind, ts"),
    ],
)
def test_cli_bad_data_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                            text: str | None, fmt: str, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        write(path, text)
    code = cli_main(["eval", "--data", str(path), "--format", fmt, "--model", "popularity"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("streamrec eval: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_rejects_unknown_models_and_bad_sizes(ratings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--model", "lightfm"], ["--batch-size", "0"], ["--format", "parquet"]):
        argv = ["eval", "--data", str(ratings), "--format", "movielens", *extra]
        with pytest.raises(SystemExit) as exc:
            cli_main(argv)
        assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_eval_cli_runs_standalone(ratings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert eval_cli.main(["--data", str(ratings), "--format", "movielens", "--model", "popularity", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "popularity"


# ------------------------------------------------- incremental recall (Kitazawa protocol)
def test_incremental_recall_keeps_the_positives_warms_up_on_a_fifth_and_tests_every_later_event() -> None:
    from models.errors import InvalidInputError
    from models.evaluate import incremental_recall

    stream = EventStream.from_pairs(["a", "b", "a", "c", "b", "d", "a", "b", "c", "e"],
                                    ["x", "x", "y", "y", "z", "x", "z", "y", "x", "q"],
                                    kinds=["share", "view", "share", "share", "share", "like", "share", "share",
                                           "share", "share"])
    result = incremental_recall(Popularity(), stream, window=2)
    assert (result.positives, result.warmup, result.tested) == (8, 1, 7)
    # five items: every held-out item is in a top 10
    assert result.recall_at_10 == 1.0 and result.window_recall_at_10["last"] == 1.0
    with pytest.raises(InvalidInputError):
        incremental_recall(Popularity(), stream, warmup=1.0)


def test_cli_kitazawa_protocol_reports_recall_beside_the_papers_table(ratings: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--protocol", "kitazawa",
                     "--model", "bpr", "popularity"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "incremental FMs (paper)" in out and "0.035" in out and "bpr" in out
    code = cli_main(["eval", "--data", str(ratings), "--format", "movielens", "--protocol", "kitazawa",
                     "--model", "popularity", "--json"])
    row = json.loads(capsys.readouterr()[0].splitlines()[0])
    assert code == 0 and row["protocol"] == "kitazawa" and row["tested"] == row["positives"] - row["warmup"]
