"""Several worker processes on one machine under one supervisor: ``streamrec worker --processes N``.

The supervisor starts N children (by default ``python -m streams.tools.cli worker``), each with its
own ``STREAMREC_WORKER_ID`` (``<base>-1`` .. ``<base>-N``, base = ``STREAMREC_WORKER_ID`` or
``<hostname>-<supervisor pid>``), each in its own session and process group, all writing to
the supervisor's stdout and stderr. The children join one consumer group and split the
partitions as separate hosts would.

* **Stop.** SIGINT (Ctrl-C), SIGTERM or SIGHUP: SIGTERM to every child's process group
  (a worker shuts down gracefully: last checkpoint, offsets committed), wait up to
  ``stop_timeout_s`` (30 s), SIGKILL whatever is left; exit 0. A second signal while
  stopping SIGKILLs the children at once. Children are in their own process groups, so a
  terminal's Ctrl-C reaches the supervisor only and the stop is always this one, ordered.
  If the supervisor itself is SIGKILLed, the kernel sends its children SIGTERM (Linux
  ``PR_SET_PDEATHSIG``): no orphan keeps running.
* **Restart.** A child that exits on its own (any exit code, or killed by a signal) is
  logged in one line and started again after a backoff: 1 s, doubling up to 30 s, back to
  1 s once a child has run for ``stable_after_s`` (60 s).
* **Give up.** A child that exits within ``fast_exit_s`` (5 s) of its start
  ``max_fast_exits`` (5) times in a row cannot start (a bad setting, a missing dependency):
  the supervisor says so in one line, stops the other children as above and exits with
  that child's last exit code (1 if it was killed by a signal or exited 0).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

__all__ = ["Supervisor", "worker_command", "parse_processes", "default_processes"]

logger = logging.getLogger(__name__)

WORKER_ID_ENV = "STREAMREC_WORKER_ID"
WEB_PORT_ENV = "STREAMREC_WEB_PORT"
METRICS_PORT_ENV = "STREAMREC_METRICS_PORT"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def worker_command(loglevel: str | None = None) -> list[str]:
    """The child command: this interpreter running ``streamrec worker`` (one process)."""
    command = [sys.executable, "-m", "streams.tools.cli", "worker"]
    return command + (["--loglevel", loglevel] if loglevel else [])


def default_processes() -> int:
    """One per CPU core this process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_processes(value: str) -> int:
    """``--processes``: a count >= 1, or ``0`` / ``auto`` for one per CPU core."""
    if value.strip().lower() == "auto":
        return default_processes()
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"expected a number of processes or 'auto', got {value!r}") from None
    if count < 0:
        raise ValueError(f"the number of processes must be >= 0, got {count}")
    return count or default_processes()


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn: the kernel sends the child SIGTERM when the supervisor dies (Linux, main thread only)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Child:
    index: int
    worker_id: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff_s: float = 0.0
    fast_exits: int = 0  # exits within fast_exit_s of the start, in a row
    restarts: int = 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # its own group: anything it started goes too
        except (ProcessLookupError, PermissionError):
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


