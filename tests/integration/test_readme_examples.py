"""Every code example of README.md, run as written against the test's services.

The fenced blocks are read from README.md itself, so an example that stops working fails
here. Each runs in a subprocess with ``STREAMREC_*`` pointing at this test's broker, Redis
and prefixes (``make_settings(...).to_env()``), in a temporary working directory, with
``streamrec`` on ``PATH``:

* ```python blocks: run with ``python -c``, with a worker running; must exit 0.
* ```bash blocks: one command per line, in order; must exit 0. ``streamrec worker`` runs in
  the background for the commands after it. The commands that cannot run in a test are
  listed in ``SKIPPED``, each with its reason; every other command is run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.io.redis import sync_redis
from streams.settings import Settings
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Commands of the README that are not run here, each with the reason (matched against the command).
SKIPPED: dict[str, str] = {
    r"^make\b": "make demo / make test set up a venv and run the demo or this whole suite",
    r"^pip install\b": "installs streamrec: the interpreter running the tests already has it",
    r"^streamrec dev up\b": "starts detached services on the fixed ports 9092 and 6379; the tests' own services "
                            "(tests/conftest.py) take their place",
    r"^streamrec bench pipeline\b": "a benchmark of a million events that starts its own services (minutes); "
                                    "tests/integration/test_bench_pipeline.py runs a small one",
    r"^streamrec bench scale\b": "runs 1, 2 and 4 workers over 150,000 events each (minutes); "
                                 "tests/integration/test_bench_scale.py runs a small one",
    r"^streamrec bench freshness\b": "holds five rates for a minute each after a 300,000-event warm-up (minutes); "
                                     "tests/integration/test_bench_freshness.py runs a small one",
    r"^streamrec eval --data ml-100k/": "needs MovieLens 100K, which the reader downloads (it is not in the repository), "
                                        "and evaluates four models on its 100,000 ratings (over a minute on 2 cores); "
                                        "the events.jsonl example runs the same command",
    r"^docker compose\b": "no Docker engine here; tests/unit/test_compose.py checks docker-compose.yml",
    r"openssl rand": "writes the Redis password for docker compose into .env",
    r"\bstreamrec serve\b": "a server that runs until stopped; tests/integration/test_serve.py runs the same app "
                           "against the test's services",
    r"^curl\b": "asks a running `streamrec serve`; tests/integration/test_serve.py makes the same requests",
}
BASH = shutil.which("bash") or "/bin/bash"
# Long-running commands: started in the background, stopped when the block is done.
BACKGROUND = re.compile(r"^streamrec worker\b")


@dataclass(frozen=True)
class Block:
    lang: str
    heading: str  # the "## ..." section it is in
    line: int  # line number of the opening fence
    code: str

    @property
    def name(self) -> str:
        return f"{self.heading} (README.md:{self.line})"

    def commands(self) -> list[str]:
        """The shell commands of a bash block: comment and blank lines dropped, continuations joined."""
        commands, current = [], ""
        for raw in self.code.splitlines():
            if not current and (not raw.strip() or raw.lstrip().startswith("#")):
                continue
            if raw.rstrip().endswith("\\"):
                current += raw.rstrip()[:-1] + " "
                continue
            commands.append((current + raw).strip())
            current = ""
        return commands


def readme_blocks(lang: str | None = None) -> list[Block]:
    blocks, heading, fence, body = [], "", None, []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            if line.startswith("## "):
                heading = line[3:].strip()
            elif line.startswith("```"):
                fence, body = (line[3:].strip(), number), []
        elif line.startswith("```"):
            blocks.append(Block(fence[0], heading, fence[1], "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: the block opened on line {fence[1]} is never closed"
    return [b for b in blocks if lang is None or b.lang == lang]


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED.items() if re.search(pattern, command)), None)


# --- running ---------------------------------------------------------------------------------


def command_env(settings: Settings, bin_dir: Path) -> dict[str, str]:
    """The environment of every example: the test's settings, ``streamrec`` first on PATH."""
    return {**os.environ, **settings.to_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """The directory of the ``streamrec`` console script of this interpreter (else a stand-in for it)."""
    here = Path(sys.executable).parent
    if (here / "streamrec").exists():
        return here
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "streamrec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m streams.tools.cli "$@"\n')
    shim.chmod(0o755)
    return shim_dir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch working directory (`streamrec dev down` there finds nothing of the developer's to stop),
    with the file the examples presume: ``events.jsonl``."""
    work = tmp_path / "work"
    work.mkdir()
    world = SyntheticWorld(WorldConfig(users=300, items=200, seed=5))
    (work / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in world.events(5_000)))
    return work


def run(command: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, "-c", command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def heartbeat(settings: Settings) -> dict[str, Any] | None:
    client = sync_redis(settings)
    try:
        raw = client.get(settings.worker_key(settings.worker_id))
    finally:
        client.close()
    return None if raw is None else orjson.loads(raw)


class Background:
    """A long-running command of a block (``streamrec worker``), in its own process group."""

    def __init__(self, command: str, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.command, self.log = command, log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([BASH, "-c", command], env=env, cwd=cwd, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> int | None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def run_block(block: Block, settings: Settings, env: dict[str, str], cwd: Path, log_dir: Path) -> list[str]:
    """Run a bash block's commands in order (skipping SKIPPED); returns the commands run."""
    background: list[Background] = []
    done = []
    try:
        for command in block.commands():
            if skip_reason(command):
                continue
            if BACKGROUND.search(command):
                spawned_ms = int(time.time() * 1000)
                job = Background(command, env, cwd, log_dir / f"background-{len(background)}.log")
                background.append(job)

                def ready(job: Background = job) -> bool:
                    assert job.process.poll() is None, f"{job.command!r} exited:\n{job.tail()}"
                    beat = heartbeat(settings)
                    return bool(beat and beat.get("ready") and int(beat.get("started_ms") or 0) >= spawned_ms)

                wait_for(ready, timeout=90)
            else:
                result = run(command, env, cwd)
                assert result.returncode == 0, (f"{block.name}: {command!r} exited with {result.returncode}\n"
                                                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
                if command.startswith("streamrec produce"):
                    # as a user would: let the worker apply what was produced before asking for lists
                    produced = int(re.search(r"produced (\d+) events", result.stderr)[1])  # type: ignore[index]
                    wait_for(lambda: int((heartbeat(settings) or {}).get("events_total") or 0) >= produced,
                             timeout=120, interval=0.5)
            done.append(command)
        for job in background:
            assert job.process.poll() is None, f"{job.command!r} stopped during the block:\n{job.tail()}"
    finally:
        for job in background:
            job.stop()
    return done


# --- tests -----------------------------------------------------------------------------------

PYTHON_BLOCKS = readme_blocks("python")


def test_readme_has_the_examples_these_tests_run():
    assert PYTHON_BLOCKS, "README.md has no ```python example"
    headings = {b.heading for b in readme_blocks("bash")}
    assert {"Using it", "Evaluating the model"} <= headings


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"line{b.line}" for b in PYTHON_BLOCKS])
def test_python_example_runs_as_written_against_a_worker(block, make_settings, start_worker, bin_dir, workdir):
    settings = make_settings()
    worker = start_worker(settings)
    result = subprocess.run([sys.executable, "-c", block.code], env=command_env(settings, bin_dir), cwd=workdir,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if "EventProducer" in block.code:  # what it sent reached the worker
        wait_for(lambda: int((worker.status() or {}).get("events_total") or 0) >= 1, timeout=30)


def test_using_it_commands_run_in_order_as_written(make_settings, bin_dir, workdir, tmp_path):
    settings = make_settings()
    env = command_env(settings, bin_dir)
    ran = []
    for block in readme_blocks("bash"):
        if block.heading == "Using it":
            ran += run_block(block, settings, env, workdir, tmp_path)
    assert any(BACKGROUND.search(c) for c in ran), "the sequence starts a worker"
    assert any(c.startswith("streamrec recs") for c in ran)
    recs = run("streamrec recs u00042 -n 10 --json", env, workdir)  # the list the sequence printed was personal
    assert recs.returncode == 0 and orjson.loads(recs.stdout)["source"] == "personal", recs.stdout


def test_evaluating_the_model_commands_run_as_written(make_settings, bin_dir, workdir, tmp_path):
    settings = make_settings()
    env = command_env(settings, bin_dir)
    ran = []
    for block in readme_blocks("bash"):
        if block.heading == "Evaluating the model":
            ran += run_block(block, settings, env, workdir, tmp_path)
    assert any(c.startswith("streamrec eval") for c in ran)


def test_every_other_bash_command_is_skipped_for_a_stated_reason():
    """Blocks no test above runs hold only commands of SKIPPED; every SKIPPED entry names a README command."""
    run_here = {"Using it", "Evaluating the model"}
    commands = [(b, c) for b in readme_blocks("bash") for c in b.commands()]
    unhandled = [f"{b.name}: {c}" for b, c in commands if b.heading not in run_here and not skip_reason(c)]
    assert not unhandled, f"README commands neither run by a test nor skipped with a reason: {unhandled}"
    stale = [p for p in SKIPPED if not any(re.search(p, c) for _, c in commands)]
    assert not stale, f"SKIPPED entries that match no README command: {stale}"
