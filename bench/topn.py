"""Top-N refresh cost side by side, on one core: brute force against ``IVFIndex`` (``bench/ivf_index.py``).

    python bench/topn.py --quick    # 10k and 100k items, a small learned model: ~1 min
    python bench/topn.py            # 10k, 100k and 1M items: a few minutes
    python bench/topn.py --model-only   # only BPRMF.top_n_lists (the worker's call), µs per user + recall

The job: after a batch, refresh the top-50 of the 1,000 users it touched (k = 64 factors,
score p.q + b), never returning an item of the user's exclusion list.

- brute force: float32 matmul over the whole catalog, exclusions set to -inf, argpartition,
  sort of the 50 (users in blocks of at most 2**25 scores);
- ``IVFIndex``: the default settings (n_lists = round(sqrt(N)), n_probe = 8, tiers 0.9 and 0.98).

Two kinds of factors:

1. *Clustered synthetic* (not isotropic): items from 50 latent communities of Zipf-skewed sizes
   whose centroids span a 16-dimensional subspace (plus a little full-rank noise); an item
   is ``exp(0.25 z) * (centroid + noise)`` with ``z`` its standardised log-popularity and
   bias ``0.3 z`` (+ noise), so popular items are long and biased up. Users mix 1-3
   communities (Dirichlet) plus noise, with log-normal norms. Exclusions: 50 random items
   per user. At 10k, 100k and 1M items.
2. *Learned*: ``models.BPRMF`` (k = 64) trained on a ``streams.tools.synthetic.SyntheticWorld``
   stream in batches of 2,000 events; exclusions are each user's history (every item it
   touched). Smaller catalog (20k items, 1M events; quick: 5k items, 200k events).

Columns: median ms per 1,000 users (``--repeats`` runs after one warm-up), recall@50 against
the exact top-50 from brute force, index build time (k-means included), median time to upsert
2,000 changed items (each item moved by 5 % of its norm), memory in bytes per item (the index
holds its own copy of the vectors, laid out list by list), and recall after drift: 5 % of the
items moved by 20 % of their norm (bias by 0.1 sd) and 1 % new items, upserted, then queried
against a fresh exact top-50. For the learned model, drift is real: it goes on learning for
``--drift-batches`` batches, each batch's changed item rows upserted (the median upsert time
and the number of changed rows per batch are shown), then recall is measured again.

BLAS runs one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1 set before numpy is imported) and the
process is pinned to one CPU unless ``--no-pin``. Other OPENBLAS_* variables (e.g.
OPENBLAS_CORETYPE) are left as the environment sets them and printed, with the load average:
timings on a shared machine are only as quiet as the machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from _machine import cpu_model  # bench/ is on sys.path when run as a script
from ivf_index import IVFIndex

from models import BPRMF, event_weights
from streams.tools.synthetic import SyntheticWorld, WorldConfig

N_TOP = 50
FACTORS = 64
BRUTE_BLOCK = 1 << 25  # scores per brute-force block


@dataclass
class Row:
    catalog: str
    method: str
    ms: list[float]
    recall: float = 1.0
    build_s: float | None = None
    upsert_ms: float | None = None
    bytes_per_item: float | None = None
    drift_recall: float | None = None
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- data
def clustered_factors(
    n_items: int, n_users: int, k: int = FACTORS, communities: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users (n_users, k), items (n_items, k), biases (n_items,))`` float32; see the module docstring."""
    rng = np.random.default_rng(seed)
    rank = 16
    basis = np.linalg.qr(rng.standard_normal((k, rank)))[0].T
    mu = rng.standard_normal((communities, rank)) @ basis + 0.3 * rng.standard_normal((communities, k)) / np.sqrt(k)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    weight = rng.permutation(1.0 / np.arange(1, communities + 1) ** 0.7)
    weight /= weight.sum()
    z = rng.standard_normal(n_items)  # standardised log-popularity
    items = np.empty((n_items, k), np.float32)
    for lo in range(0, n_items, 1 << 18):  # in chunks: bounded float64 temporaries
        hi = min(lo + (1 << 18), n_items)
        comm = rng.choice(communities, hi - lo, p=weight)
        noise = rng.standard_normal((hi - lo, k)) / np.sqrt(k)
        items[lo:hi] = np.exp(0.25 * z[lo:hi])[:, None] * (mu[comm] + 0.7 * noise)
    bias = (0.3 * z + 0.1 * rng.standard_normal(n_items)).astype(np.float32)
    n_fav = rng.choice([1, 2, 3], n_users, p=[0.4, 0.35, 0.25])
    users = np.zeros((n_users, k))
    for u in range(n_users):
        favs = rng.choice(communities, n_fav[u], replace=False, p=weight)
        users[u] = rng.dirichlet(np.ones(n_fav[u])) @ mu[favs]
    users += 0.5 * rng.standard_normal((n_users, k)) / np.sqrt(k)
    users *= 2.0 * np.exp(0.3 * rng.standard_normal(n_users))[:, None]
    return users.astype(np.float32), items, bias


