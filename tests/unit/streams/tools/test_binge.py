"""The binge scenario (streams.tools.binge) and ``streamrec eval --scenario binge``."""

from __future__ import annotations

import dataclasses
import json

import pytest

from streams.tools.binge import BINGE_STEPS, BingeOptions, run_binge
from streams.tools.cli import main as cli_main

SMALL = BingeOptions(users=12, world_users=2_000, items=1_000, communities=6, warmup=30_000, background_per_item=50)


@pytest.fixture(scope="module")
def small_result() -> dict:
    return run_binge(SMALL)


def test_both_groups_are_scored_after_every_step(small_result):
    assert small_result["steps"] == list(BINGE_STEPS)
    assert small_result["users_per_group"] == {"new": 12, "switching": 12}
    for group in ("new", "switching"):
        for key in ("share", "next_hit", "next_hit_ceiling"):
            values = small_result[group][key]
            assert len(values) == len(BINGE_STEPS) and all(0.0 <= v <= 1.0 for v in values), (group, key, values)


def test_a_binge_moves_the_list_towards_its_community(small_result):
    # Eight items of one community, each watched, liked and shared: the list must carry more of it than after one.
    for group in ("new", "switching"):
        share = small_result[group]["share"]
        assert share[-1] > share[0] and share[-1] > 0.2, (group, share)


def test_no_list_beats_the_next_item_ceiling(small_result):
    # The ceiling is the best any top-10 can do, so the model's hit rate stays at or below it.
    for group in ("new", "switching"):
        hits, ceiling = small_result[group]["next_hit"], small_result[group]["next_hit_ceiling"]
        assert all(0.0 < c < 1.0 for c in ceiling), (group, ceiling)
        assert sum(hits) <= sum(ceiling) + 0.1, (group, hits, ceiling)  # averages over 12 users: some luck


def test_the_same_options_give_the_same_numbers(small_result):
    assert run_binge(SMALL) == small_result


def test_eval_scenario_binge_prints_one_json_object_or_a_table(capsys, monkeypatch):
    # The command's world, at the test's size.
    monkeypatch.setattr("streams.tools.binge.BingeOptions", lambda users, seed: dataclasses.replace(SMALL, users=users,
                                                                                                     seed=seed))
    assert cli_main(["eval", "--scenario", "binge", "--binge-users", "5", "--json"]) == 0
    out, _ = capsys.readouterr()
    result = json.loads(out)
    assert result["users_per_group"]["new"] == 5 and len(result["switching"]["share"]) == len(BINGE_STEPS)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns when not on a terminal
    assert cli_main(["eval", "--scenario", "binge", "--binge-users", "5"]) == 0
    out, _ = capsys.readouterr()
    assert "binge" in out and "switching" in out and "after 8" in out


def test_eval_without_a_dataset_or_a_scenario_says_what_is_missing(capsys):
    assert cli_main(["eval", "--format", "movielens"]) == 2
    assert "--data and --format are required" in capsys.readouterr().err
