"""One item model across workers: additive item deltas, exchanged through a Kafka topic.

Every worker keeps a full replica of the item side of the model (factors, bias,
popularity, creator and tags), because it ranks every item for its users. What a worker
learns about items, it publishes every ``STREAMREC_ITEM_EXCHANGE_INTERVAL_S`` as
*deltas*: per item, the sum of its own changes since its last publication (the positive
items of its events and every sampled negative). Every worker adds everyone else's
deltas: asynchronous SGD with bounded staleness, as parameter servers do. Addition
commutes, so the order in which deltas arrive does not matter, and the replicas agree
up to the deltas still in flight.

The log is the topic ``<app_id>-item-updates``. Item ``x`` lives in partition
:func:`item_partition` ``(x)`` and a record holds items of one partition only, so every
change of an item has one position (partition, offset) in one log.

**New items.** A new item starts at its id's hash noise plus the prior of its tags (the
mean of the newest items sharing them, on the replica that first meets it). The
creating worker proposes that starting point in its next record; the *first* proposal
of an item in the log wins everywhere: a worker whose own proposal lost adds the
difference (winner minus its own) and carries on. All replicas then start the item
from the same vector, and its creator and tags are known to every worker.

**Snapshots and recovery.** The owner of item partition ``p`` (the worker that owns
events partition ``p``) writes the state of its changed items to the compacted topic
``<app_id>-item-state`` every ``STREAMREC_ITEM_SNAPSHOT_INTERVAL_S``. An item's state is
written *as of an offset* ``o`` of its partition: the sum of every change at or below
``o`` and of no other (the writer subtracts its own changes that the log does not hold
yet). After the items, a fence per partition says that every change at or below it is
in the snapshots. A starting worker reads the snapshots, then the log from each fence
on, applying to each item only the records past its own ``o``: one latent space,
negatives' updates included, whoever wrote what.

This module is the bookkeeping, free of Kafka (the worker's I/O is in
:mod:`streams.item_log`):

>>> from models import BPRMF, Popularity
>>> def replica(origin):
...     model, pop = BPRMF(n_factors=4, track_item_deltas=True), Popularity(3600, track_deltas=True)
...     return model, pop, ItemExchange(model, pop, {}, partitions=2, origin=origin)
>>> (m1, p1, x1), (m2, p2, x2) = replica("w1"), replica("w2")
>>> for model, pop, exchange, items in ((m1, p1, x1, ["a", "b"]), (m2, p2, x2, ["c", "d"])):
...     exchange.note_new_items(model.add_items(items))
...     model.learn_batch(["u", "u"], items)
...     pop.learn_batch(["u", "u"], items, ts_ms=[0, 0])
>>> log = x1.take_records(now_ms=0) + x2.take_records(now_ms=0)  # (partition, seq, record bytes)
>>> for offset, (partition, _, value) in enumerate(log):  # every worker reads the whole log
...     _ = x1.apply(partition, offset, value, now_ms=1), x2.apply(partition, offset, value, now_ms=1)
>>> sorted(m1.item_ids) == sorted(m2.item_ids) == ["a", "b", "c", "d"]
True
>>> bool(np.allclose(m1.item_vectors(["a", "c"])[0], m2.item_vectors(["a", "c"])[0]))
True
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import orjson

from models import BPRMF, Popularity
from streams.errors import StreamrecError
from streams.state import ItemState, StateCorrupt, decode_item, encode_items

__all__ = ["ItemExchange", "ItemUpdate", "ItemUpdateCorrupt", "item_partition", "encode_update", "decode_update",
           "FENCE_KEY_PREFIX", "fence_key", "parse_fence"]

logger = logging.getLogger(__name__)

_MAGIC = b"SRX1"
_LENGTH = struct.Struct("<I")
#: Key prefix of the fence records that end each item-state snapshot of a partition (0xff: never in an id).
FENCE_KEY_PREFIX = b"\xffstreamrec.items:"


class ItemUpdateCorrupt(StreamrecError):
    """A record of the item-updates topic could not be decoded."""


def item_partition(item_id: str, partitions: int) -> int:
    """The partition of the item-updates and item-state topics that holds ``item_id`` (CRC-32 of its UTF-8).

    >>> item_partition("v42", 12) == item_partition("v42", 12) < 12
    True
    """
    return zlib.crc32(item_id.encode()) % partitions


def _partitions_of(ids: Sequence[str], partitions: int) -> np.ndarray:
    crc = np.fromiter(map(zlib.crc32, map(str.encode, ids)), np.int64, len(ids))
    return crc % partitions


def fence_key(partition: int) -> bytes:
    """Key of the fence record of ``partition`` in the item-state topic."""
    return FENCE_KEY_PREFIX + str(partition).encode()


def parse_fence(key: bytes, value: bytes) -> tuple[int, int] | None:
    """``(partition, offset)`` of a fence record, or None if ``key``/``value`` is not one."""
    if not key.startswith(FENCE_KEY_PREFIX):
        return None
    try:
        data = orjson.loads(value)
        return int(key[len(FENCE_KEY_PREFIX):]), int(data["offset"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


@dataclass
class ItemUpdate:
    """One record of the item-updates topic: a worker's changes to items of one partition."""

    origin: str  # the sending worker's incarnation (worker id and run id)
    seq: int  # its sequence number, per origin
    ids: list[str]
    vectors: np.ndarray  # (n, k) float32 factor deltas
    biases: np.ndarray  # (n,) float32 bias deltas
    counts: np.ndarray  # (n,) float64 popularity counts, forward-decayed to count_base_ms
    count_base_ms: float
    clock_ms: float  # the sender's popularity clock (latest event time)
    proposals: list[int] = field(default_factory=list)  # positions in ids of items the sender created
    base_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    base_biases: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    meta: dict[int, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)  # position -> creator, tags
    first_change_ms: int = 0  # wall clock of the oldest change in the record
    sent_ms: int = 0


