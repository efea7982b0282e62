"""One item model across workers: additive item deltas, exchanged through a Kafka topic.

One file: the record format (item numbers, first proposals, as-of offsets) and the bookkeeping
that writes and applies it are one design, explained once below.

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
of an item in its partition's log wins everywhere: a worker whose own proposal lost
adds the difference (winner minus its own) and carries on. All replicas then start the
item from the same vector, and its creator and tags are known to every worker.

**Item numbers.** The first proposal also numbers the item: the ``n``-th item proposed
in partition ``p`` is item number ``n * P + p``, the same on every worker since they all
read the same log. From then on records carry numbers instead of ids, so merging a
record is a few numpy operations, whatever its size; only items not numbered yet travel
by id.

**Co-visit counts.** The session's co-visitation counts (:mod:`models.covisit`) are additive too:
each record also carries the pairs of items its sender's users engaged one after the other,
counted since the last take, in the partition of the pair's first item, by number or id like
the other changes. Every worker adds the others' pairs, so each counts the whole group's
co-visits. An item's snapshot holds its strongest neighbours (the model's ``covisit_candidates``,
by number) and their counts, as of its offset like the rest of its state.

**Snapshots and recovery.** The owner of item partition ``p`` (the worker that owns
events partition ``p``) writes the state of its changed items to the compacted topic
``<app_id>-item-state`` every ``STREAMREC_ITEM_SNAPSHOT_INTERVAL_S``. An item's state is
written *as of an offset* ``o`` of its partition: the sum of every change at or below
``o`` and of no other (the writer subtracts its own changes that the log does not hold
yet). After the items, a fence per partition says that every change at or below it is
in the snapshots (and how many items the partition had numbered). A starting worker
reads the snapshots, then the log from each fence on, applying to each item only the
records past its own ``o``: one latent space, negatives' updates included, whoever
wrote what.

This module is the bookkeeping, free of Kafka (the worker's I/O is in
:mod:`streams.worker.item_log`):

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
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import orjson

from models import Popularity
from models.covisit import find_slots
from streams.errors import StreamrecError
from streams.state.codecs import ItemState, StateCorrupt, decode_item, encode_items

if TYPE_CHECKING:
    from models.base import WorkerModel

__all__ = ["ItemExchange", "ItemUpdate", "ItemUpdateCorrupt", "item_partition", "encode_update", "decode_update",
           "FENCE_KEY_PREFIX", "Fence", "fence_key", "encode_fence", "parse_fence"]

logger = logging.getLogger(__name__)

_MAGIC = b"SRX2"
_I8, _F4, _F8 = np.dtype("<i8"), np.dtype("<f4"), np.dtype("<f8")
_LENGTH = struct.Struct("<I")
#: Key prefix of the fence records that end each item-state snapshot of a partition (0xff: never in an id).
FENCE_KEY_PREFIX = b"\xffstreamrec.items:"

Meta = tuple[str | None, tuple[str, ...]]  # an item's creator and tags


class ItemUpdateCorrupt(StreamrecError):
    """A record of the item-updates topic could not be decoded."""


def item_partition(item_id: str, partitions: int) -> int:
    """The partition of the item-updates and item-state topics that holds ``item_id`` (CRC-32 of its UTF-8).

    >>> item_partition("v42", 12) == item_partition("v42", 12) < 12
    True
    """
    return zlib.crc32(item_id.encode()) % partitions


def _partitions_of(ids: Sequence[str], partitions: int) -> np.ndarray:
    return np.fromiter(map(zlib.crc32, map(str.encode, ids)), np.int64, len(ids)) % partitions


def fence_key(partition: int) -> bytes:
    """Key of the fence record of ``partition`` in the item-state topic."""
    return FENCE_KEY_PREFIX + str(partition).encode()


@dataclass(frozen=True)
class Fence:
    """The end of an item partition's snapshot: every change at or below ``offset`` is in the snapshots,
    ``numbered`` items of the partition had numbers, and ``published`` (events partition -> offset) says
    which events' item changes the log held then (:meth:`ItemExchange.items_published`)."""

    offset: int
    numbered: int
    published: Mapping[int, int] = field(default_factory=dict)


def encode_fence(fence: Fence) -> bytes:
    """A fence record's value.

    >>> parse_fence(fence_key(3), encode_fence(Fence(41, 7, {0: 99})))
    (3, Fence(offset=41, numbered=7, published={0: 99}))
    """
    return orjson.dumps({"offset": fence.offset, "numbered": fence.numbered,
                         "published": {str(p): o for p, o in fence.published.items()}})


def parse_fence(key: bytes, value: bytes) -> tuple[int, Fence] | None:
    """``(partition, fence)`` of a fence record, or None if ``key``/``value`` is not one."""
    if not key.startswith(FENCE_KEY_PREFIX):
        return None
    try:
        data = orjson.loads(value)
        published = {int(p): int(o) for p, o in data.get("published", {}).items()}
        return int(key[len(FENCE_KEY_PREFIX):]), Fence(int(data["offset"]), int(data.get("numbered", 0)), published)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _f32(n: int, k: int = 0) -> np.ndarray:
    return np.zeros((n, k) if k else n, np.float32)


