"""Byte codecs of the per-user and per-item state kept in Kafka.

The worker checkpoints every user it changes into a changelog-backed Faust table (see
:mod:`streams.state.table_store`) and the items of its partitions into the item-state topic (see
:mod:`streams.worker.exchange`); a restarted worker reads them back instead of starting from zero. The layout is
versioned, compact and language-neutral (little-endian float32 plus a JSON tail), and never pickle.

>>> import numpy as np
>>> blob = encode_user(np.array([0.5, -1.0], dtype=np.float32), ["i1", "i2"])
>>> vector, history = decode_user(blob)
>>> vector.tolist(), history
([0.5, -1.0], ['i1', 'i2'])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import orjson

from streams.errors import StreamrecError

__all__ = [
    "ItemState",
    "StateCorrupt",
    "encode_user",
    "decode_user",
    "encode_item",
    "decode_item",
    "encode_users",
    "encode_items",
]

_USER_MAGIC = b"SRU1"
_ITEM_MAGIC = b"SRI1"
_HEADER = struct.Struct("<4sH")  # magic, n_factors


class StateCorrupt(StreamrecError):
    """A stored state value could not be decoded."""


@dataclass(frozen=True, slots=True)
class ItemState:
    vector: np.ndarray
    bias: float
    creator_id: str | None
    tags: tuple[str, ...]
    popularity: float  # decayed engagement weight at popularity_ts_ms
    popularity_ts_ms: int
    offset: int = -1  # the item-updates offset whose changes this state includes (-1: none)
    number: int = -1  # the item's number in the item exchange (-1: none)
    # Its strongest co-visited items (item numbers) and their counts, strongest first (absent from older records)
    neighbours: tuple[int, ...] = ()
    covisit_counts: tuple[float, ...] = ()


def encode_user(vector: np.ndarray, history: Sequence[str] | Mapping[str, None]) -> bytes:
    """A user's factors and engaged items (oldest first).

    The items are a JSON array, or, given a dict (as the worker keeps them), a JSON
    object whose keys are the items: no copy to a list; :func:`decode_user` reads both.
    """
    factors = np.ascontiguousarray(vector, dtype="<f4")
    return _HEADER.pack(_USER_MAGIC, factors.size) + factors.tobytes() + _history_json(history)


def _history_json(history: Sequence[str] | Mapping[str, None]) -> bytes:
    if isinstance(history, dict):
        return orjson.dumps(history)
    return orjson.dumps(history if isinstance(history, list) else list(history))


def encode_users(vectors: np.ndarray, histories: Sequence[Sequence[str] | Mapping[str, None]]) -> list[bytes]:
    """:func:`encode_user` of each row of ``vectors`` (n, k) with its history, byte for byte.

    >>> blobs = encode_users(np.zeros((2, 1), np.float32), [["i1"], []])
    >>> blobs == [encode_user(np.zeros(1), ["i1"]), encode_user(np.zeros(1), [])]
    True
    """
    factors = np.ascontiguousarray(vectors, dtype="<f4")
    if factors.ndim != 2 or factors.shape[0] != len(histories):
        raise ValueError("vectors must be (n, k) with one history per row")
    return _with_tails(_USER_MAGIC, factors, [_history_json(h) for h in histories])


def _with_tails(magic: bytes, factors: np.ndarray, tails: list[bytes]) -> list[bytes]:
    """Header, one row of ``factors`` and its JSON tail, for every row: one ``tobytes`` for all rows."""
    n, k = factors.shape
    header = _HEADER.pack(magic, k)
    step = 4 * k
    raw = memoryview(factors.tobytes())
    return [b"%b%b%b" % (header, raw[j * step:(j + 1) * step], tail) for j, tail in enumerate(tails)]


def decode_user(blob: bytes) -> tuple[np.ndarray, list[str]]:
    """A user's factors and engaged items; raises :class:`StateCorrupt` for anything else."""
    vector, history = _split(blob, _USER_MAGIC)
    if not isinstance(history, (list, dict)) or not all(type(item) is str for item in history):
        raise StateCorrupt("user state's history is not a list of item ids")
    if not np.isfinite(vector).all():
        raise StateCorrupt("user state has non-finite factors")
    return vector, list(history)


def encode_item(state: ItemState) -> bytes:
    factors = np.ascontiguousarray(state.vector, dtype="<f4")
    meta: dict[str, Any] = {
        "b": float(state.bias),
        "c": state.creator_id,
        "t": list(state.tags),
        "p": float(state.popularity),
        "pt": int(state.popularity_ts_ms),
        "o": int(state.offset),
        "n": int(state.number),
    }
    if state.neighbours:
        meta["cn"], meta["cc"] = [int(n) for n in state.neighbours], [float(c) for c in state.covisit_counts]
    return _HEADER.pack(_ITEM_MAGIC, factors.size) + factors.tobytes() + orjson.dumps(meta)