def encode_update(u: ItemUpdate) -> bytes:
    """The record's bytes: magic, a JSON header (ids, proposals, meta), then little-endian arrays.

    >>> u = ItemUpdate("w1", 3, ["a"], np.ones((1, 2), np.float32), np.zeros(1, np.float32), np.ones(1), 0.0, 5.0)
    >>> back = decode_update(encode_update(u))
    >>> back.ids, back.vectors.tolist(), back.counts.tolist(), back.seq
    (['a'], [[1.0, 1.0]], [1.0], 3)
    """
    n, k = u.vectors.shape
    header = orjson.dumps({
        "o": u.origin, "s": u.seq, "k": k, "ids": u.ids, "p": u.proposals,
        "m": [[pos, creator, list(tags)] for pos, (creator, tags) in u.meta.items()],
        "cb": u.count_base_ms, "cl": u.clock_ms, "f": u.first_change_ms, "t": u.sent_ms,
    })  # fmt: skip
    return b"".join([
        _MAGIC, _LENGTH.pack(len(header)), header,
        np.ascontiguousarray(u.vectors, "<f4").tobytes(), np.ascontiguousarray(u.biases, "<f4").tobytes(),
        np.ascontiguousarray(u.counts, "<f8").tobytes(),
        np.ascontiguousarray(u.base_vectors.reshape(len(u.proposals), k), "<f4").tobytes(),
        np.ascontiguousarray(u.base_biases, "<f4").tobytes(),
    ])  # fmt: skip


def decode_update(value: bytes) -> ItemUpdate:
    """Inverse of :func:`encode_update`; raises :class:`ItemUpdateCorrupt`."""
    if value is None or len(value) < 8 or value[:4] != _MAGIC:
        raise ItemUpdateCorrupt("not an item-update record")
    (length,) = _LENGTH.unpack_from(value, 4)
    try:
        h = orjson.loads(value[8:8 + length])
        ids, k, proposals = h["ids"], int(h["k"]), [int(p) for p in h["p"]]
        n, m = len(ids), len(proposals)
        offset = 8 + length
        sizes = [(np.float32, n * k), (np.float32, n), (np.float64, n), (np.float32, m * k), (np.float32, m)]
        arrays = []
        for dtype, count in sizes:
            arrays.append(np.frombuffer(value, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset))
            offset += arrays[-1].nbytes
        if offset != len(value) or set(map(type, ids)) - {str} or any(not 0 <= p < n for p in proposals):
            raise ValueError("sizes do not match")
        meta = {int(pos): (creator, tuple(tags)) for pos, creator, tags in h["m"]}
        return ItemUpdate(
            h["o"], int(h["s"]), ids, arrays[0].reshape(n, k), arrays[1], arrays[2], float(h["cb"]), float(h["cl"]),
            proposals, arrays[3].reshape(m, k), arrays[4], meta, int(h["f"]), int(h["t"]),
        )  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ItemUpdateCorrupt(f"malformed item-update record: {exc}") from None


