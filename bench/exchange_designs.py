"""Sharing the item table between workers, two designs measured offline: additive deltas (A) and item owners (B).

    python bench/exchange_designs.py            # 3 worlds x 150k training events, 20k users x 5k items: ~4-5 min
    python bench/exchange_designs.py --quick    # a small world, W = 2 only, one seed: seconds
    python bench/exchange_designs.py --json     # one JSON object with every row instead of the tables
    python bench/exchange_designs.py --json-out designs.json   # the tables, and the JSON in a file
    python bench/exchange_designs.py --seeds 1 --seed 7   # one world, seed 7

A seeded simulation in virtual time, without Kafka or Redis. Every row learns the same
events of one :class:`streams.tools.synthetic.SyntheticWorld` (20,000 users x 5,000 items):
150,000 training events, then the next 30,000 held back. Users are split into 12
partitions as Kafka's default partitioner does (:func:`streams.events.kafka_partition`);
learner ``w`` of ``W`` owns the partitions ``p % W == w``.

**Virtual time.** A tick is 500 events of the stream (25 ms at 20,000 events/s). In each
tick every learner learns its share of the tick's events the way :mod:`streams.worker.learner`
does: new items first (``BPRMF.add_items`` with the events' tags), then
``BPRMF.learn_batch`` and ``Popularity.learn_batch`` with the weights of
:func:`models.event_weights` (view 1 / like 3 / share 5) and ``item_tags=``. BPRMF has
the worker's default hyperparameters (k = 32, 10 negatives) and seed 0 on every learner,
as workers have. The exchange interval ``s`` and the hop latency ``d`` are in ticks: a
message sent at the end of a tick is applied ``d`` ticks later (``d`` ticks are learned
without it), before the next tick learns.

**Design A, additive deltas** (shipped: :mod:`streams.worker.exchange`). Each learner has a real
:class:`streams.worker.exchange.ItemExchange`; every ``s`` ticks its ``take_records`` go into an
in-memory log per item partition, which every learner reads ``d`` ticks later in log
order with ``ItemExchange.apply`` (its own records too: they confirm its proposals).

**Design B, item owners** (simulated here with the ``BPRMF`` / ``Popularity`` methods).
Item partition ``p`` (:func:`streams.worker.exchange.item_partition`) belongs to the learner of
events partition ``p``, whose replica holds the authoritative rows: its own updates to
them apply there at once. Every ``s`` ticks each learner sends the deltas it learned for
other owners' items (the same deltas as in A, with starting-point proposals for the items
it created and their popularity counts) to their owners (one hop, ``d``); an owner adds
them to its rows. Each owner broadcasts the full state (factors, bias, popularity) of
its items changed since its previous broadcast to every other learner (second hop,
``d``), which overwrite their replica rows with it, losing their own changes made since
they sent them until a later broadcast includes them. The owners broadcast ``d`` ticks
after the learners send, in the tick the deltas arrive: B's best phase (a remote change
is at most ``s + 2d - 1`` ticks old when applied; in A ``s + d - 1``). Messages use A's
record format (:func:`streams.worker.exchange.encode_update`), so bytes compare like for like.

**Rows.** ``reference``: one learner, every event. For W in {2, 4}: A and B at
``(s, d)`` = (10, 1) ticks (0.25 s, 25 ms) and (40, 2) (1 s, 50 ms), and the diagnostic
variant B': B whose learners add their own changes not sent yet on top of every state
they receive (nothing of their own is lost; what is left of B's difference to A is its
second hop). ``isolated``: W = 4 with no exchange (each learner sees only its users'
events): the floor.

**Seeds.** The whole table is run on ``--seeds`` worlds (default 3: seeds 0, 1, 2; the
learners' BPRMF seed stays 0) and summarised: means, the range of ``quality_vs_1``, and,
seed by seed, each B/B' row's HR@50 minus A's at the same W, s and d (a paired difference:
same events, same seeds): the differences between designs can be as small as those between
worlds, so read them seed by seed.

**Columns.**

- ``HR@50``: after the last tick and after delivering everything in flight, each user's
  top-50 from the learner that owns the user (``top_n_lists``, the user's training items
  excluded) against the held-back events: the share of held-back events (user with a
  list, item not in the user's training history) whose item is in the list;
  ``quality_vs_1`` is HR@50 over the reference's. ``HR@50 live``: the same lists from the
  replicas as they are after the last tick, before that final delivery (what the workers
  would serve at that moment).
- ``divergence``: before the final delivery, the mean over items known to every learner
  and over learners ``w >= 1`` of ``|q_w - q_0| / |q_0|`` (factor rows): how far apart the
  replicas are; 0 means identical.
- ``written B/ev``: bytes of every message produced (A: ``len(value)`` of the records of
  ``take_records``; B: deltas to the owners plus broadcast states), final flush included,
  per training event. ``read B/ev``: what one learner must read, mean over learners, per
  training event (A: every other learner's records; B: the deltas sent to it plus the
  broadcasts of the other owners). A's log is partitioned by item, not by writer, so a
  worker of the shipped design also fetches its own records back: its bytes fetched are
  the whole ``written`` (JSON ``fetched_bytes_per_event``); B's topics, partitioned by item
  owner, let each learner fetch exactly what it reads.
- ``staleness ms``: per message applied from another learner, its apply time minus the time
  of the oldest change it carries (B: the broadcasts, from the oldest change learned by any
  learner that they carry), mean and max in virtual milliseconds. A's records are all
  ``s + d - 1`` ticks old; B's first broadcast (at tick ``d``) carries only ``d`` ticks of
  changes, which pulls its mean down: its steady state is the max, ``s + 2d - 1`` ticks.

BLAS runs one thread (set before numpy is imported) and the process is pinned to one CPU
unless ``--no-pin``. The simulation is deterministic: only the wall time depends on the machine.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"  # before numpy loads its BLAS

import argparse
import platform
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from models import BPRMF, Popularity, event_weights
from streams.events import kafka_partition
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from streams.worker.exchange import ItemExchange, ItemUpdate, decode_update, encode_update, item_partition

KIND_WEIGHTS = {"view": 1.0, "like": 3.0, "share": 5.0}
POPULAR_HALF_LIFE_S = 3600.0  # the worker's default (popular_half_life_s)


@dataclass(frozen=True)
class Config:
    """Sizes of one run. The defaults are the final run; :data:`QUICK` the small one."""

    users: int = 20_000
    items: int = 5_000
    seed: int = 0  # the world's seed
    model_seed: int = 0  # every learner's BPRMF seed, as every worker has the same one
    train_events: int = 150_000
    test_events: int = 30_000
    partitions: int = 12
    tick_events: int = 500
    rate_per_s: float = 20_000.0
    workers: tuple[int, ...] = (2, 4)
    settings: tuple[tuple[int, int], ...] = ((10, 1), (40, 2))  # (s, d) in ticks
    isolated_workers: int = 4
    designs: tuple[str, ...] = ("A", "B", "B'")
    top_n: int = 50

    @property
    def tick_ms(self) -> float:
        return self.tick_events * 1000.0 / self.rate_per_s

    @property
    def ticks(self) -> int:
        return -(-self.train_events // self.tick_events)


QUICK = Config(users=2_000, items=600, train_events=20_000, test_events=4_000, workers=(2,),
               settings=((4, 1), (10, 2)), isolated_workers=2)


# --- the stream -----------------------------------------------------------------------------
@dataclass
class Stream:
    """Training events as columns, the held-back events, and each user's training items."""

    users: list[str]
    items: list[str]
    creators: list[str | None]
    tags: list[tuple[str, ...]]
    weights: np.ndarray
    ts_ms: np.ndarray
    partition: np.ndarray  # the user's events partition
    test_users: list[str]
    test_items: list[str]
    history: dict[str, set[str]]
    item_ids: list[str]  # every item of the world (a fixed index for B's accumulators)

    def __len__(self) -> int:
        return len(self.users)



