"""Run ``streamrec worker`` as a child process: for the demo, the tests and the benchmarks.

The worker announces readiness in Redis (``<prefix>:worker:<worker_id>``, written by its
first timer tick, which Faust starts only after table recovery); :meth:`WorkerProcess.wait_ready`
polls that key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis

from streams.errors import StreamrecError
from streams.io.redis import sync_redis
from streams.settings import Settings

__all__ = ["WorkerProcess", "WorkerFailed"]


class WorkerFailed(StreamrecError, RuntimeError):
    """The worker exited or did not become ready; the message holds its log tail (also a :class:`RuntimeError`)."""


class WorkerProcess:
    """One worker child process with its own settings and log file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        if not settings.worker_id:
            raise ValueError("give the worker an explicit worker_id so its readiness key is known")
        self.settings = settings
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> "WorkerProcess":
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.tools.cli", "worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        return self

    def status(self) -> dict[str, object] | None:
        client = sync_redis(self.settings)
        try:
            raw = client.get(self.settings.worker_key(self.settings.worker_id))
        except redis.RedisError:
            return None
        finally:
            client.close()
        return None if raw is None else orjson.loads(raw)

    def wait_ready(self, timeout: float = 90.0, after_ms: int = 0) -> float:
        """Block until the worker reports ready (a heartbeat started after ``after_ms``); seconds from start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise WorkerFailed(f"worker exited with {self.process and self.process.returncode}:\n{self.log_tail()}")
            status = self.status()
            if status and status.get("ready") and int(status.get("started_ms") or 0) >= after_ms:
                return time.monotonic() - self.started_at
            time.sleep(0.1)
        raise WorkerFailed(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Faust shuts down gracefully, flushing metrics), SIGKILL after ``timeout``."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL the worker at once, as a crash would."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    def memory_mb(self, field: str = "VmHWM") -> float | None:
        """The worker's ``VmHWM`` (peak RSS) or ``VmRSS`` from ``/proc``, MB; None if unknown (or exited)."""
        if self.process is None:
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0
        except (OSError, ValueError):
            pass
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