def perturb(q: np.ndarray, b: np.ndarray, rows: np.ndarray, scale: float, rng: np.random.Generator) -> None:
    """Move ``q[rows]`` by ``scale`` of their norm in a random direction, ``b[rows]`` by ``scale/2`` sd (in place)."""
    k = q.shape[1]
    step = rng.standard_normal((len(rows), k)).astype(np.float32) / np.sqrt(k)
    q[rows] += scale * np.linalg.norm(q[rows], axis=1, keepdims=True) * step
    b[rows] += (0.5 * scale * b.std() * rng.standard_normal(len(rows))).astype(np.float32)


# ---------------------------------------------------------------- methods
def brute_force(p: np.ndarray, q: np.ndarray, b: np.ndarray, n: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
    """Exact top-``n`` rows per user: float32 matmul, exclusions to -inf, argpartition, sort."""
    n_items = len(q)
    out = np.empty((len(p), n), np.int64)
    step = max(1, BRUTE_BLOCK // n_items)
    qt = q.T
    for lo in range(0, len(p), step):
        hi = min(lo + step, len(p))
        s = p[lo:hi] @ qt
        s += b
        ex = exclude[lo:hi]
        s[np.repeat(np.arange(hi - lo), [len(e) for e in ex]), np.concatenate(ex)] = -np.inf
        top = np.argpartition(s, n_items - n, axis=1)[:, n_items - n :]
        val = np.take_along_axis(s, top, 1)
        out[lo:hi] = np.take_along_axis(top, np.argsort(-val, axis=1, kind="stable"), 1)
    return out


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(g[g >= 0], t)) for g, t in zip(got, truth))
    return hits / truth.size


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    """``run`` once untimed (warm-up), then the milliseconds of ``repeats`` runs."""
    run()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        ms.append(1e3 * (time.perf_counter() - t0))
    return ms