def _no_numbers(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Empty numbered sections of an :class:`ItemUpdate`: design B's messages name items by id."""
    return (np.zeros(0, np.int64), np.zeros((0, k), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
            np.zeros(0))

def make_stream(cfg: Config) -> Stream:
    world = SyntheticWorld(WorldConfig(users=cfg.users, items=cfg.items, seed=cfg.seed))
    events = list(world.events(cfg.train_events + cfg.test_events, start_ms=0, rate_per_s=cfg.rate_per_s))
    train, test = events[: cfg.train_events], events[cfg.train_events:]
    users = [e["user_id"] for e in train]
    parts: dict[str, int] = {}
    for u in users:
        if u not in parts:
            parts[u] = kafka_partition(u.encode(), cfg.partitions)
    history: dict[str, set[str]] = {}
    for e in train:
        history.setdefault(e["user_id"], set()).add(e["item_id"])
    return Stream(
        users=users, items=[e["item_id"] for e in train], creators=[e.get("creator_id") for e in train],
        tags=[tuple(e.get("tags") or ()) for e in train],
        weights=event_weights([e["kind"] for e in train], kind_weights=KIND_WEIGHTS).astype(np.float64),
        ts_ms=np.array([e["ts"] for e in train], np.int64), partition=np.array([parts[u] for u in users], np.int64),
        test_users=[e["user_id"] for e in test], test_items=[e["item_id"] for e in test], history=history,
        item_ids=list(world.item_ids),
    )  # fmt: skip


# --- one learner ------------------------------------------------------------------------------
class Learner:
    """One worker's model: user rows of its partitions, a replica of every item row, popularity."""

    def __init__(self, cfg: Config) -> None:
        self.model = BPRMF(seed=cfg.model_seed, track_item_deltas=True)
        self.popularity = Popularity(POPULAR_HALF_LIFE_S, track_deltas=True)
        self.item_meta: dict[str, tuple[str | None, tuple[str, ...]]] = {}

    def learn(
        self, s: Stream, rows: np.ndarray,
        on_new: Callable[[list[str]], None], on_meta: Callable[[str, str | None, tuple[str, ...]], None],
    ) -> None:  # fmt: skip
        """Learn the events ``rows`` as :meth:`streams.worker.learner.Learner._learn` does."""
        if not len(rows):
            return
        r = rows.tolist()
        users, items, tags = [s.users[j] for j in r], [s.items[j] for j in r], [s.tags[j] for j in r]
        w, ts = s.weights[rows], s.ts_ms[rows]
        on_new(self.model.add_items(items, tags))
        self.model.learn_batch(users, items, w, item_tags=tags)
        self.popularity.learn_batch(users, items, w, ts_ms=ts, item_tags=tags)
        meta = self.item_meta
        for j in r:
            item, m = s.items[j], (s.creators[j], s.tags[j])
            if meta.get(item) != m:
                meta[item] = m
                on_meta(item, *m)


@dataclass
class Run:
    """What a design leaves at the end: the learners, and what it measured on the way."""

    learners: list[Learner]
    written: int = 0  # bytes of every message produced
    read: list[int] = field(default_factory=list)  # per learner: bytes of the messages it must read
    messages: int = 0
    staleness_ms: list[float] = field(default_factory=list)
    before_flush: dict[str, Any] = field(default_factory=dict)  # measured after the last tick, before delivery
    exchanges: list[ItemExchange] = field(default_factory=list)  # design A's, one per learner


def _tick_rows(cfg: Config, s: Stream, workers: int) -> list[list[np.ndarray]]:
    """Per tick, per learner: the positions of its events in the tick."""
    owner = s.partition % workers
    out = []
    for lo in range(0, len(s), cfg.tick_events):
        hi = min(lo + cfg.tick_events, len(s))
        o = owner[lo:hi]
        out.append([lo + np.flatnonzero(o == w) for w in range(workers)])
    return out


def _ignore(*_args: Any) -> None:
    return None


# --- the rows -----------------------------------------------------------------------------------
def run_isolated(cfg: Config, s: Stream, workers: int, measure: Callable[[Run], None]) -> Run:
    """No exchange: each learner learns its users' events and knows only the items they touch."""
    run = Run([Learner(cfg) for _ in range(workers)], read=[0] * workers)
    for tick in _tick_rows(cfg, s, workers):
        for learner, rows in zip(run.learners, tick):
            learner.learn(s, rows, _ignore, _ignore)
    measure(run)
    return run


def run_additive(cfg: Config, s: Stream, workers: int, interval: int, latency: int,
                 measure: Callable[[Run], None]) -> Run:
    """Design A with the shipped :class:`ItemExchange`; ``measure`` sees the replicas before the final delivery."""
    P, W = cfg.partitions, workers
    run = Run([Learner(cfg) for _ in range(W)], read=[0] * W)
    ex = [ItemExchange(lr.model, lr.popularity, lr.item_meta, partitions=P, origin=f"w{w}")
          for w, lr in enumerate(run.learners)]
    run.exchanges = ex
    for x in ex:
        x.live = True  # record the staleness of every record applied
    logs: list[list[tuple[float, int, bytes]]] = [[] for _ in range(P)]  # (visible at boundary, writer, value)
    position = [[0] * P for _ in range(W)]  # next offset each learner reads

    def ms(boundary: int) -> int:
        return int(round(boundary * cfg.tick_ms))

    def deliver(upto: float, now: int) -> None:
        for w in range(W):
            for p, log in enumerate(logs):
                pos = position[w][p]
                while pos < len(log) and log[pos][0] <= upto:
                    _, writer, value = log[pos]
                    ex[w].apply(p, pos, value, now_ms=now)
                    if writer != w:
                        run.read[w] += len(value)
                    pos += 1
                position[w][p] = pos

    def publish(boundary: float, now: int) -> None:
        for w in range(W):
            for p, _seq, value in ex[w].take_records(now_ms=now):
                logs[p].append((boundary + latency, w, value))
                run.written += len(value)
                run.messages += 1

    for t, tick in enumerate(_tick_rows(cfg, s, W)):
        b = t + 1  # the boundary after tick t: its events are learned there
        for x, learner, rows in zip(ex, run.learners, tick):
            learner.learn(s, rows, x.note_new_items, x.note_meta)
            x.note_learned(ms(b))
        deliver(b, ms(b))
        if b % interval == 0:
            publish(b, ms(b))
    measure(run)
    run.staleness_ms = [float(v) for x in ex for v in x.take_staleness()]  # in the steady state, not the flush
    for x in ex:
        x.live = False
    end = ms(cfg.ticks)
    publish(cfg.ticks, end)  # the flush: everything not yet published, then everything delivered
    deliver(float("inf"), end + int(latency * cfg.tick_ms))
    return run


class _Owned:
    """Design B's bookkeeping of one learner: pending deltas for other owners, its owned items."""

    def __init__(self, s: Stream, k: int) -> None:
        n = len(s.item_ids)
        self.index = {item: j for j, item in enumerate(s.item_ids)}
        self.dv = np.zeros((n, k), np.float32)  # deltas learned for other owners' items, not sent yet
        self.db = np.zeros(n, np.float32)
        self.dc = np.zeros(n)  # popularity counts (forward-decayed to dc_base)
        self.dc_base: float | None = None
        self.pending = np.zeros(n, bool)
        self.first_change_ms: float | None = None  # oldest pending change
        self.proposals: dict[str, tuple[np.ndarray, float]] = {}  # items it created, owned by others, not sent
        self.changed: set[str] = set()  # owned items changed since the last broadcast
        self.changed_since_ms: float | None = None  # oldest change among them (own or received)
        self.broadcast_once: set[str] = set()  # owned items broadcast before (their meta went with it)
        self.seq = 0


def run_owners(cfg: Config, s: Stream, workers: int, interval: int, latency: int,
               measure: Callable[[Run], None], keep_own: bool = False) -> Run:
    """Design B: deltas to the item's owner, owners broadcast the state of their changed items.

    ``keep_own`` (the diagnostic variant B'): a learner adds its own changes not sent yet on top
    of every state it receives instead of losing them until a later broadcast.
    """
    P, W = cfg.partitions, workers
    run = Run([Learner(cfg) for _ in range(W)], read=[0] * W)
    book = [_Owned(s, lr.model.n_factors) for lr in run.learners]
    part_of: dict[str, int] = {}

    def owner(item: str) -> int:
        p = part_of.get(item)
        if p is None:
            p = part_of[item] = item_partition(item, P)
        return p % W

    queue: deque[tuple[float, str, int, tuple[int, ...], bytes]] = deque()  # (arrival, kind, sender, to, value)
    flushing = False

    def ms(boundary: float) -> float:
        return boundary * cfg.tick_ms

    def send(arrival: float, kind: str, sender: int, to: tuple[int, ...], update: ItemUpdate) -> None:
        value = encode_update(update)
        queue.append((arrival, kind, sender, to, value))
        run.written += len(value)
        run.messages += 1
        for w in to:
            run.read[w] += len(value)

    def after_learning(w: int, now: float) -> None:
        """Split what learner ``w`` just learned: own items are final already, the rest waits to be sent."""
        lr, bk = run.learners[w], book[w]
        rows_taken, dv, db = lr.model.take_item_deltas()
        ids = lr.model.item_ids_at(rows_taken)
        pop_rows, counts, base = lr.popularity.take_deltas()
        pop_ids = lr.popularity.item_ids_at(pop_rows)
        mine = [i for i in ids if owner(i) == w]
        if mine or any(owner(i) == w for i in pop_ids):
            bk.changed.update(mine)
            bk.changed.update(i for i in pop_ids if owner(i) == w)
            if bk.changed_since_ms is None:
                bk.changed_since_ms = now
        keep = [j for j, i in enumerate(ids) if owner(i) != w]
        if keep:
            rows = np.fromiter((bk.index[ids[j]] for j in keep), np.int64, len(keep))
            bk.dv[rows] += dv[keep]
            bk.db[rows] += db[keep]
            bk.pending[rows] = True
        keep_c = [j for j, i in enumerate(pop_ids) if owner(i) != w]
        if keep_c:
            if bk.dc_base is None:
                bk.dc_base = base
            elif base != bk.dc_base:  # the popularity re-based its forward decay
                bk.dc *= 2.0 ** ((bk.dc_base - base) / (POPULAR_HALF_LIFE_S * 1000.0))
                bk.dc_base = base
            rows = np.fromiter((bk.index[pop_ids[j]] for j in keep_c), np.int64, len(keep_c))
            bk.dc[rows] += counts[keep_c]
            bk.pending[rows] = True
        if (keep or keep_c) and bk.first_change_ms is None:
            bk.first_change_ms = now

    def on_new(w: int) -> Callable[[list[str]], None]:
        def note(items: list[str]) -> None:
            lr, bk = run.learners[w], book[w]
            theirs = [i for i in items if owner(i) != w]
            mine = [i for i in items if owner(i) == w]
            if theirs:
                vectors, biases = lr.model.item_vectors(theirs)
                for item, v, b in zip(theirs, vectors, biases.tolist()):
                    bk.proposals[item] = (v, b)
                    bk.pending[bk.index[item]] = True
            bk.changed.update(mine)
        return note

    def send_deltas(w: int, boundary: float, now: float) -> None:
        lr, bk = run.learners[w], book[w]
        rows = np.flatnonzero(bk.pending)
        if not len(rows):
            return
        ids = [s.item_ids[j] for j in rows.tolist()]
        parts = np.fromiter((item_partition(i, P) for i in ids), np.int64, len(ids))
        first = bk.first_change_ms if bk.first_change_ms is not None else now
        for p in np.unique(parts).tolist():
            sel = np.flatnonzero(parts == p)
            chunk = [ids[j] for j in sel.tolist()]
            new = [i for i in chunk if i in bk.proposals]
            k = lr.model.n_factors
            update = ItemUpdate(
                f"w{w}", bk.seq, *_no_numbers(k), bk.dc_base or 0.0, lr.popularity.clock_ms,
                chunk, bk.dv[rows[sel]], bk.db[rows[sel]], bk.dc[rows[sel]], new,
                np.array([bk.proposals[i][0] for i in new], np.float32).reshape(len(new), k),
                np.array([bk.proposals[i][1] for i in new], np.float32),
                {i: lr.item_meta.get(i, (None, ())) for i in new}, int(first), int(now),
            )  # fmt: skip
            bk.seq += 1
            send(boundary + latency, "deltas", w, (p % W,), update)
        bk.dv[rows], bk.db[rows], bk.dc[rows], bk.pending[rows] = 0.0, 0.0, 0.0, False
        bk.proposals.clear()
        bk.first_change_ms = None

    def broadcast(w: int, boundary: float, now: float) -> None:
        lr, bk = run.learners[w], book[w]
        if not bk.changed:
            return
        items = sorted(bk.changed)
        parts = np.fromiter((item_partition(i, P) for i in items), np.int64, len(items))
        first = bk.changed_since_ms if bk.changed_since_ms is not None else now
        others = tuple(v for v in range(W) if v != w)
        for p in np.unique(parts).tolist():
            chunk = [items[j] for j in np.flatnonzero(parts == p).tolist()]
            vectors, biases = lr.model.item_vectors(chunk)
            scores, clock = lr.popularity.item_weights(chunk)
            meta = {i: lr.item_meta.get(i, (None, lr.model.item_tags(i))) for i in chunk
                    if i not in bk.broadcast_once}
            bk.broadcast_once.update(chunk)
            k = lr.model.n_factors
            update = ItemUpdate(f"w{w}", bk.seq, *_no_numbers(k), float(clock), float(clock), chunk, vectors, biases,
                                scores, [], np.zeros((0, k), np.float32), np.zeros(0, np.float32), meta,
                                int(first), int(now))
            bk.seq += 1
            send(boundary + latency, "state", w, others, update)
        bk.changed.clear()
        bk.changed_since_ms = None

    def set_tags(lr: Learner, item: str, tags: tuple[str, ...]) -> None:
        if tags and not lr.model.item_tags(item):
            lr.model.set_item_tags([item], [tags])
        if tags and not lr.popularity.item_tags(item):
            lr.popularity.set_item_tags([item], [tags])

    def apply_deltas(w: int, u: ItemUpdate, now: float) -> None:
        lr, bk = run.learners[w], book[w]
        for slot, item in enumerate(u.proposals):  # the first start an owner meets wins
            if not lr.model.has_item(item):
                lr.model.set_item_vectors([item], u.base_vectors[slot][None, :], u.base_biases[slot:slot + 1])
                creator, tags = u.meta.get(item, (None, ()))
                lr.item_meta.setdefault(item, (creator, tuple(tags)))
                set_tags(lr, item, tuple(tags))
        unknown = [i for i in u.ids if not lr.model.has_item(i)]
        if unknown:  # cannot happen: an item's first deltas carry its proposal
            lr.model.add_items(unknown)
        lr.model.add_item_deltas(lr.model.item_index(u.ids), u.id_vectors, u.id_biases)
        lr.popularity.add_counts(lr.popularity.index_items(u.ids), u.id_counts, u.count_base_ms, u.clock_ms)
        bk.changed.update(u.ids)
        if bk.changed_since_ms is None or u.first_change_ms < bk.changed_since_ms:
            bk.changed_since_ms = u.first_change_ms

    def apply_state(w: int, u: ItemUpdate, now: float) -> None:
        lr, bk = run.learners[w], book[w]
        lr.model.set_item_vectors(u.ids, u.id_vectors, u.id_biases)  # unknown items are created
        lr.popularity.set_item_weights(u.ids, u.id_counts, int(u.clock_ms))
        if keep_own:
            rows = np.fromiter((bk.index[i] for i in u.ids), np.int64, len(u.ids))
            mine = np.flatnonzero(bk.pending[rows])
            if len(mine):
                ids = [u.ids[j] for j in mine.tolist()]
                lr.model.add_item_deltas(lr.model.item_index(ids), bk.dv[rows[mine]], bk.db[rows[mine]])
                lr.popularity.add_counts(lr.popularity.index_items(ids), bk.dc[rows[mine]], bk.dc_base or 0.0)
        for item, (creator, tags) in u.meta.items():
            lr.item_meta.setdefault(item, (creator, tuple(tags)))
            set_tags(lr, item, tuple(tags))
        if not flushing:
            run.staleness_ms.append(now - u.first_change_ms)

    def deliver(upto: float, now: float) -> None:
        while queue and queue[0][0] <= upto:
            _, kind, _sender, to, value = queue.popleft()
            u = decode_update(value)
            for w in to:
                (apply_deltas if kind == "deltas" else apply_state)(w, u, now)

    notes = [on_new(w) for w in range(W)]
    for t, tick in enumerate(_tick_rows(cfg, s, W)):
        b = t + 1
        for w, (learner, rows) in enumerate(zip(run.learners, tick)):
            learner.learn(s, rows, notes[w], _ignore)
            after_learning(w, ms(b))
        deliver(b, ms(b))
        if b % interval == 0:
            for w in range(W):
                send_deltas(w, b, ms(b))
        if b >= latency and (b - latency) % interval == 0:
            for w in range(W):
                broadcast(w, b, ms(b))
    measure(run)
    flushing = True  # staleness is measured in the steady state, not in the flush
    end = cfg.ticks
    deliver(end + latency, ms(end + latency))  # deltas in flight reach their owners, states in flight apply
    for w in range(W):
        send_deltas(w, end + latency, ms(end + latency))
    deliver(end + 2 * latency, ms(end + 2 * latency))
    for w in range(W):
        broadcast(w, end + 2 * latency, ms(end + 2 * latency))
    deliver(float("inf"), ms(end + 3 * latency))
    return run


# --- measures -------------------------------------------------------------------------------------
def hit_rate(cfg: Config, s: Stream, learners: Sequence[Learner]) -> float:
    """HR@top_n of the held-back events, each user's list from the learner that owns the user."""
    W = len(learners)
    wanted: list[list[str]] = [[] for _ in range(W)]
    for u in dict.fromkeys(s.test_users):
        if u in s.history:
            w = kafka_partition(u.encode(), cfg.partitions) % W
            wanted[w].append(u)
    lists: dict[str, set[str]] = {}
    for learner, users in zip(learners, wanted):
        users = [u for u in users if learner.model.has_user(u)]
        if users:
            ids, _ = learner.model.top_n_lists(users, cfg.top_n, [s.history[u] for u in users])
            lists.update(zip(users, map(set, ids)))
    hits = total = 0
    for u, i in zip(s.test_users, s.test_items):
        got = lists.get(u)
        if got is None or i in s.history[u]:
            continue
        total += 1
        hits += i in got
    return hits / total if total else float("nan")


def divergence(learners: Sequence[Learner]) -> float:
    """Mean over items known to all and learners w >= 1 of |q_w - q_0| / |q_0|; 0 for one learner."""
    if len(learners) < 2:
        return 0.0
    first = learners[0].model
    common = sorted(i for i in first.item_ids if all(lr.model.has_item(i) for lr in learners[1:]))
    if not common:
        return float("nan")
    q0 = first.item_vectors(common)[0].astype(np.float64)
    norm = np.linalg.norm(q0, axis=1)
    ok = norm > 0
    rel = [np.linalg.norm(lr.model.item_vectors(common)[0].astype(np.float64) - q0, axis=1)[ok] / norm[ok]
           for lr in learners[1:]]
    return float(np.mean(np.concatenate(rel)))


@dataclass
class Row:
    row: str
    design: str  # reference, A, B, B' or isolated
    workers: int
    interval_ticks: int | None
    latency_ticks: int | None
    interval_s: float | None
    latency_ms: float | None
    hr50: float
    quality_vs_1: float
    hr50_live: float
    divergence: float
    written_bytes_per_event: float
    read_bytes_per_event: float  # per learner (mean over learners)
    fetched_bytes_per_event: float  # per learner, own records included where the topic holds them (A)
    messages: int
    staleness_ms_mean: float | None
    staleness_ms_max: float | None
    seconds: float


def run_row(cfg: Config, s: Stream, design: str, workers: int, interval: int | None = None,
            latency: int | None = None, reference_hr: float | None = None) -> Row:
    t0 = time.perf_counter()

    def measure(run: Run) -> None:
        run.before_flush = {"hr_live": hit_rate(cfg, s, run.learners), "divergence": divergence(run.learners)}

    if design in ("reference", "isolated"):
        run = run_isolated(cfg, s, workers, measure)
    elif design == "A":
        assert interval is not None and latency is not None
        run = run_additive(cfg, s, workers, interval, latency, measure)
    elif design in ("B", "B'"):
        assert interval is not None and latency is not None
        run = run_owners(cfg, s, workers, interval, latency, measure, keep_own=design == "B'")
    else:
        raise ValueError(f"unknown design {design!r}")
    hr = hit_rate(cfg, s, run.learners)
    n = len(s)
    name = {"reference": "reference (1 learner)", "isolated": f"isolated W={workers}"}.get(
        design, f"{design} W={workers} s={interval} d={latency}")
    stale = run.staleness_ms
    return Row(
        row=name, design=design, workers=workers, interval_ticks=interval, latency_ticks=latency,
        interval_s=None if interval is None else interval * cfg.tick_ms / 1000.0,
        latency_ms=None if latency is None else latency * cfg.tick_ms,
        hr50=hr, quality_vs_1=hr / reference_hr if reference_hr else 1.0, hr50_live=run.before_flush["hr_live"],
        divergence=run.before_flush["divergence"], written_bytes_per_event=run.written / n,
        read_bytes_per_event=float(np.mean(run.read)) / n if run.read else 0.0,
        fetched_bytes_per_event=(run.written if design == "A" else float(np.mean(run.read)) if run.read else 0.0) / n,
        messages=run.messages,
        staleness_ms_mean=float(np.mean(stale)) if stale else None,
        staleness_ms_max=float(np.max(stale)) if stale else None,
        seconds=time.perf_counter() - t0,
    )  # fmt: skip


def run_all(cfg: Config, progress: Callable[[Row], None] | None = None) -> tuple[Stream, list[Row]]:
    s = make_stream(cfg)
    ref = run_row(cfg, s, "reference", 1)
    rows = [ref]
    if progress:
        progress(ref)
    plan: list[tuple[str, int, int | None, int | None]] = [
        (design, w, si, d) for w in cfg.workers for si, d in cfg.settings for design in cfg.designs
    ]
    plan.append(("isolated", cfg.isolated_workers, None, None))
    for design, w, si, d in plan:
        row = run_row(cfg, s, design, w, si, d, reference_hr=ref.hr50)
        rows.append(row)
        if progress:
            progress(row)
    return s, rows


def summarize(runs: dict[int, list[Row]]) -> list[dict[str, Any]]:
    """Per row (same name in every seed): the means over the seeds, quality_vs_1's range, and each
    shared-table row's HR@50 minus A's at the same W, s and d, seed by seed (a paired difference)."""
    seeds = sorted(runs)
    by_name: dict[str, list[Row]] = {}
    for seed in seeds:
        for r in runs[seed]:
            by_name.setdefault(r.row, []).append(r)
    out = []
    for name, rs in by_name.items():
        first = rs[0]
        stale = [r.staleness_ms_mean for r in rs if r.staleness_ms_mean is not None]
        stale_max = [r.staleness_ms_max for r in rs if r.staleness_ms_max is not None]
        vs_a = None
        if first.design not in ("A", "reference", "isolated"):
            a_name = f"A W={first.workers} s={first.interval_ticks} d={first.latency_ticks}"
            a_rows = by_name.get(a_name)
            if a_rows is not None:
                vs_a = [r.hr50 - a.hr50 for r, a in zip(rs, a_rows)]
        out.append({
            "row": name, "design": first.design, "workers": first.workers, "interval_ticks": first.interval_ticks,
            "latency_ticks": first.latency_ticks, "interval_s": first.interval_s, "latency_ms": first.latency_ms,
            "seeds": seeds, "hr50": float(np.mean([r.hr50 for r in rs])),
            "quality_vs_1": float(np.mean([r.quality_vs_1 for r in rs])),
            "quality_vs_1_min": min(r.quality_vs_1 for r in rs), "quality_vs_1_max": max(r.quality_vs_1 for r in rs),
            "hr50_live": float(np.mean([r.hr50_live for r in rs])),
            "divergence": float(np.mean([r.divergence for r in rs])),
            "written_bytes_per_event": float(np.mean([r.written_bytes_per_event for r in rs])),
            "read_bytes_per_event": float(np.mean([r.read_bytes_per_event for r in rs])),
            "fetched_bytes_per_event": float(np.mean([r.fetched_bytes_per_event for r in rs])),
            "staleness_ms_mean": float(np.mean(stale)) if stale else None,
            "staleness_ms_max": float(np.max(stale_max)) if stale_max else None,
            "hr50_minus_a": vs_a,
        })  # fmt: skip
    return out


def _setting_cells(interval_s: float | None, latency_ms: float | None) -> tuple[str, str]:
    return ("–" if interval_s is None else f"{interval_s:g} s"), ("–" if latency_ms is None else f"{latency_ms:g} ms")


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| row | s | d | HR@50 | quality_vs_1 | HR@50 live | divergence | written B/ev | read B/ev per learner "
        "| staleness ms mean / max | s wall |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        si, d = _setting_cells(r.interval_s, r.latency_ms)
        stale = "–" if r.staleness_ms_mean is None else f"{r.staleness_ms_mean:.0f} / {r.staleness_ms_max:.0f}"
        lines.append(
            f"| {r.row} | {si} | {d} | {r.hr50:.4f} | {r.quality_vs_1:.3f} | {r.hr50_live:.4f} "
            f"| {r.divergence:.4f} | {r.written_bytes_per_event:,.0f} | {r.read_bytes_per_event:,.0f} "
            f"| {stale} | {r.seconds:.0f} |"
        )
    return "\n".join(lines)


def summary_table(summary: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| row | s | d | HR@50 | quality_vs_1 (min–max) | HR@50 live | divergence | written B/ev "
        "| read B/ev per learner | staleness ms mean / max | HR@50 − A's, per seed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary:
        si, d = _setting_cells(r["interval_s"], r["latency_ms"])
        stale = "–" if r["staleness_ms_mean"] is None else f"{r['staleness_ms_mean']:.0f} / {r['staleness_ms_max']:.0f}"
        vs_a = "–" if r["hr50_minus_a"] is None else " ".join(f"{v:+.4f}" for v in r["hr50_minus_a"])
        lines.append(
            f"| {r['row']} | {si} | {d} | {r['hr50']:.4f} | {r['quality_vs_1']:.3f} "
            f"({r['quality_vs_1_min']:.3f}–{r['quality_vs_1_max']:.3f}) | {r['hr50_live']:.4f} "
            f"| {r['divergence']:.4f} | {r['written_bytes_per_event']:,.0f} | {r['read_bytes_per_event']:,.0f} "
            f"| {stale} | {vs_a} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small world, W = 2 only, one seed (seconds)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every row")
    parser.add_argument("--json-out", metavar="PATH", help="also write that JSON object to PATH")
    parser.add_argument("--seed", type=int, default=0, help="the first synthetic world's seed")
    parser.add_argument("--seeds", type=int, default=None, help="worlds (seeds seed, seed+1, ...; default 3, quick 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args()
    cfg = QUICK if args.quick else Config()
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if args.quick else 3))))
    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    from _machine import cpu_model  # bench/ is on sys.path when run as a script

    machine = (f"{cpu_model()}; nproc {os.cpu_count()}, {pinned}; Python {platform.python_version()}, "
               f"numpy {np.__version__}")
    t0 = time.perf_counter()

    def progress(row: Row) -> None:
        if not args.json:
            print(f"  {row.row}: HR@50 {row.hr50:.4f} ({row.seconds:.0f} s)", flush=True)

    if not args.json:
        print(f"machine: {machine}")
        print(f"world: {cfg.users:,} users x {cfg.items:,} items, seeds {seeds}; {cfg.train_events:,} training "
              f"events, {cfg.test_events:,} held back; {cfg.partitions} partitions; a tick is {cfg.tick_events} "
              f"events ({cfg.tick_ms:g} ms at {cfg.rate_per_s:,.0f}/s)", flush=True)
    runs: dict[int, list[Row]] = {}
    for seed in seeds:
        if not args.json:
            print(f"\nseed {seed}", flush=True)
        _, runs[seed] = run_all(replace(cfg, seed=seed), progress)
        if not args.json:
            print()
            print(table(runs[seed]), flush=True)
    summary = summarize(runs)
    wall = time.perf_counter() - t0
    result = orjson.dumps({"config": asdict(cfg), "seeds": seeds, "machine": machine, "wall_s": wall,
                           "rows": {str(seed): [asdict(r) for r in rows] for seed, rows in runs.items()},
                           "summary": summary})
    if args.json_out:
        with open(args.json_out, "wb") as fh:
            fh.write(result + b"\n")
    if args.json:
        print(result.decode())
    else:
        if len(seeds) > 1:
            print(f"\nmean over seeds {seeds}\n")
            print(summary_table(summary))
        print(f"\nwall time {wall:.0f} s")


if __name__ == "__main__":
    main()
