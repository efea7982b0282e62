"""``streamrec demo`` as a person runs it, small: it prints the dashboard's URL first, the page and its event
stream answer while the demo plays, and it ends with its summary, stopping everything it started."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def test_the_demo_serves_its_dashboard_while_it_plays(tmp_path: Path):
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streams.tools.cli", "demo", "--events", "4000", "--rate", "1000", "--users", "200",
             "--items", "100", "--plain"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
    try:
        url = wait_for(lambda: (m := re.search(r"^Dashboard: (http://127\.0\.0\.1:\d+/)$", log.read_text(), re.M))
                       and m[1], timeout=60, interval=0.2)
        assert "worker ready" not in log.read_text().split("Dashboard:")[0]  # said before the worker starts

        def up() -> bool:
            assert demo.poll() is None, log.read_text()
            try:
                return httpx.get(url + "healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        def following() -> bool:
            return httpx.get(url + "v1/stream/status", timeout=5).json()["state"] == "ok"

        wait_for(up, timeout=60, interval=0.3)
        with httpx.Client(timeout=10) as http:
            assert "streamrec live" in http.get(url).text
            with http.stream("GET", url + "v1/stream") as stream:  # a page's subscription starts the feed
                assert stream.status_code == 200
            wait_for(following, timeout=60, interval=0.5)
        assert demo.wait(240) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(30)
    text = log.read_text()
    assert "streamrec demo summary" in text
    with pytest.raises(httpx.HTTPError):  # the dashboard stopped with the demo
        httpx.get(url + "healthz", timeout=2)