# ---------------------------------------------------------------- benchmarks
def bench_clustered(n_items: int, n_users: int, repeats: int, bf_repeats: int, seed: int = 0) -> list[Row]:
    n_new = n_items // 100
    p, q, b = clustered_factors(n_items + n_new, n_users, seed=seed)
    rng = np.random.default_rng(seed + 1)
    exclude = [rng.choice(n_items, N_TOP, replace=False) for _ in range(n_users)]
    label = f"{n_items:,} items"
    q0, b0 = q[:n_items], b[:n_items]
    truth = brute_force(p, q0, b0, N_TOP, exclude)
    bf = Row(label, "brute force", timed(lambda: brute_force(p, q0, b0, N_TOP, exclude), bf_repeats),
             bytes_per_item=float(q0.itemsize * (FACTORS + 1)))

    t0 = time.perf_counter()
    index = IVFIndex(FACTORS, seed=seed)
    index.upsert(np.arange(n_items), q0, b0)
    build_s = time.perf_counter() - t0
    ms = timed(lambda: index.search(p, N_TOP, exclude), repeats)
    rows, _ = index.search(p, N_TOP, exclude)
    got_recall = recall(rows, truth)
    # upsert: 2,000 changed items, fresh ones each time, moved by 5 % of their norm
    q, b = q.copy(), b.copy()
    upsert_ms = []
    for _ in range(repeats + 1):
        changed = rng.choice(n_items, 2000, replace=False)
        perturb(q, b, changed, 0.05, rng)
        t0 = time.perf_counter()
        index.upsert(changed, q[changed], b[changed])
        upsert_ms.append(1e3 * (time.perf_counter() - t0))
    upsert_ms = upsert_ms[1:]
    nbytes = index.nbytes / len(index)
    # drift: 5 % of the items move by 20 % of their norm, 1 % new items arrive
    moved = rng.choice(n_items, n_items // 20, replace=False)
    perturb(q, b, moved, 0.2, rng)
    builds_before = index.n_builds
    t0 = time.perf_counter()
    index.upsert(moved, q[moved], b[moved])
    index.upsert(np.arange(n_items, n_items + n_new), q[n_items:], b[n_items:])
    drift_s = time.perf_counter() - t0
    rebuilt = index.n_builds != builds_before
    drift_rows, _ = index.search(p, N_TOP, exclude)
    drift_recall = recall(drift_rows, brute_force(p, q, b, N_TOP, exclude))
    ivf = Row(label, f"IVFIndex (n_lists {index.n_lists}, n_probe {index.n_probe})", ms, got_recall, build_s,
              statistics.median(upsert_ms), nbytes, drift_recall,
              note=f"drift: upsert of {len(moved):,} moved + {n_new:,} new rows took {1e3 * drift_s:.0f} ms"
                   + (", rebuilt itself" if rebuilt else ", no rebuild"))
    return [bf, ivf]


def bench_learned(n_items: int, n_users: int, n_events: int, drift_batches: int, n_query: int,
                  repeats: int, seed: int = 7) -> list[Row]:
    world = SyntheticWorld(WorldConfig(users=n_users, items=n_items, creators=max(50, n_items // 20), seed=seed))
    model = BPRMF(n_factors=FACTORS, seed=0)
    events = world.events(n_events + 2000 * drift_batches, start_ms=0)
    history: dict[str, set[str]] = {}

    def learn(n: int) -> None:
        batch = [e for _, e in zip(range(n), events)]
        users, items = [e["user_id"] for e in batch], [e["item_id"] for e in batch]
        model.learn_batch(users, items, event_weights([e["kind"] for e in batch]))
        for u, i in zip(users, items):
            history.setdefault(u, set()).add(i)

    t0 = time.perf_counter()
    for _ in range(n_events // 2000):
        learn(2000)
    train_s = time.perf_counter() - t0
    item_ids = model.item_ids
    row_of = {item: r for r, item in enumerate(item_ids)}
    rng = np.random.default_rng(seed)
    users = [model.user_ids[u] for u in rng.choice(model.n_users, min(n_query, model.n_users), replace=False)]

    def state() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        v, bias = model.item_vectors(model.item_ids)
        ex = [np.fromiter((row_of[i] for i in history[u]), np.int64) for u in users]
        return model.user_vectors(users), v, bias, ex

    p, v, bias, exclude = state()
    hist_len = np.array([len(e) for e in exclude])
    label = f"learned: {len(item_ids):,} items"
    truth = brute_force(p, v, bias, N_TOP, exclude)
    bf = Row(label, "brute force", timed(lambda: brute_force(p, v, bias, N_TOP, exclude), repeats),
             bytes_per_item=float(v.itemsize * (FACTORS + 1)))
    t0 = time.perf_counter()
    index = IVFIndex(FACTORS, seed=0)
    index.upsert(np.arange(len(v)), v, bias)
    build_s = time.perf_counter() - t0
    ms = timed(lambda: index.search(p, N_TOP, exclude), repeats)
    got_recall = recall(index.search(p, N_TOP, exclude)[0], truth)
    # real drift: keep learning, upsert each batch's changed rows
    upsert_ms, changed_counts, rebuilds = [], [], 0
    for _ in range(drift_batches):
        v_old, b_old = model.item_vectors(model.item_ids)
        learn(2000)
        for item in model.item_ids[len(row_of):]:
            row_of[item] = len(row_of)
        v_new, b_new = model.item_vectors(model.item_ids)
        n_old = len(v_old)
        changed = np.flatnonzero((v_new[:n_old] != v_old).any(1) | (b_new[:n_old] != b_old))
        changed = np.concatenate([changed, np.arange(n_old, len(v_new))])
        before = index.n_builds
        t0 = time.perf_counter()
        index.upsert(changed, v_new[changed], b_new[changed])
        upsert_ms.append(1e3 * (time.perf_counter() - t0))
        rebuilds += index.n_builds - before
        changed_counts.append(len(changed))
    p, v, bias, exclude = state()
    drift_recall = recall(index.search(p, N_TOP, exclude)[0], brute_force(p, v, bias, N_TOP, exclude))
    ivf = Row(label, f"IVFIndex (n_lists {index.n_lists}, n_probe {index.n_probe})", ms, got_recall, build_s,
              None, index.nbytes / len(index), drift_recall,
              note=f"drift: {drift_batches} batches of 2,000 events, median {statistics.median(changed_counts):,.0f} "
                   f"changed rows/batch upserted in median {statistics.median(upsert_ms):.1f} ms, "
                   f"{rebuilds} automatic rebuild(s)")
    bf.note = (f"BPRMF trained on {n_events:,} events in {train_s:.0f} s; {len(users):,} users, "
               f"history exclusions: median {np.median(hist_len):.0f}, max {hist_len.max()} items")
    return [bf, ivf]


def bench_model_path(n_items: int, n_users: int, repeats: int, seed: int = 0) -> Row:
    """The worker's call: ``BPRMF.top_n_lists`` (k = 32) on clustered factors, ids in and out.

    Each user excludes 50 random item ids (a dict, like the worker's history). The model syncs
    its index (first call builds it) inside the untimed warm-up; the timed runs include the
    id lookups of the exclusions and the formatting of the id / score lists.
    """
    k = 32
    p, q, b = clustered_factors(n_items, n_users, k=k, seed=seed)
    rng = np.random.default_rng(seed + 1)
    model = BPRMF(n_factors=k, seed=0)
    item_ids = [f"i{j}" for j in range(n_items)]
    user_ids = [f"u{u}" for u in range(n_users)]
    model.set_item_vectors(item_ids, q, b)
    model.set_user_vectors(user_ids, p)
    ex_rows = [rng.choice(n_items, N_TOP, replace=False) for _ in range(n_users)]
    exclude = [dict.fromkeys(item_ids[j] for j in r.tolist()) for r in ex_rows]
    ms = timed(lambda: model.top_n_lists(user_ids, N_TOP, exclude), repeats)
    got_ids, _ = model.top_n_lists(user_ids, N_TOP, exclude)
    got = np.array([[int(x[1:]) for x in row] + [-1] * (N_TOP - len(row)) for row in got_ids])
    truth = brute_force(p, q, b, N_TOP, ex_rows)
    return Row(f"{n_items:,} items", f"BPRMF.top_n_lists ({n_users:,} users)", ms, recall(got, truth),
               note=f"median {1e3 * statistics.median(ms) / n_users:.2f} us per user")


# ---------------------------------------------------------------- report
def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def print_table(rows: list[Row], n_users: int) -> None:
    print(f"| catalog | method | ms / {n_users:,} users (median, range) | recall@{N_TOP} | build s "
          f"| upsert 2,000 items ms | bytes / item | recall@{N_TOP} after drift |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        med = statistics.median(r.ms)
        print(f"| {r.catalog} | {r.method} | {med:,.1f} ({min(r.ms):,.0f} to {max(r.ms):,.0f}) | {r.recall:.4f} "
              f"| {fmt(r.build_s, '.2f')} | {fmt(r.upsert_ms, '.1f')} | {fmt(r.bytes_per_item, ',.0f')} "
              f"| {fmt(r.drift_recall, '.4f')} |")
    notes = [f"- {r.catalog}, {r.method}: {r.note}" for r in rows if r.note]
    if notes:
        print()
        print("\n".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip 1M items, smaller learned model, 3 repeats")
    parser.add_argument("--sizes", default=None, help="catalog sizes, comma-separated (default 10000,100000,1000000)")
    parser.add_argument("--users", type=int, default=1000, help="users refreshed per batch (default 1000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5, quick 3)")
    parser.add_argument("--bf-repeats-1m", type=int, default=2, help="brute-force timed runs at >= 1M items")
    parser.add_argument("--learned-items", type=int, default=None, help="learned model's catalog (20000, quick 5000)")
    parser.add_argument("--learned-events", type=int, default=None, help="its training stream (1000000, quick 200000)")
    parser.add_argument("--drift-batches", type=int, default=None,
                        help="learning batches after the build (100, quick 30)")
    parser.add_argument("--no-learned", action="store_true", help="skip the learned-factors part")
    parser.add_argument("--model-users", type=int, default=4000,
                        help="users per BPRMF.top_n_lists refresh (default 4000)")
    parser.add_argument("--model-only", action="store_true",
                        help="only the BPRMF.top_n_lists part (no IVFIndex/brute-force table, no learned part)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    default_sizes = "10000,100000" if args.quick else "10000,100000,1000000"
    sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]

    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    rows: list[Row] = []
    model_rows: list[Row] = []
    for n_items in sizes:
        bf_repeats = min(repeats, args.bf_repeats_1m) if n_items >= 1_000_000 else repeats
        if not args.model_only:
            rows += bench_clustered(n_items, args.users, repeats, bf_repeats)
        model_rows.append(bench_model_path(n_items, args.model_users, repeats))
        print(f"... {n_items:,} items done", flush=True)
    learned: list[Row] = []
    if not args.no_learned and not args.model_only:
        learned = bench_learned(
            n_items=args.learned_items or (5000 if args.quick else 20_000),
            n_users=args.learned_items or (5000 if args.quick else 20_000),
            n_events=args.learned_events or (200_000 if args.quick else 1_000_000),
            drift_batches=args.drift_batches or (30 if args.quick else 100),
            n_query=args.users, repeats=repeats,
        )
        print("... learned model done", flush=True)

    blas_env = ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                         if k.startswith("OPENBLAS_") and k != "OPENBLAS_NUM_THREADS") or "none"
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"\nmachine: {cpu_model()}; nproc {os.cpu_count()}, {pinned} (usable now: {cpus}); "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"BLAS threads forced to 1; other OPENBLAS_* variables, left as set: {blas_env}")
    if load_before and load_after:
        print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"k = {FACTORS}, top-{N_TOP}, {args.users:,} users per refresh; median of {repeats} timed runs after a "
          f"warm-up (brute force at >= 1M items: {min(repeats, args.bf_repeats_1m)})\n")
    print("Clustered synthetic factors, 50 random excluded items per user (brute force: bytes / item are "
          "those of the factors themselves):\n")
    if rows:
        print_table(rows, args.users)
    print(f"\nThe worker's call, BPRMF.top_n_lists (k = 32, top-{N_TOP}, 50 excluded ids per user, ids in and "
          f"lists of ids / scores out), clustered factors; recall against brute force:\n")
    print_table(model_rows, args.model_users)
    if learned:
        print("\nFactors learned by BPRMF on a SyntheticWorld stream, each user's history excluded "
              "(upsert column: see the note):\n")
        print_table(learned, args.users)


if __name__ == "__main__":
    main()