@dataclass
class ItemUpdate:
    """One record of the item-updates topic: a worker's changes to items of one partition.

    Factor deltas and popularity counts of numbered items travel by number; items without a
    number yet (just created) by id, with their proposed starting point.
    """

    origin: str  # the sending worker's incarnation (worker id and run id)
    seq: int  # its sequence number, per origin
    numbers: np.ndarray  # (n,) int64: numbered items with factor deltas
    vectors: np.ndarray  # (n, k) float32
    biases: np.ndarray  # (n,) float32
    count_numbers: np.ndarray  # (c,) int64: numbered items with popularity counts
    counts: np.ndarray  # (c,) float64, forward-decayed to count_base_ms
    count_base_ms: float
    clock_ms: float  # the sender's popularity clock (latest event time)
    ids: list[str] = field(default_factory=list)  # items without a number: their changes by id
    id_vectors: np.ndarray = field(default_factory=lambda: _f32(0, 1))
    id_biases: np.ndarray = field(default_factory=lambda: _f32(0))
    id_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    proposals: list[str] = field(default_factory=list)  # items the sender created, with their starting point
    base_vectors: np.ndarray = field(default_factory=lambda: _f32(0, 1))
    base_biases: np.ndarray = field(default_factory=lambda: _f32(0))
    meta: dict[str, Meta] = field(default_factory=dict)  # new creators and tags
    first_change_ms: int = 0  # wall clock of the oldest change in the record
    sent_ms: int = 0
    take: int = 0  # the records of one take of the sender's changes share this number ...
    take_records: int = 1  # ... and say how many they are
    covers: dict[int, int] = field(default_factory=dict)  # events partition -> last offset the take's changes include
    # Co-visit counts (pairs of items engaged one after the other), routed by their source item: each end is
    # an item number, or -1 - j for the item pair_ids[j] (no number yet). Absent from older records.
    pair_src: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (v,)
    pair_dst: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (v,)
    pair_counts: np.ndarray = field(default_factory=lambda: _f32(0))  # (v,) float32
    pair_ids: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.numbers) + len(self.count_numbers) + len(self.ids)


def encode_update(u: ItemUpdate) -> bytes:
    """The record's bytes: magic, a JSON header, then little-endian arrays.

    >>> u = ItemUpdate("w1", 3, np.array([7]), np.ones((1, 2), np.float32), np.zeros(1, np.float32),
    ...                np.array([7]), np.ones(1), 0.0, 5.0)
    >>> back = decode_update(encode_update(u))
    >>> back.numbers.tolist(), back.vectors.tolist(), back.counts.tolist(), back.seq
    ([7], [[1.0, 1.0]], [1.0], 3)
    >>> u.pair_src, u.pair_dst, u.pair_counts, u.pair_ids = np.array([7]), np.array([-1]), np.ones(1, np.float32), ["x"]
    >>> back = decode_update(encode_update(u))  # 7 -> x, once
    >>> back.pair_src.tolist(), back.pair_dst.tolist(), back.pair_counts.tolist(), back.pair_ids
    ([7], [-1], [1.0], ['x'])
    """
    k = u.vectors.shape[1]
    v = len(u.pair_src)
    fields = {
        "o": u.origin, "s": u.seq, "k": k, "n": len(u.numbers), "c": len(u.count_numbers), "ids": u.ids,
        "p": u.proposals, "m": [[i, creator, list(tags)] for i, (creator, tags) in u.meta.items()],
        "cb": u.count_base_ms, "cl": u.clock_ms, "f": u.first_change_ms, "t": u.sent_ms,
        "tk": u.take, "tn": u.take_records, "v": {str(p): o for p, o in u.covers.items()},
    }  # fmt: skip
    width = 8
    if v:  # pair ends as int32 unless an item number needs more
        width = 4 if max(int(u.pair_src.max()), int(u.pair_dst.max())) < 2**31 else 8
        fields.update({"cv": v, "cw": width, "ci": u.pair_ids})
    header = orjson.dumps(fields)
    n, c, m, q = len(u.numbers), len(u.count_numbers), len(u.ids), len(u.proposals)
    parts = [
        (u.numbers, "<i8", (n,)), (u.vectors, "<f4", (n, k)), (u.biases, "<f4", (n,)),
        (u.count_numbers, "<i8", (c,)), (u.counts, "<f8", (c,)),
        (u.id_vectors, "<f4", (m, k)), (u.id_biases, "<f4", (m,)), (u.id_counts, "<f8", (m,)),
        (u.base_vectors, "<f4", (q, k)), (u.base_biases, "<f4", (q,)),
    ]
    if v:
        parts += [(u.pair_src, f"<i{width}", (v,)), (u.pair_dst, f"<i{width}", (v,)), (u.pair_counts, "<f4", (v,))]
    body = [np.ascontiguousarray(np.asarray(a).reshape(shape), dtype).tobytes() for a, dtype, shape in parts]
    return b"".join([_MAGIC, _LENGTH.pack(len(header)), header, *body])


def decode_update(value: bytes | None) -> ItemUpdate:
    """Inverse of :func:`encode_update`; raises :class:`ItemUpdateCorrupt`."""
    if value is None or len(value) < 8 or value[:4] != _MAGIC:
        raise ItemUpdateCorrupt("not an item-update record")
    (length,) = _LENGTH.unpack_from(value, 4)
    try:
        h = orjson.loads(value[8:8 + length])
        k, n, c, ids, proposals = int(h["k"]), int(h["n"]), int(h["c"]), h["ids"], h["p"]
        if set(map(type, ids)) - {str} or set(map(type, proposals)) - {str} or min(k, n, c) < 0:
            raise ValueError("malformed header")
        v, pair_width, pair_ids = int(h.get("cv", 0)), int(h.get("cw", 8)), h.get("ci", [])
        if not isinstance(pair_ids, list) or set(map(type, pair_ids)) - {str} or v < 0 or pair_width not in (4, 8):
            raise ValueError("malformed co-visit pairs")
        m, q = len(ids), len(proposals)
        end = np.dtype(f"<i{pair_width}")
        offset, arrays = 8 + length, []
        for dtype, rows, width in ((_I8, n, 0), (_F4, n, k), (_F4, n, 0), (_I8, c, 0), (_F8, c, 0),
                                   (_F4, m, k), (_F4, m, 0), (_F8, m, 0), (_F4, q, k), (_F4, q, 0),
                                   (end, v, 0), (end, v, 0), (_F4, v, 0)):
            array = np.frombuffer(value, dtype=dtype, count=rows * (width or 1), offset=offset)
            arrays.append(array.reshape(rows, width) if width else array)
            offset += array.nbytes
        if offset != len(value):
            raise ValueError("sizes do not match")
        pair_src, pair_dst = arrays[10].astype(np.int64), arrays[11].astype(np.int64)
        if v and min(int(pair_src.min()), int(pair_dst.min())) < -len(pair_ids):
            raise ValueError("a co-visit pair names an item the record does not")
        meta = {str(i): (creator, tuple(tags)) for i, creator, tags in h["m"]}
        return ItemUpdate(
            h["o"], int(h["s"]), arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], float(h["cb"]),
            float(h["cl"]), ids, arrays[5], arrays[6], arrays[7], proposals, arrays[8], arrays[9], meta,
            int(h["f"]), int(h["t"]), int(h["tk"]), int(h["tn"]), {int(p): int(o) for p, o in h["v"].items()},
            pair_src, pair_dst, arrays[12], pair_ids,
        )  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ItemUpdateCorrupt(f"malformed item-update record: {exc}") from None


