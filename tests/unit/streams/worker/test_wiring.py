"""The worker is declared by functions on an app given to them; only streams.worker.wiring holds one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings
from streams.worker.app import create_app
from streams.worker.wiring import wire

ROOT = Path(__file__).resolve().parents[4]


def test_wire_declares_the_worker_on_the_app_it_is_given() -> None:
    settings = Settings(app_id="wired", topic_prefix="wired", partitions=4, fetch_max_wait_ms=40, worker_id="w1")
    app = create_app(settings)
    worker = wire(app, settings)
    assert app.fetch_max_wait_ms == 40
    assert [t.get_topic_name() for t in (worker.topics.events, worker.topics.dlq, worker.topics.metrics)] == [
        "wired.events", "wired.events.dlq", "wired.metrics"]
    assert app.bulk_handlers == {"wired.events": worker.service.offer}
    assert worker.tables.user_state.partitions == 4 and worker.tables.user_state in app.tables.values()
    assert worker.service.store.table is worker.tables.user_state
    assert {name.rsplit(".", 1)[-1] for name in app.agents} == {"learn"}

    other_settings = Settings(app_id="other", topic_prefix="other", worker_id="w2")
    other = create_app(other_settings)
    wire(other, other_settings)
    assert set(other.bulk_handlers) == {"other.events"} and set(app.bulk_handlers) == {"wired.events"}
    assert app.fetch_max_wait_ms == 40 and other.fetch_max_wait_ms == other_settings.fetch_max_wait_ms


def test_the_worker_command_sets_the_blas_threads_before_numpy_loads() -> None:
    """``streamrec worker`` imports its parser and the Kafka helpers first: none of them may load numpy,
    which reads the BLAS thread count once, before wiring sets it to one thread."""
    code = (
        "import sys\n"
        "import streams.tools.cli as cli\n"
        "cli.build_parser()\n"
        "import streams.io.kafka\n"
        "assert 'numpy' not in sys.modules, 'numpy loaded before the wiring'\n"
        "import streams.worker.wiring, os\n"
        "assert 'numpy' in sys.modules and os.environ['OPENBLAS_NUM_THREADS'] == '1'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
