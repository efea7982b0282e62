"""bench/http_load.py end to end with tiny numbers: its own redis-server, the real streamrec serve, wrk and
redis-benchmark, so the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_http_load_measures_the_api_beside_redis(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "http_load.py"), "--rates", "100", "--duration", "1", "--repeats", "1",
         "--users", "300", "--redis-requests", "2000", "--max-connections", "2", "--json"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["users"] == 300 and [row["offered_rps"] for row in report["rows"]] == [100, None]
    for row in report["rows"]:
        http, redis = row["http"], row["redis"]
        assert http["rps"] > 10 and http["errors"] == 0 and 0 < http["p50_ms"] <= http["p99_ms"] <= http["max_ms"]
        assert http["server_cpu_us"] > 0 and redis["rps"] > 0 and redis["p99_ms"] > 0
        assert row["rps_ratio"] == pytest.approx(redis["rps"] / http["rps"])


def test_http_load_levers_serve_every_request(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "http_load.py"), "--rates", "100", "--duration", "1", "--repeats", "1",
         "--users", "300", "--redis-requests", "2000", "--max-connections", "2", "--levers", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    levers = json.loads(out.stdout)["levers"]
    assert [lever["switches"] for lever in levers] == [
        {"BENCH_FAST_PATH": "0", "BENCH_HIREDIS": "0"}, {"BENCH_FAST_PATH": "1", "BENCH_HIREDIS": "0"},
        {"BENCH_FAST_PATH": "1", "BENCH_HIREDIS": "1"}, {"BENCH_FAST_PATH": "1", "BENCH_HIREDIS": "1"}]
    assert all(lever["errors"] == 0 and lever["rps"] > 10 and lever["server_cpu_us"] > 0 for lever in levers)
