"""Learning speed side by side, on one core: our BPRMF, River's BiasedMF and Popularity.

    python bench/learn_speed.py            # ~30 s
    python bench/learn_speed.py --quick    # a few seconds, smaller stream, fewer repeats

One synthetic stream (100k users x 20k items by default, Zipf-like item popularity, kinds
80 % view / 15 % like / 5 % share) is learned by every path in the same run:

- ``BPRMF.learn_batch``: batches of 2048, k = 32, 10 negatives (the worker's path), with its defaults and
  with the session off (no co-visitation counts, no ring of recent items to keep)
- ``BPRMF.learn_one``: the same model, one event per call
- River ``reco.BiasedMF.learn_one`` (target y = event weight), at k = 32 and at River's default k = 10
- ``Popularity.learn_batch``: batches of 2048, all-time and with a one-hour half-life

Each path first learns the events once untimed (every id gets its parameters), then is timed
over the same events ``--repeats`` times; the table shows the median events/s (and the
range). BLAS runs one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1 are set before numpy is
imported) and the process is pinned to one CPU unless ``--no-pin``. Other OPENBLAS_*
variables (e.g. OPENBLAS_CORETYPE) are left as the environment sets them and are printed.

Not the same work per event: BPRMF scores 1 positive and 10 negatives and updates 12 rows;
River's BiasedMF fits one rating with no negatives and updates 2 rows and 2 biases.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
from _machine import cpu_model  # bench/ is on sys.path when run as a script

from models import BPRMF, Popularity, event_weights
from models.river_adapter import river_available

BATCH = 2048


@dataclass
class Stream:
    users: list[str]
    items: list[str]
    weights: np.ndarray
    ts_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Row:
    path: str
    detail: str
    events: int
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def make_stream(n_events: int, n_users: int, n_items: int, seed: int = 0) -> Stream:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    pop = 1.0 / (np.arange(n_items) + 10.0) ** 0.9  # Zipf-like, with a flattened head
    items = rng.choice(n_items, n_events, p=pop / pop.sum())
    kinds = rng.choice(np.array(["view", "like", "share"]), n_events, p=[0.80, 0.15, 0.05]).tolist()
    return Stream([f"u{u}" for u in users], [f"i{i}" for i in items], event_weights(kinds).astype(np.float64),
                  1_700_000_000_000 + np.arange(n_events, dtype=np.int64) * 10)


def timed(run: Callable[[], None], events: int, repeats: int) -> list[float]:
    """``run`` once untimed (warm-up: ids get their parameters), then events/s of ``repeats`` runs."""
    run()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        rates.append(events / (time.perf_counter() - t0))
    return rates


def bench_bpr_batch(s: Stream, repeats: int, k: int, negatives: int, session: bool = True) -> Row:
    off = {} if session else {"covisit_weight": 0.0, "session_tag_weight": 0.0}
    model = BPRMF(n_factors=k, n_negatives=negatives, seed=0, **off)

    def run() -> None:
        for lo in range(0, len(s), BATCH):
            model.learn_batch(s.users[lo:lo + BATCH], s.items[lo:lo + BATCH], s.weights[lo:lo + BATCH])

    detail = f"k={k}, {negatives} negatives, batches of {BATCH}" + ("" if session else ", session off")
    return Row("BPRMF.learn_batch", detail, len(s), timed(run, len(s), repeats))


def bench_bpr_one(s: Stream, n: int, repeats: int, k: int, negatives: int) -> Row:
    model = BPRMF(n_factors=k, n_negatives=negatives, seed=0)
    model.learn_batch(s.users, s.items, s.weights)  # every id known, as in the batch run
    users, items, weights = s.users[:n], s.items[:n], s.weights[:n].tolist()

    def run() -> None:
        learn = model.learn_one
        for u, i, w in zip(users, items, weights):
            learn(u, i, w)

    return Row("BPRMF.learn_one", f"k={k}, {negatives} negatives", n, timed(run, n, repeats))


def bench_river(s: Stream, n: int, repeats: int, k: int) -> Row:
    from river import reco  # the bench extra: pip install 'streamrec[bench]'

    model: Any = reco.BiasedMF(n_factors=k, seed=0)
    users, items, weights = s.users[:n], s.items[:n], s.weights[:n].tolist()

    def run() -> None:
        learn = model.learn_one
        for u, i, w in zip(users, items, weights):
            learn(user=u, item=i, y=w)

    return Row("River BiasedMF.learn_one", f"k={k}, River defaults otherwise", n, timed(run, n, repeats))


def bench_popularity(s: Stream, repeats: int, half_life_s: float | None) -> Row:
    model = Popularity(half_life_s=half_life_s)

    def run() -> None:
        for lo in range(0, len(s), BATCH):
            model.learn_batch(s.users[lo:lo + BATCH], s.items[lo:lo + BATCH], s.weights[lo:lo + BATCH],
                              ts_ms=s.ts_ms[lo:lo + BATCH])

    detail = "all-time" if half_life_s is None else f"half-life {half_life_s:g} s"
    return Row("Popularity.learn_batch", f"{detail}, batches of {BATCH}", len(s), timed(run, len(s), repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run: smaller stream, 3 repeats")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=None, help="stream length (default 300000, quick 60000)")
    parser.add_argument("--per-event", type=int, default=None,
                        help="events timed on the one-event-per-call paths (default 20000, quick 5000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per path (default 5, quick 3)")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--negatives", type=int, default=10)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args()
    events = args.events or (60_000 if args.quick else 300_000)
    per_event = min(args.per_event or (5_000 if args.quick else 20_000), events)
    repeats = args.repeats or (3 if args.quick else 5)

    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    s = make_stream(events, args.users, args.items)
    rows = [
        bench_bpr_batch(s, repeats, args.factors, args.negatives),
        bench_bpr_batch(s, repeats, args.factors, args.negatives, session=False),
        bench_bpr_one(s, per_event, repeats, args.factors, args.negatives),
    ]
    river_rows: list[Row] = []
    if river_available():
        river_rows = [bench_river(s, per_event, repeats, args.factors)]
        if args.factors != 10:
            river_rows.append(bench_river(s, per_event, repeats, 10))
    rows += river_rows
    rows += [bench_popularity(s, repeats, None), bench_popularity(s, repeats, 3600.0)]

    river_version = version("river") if river_rows else "not installed (pip install 'streamrec[bench]')"
    blas_env = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                         if k.startswith("OPENBLAS_") and k != "OPENBLAS_NUM_THREADS") or "none"
    print(f"machine: {cpu_model()}; nproc {os.cpu_count()}, {pinned}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, River {river_version}")
    print(f"BLAS threads forced to 1; other OPENBLAS_* variables, left as set: {blas_env}")
    print(f"stream: {events:,} events over {args.users:,} users x {args.items:,} items; "
          f"median of {repeats} timed runs after one warm-up run\n")
    print("| path | settings | events per run | events/s (median) | µs/event | range events/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r.path} | {r.detail} | {r.events:,} | {r.median:,.0f} | {1e6 / r.median:.1f} "
              f"| {min(r.rates):,.0f} to {max(r.rates):,.0f} |")
    if river_rows:
        river_same_k = river_rows[0].median
        print(f"\nours / River BiasedMF at k={args.factors}: "
              f"learn_batch {rows[0].median / river_same_k:.2f}x, learn_one {rows[2].median / river_same_k:.2f}x")
    else:
        print("\nRiver is not installed: no River rows (pip install 'streamrec[bench]')")
    print(f"learn_batch with the session (co-visitation counts, recent items) / without: "
          f"{rows[0].median / rows[1].median:.2f}x")


if __name__ == "__main__":
    main()
