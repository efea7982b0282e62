"""``streamrec bench freshness`` end to end with tiny numbers, on the test session's services."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.integration


def test_bench_freshness_tiny_run_reports_the_curve_with_every_probe_found(services, tmp_path) -> None:
    cmd = [
        sys.executable, "-m", "streams.tools.cli", "bench", "freshness",
        "--users", "500", "--items", "300", "--warmup", "3000", "--settle-s", "0",
        "--rates", "200,400", "--hold-s", "3", "--sample-every", "10", "--slo-ms", "60000",
        "--bootstrap", services.broker_url, "--redis-url", services.redis_url, "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout  # exactly one JSON object on stdout; progress goes to stderr
    result = orjson.loads(lines[0])

    assert (result["users"], result["items"], result["slo_ms"]) == (500, 300, 60000.0)
    assert [point["offered_rate"] for point in result["curve"]] == [200.0, 400.0]
    for point in result["curve"]:
        assert point["probes"] > 0 and point["probes_missing"] == 0, point  # every probe's list was written
        assert 0 < point["p50_ms"] <= point["p99_ms"] <= point["max_ms"] < 60000, point
        assert point["achieved_rate"] > 0.5 * point["offered_rate"], point
        assert point["cpu_pct"] > 0 and point["lag_end"] >= 0 and point["drain_s"] >= 0, point
        stages = point["stages"]
        assert {"learn", "topn", "redis"} <= set(stages["p99_ms"]) and set(stages["p50_ms"]) == set(stages["p99_ms"])
        assert stages["cpu_us_per_event"]["learn"] > 0
        assert point["kept_up"] is True  # a 60 s SLO at a few hundred events/s
    # The highest rate held within the SLO, with the worker keeping up.
    assert result["sustained_rate"] == 400.0
    assert "[bench freshness]" in done.stderr
