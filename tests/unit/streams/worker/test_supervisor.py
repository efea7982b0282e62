"""The worker supervisor (``streamrec worker --processes N``) driving trivial child commands.

Each scenario runs a supervisor in a subprocess (signals go to it, not to pytest) whose
children are Python one-liners: they record their pid, record the signal that stopped
them, and sleep, crash once, crash always or ignore SIGTERM. Timeouts are generous
limits, never measured durations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streams.tools.cli import build_parser
from streams.worker.supervisor import Supervisor, default_processes, parse_processes

SUPERVISE = """
import json, logging, sys
from streams.worker.supervisor import Supervisor
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
sys.exit(Supervisor(**json.loads(sys.argv[1])).run())
"""

# argv[1]: sleep | crash-once (exit 3 on its first run) | crash-2 (worker -2 exits 2 at once) | stubborn (ignores SIGTERM)
CHILD = """
import os, signal, sys, time
from pathlib import Path
mode, out, me = sys.argv[1], Path(os.environ["SUPERVISOR_TEST_DIR"]), os.environ["STREAMREC_WORKER_ID"]
with open(out / f"{me}.pids", "a") as f:
    f.write(f"{os.getpid()}\\n")
def stop(signum, frame):
    (out / f"{me}.{os.getpid()}.stopped").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else stop)
if mode == "crash-once" and len((out / f"{me}.pids").read_text().split()) == 1:
    sys.exit(3)
if mode == "crash-2" and me.endswith("-2"):
    sys.exit(2)
while True:
    time.sleep(0.05)
