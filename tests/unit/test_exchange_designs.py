"""``bench/exchange_designs.py`` in its quick mode: the simulation of the two item-exchange designs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "exchange_designs.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("exchange_designs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stream(bench: ModuleType):
    return bench.make_stream(bench.QUICK)


def _rows(learner, items):
    vectors, biases = learner.model.item_vectors(items)
    return vectors, biases


def test_additive_replicas_agree_once_everything_is_delivered(bench, stream) -> None:
    cfg, seen = bench.QUICK, {}
    run = bench.run_additive(cfg, stream, 2, 4, 1, lambda r: seen.update(div=bench.divergence(r.learners)))
    a, b = run.learners
    assert sorted(a.model.item_ids) == sorted(b.model.item_ids)
    items = sorted(a.model.item_ids)
    (va, ba), (vb, bb) = _rows(a, items), _rows(b, items)
    assert seen["div"] > 1e-3  # apart while records were in flight ...
    assert np.allclose(va, vb, rtol=1e-4, atol=1e-6) and np.allclose(ba, bb, rtol=1e-4, atol=1e-6)  # ... then one model
    assert bench.divergence(run.learners) < 1e-4
    assert all(a.model.item_tags(i) == b.model.item_tags(i) for i in items)
    # the traffic counted is what the shipped ItemExchange sent and applied
    assert run.written == sum(x.bytes_sent for x in run.exchanges) > 0
    assert run.read == [x.bytes_applied for x in run.exchanges]
    assert all(x.records_in_flight == 0 for x in run.exchanges)
    assert math.isfinite(bench.hit_rate(cfg, stream, run.learners))


@pytest.mark.parametrize("keep_own", [False, True])
def test_owner_replicas_equal_the_owners_rows_after_the_final_broadcast(bench, stream, keep_own) -> None:
    cfg, W, seen = bench.QUICK, 2, {}
    run = bench.run_owners(cfg, stream, W, 4, 1, lambda r: seen.update(div=bench.divergence(r.learners)), keep_own)
    assert seen["div"] > 1e-3
    items = sorted(run.learners[0].model.item_ids)
    assert all(sorted(lr.model.item_ids) == items for lr in run.learners)
    owner = np.array([bench.item_partition(i, cfg.partitions) % W for i in items])
    for w, learner in enumerate(run.learners):
        theirs = [i for i, o in zip(items, owner.tolist()) if o != w]
        assert theirs
        for o in set(owner.tolist()) - {w}:
            owned = [i for i in theirs if bench.item_partition(i, cfg.partitions) % W == o]
            mine, authoritative = _rows(learner, owned), _rows(run.learners[o], owned)
            assert np.array_equal(mine[0], authoritative[0]) and np.array_equal(mine[1], authoritative[1])
    assert bench.divergence(run.learners) == 0.0
    assert run.staleness_ms and max(run.staleness_ms) <= (4 - 1 + 2 * 1) * cfg.tick_ms  # s + 2d - 1 ticks
    assert math.isfinite(bench.hit_rate(cfg, stream, run.learners))


def test_quick_rows_are_deterministic_and_ordered_sensibly(bench) -> None:
    _, rows = bench.run_all(bench.QUICK)
    names = [r.row for r in rows]
    assert names[0] == "reference (1 learner)" and names[-1] == "isolated W=2"
    assert {r.design for r in rows} == {"reference", "A", "B", "B'", "isolated"}
    ref, isolated = rows[0], rows[-1]
    assert ref.quality_vs_1 == 1.0 and ref.divergence == 0.0 and ref.written_bytes_per_event == 0.0
    assert isolated.written_bytes_per_event == 0.0 and isolated.read_bytes_per_event == 0.0
    for r in rows:
        assert 0.0 < r.hr50 < 1.0 and math.isclose(r.quality_vs_1, r.hr50 / ref.hr50)
    shared = [r for r in rows if r.design in ("A", "B", "B'")]
    for r in shared:
        assert r.written_bytes_per_event > r.read_bytes_per_event > 0  # W = 2: each reads the other's half
        assert r.fetched_bytes_per_event == (r.written_bytes_per_event if r.design == "A" else r.read_bytes_per_event)
        assert r.divergence < isolated.divergence  # sharing keeps the replicas closer than not sharing
    # a longer interval sends fewer bytes per event (rows touched twice are summed into one)
    by = {(r.design, r.interval_ticks): r for r in shared}
    assert by[("A", 10)].written_bytes_per_event < by[("A", 4)].written_bytes_per_event
    assert by[("B", 10)].written_bytes_per_event < by[("B", 4)].written_bytes_per_event
    summary = bench.summarize({0: rows})
    assert [s["row"] for s in summary] == names
    assert all((s["hr50_minus_a"] is None) == (s["design"] not in ("B", "B'")) for s in summary)
    again = bench.run_row(bench.QUICK, bench.make_stream(bench.QUICK), "A", 2, 4, 1, reference_hr=ref.hr50)
    first = by[("A", 4)]
    assert (again.hr50, again.divergence, again.written_bytes_per_event) == (
        first.hr50, first.divergence, first.written_bytes_per_event)
