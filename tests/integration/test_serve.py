"""``streamrec serve`` as people run it (a process, uvicorn) on the test's real broker, Redis and worker:
events posted through the API reach the events topic keyed by user as EventProducer sends them, the
worker learns them, and the lists it writes come back through the API."""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streams.events import is_batch, kafka_partition
from tests.integration.helpers import consume, wait_for

pytestmark = pytest.mark.integration


def test_events_posted_over_http_reach_the_topic_and_the_lists_come_back(make_settings, start_worker, serve):
    settings = make_settings()
    server = serve(settings, STREAMREC_API_KEYS_WRITE="w-key", STREAMREC_API_KEYS_READ="r-key")
    writer = {"Authorization": "Bearer w-key"}
    reader = {"Authorization": "Bearer r-key"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        not_ready = http.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["failed"] == "worker_heartbeat"
        assert http.get("/v1/recommendations/u1", headers=reader).json()["source"] == "none"

        worker = start_worker(settings)
        now = int(time.time() * 1000)
        events = [{"event_id": f"e{k}", "user_id": f"u{k % 4}", "item_id": f"i{k}",
                   "kind": ("view", "like", "share")[k % 3], "ts": now - 60_000 + k, "tags": [f"t{k % 2}"]}
                  for k in range(120)]
        assert http.post("/v1/events", json=events[0], headers=reader).status_code == 403
        answer = http.post("/v1/events", json=[*events, {"event_id": "bad", "user_id": "u1"}], headers=writer)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["accepted"], body["rejected"]) == (120, 1)
        assert body["results"][-1] == {"index": 120, "event_id": "bad", "status": "rejected",
                                       "reason": "missing_field", "detail": "'item_id' is required"}

        # On the events topic as EventProducer sends them: batch messages on the partition of each user_id key.
        seen: dict[str, int] = {}

        def all_there(records: list[Any]) -> bool:
            for record in records:
                values = orjson.loads(record.value) if is_batch(record.headers) else [orjson.loads(record.value)]
                for value in values:
                    assert record.partition == kafka_partition(value["user_id"].encode(), settings.partitions)
                    seen[value["event_id"]] = record.partition
            return len(seen) >= 120

        consume(settings, settings.events_topic, all_there, timeout=60)
        assert set(seen) == {e["event_id"] for e in events}

        # The worker learns them; its lists come back through the API.
        wait_for(lambda: int((worker.status() or {}).get("events_total") or 0) >= 120, timeout=90)
        wait_for(lambda: http.get("/v1/recommendations/u1", headers=reader).json()["source"] == "personal",
                 timeout=30, interval=0.3)
        mine = http.get("/v1/recommendations/u1", params={"n": 5}, headers=reader).json()
        assert len(mine["items"]) == 5 and mine["model_version"] and mine["age_ms"] is not None
        assert wait_for(lambda: http.get("/v1/popular", headers=reader).json()["items"], timeout=30)
        assert http.get("/v1/trending/t0", headers=writer).json()["source"] == "popular_tag"
        new = http.get("/v1/recommendations/newcomer", params={"tags": "nope,t1"}, headers=reader).json()
        assert new["source"] == "popular_tag" and new["items"]
        ready = wait_for(lambda: (answer := http.get("/readyz")).status_code == 200 and answer.json(), timeout=30)
        assert settings.worker_id in ready["workers"]
        assert http.get("/v1/popular").status_code == 401
    # A graceful stop (the lifespan closes the producer and the reader); uvicorn then re-raises the SIGTERM
    assert server.stop() in (0, -signal.SIGTERM) and "Application shutdown complete" in server.log.read_text()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed (.ci/install-system.sh installs it)"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def test_serves_https_with_the_given_certificate(make_settings, serve, tmp_path):
    settings = make_settings()
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))  # trusts this certificate only
    server = serve(settings, ("--tls-cert", str(cert), "--tls-key", str(key)), context,
                   STREAMREC_API_KEYS_READ="r-key", STREAMREC_SERVE_RATE_LIMIT="0.01", STREAMREC_SERVE_RATE_BURST="1")
    assert server.url.startswith("https://")
    with httpx.Client(base_url=server.url, timeout=30, verify=context) as https:
        answer = https.get("/v1/popular", headers={"Authorization": "Bearer r-key"})
        assert answer.status_code == 200 and answer.json()["source"] == "none"
        limited = https.get("/v1/popular", headers={"Authorization": "Bearer r-key"})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "100"
    with pytest.raises(httpx.ConnectError):  # the default trust store does not know a self-signed certificate
        httpx.get(server.url + "/healthz", timeout=5)
    with pytest.raises(httpx.RemoteProtocolError):  # no plain HTTP on the TLS port
        httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