"""

FAST = dict(backoff_s=0.05, max_backoff_s=0.2, poll_s=0.05)


class Run:
    """A supervisor subprocess and the files its children leave in ``out``."""

    def __init__(self, out: Path, mode: str, processes: int = 2, **options: Any) -> None:
        self.out = out
        config = dict(processes=processes, base_id="w", command=[sys.executable, "-c", CHILD, mode], **FAST)
        config.update(options)
        env = {**os.environ, "SUPERVISOR_TEST_DIR": str(out)}
        self.log = out / "supervisor.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-c", SUPERVISE, json.dumps(config)], env=env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def pids(self, worker_id: str) -> list[int]:
        try:
            return [int(p) for p in (self.out / f"{worker_id}.pids").read_text().split()]
        except FileNotFoundError:
            return []

    def all_pids(self) -> list[int]:
        return [int(p) for f in self.out.glob("*.pids") for p in f.read_text().split()]

    def stopped_by(self, pid: int) -> str | None:
        path = next(self.out.glob(f"*.{pid}.stopped"), None)
        return path.read_text() if path else None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"supervisor exited with {self.process.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout:.0f} s:\n{self.text()}")

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"supervisor still running after {timeout:.0f} s:\n{self.text()}") from None

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.all_pids():
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def supervise(tmp_path: Path):
    runs: list[Run] = []

    def start(mode: str, **options: Any) -> Run:
        run = Run(tmp_path, mode, **options)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.cleanup()


def test_sigterm_stops_every_child_with_sigterm_and_exits_0(supervise):
    run = supervise("sleep", processes=3)
    run.wait_for(lambda: all(run.pids(f"w-{i}") for i in (1, 2, 3)))
    pids = run.all_pids()
    assert len(pids) == 3 and all(running(p) for p in pids)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert [run.stopped_by(p) for p in pids] == ["SIGTERM"] * 3  # each was asked to stop, none killed
    assert not [p for p in pids if running(p)]
    assert "stopping 3 worker processes" in run.text()


def test_ctrl_c_stops_every_child_too(supervise):
    run = supervise("sleep")
    run.wait_for(lambda: len(run.all_pids()) == 2)
    run.process.send_signal(signal.SIGINT)
    assert run.wait() == 0
    assert [run.stopped_by(p) for p in run.all_pids()] == ["SIGTERM"] * 2


def test_children_run_in_their_own_process_groups_with_their_own_ids(supervise):
    run = supervise("sleep")
    run.wait_for(lambda: run.pids("w-1") and run.pids("w-2"))
    for pid in run.all_pids():
        assert os.getpgid(pid) == pid  # a terminal's Ctrl-C reaches the supervisor only
        assert os.getpgid(pid) != os.getpgid(run.process.pid)
    assert "started worker w-1 (pid" in run.text() and "started worker w-2 (pid" in run.text()


def test_a_crashed_child_is_restarted_and_logged(supervise):
    run = supervise("crash-once")
    run.wait_for(lambda: len(run.pids("w-1")) == 2 and len(run.pids("w-2")) == 2)  # each crashed once
    first, second = run.pids("w-1")
    assert not running(first) and running(second)
    text = run.text()
    assert f"worker w-1 (pid {first}) exited with code 3" in text and "restarting in" in text
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert not [p for p in run.all_pids() if running(p)]


def test_a_child_crashing_at_once_repeatedly_makes_the_supervisor_give_up(supervise):
    run = supervise("crash-2", max_fast_exits=3)
    assert run.wait() == 2  # the crashing child's exit code (a bad setting exits 2)
    assert len(run.pids("w-2")) == 3
    healthy = run.pids("w-1")
    assert len(healthy) == 1 and run.stopped_by(healthy[0]) == "SIGTERM"  # the others are stopped, not orphaned
    assert not [p for p in run.all_pids() if running(p)]
    give_up = [line for line in run.text().splitlines() if "giving up" in line]
    assert len(give_up) == 1 and "w-2" in give_up[0] and "exited with code 2" in give_up[0]
    assert "3 exits in a row" in give_up[0]


def test_children_that_ignore_sigterm_are_killed_after_the_stop_timeout(supervise):
    run = supervise("stubborn", stop_timeout_s=1.0)
    run.wait_for(lambda: len(run.all_pids()) == 2)
    pids = run.all_pids()
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert not [p for p in pids if running(p)]
    assert "still running after 1 s: killing them" in run.text()


def test_a_second_signal_kills_at_once(supervise):
    run = supervise("stubborn", stop_timeout_s=600.0)
    run.wait_for(lambda: len(run.all_pids()) == 2)
    run.process.send_signal(signal.SIGINT)
    run.wait_for(lambda: "stopping 2 worker processes" in run.text())
    run.process.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 0  # far less than the 600 s stop timeout
    assert not [p for p in run.all_pids() if running(p)]
    assert "second signal: killing the workers" in run.text()


def test_children_get_sigterm_when_the_supervisor_is_killed(supervise):
    """PR_SET_PDEATHSIG: even a SIGKILLed supervisor leaves no worker running."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    run = supervise("sleep")
    run.wait_for(lambda: len(run.all_pids()) == 2)
    run.process.kill()
    run.process.wait()
    deadline = time.monotonic() + 30
    while any(running(p) for p in run.all_pids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [run.stopped_by(p) for p in run.all_pids()] == ["SIGTERM"] * 2


def test_child_environment_names_each_worker_and_spreads_web_ports():
    supervisor = Supervisor(3, "host-42", ["true"], env={"STREAMREC_TOPIC_PREFIX": "x"}, web_port=6066)
    envs = [supervisor.child_env(child) for child in supervisor.children]
    assert [e["STREAMREC_WORKER_ID"] for e in envs] == ["host-42-1", "host-42-2", "host-42-3"]
    assert [e["STREAMREC_WEB_PORT"] for e in envs] == ["6066", "6067", "6068"]
    assert all(e["STREAMREC_TOPIC_PREFIX"] == "x" for e in envs)
    assert "STREAMREC_WEB_PORT" not in Supervisor(2, "h", ["true"]).child_env(supervisor.children[0])


def test_child_environment_spreads_metrics_ports_from_the_configured_one(monkeypatch):
    monkeypatch.delenv("STREAMREC_METRICS_PORT", raising=False)
    supervisor = Supervisor(3, "host-42", ["true"], metrics_port=9464)
    assert [supervisor.child_env(c)["STREAMREC_METRICS_PORT"] for c in supervisor.children] == ["9464", "9465", "9466"]
    assert "STREAMREC_METRICS_PORT" not in Supervisor(2, "h", ["true"]).child_env(supervisor.children[0])


def test_processes_option():
    assert parse_processes("3") == 3
    assert parse_processes("auto") == parse_processes("0") == default_processes() >= 1
    with pytest.raises(ValueError):
        parse_processes("-1")
    parser = build_parser()
    assert parser.parse_args(["worker"]).processes == 1  # the worker runs in this process, as before
    assert parser.parse_args(["worker", "--processes", "4"]).processes == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--processes", "many"])


def test_a_bad_setting_stops_the_supervisor_before_any_worker_starts(tmp_path):
    env = {**os.environ, "STREAMREC_PARTITIONS": "0"}
    done = subprocess.run([sys.executable, "-m", "streams.tools.cli", "worker", "--processes", "2"], env=env,
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert b"bad setting" in done.stderr and b"started worker" not in done.stderr