def encode_items(
    vectors: np.ndarray,
    biases: Sequence[float] | np.ndarray,
    creators: Sequence[str | None],
    tags: Sequence[Sequence[str]],
    popularity: Sequence[float] | np.ndarray,
    popularity_ts_ms: int | Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray | None = None,
    numbers: Sequence[int] | np.ndarray | None = None,
    neighbours: Sequence[Sequence[int]] | None = None,
    covisit_counts: Sequence[Sequence[float]] | None = None,
) -> list[bytes]:
    """:func:`encode_item` of many items (rows of ``vectors``), byte for byte; ``popularity_ts_ms`` is one
    time for all or one per item; ``offsets`` and ``numbers`` one per item (default -1); ``neighbours`` and
    ``covisit_counts`` one list per item (default none; lists of ints and floats, as ``tolist`` gives).

    >>> one = ItemState(np.ones(2, np.float32), 0.5, "c1", ("a",), 2.0, 7, neighbours=(3,), covisit_counts=(2.0,))
    >>> encode_items(np.ones((1, 2)), [0.5], ["c1"], [("a",)], [2.0], 7, neighbours=[[3]], covisit_counts=[[2.0]]
    ...              ) == [encode_item(one)]
    True
    """
    factors = np.ascontiguousarray(vectors, dtype="<f4")
    n = len(creators)
    if factors.ndim != 2 or not factors.shape[0] == len(biases) == n == len(tags) == len(popularity):
        raise ValueError("vectors must be (n, k) with one bias, creator, tag list and popularity per row")
    if np.ndim(popularity_ts_ms) == 0:
        times = [int(popularity_ts_ms)] * n  # type: ignore[arg-type]
    else:
        times = np.asarray(popularity_ts_ms, dtype=np.int64).tolist()
        if len(times) != n:
            raise ValueError("popularity_ts_ms must be one time or one per item")
    positions = [-1] * n if offsets is None else np.asarray(offsets, dtype=np.int64).tolist()
    item_numbers = [-1] * n if numbers is None else np.asarray(numbers, dtype=np.int64).tolist()
    if len(positions) != n or len(item_numbers) != n:
        raise ValueError("offsets and numbers must be one per item")
    metas = [
        {"b": b, "c": c, "t": t if isinstance(t, list) else list(t), "p": p, "pt": pt, "o": o, "n": g}
        for b, c, t, p, pt, o, g in zip(
            np.asarray(biases, dtype=np.float64).tolist(), creators, tags,
            np.asarray(popularity, dtype=np.float64).tolist(), times, positions, item_numbers)
    ]
    if neighbours is not None:
        if covisit_counts is None or not len(neighbours) == len(covisit_counts) == n:
            raise ValueError("neighbours and covisit_counts must be one list per item")
        for meta, nbr, cnt in zip(metas, neighbours, covisit_counts):
            if len(nbr):
                meta["cn"], meta["cc"] = nbr, cnt
    dumps = orjson.dumps
    return _with_tails(_ITEM_MAGIC, factors, [dumps(meta) for meta in metas])


def decode_item(blob: bytes) -> ItemState:
    """An item's state; raises :class:`StateCorrupt` for anything else."""
    vector, meta = _split(blob, _ITEM_MAGIC)
    if not np.isfinite(vector).all():
        raise StateCorrupt("item state has non-finite factors")
    try:
        neighbours = tuple(int(n) for n in meta.get("cn", ()))
        counts = tuple(float(c) for c in meta.get("cc", ()))
        if len(neighbours) != len(counts):
            raise ValueError("co-visit neighbours and counts differ in length")
        return ItemState(vector, float(meta["b"]), meta["c"], tuple(meta["t"]), float(meta["p"]), int(meta["pt"]),
                         int(meta.get("o", -1)), int(meta.get("n", -1)), neighbours, counts)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateCorrupt(f"item state has a malformed JSON tail: {exc!r}") from None


def _split(blob: bytes, expected: bytes) -> tuple[np.ndarray, Any]:
    """The float32 factors and the decoded JSON tail of a state value."""
    if len(blob) < _HEADER.size:
        raise StateCorrupt("state value is too short")
    magic, k = _HEADER.unpack_from(blob)
    if magic != expected:
        raise StateCorrupt(f"state value has magic {magic!r}, expected {expected!r}")
    end = _HEADER.size + 4 * k
    if len(blob) < end:
        raise StateCorrupt("state value is truncated")
    vector = np.frombuffer(blob, dtype="<f4", count=k, offset=_HEADER.size).astype(np.float32)
    try:
        return vector, orjson.loads(blob[end:])
    except orjson.JSONDecodeError as exc:
        raise StateCorrupt(f"state value's JSON tail is not JSON: {exc}") from None
