"""``streamrec bench scale`` with tiny numbers (1 then 2 workers), in-process, on the test session's services."""

from __future__ import annotations

import pytest

from streams.tools.bench.scale import RESULT_KEYS, ScaleOptions, _table, run_scale

pytestmark = pytest.mark.integration


def test_bench_scale_one_and_two_workers_report_real_properties(services) -> None:
    opts = ScaleOptions(
        workers=[1, 2], events=3000, holdout=600, users=500, items=300,
        freshness_rate=300.0, freshness_seconds=2.0, rate=3000.0, capacity_events=3000, capacity_rounds=2,
        bootstrap=services.broker_url, redis_url=services.redis_url,
    )  # fmt: skip
    results = run_scale(opts)

    assert [(r["workers"], r["restarted"]) for r in results] == [(1, False), (2, False)]
    for r in results:
        missing = [key for key in RESULT_KEYS if key not in r]
        assert not missing, missing
        # Every training event applied exactly once, spread over the run's workers.
        assert r["events"] == r["events_applied"] == 3000
        assert len(r["events_per_worker"]) == r["workers"] and sum(r["events_per_worker"]) == 3000
        assert r["events_per_s"] > 0 and r["cpu_s_per_1k_events"] > 0 and len(r["cpu_s_per_1k_events_rounds"]) == 2
        assert r["learn_events_per_s"] > 0 and r["learn_cpu_s_per_1k_events"] > 0
        # Held-back events: most users have a list; HR is a share.
        assert r["hr_evaluated_events"] > 0
        assert 0.0 <= r["hr_at_50"] <= 1.0
        # The workers' popular and trending lists are the offline Popularity's, exactly.
        assert r["popular_lists_consistent"] is True
        assert r["popular_overlap"] == r["popular_min_overlap"] == 1.0
        assert r["tag_lists_compared"] > 0
        assert len(r["popular_writers"]) == 1  # the owner of events partition 0, nobody else
        # Every partition owned by one of the run's workers, none moved during training.
        assert len(r["partitions_per_worker"]) == r["workers"]
        assert sum(r["partitions_per_worker"].values()) == r["partitions"]
        assert r["partition_moves"] == 0
        # Fresh users' lists appear.
        assert r["freshness_samples"] > 0 and r["freshness_missing"] == 0
        assert r["freshness_p50_ms"] is not None and r["freshness_p50_ms"] <= r["freshness_p99_ms"]
        assert r["exchange_bytes_per_event"] > 0  # even alone, a worker logs its item deltas (recovery reads them)

    one, two = results
    assert one["item_staleness_p50_ms"] is None and one["item_staleness_p99_ms"] is None  # nobody else's deltas
    assert one["item_rows_applied_per_event"] == 0
    assert two["item_staleness_p50_ms"] is not None and two["item_staleness_p99_ms"] is not None
    assert 0 <= two["item_staleness_p50_ms"] <= two["item_staleness_p99_ms"] <= two["item_staleness_max_ms"]
    assert two["item_rows_applied_per_event"] > 0 and two["item_bytes_applied_per_event"] > 0
    assert one["quality_vs_1"] == 1.0
    assert two["quality_vs_1"] == pytest.approx(two["hr_at_50"] / one["hr_at_50"])

    table = _table(results).splitlines()
    assert len(table) == 2 + len(results) and "HR@50" in table[1]
