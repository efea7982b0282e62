"""The worker's per-batch model calls, replayed on one core: learning, top-N refresh, checkpoint reads.

    python bench/hotpath.py                  # 100k users x 100k items, 200k events in batches of 5,000
    python bench/hotpath.py --quick          # 20k x 20k, 50k events
    python bench/hotpath.py --profile        # also print the top of a cProfile of the replay

A ``streams.tools.synthetic.SyntheticWorld`` stream (only numpy) is replayed the way
``streams.worker.learner`` does it, per batch:

1. ``BPRMF.learn_batch(users, items, weights, item_tags=tags)`` and
   ``Popularity.learn_batch(users, items, weights, ts_ms=ts, item_tags=tags)``;
2. the batch's distinct users' top-50, each user's history (an ``OrderedDict``, at most
   ``--max-history`` items) excluded: ``BPRMF.top_n_lists`` (the fast form; ``--tuples``
   times ``top_n_batch`` instead), plus ``Popularity.top_n("", 50)`` and
   ``Popularity.top_n_for_tags([tag], 50)`` for each tag of the batch;
3. ``BPRMF.user_vectors``, ``BPRMF.item_vectors``, ``Popularity.item_weights`` (checkpoint reads).

Printed: µs per event for each learning call, µs per refreshed user for the top-N refresh,
ms per batch for the popularity lists and the checkpoint reads, and totals. The first
``--warmup`` batches are not timed (new ids dominate).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS

import argparse
import cProfile
import pstats
import sys
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import BPRMF, Popularity, event_weights  # noqa: E402
from streams.tools.synthetic import SyntheticWorld, WorldConfig  # noqa: E402

TOP_N = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first batches")
    parser.add_argument("--max-history", type=int, default=1000)
    parser.add_argument("--tuples", action="store_true", help="time top_n_batch (tuples) instead of top_n_lists")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    n_users = args.users or (20_000 if args.quick else 100_000)
    n_items = args.items or (20_000 if args.quick else 100_000)
    n_events = args.events or (50_000 if args.quick else 200_000)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    world = SyntheticWorld(WorldConfig(users=n_users, items=n_items, seed=0))
    events = list(world.events(n_events, start_ms=0))
    model, pop = BPRMF(seed=0), Popularity(half_life_s=3600)
    history: dict[str, OrderedDict[str, None]] = {}
    fast = not args.tuples and hasattr(model, "top_n_lists")
    t: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def replay() -> None:
        for b, lo in enumerate(range(0, len(events), args.batch)):
            batch = events[lo : lo + args.batch]
            timed = b >= args.warmup
            users = [e["user_id"] for e in batch]
            items = [e["item_id"] for e in batch]
            tags = [tuple(e.get("tags") or ()) for e in batch]
            ts = np.array([e["ts"] for e in batch], np.int64)
            w = event_weights([e["kind"] for e in batch],
                              np.array([-1 if e.get("watch_ms") is None else e["watch_ms"] for e in batch], float))
            t0 = time.perf_counter()
            model.learn_batch(users, items, w, item_tags=tags)
            t1 = time.perf_counter()
            pop.learn_batch(users, items, w, ts_ms=ts, item_tags=tags)
            t2 = time.perf_counter()
            for u, i in zip(users, items):
                h = history.get(u)
                if h is None:
                    h = history[u] = OrderedDict()
                h[i] = None
                h.move_to_end(i)
                if len(h) > args.max_history:
                    h.popitem(last=False)
            distinct = list(dict.fromkeys(users))
            ex = [history[u] for u in distinct]
            t3 = time.perf_counter()
            if fast:
                model.top_n_lists(distinct, TOP_N, ex)
            else:
                model.top_n_batch(distinct, TOP_N, ex)
            t4 = time.perf_counter()
            pop.top_n("", TOP_N)
            seen_tags = sorted({x for tt in tags for x in tt})
            for tag in seen_tags:
                pop.top_n_for_tags([tag], TOP_N)
            t5 = time.perf_counter()
            ditems = sorted(set(items))
            model.user_vectors(sorted(distinct))
            model.item_vectors(ditems)
            pop.item_weights(ditems)
            t6 = time.perf_counter()
            if timed:
                t["bpr learn"] += t1 - t0
                t["pop learn"] += t2 - t1
                t["top-N"] += t4 - t3
                t["pop lists"] += t5 - t4
                t["checkpoint reads"] += t6 - t5
                counts["events"] += len(batch)
                counts["users"] += len(distinct)
                counts["batches"] += 1
                counts["tags"] += len(seen_tags)

    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(replay)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        replay()
    ne, nu, nb = counts["events"], counts["users"], counts["batches"]
    print(f"{n_users:,} users x {n_items:,} items, {n_events:,} events in batches of {args.batch:,} "
          f"({args.warmup} untimed); known items at the end: {model.n_items:,}; "
          f"top-N via {'top_n_lists' if fast else 'top_n_batch'}")
    print(f"bpr learn_batch : {1e6 * t['bpr learn'] / ne:7.2f} us/event")
    print(f"pop learn_batch : {1e6 * t['pop learn'] / ne:7.2f} us/event")
    print(f"learn (both)    : {1e6 * (t['bpr learn'] + t['pop learn']) / ne:7.2f} us/event")
    print(f"top-N refresh   : {1e6 * t['top-N'] / nu:7.2f} us/user ({nu / nb:,.0f} users/batch)")
    print(f"pop lists       : {1e3 * t['pop lists'] / nb:7.2f} ms/batch ({counts['tags'] / nb:.0f} tags/batch)")
    print(f"checkpoint reads: {1e3 * t['checkpoint reads'] / nb:7.2f} ms/batch")
    print(f"total           : {1e6 * sum(t.values()) / ne:7.2f} us/event")


if __name__ == "__main__":
    main()