def _lookup(table: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``table[indices]``, -1 where an index is past the table's end."""
    indices = np.asarray(indices, np.int64)
    out = np.full(len(indices), -1, np.int64)
    inside = indices < len(table)
    out[inside] = table[indices[inside]]
    return out


def _cuts(sizes: np.ndarray, rooms: Sequence[int], full: int) -> list[slice]:
    """Consecutive runs of items of ``sizes`` bytes, in order: as many as fit in each of ``rooms`` bytes,
    then the rest in runs of at most ``full`` bytes (at least one item each).

    >>> _cuts(np.array([4, 4, 4, 4]), [5, 0], 8)
    [slice(0, 1, None), slice(1, 1, None), slice(1, 3, None), slice(3, 4, None)]
    """
    ends = np.cumsum(sizes)
    out: list[slice] = []
    lo = 0
    for room in rooms:
        hi = int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + room, side="right"))
        out.append(slice(lo, hi))
        lo = hi
    while lo < len(sizes):
        hi = max(lo + 1, int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + full, side="right")))
        out.append(slice(lo, hi))
        lo = hi
    return out


def _local_ends(src: np.ndarray, dst: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pair ends of a record: numbers stay, ``-1 - g`` (``ids[g]``) become ``-1 - j`` for the record's own list."""
    named = np.unique(-1 - np.concatenate([src[src < 0], dst[dst < 0]]))
    if not len(named):
        return src, dst, []

    def local(ends: np.ndarray) -> np.ndarray:
        return np.where(ends < 0, -1 - np.searchsorted(named, -1 - ends), ends)

    return local(src), local(dst), [ids[g] for g in named.tolist()]


def _grown(a: np.ndarray, n: int, fill: int | bool) -> np.ndarray:
    """``a`` with room for at least ``n`` entries, new ones set to ``fill``."""
    if len(a) >= n:
        return a
    out = np.full(max(n, 2 * len(a), 1024), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


class ItemExchange:
    """The item side of one worker's replica: what to publish, what to merge, what to snapshot.

    ``model`` and ``popularity`` must track their deltas (``track_item_deltas`` /
    ``track_deltas``); ``item_meta`` maps item ids to ``(creator_id, tags)`` and is
    shared with the worker. ``origin`` names this worker's incarnation: records of the
    same origin are its own (read back, never applied twice).
    """

    def __init__(
        self,
        model: WorkerModel,
        popularity: Popularity,
        item_meta: dict[str, Meta],
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
        self._meta_out: dict[str, Meta] = {}
        self._sent: dict[int, ItemUpdate] = {}  # seq -> own record not read back yet
        self._first_change_ms: int | None = None
        self._covers: dict[int, int] = {}  # events partition -> last offset learned since the last take
        self._take = 0
        self._published: dict[int, int] = {}  # events partition -> last offset whose item changes are in the log
        self._takes_seen: dict[tuple[str, int], int] = {}  # (origin, take) -> records read, until all are
        # Item numbers: number -> model index / popularity index, and back.
        self._numbered = [0] * partitions  # items numbered so far, per partition
        self._model_index = np.full(0, -1, np.int64)
        self._pop_index = np.full(0, -1, np.int64)
        self._number_of_model = np.full(0, -1, np.int64)
        self._number_of_pop = np.full(0, -1, np.int64)
        self._dirty = np.zeros(0, bool)  # per number: changed since its last snapshot
        self._restored_offset: np.ndarray | None = None  # per number, after a restore: the offset its snapshot has
        self.live = False  # caught up with the log since the start (staleness is measured from then on)
        self.collect_changed = False  # keep the numbers other workers changed (for the popular lists' writer)
        self._changed = np.zeros(0, bool)
        self.staleness_ms: list[int] = []  # per record of another worker: applied minus its oldest change
        self.records_applied = 0
        self.rows_applied = 0
        self.bytes_applied = 0
        self.records_sent = 0
        self.bytes_sent = 0
        self.corrupt_records = 0
        self.quarantined_items = 0
        self.unnumbered_changes = 0  # rows of records for items whose proposal this worker never saw
        self.pairs_sent = 0  # co-visit pairs published
        self.pairs_applied = 0  # other workers' co-visit pairs added to the model
        self.pairs_dropped = 0  # ... and those dropped, their items still unknown here when too many waited
        # Other workers' pairs naming an item not known here yet (its proposal, in another partition of the log,
        # not read yet): (source ends, destination ends, counts, ids) as in a record, until the item is known
        self._waiting_pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]] = []
        self._waiting_known = (0, 0)  # (items numbered, model items) when the waiting pairs were last tried
        self.max_waiting_pairs = 1 << 17

    # --- numbers ----------------------------------------------------------------------------
    def _assign(self, numbers: np.ndarray, model_indices: np.ndarray, pop_indices: np.ndarray) -> None:
        top = int(numbers.max()) + 1
        self._model_index = _grown(self._model_index, top, -1)
        self._pop_index = _grown(self._pop_index, top, -1)
        self._dirty = _grown(self._dirty, top, False)
        self._changed = _grown(self._changed, top, False)
        self._number_of_model = _grown(self._number_of_model, int(model_indices.max()) + 1, -1)
        self._number_of_pop = _grown(self._number_of_pop, int(pop_indices.max()) + 1, -1)
        self._model_index[numbers], self._pop_index[numbers] = model_indices, pop_indices
        self._number_of_model[model_indices], self._number_of_pop[pop_indices] = numbers, numbers

    def _number_first(self, proposals: list[str], numbers: list[int], partition: int) -> None:
        """Number, in order, the proposals of ``partition``'s log that are their items' first.

        ``numbers`` are the items' numbers before this record (-1: none). An item numbered before is
        passed over, unless its number is not counted yet: restored from a snapshot newer than the
        replay's start, whose first proposal this is (the count moves past it, as it did everywhere).
        """
        P, counted = self.partitions, self._numbered[partition]
        new_ids: list[str] = []
        new_numbers: list[int] = []
        for item_id, number in zip(proposals, numbers):
            if number < 0:
                new_ids.append(item_id)
                new_numbers.append(counted * P + partition)
                counted += 1
            elif number // P >= counted:
                counted = number // P + 1
        self._numbered[partition] = counted
        if new_ids:
            model_indices = self.model.item_index(new_ids)
            self._assign(np.array(new_numbers, np.int64), model_indices, self.popularity.index_items(new_ids))

    def _numbers_of_model(self, indices: np.ndarray) -> np.ndarray:
        return _lookup(self._number_of_model, indices)

    def _numbers_of_pop(self, indices: np.ndarray) -> np.ndarray:
        return _lookup(self._number_of_pop, indices)

    def number_of(self, item_id: str) -> int:
        """The item's number, or -1 (unknown, or its proposal not read from the log yet)."""
        (index,) = self.model.item_index([item_id]).tolist()
        return -1 if index < 0 else int(self._numbers_of_model(np.array([index]))[0])

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

    def note_learned(self, now_ms: int, covers: Mapping[int, int] | None = None) -> None:
        """Learning changed items at ``now_ms`` (the oldest unpublished change dates the next records), from
        events up to offset ``covers[p]`` of each events partition ``p``."""
        if self._first_change_ms is None:
            self._first_change_ms = now_ms
        for partition, offset in (covers or {}).items():
            if offset > self._covers.get(partition, -1):
                self._covers[partition] = offset

    def items_published(self, partition: int) -> int:
        """The last offset of events ``partition`` whose item changes some worker published whole (-1: none).

        After a crash, the partition's next owner applies again the events its previous owner had
        learned past its last checkpoint; those up to this offset already reached every replica
        through the log, so they must move only their users (:class:`~streams.worker.learner.Learner`)."""
        return self._published.get(partition, -1)

    @property
    def records_in_flight(self) -> int:
        """Own records sent and not read back from the log yet."""
        return len(self._sent)

    def take_records(self, now_ms: int) -> list[tuple[int, int, bytes]]:
        """Everything learned since the last call as records: ``(partition, seq, value)``, to send in order."""
        model_rows, vectors, biases = self.model.take_item_deltas()
        pop_rows, counts, base = self.popularity.take_deltas()
        pair_src, pair_dst, pair_counts = self.model.take_covisit_deltas()
        first = self._first_change_ms if self._first_change_ms is not None else now_ms
        self._first_change_ms = None
        covers, self._covers = self._covers, {}
        proposals, self._to_propose = self._to_propose, {}
        meta, self._meta_out = self._meta_out, {}
        if not (len(model_rows) or len(pop_rows) or len(pair_src) or proposals or meta or covers):
            return []
        k, P = self.model.n_factors, self.partitions
        numbers = self._numbers_of_model(model_rows)
        count_numbers = self._numbers_of_pop(pop_rows)
        # Items without a number travel by id, their factor deltas and counts side by side.
        by_id_model = np.flatnonzero(numbers < 0)
        by_id_pop = np.flatnonzero(count_numbers < 0)
        ids = list(dict.fromkeys([*self.model.item_ids_at(model_rows[by_id_model]),
                                  *self.popularity.item_ids_at(pop_rows[by_id_pop])]))
        position = dict(zip(ids, range(len(ids))))
        id_vectors, id_biases, id_counts = _f32(len(ids), k), _f32(len(ids)), np.zeros(len(ids))
        if len(by_id_model):
            at = [position[i] for i in self.model.item_ids_at(model_rows[by_id_model])]
            id_vectors[at], id_biases[at] = vectors[by_id_model], biases[by_id_model]
        if len(by_id_pop):
            id_counts[[position[i] for i in self.popularity.item_ids_at(pop_rows[by_id_pop])]] = counts[by_id_pop]
        keep, keep_counts = numbers >= 0, count_numbers >= 0
        numbers, vectors, biases = numbers[keep], vectors[keep], biases[keep]
        count_numbers, counts = count_numbers[keep_counts], counts[keep_counts]
        id_parts = _partitions_of(ids, P)
        proposal_parts = dict(zip(proposals, _partitions_of(list(proposals), P).tolist()))
        meta_parts = dict(zip(meta, _partitions_of(list(meta), P).tolist()))
        # Co-visit pairs go with their source item's partition; their ends travel by number, else by id.
        pair_src, pair_dst, pair_ids, pair_parts, pair_bytes = self._pair_ends(pair_src, pair_dst)
        row_bytes = 4 * k + 24
        per_record = max(1, self.max_record_bytes // row_bytes)
        clock = self.popularity.clock_ms
        out: list[tuple[int, ItemUpdate]] = []
        for partition in range(P):
            f = np.flatnonzero(numbers % P == partition)
            c = np.flatnonzero(count_numbers % P == partition)
            s = np.flatnonzero(id_parts == partition)
            mine = [i for i, p in proposal_parts.items() if p == partition]
            metas = {i: meta[i] for i, p in meta_parts.items() if p == partition}
            v = np.flatnonzero(pair_parts == partition)
            if not (len(f) or len(c) or len(s) or len(v) or mine or metas):
                continue
            chunks = max(1, -(-max(len(f), len(c), len(s)) // per_record))
            # pairs fill the room the rows leave in these records, then records of their own
            rows_in = [min(per_record, max(len(f), len(c), len(s)) - j * per_record) for j in range(chunks)]
            pair_runs = _cuts(pair_bytes[v], [self.max_record_bytes - r * row_bytes for r in rows_in],
                              self.max_record_bytes)
            for j, run in enumerate(pair_runs):  # by id rows, proposals and meta ride with the first chunk
                fj, cj = f[j * per_record:(j + 1) * per_record], c[j * per_record:(j + 1) * per_record]
                sj = s[j * per_record:(j + 1) * per_record]
                vj = v[run]
                first_chunk = j == 0
                update = ItemUpdate(
                    self.origin, self._seq, numbers[fj], vectors[fj], biases[fj], count_numbers[cj], counts[cj],
                    base, clock, [ids[r] for r in sj.tolist()], id_vectors[sj], id_biases[sj], id_counts[sj],
                    mine if first_chunk else [],
                    np.array([proposals[i][0] for i in mine], np.float32).reshape(len(mine), k) if first_chunk
                    else _f32(0, k),
                    np.array([proposals[i][1] for i in mine], np.float32) if first_chunk else _f32(0),
                    metas if first_chunk else {}, first, now_ms,
                )  # fmt: skip
                if len(vj):
                    update.pair_src, update.pair_dst, update.pair_ids = _local_ends(pair_src[vj], pair_dst[vj], pair_ids)
                    update.pair_counts = pair_counts[vj]
                    self.pairs_sent += len(vj)
                out.append((partition, update))
                self._seq += 1
        if not out:  # nothing changed, but events were learned: one record says which
            out.append((0, ItemUpdate(self.origin, self._seq, np.zeros(0, np.int64), _f32(0, k), _f32(0),
                                      np.zeros(0, np.int64), np.zeros(0), base, clock, first_change_ms=first,
                                      sent_ms=now_ms)))
            self._seq += 1
        records = []
        for partition, update in out:
            update.take, update.take_records, update.covers = self._take, len(out), covers
            value = encode_update(update)
            self._sent[update.seq] = update
            records.append((partition, update.seq, value))
            self.records_sent += 1
            self.bytes_sent += len(value)
        self._take += 1
        return records

    def _pair_ends(
        self, src_rows: np.ndarray, dst_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
        """Co-visit pairs of model rows as ends to publish: item numbers, or ``-1 - g`` for ``ids[g]`` (items
        without a number yet); with each pair's partition (its source item's) and its size in a record."""
        src, dst = self._numbers_of_model(src_rows), self._numbers_of_model(dst_rows)
        named = np.unique(np.concatenate([src_rows[src < 0], dst_rows[dst < 0]]))
        ids = self.model.item_ids_at(named)
        id_bytes = np.array([len(i.encode()) + 3 for i in ids], np.int64)  # in the JSON header
        sizes = np.full(len(src), 12, np.int64)  # two int32 ends and a float32 count
        parts = src % self.partitions
        if len(named):
            for ends, rows in ((src, src_rows), (dst, dst_rows)):
                by_id = np.flatnonzero(ends < 0)
                g = np.searchsorted(named, rows[by_id])
                ends[by_id] = -1 - g
                sizes[by_id] += id_bytes[g]
            by_id = np.flatnonzero(src < 0)
            parts[by_id] = _partitions_of(ids, self.partitions)[-1 - src[by_id]]
        return src, dst, ids, parts, sizes

    # --- what the others learned ----------------------------------------------------------
    def apply(self, partition: int, offset: int, value: bytes, now_ms: int) -> int:
        """Merge one record of the log (any worker's, this one's included); returns the rows applied."""
        return self.apply_many([(partition, offset, value)], now_ms)

    def apply_many(self, records: Sequence[tuple[int, int, bytes]], now_ms: int) -> int:
        """Merge records of the log, ``(partition, offset, value)`` in log order; returns the rows applied.

        Their numbered changes are summed and added in one go. A corrupt record is logged and
        counted, never raised: one bad record must not stop the worker.
        """
        theirs: list[tuple[int, ItemUpdate]] = []
        mine: list[ItemUpdate] = []
        for partition, offset, value in records:
            self.positions[partition] = offset
            try:
                u = decode_update(value)
            except ItemUpdateCorrupt as exc:
                self.corrupt_records += 1
                logger.warning("skipping item-update record %d:%d: %s", partition, offset, exc)
                continue
            own = u.origin == self.origin
            if u.covers:
                self._take_seen(u)
            if u.proposals:
                self._merge_proposals(u, partition, offset, own)  # numbers follow the log's order
            if own:
                self._sent.pop(u.seq, None)  # its changes are in the log now
                mine.append(u)
            else:
                if u.meta:
                    self._merge_meta(u)
                theirs.append((offset, u))
                self.bytes_applied += len(value)
        self._mark_dirty([*mine, *(u for _, u in theirs)])
        self._merge_pairs(theirs)  # own records too may number the items waiting pairs name
        if not theirs:
            return 0
        applied = self._merge_numbered(theirs) + self._merge_by_id(theirs)
        if self.live:
            self.staleness_ms.extend(now_ms - u.first_change_ms for _, u in theirs)
        self.records_applied += len(theirs)
        self.rows_applied += applied
        return applied

    def _merge_numbered(self, updates: Sequence[tuple[int, ItemUpdate]]) -> int:
        """Add the numbered factor deltas and counts of ``updates`` (summed per item) to the replica."""
        applied = 0
        for offset, u in updates:  # one record's numbers never repeat: a plain indexed add per record
            if not len(u.numbers):
                continue
            keep = self._known_fresh(u.numbers, offset)
            if keep.all():
                numbers, vectors, biases = u.numbers, u.vectors, u.biases
            else:
                numbers, vectors, biases = u.numbers[keep], u.vectors[keep], u.biases[keep]
            self.model.add_item_deltas(self._model_index[numbers], vectors, biases, unique=True)
            applied += len(numbers)
            if self.collect_changed:
                self._changed[numbers] = True
        offsets = np.array([offset for offset, _ in updates], np.int64)
        count_rows = [len(u.count_numbers) for _, u in updates]
        if sum(count_rows):
            numbers = np.concatenate([u.count_numbers for _, u in updates])
            keep = self._known_fresh(numbers, np.repeat(offsets, count_rows))
            base = updates[0][1].count_base_ms  # every record's counts brought to one base time
            counts = np.concatenate([u.counts * self._decay(u.count_base_ms, base) for _, u in updates])[keep]
            numbers = numbers[keep]
            clock = max(u.clock_ms for _, u in updates)
            self.popularity.add_counts(self._pop_index[numbers], counts, base, clock)
            applied += int(keep.sum())
            if self.collect_changed:
                self._changed[numbers] = True
        return applied

    def _merge_pairs(self, updates: Sequence[tuple[int, ItemUpdate]]) -> None:
        """Add the co-visit counts of ``updates``, and those of earlier records that can be now.

        A pair may name an item whose proposal is in another partition of the log, not read here yet:
        it waits until the item is known (at most ``max_waiting_pairs``; beyond, the oldest are dropped).
        After a restore, a pair at or below its source item's snapshot offset is in that snapshot already."""
        batches = [self._fresh_pairs(offset, u) for offset, u in updates if len(u.pair_src)]
        known_now = (sum(self._numbered), self.model.n_items)
        if self._waiting_pairs and known_now != self._waiting_known:
            batches, self._waiting_pairs = self._waiting_pairs + batches, []
        self._waiting_known = known_now
        if not batches:
            return
        src_rows, dst_rows, counts = [], [], []
        for src_ends, dst_ends, batch_counts, ids in batches:
            src, dst = self._pair_rows(src_ends, ids), self._pair_rows(dst_ends, ids)
            known = (src >= 0) & (dst >= 0)
            if not known.all():
                waiting = ~known
                self._waiting_pairs.append((src_ends[waiting], dst_ends[waiting], batch_counts[waiting], ids))
            src_rows.append(src[known])
            dst_rows.append(dst[known])
            counts.append(batch_counts[known])
        src, dst = np.concatenate(src_rows), np.concatenate(dst_rows)
        self.model.add_covisit_counts(src, dst, np.concatenate(counts))
        self.pairs_applied += len(src)
        while self.waiting_pairs > self.max_waiting_pairs:
            self.pairs_dropped += len(self._waiting_pairs.pop(0)[0])

    @property
    def waiting_pairs(self) -> int:
        """Other workers' co-visit pairs waiting for an item this worker does not know yet."""
        return sum(len(src) for src, _, _, _ in self._waiting_pairs)

    def _fresh_pairs(self, offset: int, u: ItemUpdate) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """The pairs of record ``u`` (at ``offset``) whose source item's restored state does not include them."""
        if self._restored_offset is None:
            return u.pair_src, u.pair_dst, u.pair_counts, u.pair_ids
        rows = self._pair_rows(u.pair_src, u.pair_ids)
        numbers = np.where(rows >= 0, self._numbers_of_model(np.maximum(rows, 0)), -1)
        fresh = (numbers < 0) | (_lookup(self._restored_offset, np.maximum(numbers, 0)) < offset)
        if fresh.all():
            return u.pair_src, u.pair_dst, u.pair_counts, u.pair_ids
        return u.pair_src[fresh], u.pair_dst[fresh], u.pair_counts[fresh], u.pair_ids

    def _pair_rows(self, ends: np.ndarray, ids: list[str]) -> np.ndarray:
        """Model rows of a record's pair ends (-1: unknown here)."""
        rows = _lookup(self._model_index, np.maximum(ends, 0))
        by_id = np.flatnonzero(ends < 0)
        if len(by_id):
            rows[by_id] = self.model.item_index(ids)[-1 - ends[by_id]]
        return rows

    def _take_seen(self, u: ItemUpdate) -> None:
        """Once every record of a take is in, the events it covers count as published."""
        key = (u.origin, u.take)
        seen = self._takes_seen.get(key, 0) + 1
        if seen < u.take_records:
            self._takes_seen[key] = seen
            return
        self._takes_seen.pop(key, None)
        for partition, offset in u.covers.items():
            if offset > self._published.get(partition, -1):
                self._published[partition] = offset

    def _known_fresh(self, numbers: np.ndarray, offsets: np.ndarray | int) -> np.ndarray:
        """Mask of the rows whose item is numbered here and whose state does not include their offset yet."""
        known = _lookup(self._model_index, numbers) >= 0
        self.unnumbered_changes += int((~known).sum())
        if self._restored_offset is not None:
            known &= _lookup(self._restored_offset, numbers) < offsets
        return known

    def _merge_proposals(self, u: ItemUpdate, partition: int, offset: int, own: bool) -> None:
        """The first proposal of an item in the log numbers it; a losing own proposal moves to the winner."""
        if not u.proposals:
            return
        known = self.model.item_index(u.proposals)
        numbers = np.where(known >= 0, self._numbers_of_model(np.maximum(known, 0)), -1)
        created: list[int] = []
        corrected: list[tuple[int, str, tuple[np.ndarray, float]]] = []
        for slot, (item_id, number) in enumerate(zip(u.proposals, numbers.tolist())):
            if number >= 0:
                continue  # numbered before: a later proposal loses
            mine = self._provisional.pop(item_id, None)
            if mine is not None and not own:
                self._to_propose.pop(item_id, None)
                corrected.append((slot, item_id, mine))
            elif mine is None and not own and known[slot] < 0:
                created.append(slot)
        if created:
            self.model.set_item_vectors([u.proposals[s] for s in created], u.base_vectors[created],
                                        u.base_biases[created])
        if corrected:
            slots = [s for s, _, _ in corrected]
            self.model.add_item_deltas(
                self.model.item_index([i for _, i, _ in corrected]),
                u.base_vectors[slots] - np.stack([mine[0] for _, _, mine in corrected]),
                u.base_biases[slots] - np.array([mine[1] for _, _, mine in corrected], np.float32),
            )
        self._number_first(u.proposals, numbers.tolist(), partition)

    def _merge_meta(self, u: ItemUpdate) -> None:
        if u.meta:
            self._set_meta([(item_id, creator_id, tags) for item_id, (creator_id, tags) in u.meta.items()])

    def _merge_by_id(self, updates: Sequence[tuple[int, ItemUpdate]]) -> int:
        """Changes of items their senders had no number for (mostly, items they had just created)."""
        updates = [(offset, u) for offset, u in updates if u.ids]
        if not updates:
            return 0
        ids = [i for _, u in updates for i in u.ids]
        index = self.model.item_index(ids)
        numbers = np.where(index >= 0, self._numbers_of_model(np.maximum(index, 0)), -1)
        fresh = numbers < 0
        if self._restored_offset is not None:
            offsets = np.repeat([offset for offset, _ in updates], [len(u.ids) for _, u in updates])
            fresh |= _lookup(self._restored_offset, np.maximum(numbers, 0)) < offsets
        else:
            fresh[:] = True
        rows = np.flatnonzero(fresh)
        if not len(rows):
            return 0
        missing = list(dict.fromkeys(ids[r] for r in np.flatnonzero(index < 0).tolist()))
        if missing:  # an item whose start was never seen here (its proposal is older than the log)
            self.unnumbered_changes += len(missing)
            self.model.add_items(missing)
            index = self.model.item_index(ids)
        base = updates[0][1].count_base_ms
        vectors = np.concatenate([u.id_vectors for _, u in updates])[rows]
        biases = np.concatenate([u.id_biases for _, u in updates])[rows]
        counts = np.concatenate([u.id_counts * self._decay(u.count_base_ms, base) for _, u in updates])[rows]
        chosen = [ids[r] for r in rows.tolist()]
        self.model.add_item_deltas(index[rows], vectors, biases)
        self.popularity.add_counts(self.popularity.index_items(chosen), counts, base,
                                   max(u.clock_ms for _, u in updates))
        if self.collect_changed:
            numbered = numbers[rows]
            self._changed[numbered[numbered >= 0]] = True
        return len(rows)

    def _mark_dirty(self, updates: Sequence[ItemUpdate]) -> None:
        """Every item these records changed waits for the next snapshot of its partition."""
        if not updates:
            return
        dirty = self._dirty
        numbers = np.concatenate([a for u in updates for a in (u.numbers, u.count_numbers, u.pair_src)])
        dirty[numbers[(numbers >= 0) & (numbers < len(dirty))]] = True  # pairs: their source item's row changed
        ids = [i for u in updates for i in (*u.ids, *u.proposals)]
        ids += [u.pair_ids[-1 - e] for u in updates for e in u.pair_src[u.pair_src < 0].tolist()]
        if ids:
            index = self.model.item_index(ids)
            numbers = np.where(index >= 0, self._numbers_of_model(np.maximum(index, 0)), -1)
            dirty[numbers[numbers >= 0]] = True

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
        numbers = np.flatnonzero(self._changed)
        if not len(numbers):
            return set()
        self._changed[numbers] = False
        meta = self.item_meta
        ids = self.model.item_ids_at(self._model_index[numbers])
        return {tag for item_id in ids for tag in meta.get(item_id, (None, ()))[1]}

    @property
    def changed(self) -> bool:
        """Other workers changed some item since :meth:`take_changed_tags` (with ``collect_changed``)."""
        return bool(self._changed.any())

    def take_staleness(self) -> list[int]:
        samples, self.staleness_ms = self.staleness_ms, []
        return samples

    # --- snapshots --------------------------------------------------------------------------
    def _numbers_in(self, partitions: Iterable[int]) -> np.ndarray:
        wanted = np.zeros(self.partitions, bool)
        wanted[list(partitions)] = True
        numbers = np.flatnonzero(self._model_index >= 0)
        return numbers[wanted[numbers % self.partitions]]

    def mark_dirty(self, partitions: Iterable[int]) -> int:
        """Mark every numbered item of ``partitions`` changed (this worker now owns them); returns how many."""
        numbers = self._numbers_in(partitions)
        self._dirty[numbers] = True
        return len(numbers)

    def start_snapshot(self, partitions: Iterable[int]) -> tuple[dict[int, list[int]], dict[int, Fence]]:
        """The changed items (numbers) of ``partitions`` to snapshot, and each partition's fence: the offset the
        snapshot covers (every change at or below it is in this snapshot or an earlier one) and the count of
        numbered items then."""
        items: dict[int, list[int]] = {}
        fences: dict[int, Fence] = {}
        for partition in partitions:
            numbers = self._numbers_in([partition])
            numbers = numbers[self._dirty[numbers]]
            self._dirty[numbers] = False
            items[partition] = numbers.tolist()
            fences[partition] = Fence(self.positions.get(partition, -1), self._numbered[partition], dict(self._published))
        return items, fences

    def snapshot(self, partition: int, numbers: Sequence[int]) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` item-state records of the items ``numbers`` (all of ``partition``), each as of the
        offset of the partition applied now: the replica minus this worker's own changes the log does not
        hold yet."""
        if not len(numbers):
            return []
        numbers = np.asarray(numbers, np.int64)
        model_rows, pop_rows = self._model_index[numbers], self._pop_index[numbers]
        ids = self.model.item_ids_at(model_rows)
        neighbours, covisit_counts = self._covisit_rows(model_rows)
        vectors, biases = self.model.item_vectors(ids)
        own_vectors, own_biases = self.model.peek_item_deltas(model_rows)
        vectors = vectors - own_vectors
        biases = biases - own_biases
        scores, clock = self.popularity.item_weights(ids)
        own_counts, base = self.popularity.peek_deltas(pop_rows)
        scores = scores - own_counts * self._decay(base, clock)
        slot = np.full(int(numbers.max()) + 1, -1, np.int64)
        slot[numbers] = np.arange(len(numbers))
        by_id = {item_id: r for r, item_id in enumerate(ids)}
        for sent in self._sent.values():
            mine = _lookup(slot, sent.numbers)
            theirs = np.flatnonzero(mine >= 0)
            vectors[mine[theirs]] -= sent.vectors[theirs]
            biases[mine[theirs]] -= sent.biases[theirs]
            mine = _lookup(slot, sent.count_numbers)
            theirs = np.flatnonzero(mine >= 0)
            scores[mine[theirs]] -= sent.counts[theirs] * self._decay(sent.count_base_ms, clock)
            pairs = [(by_id[i], j) for j, i in enumerate(sent.ids) if i in by_id]
            if pairs:
                mine, theirs = np.array(pairs, np.int64).T
                vectors[mine] -= sent.id_vectors[theirs]
                biases[mine] -= sent.id_biases[theirs]
                scores[mine] -= sent.id_counts[theirs] * self._decay(sent.count_base_ms, clock)
        meta = [self.item_meta.get(i, (None, ())) for i in ids]
        offset = self.positions.get(partition, -1)
        blobs = encode_items(vectors, biases, [m[0] for m in meta], [m[1] for m in meta], np.maximum(scores, 0.0),
                             clock, [offset] * len(ids), numbers, neighbours, covisit_counts)
        return [(i.encode(), blob) for i, blob in zip(ids, blobs)]

    def _covisit_rows(self, model_rows: np.ndarray) -> tuple[list[list[int]], list[list[float]]]:
        """Per item (model rows), its strongest ``covisit_candidates`` neighbours (numbers; those without one are
        left out) and their counts, strongest first, as of the offsets applied now: the model's counts minus this
        worker's own pairs the log does not hold yet (not taken, or in records not read back), clipped at 0."""
        nbr, cnt = self.model.covisit_rows(model_rows)
        src, dst, own = self.model.peek_covisit_deltas()
        pairs = [(src, dst, own)] + [(self._pair_rows(u.pair_src, u.pair_ids), self._pair_rows(u.pair_dst, u.pair_ids),
                                      u.pair_counts) for u in self._sent.values() if len(u.pair_src)]
        src, dst, own = (np.concatenate(a) for a in zip(*pairs))
        order = np.argsort(model_rows, kind="stable")
        at = np.minimum(np.searchsorted(model_rows, src, sorter=order), len(order) - 1)
        item = order[at]
        mine = np.flatnonzero(model_rows[item] == src)
        if len(mine):  # own pairs of these items: subtract each from its slot (if the pair still has one)
            item, dst, own = item[mine], dst[mine], own[mine]
            slot, found = find_slots(nbr[item], dst)
            np.subtract.at(cnt, (item[found], slot[found]), own[found])
        numbers = np.where(nbr >= 0, self._numbers_of_model(np.maximum(nbr, 0).ravel()).reshape(nbr.shape), -1)
        keep = (numbers >= 0) & (cnt > 0)
        size = min(self.model.covisit_candidates, keep.shape[1])
        if size < 1 or not keep.any():
            return [[] for _ in model_rows], [[] for _ in model_rows]
        key = np.where(keep, -cnt, np.inf)
        top = np.argpartition(key, size - 1, axis=1)[:, :size] if size < key.shape[1] else np.argsort(key, axis=1)
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, 1), axis=1), 1)  # strongest first
        kept = np.take_along_axis(keep, top, 1).sum(1).tolist()  # the kept come first
        top_numbers = np.take_along_axis(numbers, top, 1).tolist()
        top_counts = np.take_along_axis(cnt, top, 1).tolist()
        return [row[:n] for row, n in zip(top_numbers, kept)], [row[:n] for row, n in zip(top_counts, kept)]

    def _decay(self, base_ms: float, clock_ms: float) -> float:
        """Factor from a count forward-decayed to ``base_ms`` to a score at ``clock_ms``."""
        h = self.popularity.half_life_s
        return 1.0 if h is None else float(2.0 ** ((base_ms - clock_ms) / (h * 1000.0)))

    # --- recovery ---------------------------------------------------------------------------
    def restore(self, records: Mapping[bytes, bytes]) -> dict[int, int]:
        """Load the latest item-state records (key -> value, fences included); returns, per partition, the
        first offset of the log to read. Corrupt records are counted and skipped (the item starts anew)."""
        fences: dict[int, Fence] = {}
        states: list[tuple[str, ItemState]] = []
        for key, value in records.items():
            fence = parse_fence(key, value)
            if fence is not None:
                fences[fence[0]] = fence[1]
                continue
            try:
                state = decode_item(value)
                if state.vector.shape != (self.model.n_factors,) or state.number < 0:
                    raise StateCorrupt(f"{state.vector.shape[0]} factors, number {state.number}")
                states.append((key.decode(), state))
            except (StateCorrupt, UnicodeDecodeError) as exc:
                self.quarantined_items += 1
                logger.warning("quarantined the item-state record of %r: %s", key[:80], exc)
        for partition, fence in fences.items():
            if 0 <= partition < self.partitions:
                self._numbered[partition] = max(self._numbered[partition], fence.numbered)
            for events_partition, offset in fence.published.items():  # takes the replay will not read again
                if offset > self._published.get(events_partition, -1):
                    self._published[events_partition] = offset
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
            model_rows = self.model.item_index(ids).tolist()
            pop_rows = self.popularity.item_index(ids).tolist()
            numbers = np.array([s.number for _, s in states], np.int64)
            self._assign(numbers, np.array(model_rows, np.int64), np.array(pop_rows, np.int64))
            self._restore_covisits(states, np.array(model_rows, np.int64))
            restored = np.full(int(numbers.max()) + 1, -1, np.int64)
            restored[numbers] = [s.offset for _, s in states]
            # (The count of numbers stays the fences': items numbered after a fence, some restored from newer
            # snapshot records, are counted again as the replay meets their first proposals, in log order.)
            self._restored_offset = restored
        return {p: (fences[p].offset if p in fences else -1) + 1 for p in range(self.partitions)}

    def _restore_covisits(self, states: Sequence[tuple[str, ItemState]], model_rows: np.ndarray) -> None:
        """Put the restored items' co-visit neighbours into the model. A neighbour not numbered here (numbered
        past its partition's fence: the replay numbers it) waits for its number like other workers' pairs."""
        with_rows = [j for j, (_, s) in enumerate(states) if s.neighbours]
        if not with_rows:
            return
        width = max(len(states[j][1].neighbours) for j in with_rows)
        numbers = np.full((len(with_rows), width), -1, np.int64)
        counts = np.zeros((len(with_rows), width), np.float32)
        for r, j in enumerate(with_rows):
            state = states[j][1]
            numbers[r, : len(state.neighbours)] = state.neighbours
            counts[r, : len(state.neighbours)] = state.covisit_counts
        rows = np.where(numbers >= 0, _lookup(self._model_index, np.maximum(numbers, 0).ravel()).reshape(numbers.shape), -1)
        self.model.set_covisit_rows(model_rows[with_rows], rows, np.where(rows >= 0, counts, 0.0))
        later = (rows < 0) & (numbers >= 0) & (counts > 0)
        if later.any():
            sources = np.array([states[j][1].number for j in with_rows], np.int64)
            src = np.broadcast_to(sources[:, None], numbers.shape)[later]
            self._waiting_pairs.append((src, numbers[later], counts[later], []))

    def restore_done(self) -> None:
        """The log has been read past every restored snapshot: records apply to every item from now on."""
        self._restored_offset = None
        self.live = True
