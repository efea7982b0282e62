"""Bytes per user and per item: the model alone, and the worker's whole per-entity state.

    python bench/memory.py [--users 200000] [--items 50000] [--factors 32]

Memory is measured with tracemalloc (numpy reports its buffers to it) as the slope
between two sizes, so fixed costs cancel out. "model" is models.BPRMF (factors, biases,
id maps); "worker" is streams.worker.learner.Learner with its in-memory state store, i.e.
what a worker holds per user and item: factors, id maps, the engaged-items history
(one item per user here), the popularity counts, the user checkpoint copies and the item
exchange's bookkeeping (delta sums, item numbers).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tracemalloc

import numpy as np


def _allocated(build) -> int:
    gc.collect()
    tracemalloc.start()
    keep = build()
    gc.collect()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del keep
    return size


def model_bytes(n_users: int, n_items: int, k: int) -> int:
    from models import BPRMF

    def build():
        model = BPRMF(n_factors=k, seed=0)
        users = [f"u{n:07d}" for n in range(n_users)]
        items = [f"i{n:07d}" for n in range(n_items)]
        rng = np.random.default_rng(0)
        model.set_item_vectors(items, rng.normal(0, 0.1, (n_items, k)).astype(np.float32), np.zeros(n_items, np.float32))
        model.set_user_vectors(users, rng.normal(0, 0.1, (n_users, k)).astype(np.float32))
        return model

    return _allocated(build)


def worker_bytes(n_users: int, n_items: int, k: int) -> int:
    import orjson

    from streams.settings import Settings
    from streams.state.store import MemoryStateStore
    from streams.worker.learner import Learner, RawMessage

    def build():
        learner = Learner(Settings(n_factors=k), MemoryStateStore())
        n = max(n_users, n_items)
        messages = [
            RawMessage(f"u{m % n_users:07d}".encode(), orjson.dumps({
                "event_id": f"e{m}", "user_id": f"u{m % n_users:07d}", "item_id": f"i{m % n_items:07d}",
                "kind": "view", "ts": 1_700_000_000_000 + m, "creator_id": f"c{m % 1000}", "tags": ["dance"]}),
                "t", 0, m)
            for m in range(n)
        ]
        offset = 0
        for lo in range(0, n, 2000):
            outcome = learner.process(messages[lo:lo + 2000])
            learner.checkpoint(sorted(outcome.dirty_users))
            for partition, _, value in learner.exchange.take_records(0):  # read back, as from the item log
                learner.exchange.apply(partition, offset, value, 0)
                offset += 1
        del messages
        learner.seen_event_ids = type(learner.seen_event_ids)(0)  # the dedup window is a fixed cost, not per entity
        return learner

    return _allocated(build)


def per_entity(measure, users: int, items: int, k: int) -> tuple[float, float]:
    """(bytes per user, bytes per item) from the slopes between two sizes."""
    base = measure(users, items, k)
    more_users = measure(2 * users, items, k)
    more_items = measure(users, 2 * items, k)
    return (more_users - base) / users, (more_items - base) / items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--factors", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, k = {args.factors}")
    print("| state | bytes per user | bytes per item |")
    print("| --- | ---: | ---: |")
    for name, measure in (("model (BPRMF)", model_bytes), ("worker (learner + checkpoints)", worker_bytes)):
        users = args.users if name.startswith("model") else args.users // 4
        items = args.items if name.startswith("model") else args.items // 4
        per_user, per_item = per_entity(measure, users, items, args.factors)
        print(f"| {name} | {per_user:,.0f} | {per_item:,.0f} |")
    print(f"| raw float32 factors alone | {4 * args.factors} | {4 * (args.factors + 1)} |")


if __name__ == "__main__":
    main()