class Supervisor:
    """Runs ``processes`` copies of ``command`` until a stop signal, restarting those that exit.

    ``command`` defaults to :func:`worker_command`; tests pass a trivial one. ``env`` is
    added to ``os.environ`` for every child; each child also gets ``STREAMREC_WORKER_ID``
    ``<base_id>-<i>`` (i = 1..N) and, if ``web_port`` is given (Faust's web server is on),
    ``STREAMREC_WEB_PORT`` ``web_port + i - 1`` so that the children do not fight over one port; likewise
    ``STREAMREC_METRICS_PORT`` ``metrics_port + i - 1`` for their Prometheus endpoints if ``metrics_port`` is given.
    """

    def __init__(
        self,
        processes: int,
        base_id: str,
        command: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        web_port: int | None = None,
        metrics_port: int | None = None,
        stop_timeout_s: float = 30.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
        fast_exit_s: float = 5.0,
        max_fast_exits: int = 5,
        poll_s: float = 0.1,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        if not base_id:
            raise ValueError("base_id must not be empty")
        self.processes = processes
        self.base_id = base_id
        self.command = list(command) if command is not None else worker_command()
        self.env = dict(env or {})
        self.web_port = web_port
        self.metrics_port = metrics_port
        self.stop_timeout_s = stop_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.fast_exit_s = fast_exit_s
        self.max_fast_exits = max_fast_exits
        self.poll_s = poll_s
        self.children = [_Child(i, f"{base_id}-{i}", backoff_s=backoff_s) for i in range(1, processes + 1)]
        self._signals: list[int] = []
        self._give_up_code: int | None = None

    # --- children ------------------------------------------------------------------------
    def child_env(self, child: _Child) -> dict[str, str]:
        env = {**os.environ, **self.env, WORKER_ID_ENV: child.worker_id}
        if self.web_port is not None:
            env[WEB_PORT_ENV] = str(self.web_port + child.index - 1)
        if self.metrics_port is not None:
            env[METRICS_PORT_ENV] = str(self.metrics_port + child.index - 1)
        return env

    def _spawn(self, child: _Child) -> bool:
        """Start (or restart) one child; False if it could not start once too often (give up)."""
        child.restart_at = None
        child.started = time.monotonic()
        try:
            # Our own command as an argv list (no shell). preexec_fn is safe: the supervisor has one thread.
            child.process = subprocess.Popen(  # noqa: S603
                self.command, env=self.child_env(child), stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )  # fmt: skip
        except OSError as exc:
            logger.error("worker %s could not start: %s", child.worker_id, exc)
            child.process = None
            return self._exited(child, 127)
        logger.info("started worker %s (pid %d)", child.worker_id, child.process.pid)
        return True

    def _exited(self, child: _Child, code: int) -> bool:
        """Account for a child that exited on its own and schedule its restart; False: give up."""
        now = time.monotonic()
        ran_s = now - child.started
        pid = f" (pid {child.process.pid})" if child.process is not None else ""
        child.process = None
        child.fast_exits = child.fast_exits + 1 if ran_s < self.fast_exit_s else 0
        if ran_s >= self.stable_after_s:
            child.backoff_s = self.backoff_s
        if child.fast_exits >= self.max_fast_exits:
            self._give_up_code = code if 0 < code < 256 else 1
            logger.error("worker %s%s %s after %.1f s (%d exits in a row within %g s of starting): "
                         "giving up and stopping all workers", child.worker_id, pid, _describe_exit(code), ran_s,
                         child.fast_exits, self.fast_exit_s)
            return False
        child.restarts += 1
        child.restart_at = now + child.backoff_s
        logger.warning("worker %s%s %s after %.1f s; restarting in %g s (restart %d)",
                       child.worker_id, pid, _describe_exit(code), ran_s, child.backoff_s, child.restarts)
        child.backoff_s = min(child.backoff_s * 2, self.max_backoff_s)
        return True

    # --- signals -------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    # --- main loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Start the children and supervise them; returns the exit code (0 after a stop signal)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        logger.info("supervising %d worker processes (%s-1 .. %s-%d); Ctrl-C or SIGTERM stops them all",
                    self.processes, self.base_id, self.base_id, self.processes)
        for child in self.children:
            if self._signals or not self._spawn(child):
                break
        while not self._signals and self._give_up_code is None:
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and (code := child.process.poll()) is not None:
                    if not self._exited(child, code):
                        break
                if child.process is None and child.restart_at is not None and now >= child.restart_at:
                    if not self._spawn(child):
                        break
            else:
                time.sleep(self.poll_s)
        if self._give_up_code is None:
            logger.info("%s: stopping %d worker processes (waiting up to %.0f s; signal again to kill them now)",
                        signal.Signals(self._signals[0]).name, sum(c.alive() for c in self.children),
                        self.stop_timeout_s)
        self._stop_all()
        return 0 if self._give_up_code is None else self._give_up_code

    def _stop_all(self) -> None:
        """SIGTERM every child, wait up to stop_timeout_s (or until one more signal), SIGKILL the rest."""
        signals_seen = len(self._signals)
        for child in self.children:
            child.restart_at = None
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while any(c.alive() for c in self.children):
            if len(self._signals) > signals_seen:
                logger.warning("second signal: killing the workers")
                break
            if time.monotonic() >= deadline:
                logger.warning("workers still running after %.0f s: killing them", self.stop_timeout_s)
                break
            time.sleep(self.poll_s)
        for child in self.children:
            if child.alive():
                logger.warning("killing worker %s (pid %d)", child.worker_id, child.process.pid)  # type: ignore[union-attr]
                child.signal(signal.SIGKILL)
        for child in self.children:
            if child.process is not None:
                code = child.process.wait()
                logger.info("worker %s (pid %d) %s", child.worker_id, child.process.pid, _describe_exit(code))
