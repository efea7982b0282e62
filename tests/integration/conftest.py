"""Fixtures of the integration tests that run ``streamrec serve`` as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from streams.settings import Settings
from streams.tools.dev import free_port, stop_process
from tests.integration.helpers import wait_for


class Server:
    def __init__(self, settings: Settings, log: Path, args: tuple[str, ...] = (), verify: Any = True, **env: str) -> None:
        self.port = free_port()
        self.url = f"{'https' if '--tls-cert' in args else 'http'}://127.0.0.1:{self.port}"
        self.log, self.verify = log, verify
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.tools.cli", "serve", "--port", str(self.port), *args],
                env={**os.environ, **settings.to_env(), **env}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def up(self) -> bool:
        assert self.process.poll() is None, f"streamrec serve exited:\n{self.log.read_text(errors='replace')}"
        try:
            return httpx.get(self.url + "/healthz", timeout=2, verify=self.verify).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        return stop_process(self.process)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def start(settings: Settings, args: tuple[str, ...] = (), verify: Any = True, **env: str) -> Server:
        server = Server(settings, tmp_path / f"serve-{len(servers)}.log", args, verify, **env)
        servers.append(server)
        wait_for(server.up, timeout=60, interval=0.2)
        return server

    yield start
    for server in servers:
        server.stop()
