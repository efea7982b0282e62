"""``streamrec bench pipeline`` end to end with tiny numbers, on the test session's services."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from streams.tools.bench.pipeline import RESULT_KEYS

pytestmark = pytest.mark.integration


def test_bench_pipeline_tiny_run_reports_every_number(services, tmp_path) -> None:
    cmd = [
        sys.executable, "-m", "streams.tools.cli", "bench", "pipeline",
        "--events", "3000", "--users", "500", "--items", "300",
        "--freshness-seconds", "3", "--sample-every", "10",
        "--recall-events", "3000", "--recall-users", "100",
        "--bootstrap", services.broker_url, "--redis-url", services.redis_url, "--json",
    ]  # fmt: skip
    # The worker runs in a temporary directory of the bench (Faust's <app_id>-data lands there).
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout  # exactly one JSON object on stdout; progress goes to stderr
    result = orjson.loads(lines[0])

    missing = [key for key in RESULT_KEYS if key not in result]
    assert not missing, missing
    assert (result["events"], result["users"], result["items"]) == (3000, 500, 300)
    for key in ("raw_rate", "pipeline_rate", "producer_rate", "offered_rate", "worker_rss_mb"):
        assert result[key] > 0, (key, result[key])
    assert 0 < result["ratio"] == pytest.approx(result["pipeline_rate"] / result["raw_rate"])
    assert result["offered_rate"] == pytest.approx(0.5 * result["pipeline_rate"], rel=1e-6) or result["offered_rate"] == 1.0
    assert result["freshness_samples"] > 0
    for key in ("freshness_p50_ms", "freshness_p95_ms", "freshness_p99_ms",
                "observed_p50_ms", "observed_p95_ms", "observed_p99_ms"):
        assert result[key] is not None and result[key] > 0, (key, result[key])
    assert result["freshness_p50_ms"] <= result["freshness_p95_ms"] <= result["freshness_p99_ms"]
    # Every sampled fresh user's list was created by their event and leaves out the item they engaged with.
    seen = result["freshness_samples"] - result["freshness_missing"]
    assert seen > 0
    assert result["freshness_excludes_item"] == seen
    assert result["freshness_wrong_user"] == 0
    assert 0.0 <= result["topn_recall"] <= 1.0
    assert "brute force" in result["topn_recall_method"]
    assert "[bench]" in done.stderr