@dataclass
class _Sent:
    """An own record sent, not yet read back from the log: its changes are in the replica, not in the log."""

    update: ItemUpdate
    _index: dict[str, int] | None = None

    @property
    def index(self) -> dict[str, int]:
        """Position of each id in the record (built when a snapshot first needs it)."""
        if self._index is None:
            self._index = dict(zip(self.update.ids, range(len(self.update.ids))))
        return self._index


class ItemExchange:
    """The item side of one worker's replica: what to publish, what to merge, what to snapshot.

    ``model`` and ``popularity`` must track their deltas (``track_item_deltas`` /
    ``track_deltas``); ``item_meta`` maps item ids to ``(creator_id, tags)`` and is
    shared with the worker. ``origin`` names this worker's incarnation: records of the
    same origin are its own (read back, never applied twice).
    """

    def __init__(
        self,
        model: BPRMF,
        popularity: Popularity,
        item_meta: dict[str, tuple[str | None, tuple[str, ...]]],
        *,
        partitions: int,
        origin: str,
        max_record_bytes: int = 900_000,
    ) -> None:
        self.model = model
        self.popularity = popularity
        self.item_meta = item_meta
        self.partitions = partitions
        self.origin = origin
        self.max_record_bytes = max_record_bytes
        self.positions: dict[int, int] = {}  # partition -> last offset applied
        self._seq = 0
        self._to_propose: dict[str, tuple[np.ndarray, float]] = {}  # own new items not yet in a record
        self._provisional: dict[str, tuple[np.ndarray, float]] = {}  # own proposals the log has not confirmed
        self._meta_out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
        self._sent: dict[int, _Sent] = {}  # seq -> own record not read back yet
        self._first_change_ms: int | None = None
        self._dirty: list[set[str]] = [set() for _ in range(partitions)]
        self._restored_offsets: dict[str, int] = {}  # after a restore: the offset each item's snapshot includes
        self.live = False  # caught up with the log since the start (staleness is measured from then on)
        self.collect_changed = False  # keep the ids other workers changed (for the popular lists' writer)
        self.changed_items: set[str] = set()
        self.staleness_ms: list[int] = []  # per record of another worker: applied minus its oldest change
        self.records_applied = 0
        self.rows_applied = 0
        self.bytes_applied = 0
        self.records_sent = 0
        self.bytes_sent = 0
        self.corrupt_records = 0
        self.quarantined_items = 0

    # --- what this worker learned ---------------------------------------------------------
    def note_new_items(self, items: Sequence[str]) -> None:
        """Items this worker just created (``model.add_items``): their starting point is proposed to the others."""
        if not items:
            return
        vectors, biases = self.model.item_vectors(items)
        for item_id, vector, bias in zip(items, vectors, biases.tolist()):
            self._to_propose[item_id] = self._provisional[item_id] = (vector, bias)

    def note_meta(self, item_id: str, creator_id: str | None, tags: tuple[str, ...]) -> None:
        """The creator or tags of ``item_id`` changed here: the others learn it with the next record."""
        self._meta_out[item_id] = (creator_id, tags)

    def note_learned(self, now_ms: int) -> None:
        """Learning changed items at ``now_ms`` (the oldest unpublished change dates the next records)."""
        if self._first_change_ms is None:
            self._first_change_ms = now_ms

    @property
    def records_in_flight(self) -> int:
        """Own records sent and not read back from the log yet."""
        return len(self._sent)

    def take_records(self, now_ms: int) -> list[tuple[int, int, bytes]]:
        """Everything learned since the last call as records: ``(partition, seq, value)``, to send in order."""
        ids, vectors, biases = self.model.take_item_deltas()
        pop_ids, counts, base = self.popularity.take_deltas()
        known = set(ids)
        extra = list(dict.fromkeys(i for i in (*pop_ids, *self._to_propose, *self._meta_out) if i not in known))
        if extra:
            ids = [*ids, *extra]
            vectors = np.concatenate([vectors, np.zeros((len(extra), self.model.n_factors), vectors.dtype)])
            biases = np.concatenate([biases, np.zeros(len(extra), biases.dtype)])
        first = self._first_change_ms if self._first_change_ms is not None else now_ms
        self._first_change_ms = None
        if not ids:
            return []
        position = dict(zip(ids, range(len(ids))))
        all_counts = np.zeros(len(ids))
        if pop_ids:
            all_counts[[position[i] for i in pop_ids]] = counts
        proposals, self._to_propose = self._to_propose, {}
        meta, self._meta_out = self._meta_out, {}
        k = self.model.n_factors
        row_bytes = 4 * k + 16 + max(8, sum(map(len, ids[:100])) // min(len(ids), 100) + 3)
        per_record = max(1, self.max_record_bytes // row_bytes)
        # Rows grouped by partition (stable), then cut into records of at most per_record rows.
        parts = _partitions_of(ids, self.partitions)
        order = np.argsort(parts, kind="stable")
        sorted_parts = parts[order]
        starts = np.flatnonzero(np.r_[True, sorted_parts[1:] != sorted_parts[:-1]])
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        record_of = np.empty(len(ids), np.int64)  # a row's record: its partition's group, then chunk
        slot_of = np.empty(len(ids), np.int64)
        rank = np.arange(len(order)) - group_start
        record_of[order] = group_start * len(ids) + rank // per_record
        slot_of[order] = rank % per_record
        extras: dict[int, tuple[list[int], dict[int, tuple[str | None, tuple[str, ...]]]]] = {}
        for item_id in {*proposals, *meta}:
            row = position[item_id]
            new, metas = extras.setdefault(int(record_of[row]), ([], {}))
            if item_id in proposals:
                new.append(row)
            metas[int(slot_of[row])] = meta.get(item_id) or self.item_meta.get(item_id, (None, ()))
        names = np.array(ids, dtype=object)
        clock = self.popularity.clock_ms
        out = []
        boundaries = np.flatnonzero(np.r_[True, record_of[order][1:] != record_of[order][:-1]])
        for lo, hi in zip(boundaries.tolist(), [*boundaries[1:].tolist(), len(order)]):
            chunk = order[lo:hi]
            key = int(record_of[chunk[0]])
            new_rows, metas = extras.get(key, ([], {}))
            new_rows.sort(key=lambda r: slot_of[r])
            update = ItemUpdate(
                self.origin, self._seq, names[chunk].tolist(), vectors[chunk], biases[chunk], all_counts[chunk], base,
                clock, [int(slot_of[r]) for r in new_rows],
                np.array([proposals[ids[r]][0] for r in new_rows], np.float32).reshape(len(new_rows), k),
                np.array([proposals[ids[r]][1] for r in new_rows], np.float32), metas, first, now_ms,
            )  # fmt: skip
            value = encode_update(update)
            self._sent[self._seq] = _Sent(update)
            out.append((int(sorted_parts[lo]), self._seq, value))
            self._seq += 1
            self.records_sent += 1
            self.bytes_sent += len(value)
        return out

    # --- what the others learned ----------------------------------------------------------
    def apply(self, partition: int, offset: int, value: bytes, now_ms: int) -> int:
        """Merge one record of the log (any worker's, this one's included); returns the rows applied.

        A corrupt record is logged and counted, never raised: one bad record must not stop the worker.
        """
        try:
            u = decode_update(value)
        except ItemUpdateCorrupt as exc:
            self.corrupt_records += 1
            logger.warning("skipping item-update record %d:%d: %s", partition, offset, exc)
            self.positions[partition] = offset
            return 0
        self.positions[partition] = offset
        self._dirty[partition % self.partitions].update(u.ids)
        if u.origin == self.origin:
            self._sent.pop(u.seq, None)  # its changes are in the log now
            for pos in u.proposals:
                self._provisional.pop(u.ids[pos], None)  # first in the log: confirmed as it is
            return 0
        keep = self._after_restored(u.ids, offset)
        self._merge_proposals(u, keep)
        self._merge_meta(u, keep)
        ids = u.ids if keep is None else [u.ids[j] for j in keep]
        vectors = u.vectors if keep is None else u.vectors[keep]
        biases = u.biases if keep is None else u.biases[keep]
        counts = u.counts if keep is None else u.counts[keep]
        if ids:
            # (An item whose start was never seen here, its proposal being older than the log, starts from its id.)
            self.model.add_item_deltas(ids, vectors, biases, create_missing=True)
            self.popularity.add_counts(ids, counts, u.count_base_ms, u.clock_ms)
            if self.collect_changed:
                self.changed_items.update(ids)
        if self.live:
            self.staleness_ms.append(now_ms - u.first_change_ms)
        self.records_applied += 1
        self.rows_applied += len(ids)
        self.bytes_applied += len(value)
        return len(ids)

    def _after_restored(self, ids: list[str], offset: int) -> np.ndarray | None:
        """Positions of the ids whose restored snapshot does not include ``offset`` (None: all of them)."""
        if not self._restored_offsets:
            return None
        restored = self._restored_offsets
        return np.array([j for j, i in enumerate(ids) if restored.get(i, -1) < offset], np.int64)

    def _merge_proposals(self, u: ItemUpdate, keep: np.ndarray | None) -> None:
        kept = None if keep is None else set(keep.tolist())
        created: list[int] = []  # slots of items new here
        corrected: list[tuple[int, str, tuple[np.ndarray, float]]] = []  # ours lost: start where the winner started
        has_item = self.model.has_item
        for slot, pos in enumerate(u.proposals):
            if kept is not None and pos not in kept:
                continue
            item_id = u.ids[pos]
            own = self._provisional.pop(item_id, None)
            if own is not None:
                self._to_propose.pop(item_id, None)
                corrected.append((slot, item_id, own))
            elif not has_item(item_id):
                created.append(slot)
        if created:
            self.model.set_item_vectors([u.ids[u.proposals[slot]] for slot in created], u.base_vectors[created],
                                        u.base_biases[created])
        if corrected:
            slots = [slot for slot, _, _ in corrected]
            self.model.add_item_deltas(
                [item_id for _, item_id, _ in corrected],
                u.base_vectors[slots] - np.stack([own[0] for _, _, own in corrected]),
                u.base_biases[slots] - np.array([own[1] for _, _, own in corrected], np.float32),
            )

    def _merge_meta(self, u: ItemUpdate, keep: np.ndarray | None) -> None:
        if not u.meta:
            return
        kept = None if keep is None else set(keep.tolist())
        self._set_meta([(u.ids[pos], creator_id, tags) for pos, (creator_id, tags) in u.meta.items()
                        if kept is None or pos in kept])

    def _set_meta(self, metas: Sequence[tuple[str, str | None, tuple[str, ...]]]) -> None:
        """Record creators and tags; an item without tags yet (in the model, in popularity) takes them."""
        untagged_model: dict[str, tuple[str, ...]] = {}
        untagged_pop: dict[str, tuple[str, ...]] = {}
        for item_id, creator_id, tags in metas:
            self.item_meta[item_id] = (creator_id, tags)
            if tags:
                if not self.model.item_tags(item_id):
                    untagged_model[item_id] = tags
                if not self.popularity.item_tags(item_id):
                    untagged_pop[item_id] = tags
        if untagged_model:
            self.model.set_item_tags(list(untagged_model), list(untagged_model.values()))
        if untagged_pop:
            self.popularity.set_item_tags(list(untagged_pop), list(untagged_pop.values()))

    def take_changed_tags(self) -> set[str]:
        """The tags of the items other workers changed since the last call (with ``collect_changed``)."""
        items, self.changed_items = self.changed_items, set()
        meta = self.item_meta
        return {tag for item_id in items for tag in meta.get(item_id, (None, ()))[1]}

    def take_staleness(self) -> list[int]:
        samples, self.staleness_ms = self.staleness_ms, []
        return samples

    # --- snapshots --------------------------------------------------------------------------
    def mark_dirty(self, partitions: Iterable[int]) -> int:
        """Mark every known item of ``partitions`` changed (this worker now owns them); returns how many."""
        wanted = set(partitions)
        if not wanted:
            return 0
        ids = self.model.item_ids
        parts = _partitions_of(ids, self.partitions)
        count = 0
        for partition in wanted:
            chosen = [ids[j] for j in np.flatnonzero(parts == partition).tolist()]
            self._dirty[partition].update(chosen)
            count += len(chosen)
        return count

    def start_snapshot(self, partitions: Iterable[int]) -> tuple[dict[int, list[str]], dict[int, int]]:
        """The changed items of ``partitions`` to snapshot, and each partition's fence (the offset the
        snapshot covers: every change at or below it is in this snapshot or an earlier one)."""
        items: dict[int, list[str]] = {}
        fences: dict[int, int] = {}
        for partition in partitions:
            dirty, self._dirty[partition] = self._dirty[partition], set()
            pending = [i for i in dirty if i in self._provisional]  # not confirmed yet: next time
            self._dirty[partition].update(pending)
            items[partition] = sorted(dirty.difference(pending))
            fences[partition] = self.positions.get(partition, -1)
        return items, fences

    def snapshot(self, partition: int, items: Sequence[str]) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` item-state records of ``items`` (all of ``partition``), each as of the offset of
        the partition applied now: the replica minus this worker's own changes the log does not hold yet."""
        items = [i for i in items if self.model.has_item(i) and i not in self._provisional]
        if not items:
            return []
        vectors, biases = self.model.item_vectors(items)
        own_vectors, own_biases = self.model.peek_item_deltas(items)
        vectors = vectors - own_vectors
        biases = biases - own_biases
        scores, clock = self.popularity.item_weights(items)
        own_counts, base = self.popularity.peek_deltas(items)
        scores = scores - own_counts * self._decay(base, clock)
        for sent in self._sent.values():
            rows = [(r, sent.index[i]) for r, i in enumerate(items) if i in sent.index]
            if rows:
                mine, theirs = np.array(rows, np.int64).T
                vectors[mine] -= sent.update.vectors[theirs]
                biases[mine] -= sent.update.biases[theirs]
                scores[mine] -= sent.update.counts[theirs] * self._decay(sent.update.count_base_ms, clock)
        meta = [self.item_meta.get(i, (None, ())) for i in items]
        offset = self.positions.get(partition, -1)
        blobs = encode_items(vectors, biases, [m[0] for m in meta], [m[1] for m in meta], np.maximum(scores, 0.0),
                             clock, [offset] * len(items))
        return [(i.encode(), blob) for i, blob in zip(items, blobs)]

    def _decay(self, base_ms: float, clock_ms: float) -> float:
        """Factor from a count forward-decayed to ``base_ms`` to a score at ``clock_ms``."""
        h = self.popularity.half_life_s
        return 1.0 if h is None else float(2.0 ** ((base_ms - clock_ms) / (h * 1000.0)))

    # --- recovery ---------------------------------------------------------------------------
    def restore(self, records: Mapping[bytes, bytes]) -> dict[int, int]:
        """Load the latest item-state records (key -> value, fences included); returns, per partition, the
        first offset of the log to read. Corrupt records are counted and skipped (the item starts anew)."""
        fences: dict[int, int] = {}
        states: list[tuple[str, ItemState]] = []
        for key, value in records.items():
            fence = parse_fence(key, value)
            if fence is not None:
                fences[fence[0]] = fence[1]
                continue
            try:
                states.append((key.decode(), decode_item(value)))
            except (StateCorrupt, UnicodeDecodeError) as exc:
                self.quarantined_items += 1
                logger.warning("quarantined the item-state record of %r: %s", key[:80], exc)
        wrong_size = [i for i, s in states if s.vector.shape != (self.model.n_factors,)]
        if wrong_size:
            self.quarantined_items += len(wrong_size)
            logger.warning("quarantined %d item-state records of another factor count, e.g. %r", len(wrong_size),
                           wrong_size[0][:80])
            states = [(i, s) for i, s in states if s.vector.shape == (self.model.n_factors,)]
        if states:
            ids = [i for i, _ in states]
            self.model.set_item_vectors(ids, np.stack([s.vector for _, s in states]),
                                        np.array([s.bias for _, s in states]))
            by_clock: dict[int, list[int]] = {}
            for j, (_, s) in enumerate(states):
                by_clock.setdefault(s.popularity_ts_ms, []).append(j)
            for clock, rows in sorted(by_clock.items()):
                self.popularity.set_item_weights([ids[j] for j in rows],
                                                 np.array([states[j][1].popularity for j in rows]), clock)
            self._set_meta([(item_id, s.creator_id, s.tags) for item_id, s in states])
            for item_id, s in states:
                self._restored_offsets[item_id] = s.offset
        return {p: fences.get(p, -1) + 1 for p in range(self.partitions)}

    def restore_done(self) -> None:
        """The log has been read past every restored snapshot: records apply to every item from now on."""
        self._restored_offsets = {}
        self.live = True
