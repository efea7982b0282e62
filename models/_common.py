"""Private helpers shared by the models: input checks, top-N selection, (de)serialisation."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence, Sized
from itertools import chain, repeat
from typing import Any, cast

import numpy as np

from .errors import InvalidInputError
from .idmap import IdMap

FORMAT_VERSION = 1
MAGIC = b"STREAMREC-MODEL\n"
#: top-N scoring works on at most this many (user, item) scores at once.
_SCORE_BLOCK = 1 << 22



def grow_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Return ``a`` with room for at least ``n`` rows (capacity doubling, zero-filled)."""
    if n <= len(a):
        return a
    out = np.zeros((max(n, 2 * len(a), 16), *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out

def check_ids(ids: object, name: str) -> None:
    if isinstance(ids, (str, bytes)):
        raise InvalidInputError(f"{name} must be a sequence of ids, not a single string")


def check_pairs(users: Sequence[str], items: Sequence[str]) -> None:
    check_ids(users, "users")
    check_ids(items, "items")
    if len(users) != len(items):
        raise InvalidInputError(f"got {len(users)} users but {len(items)} items")


def as_weights(weights: np.ndarray | Sequence[float] | None, n: int) -> np.ndarray:
    """Validated float64 copy of ``weights`` (ones if None): shape ``(n,)``, finite, >= 0."""
    if weights is None:
        return np.ones(n)
    w = np.array(weights, dtype=np.float64)  # always a copy: the caller's array is never touched
    if w.shape != (n,):
        raise InvalidInputError(f"weights has shape {w.shape}, expected ({n},)")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise InvalidInputError("weights must be finite and >= 0")
    return w


def check_weight(weight: float) -> float:
    w = float(weight)
    if not (np.isfinite(w) and w >= 0):
        raise InvalidInputError(f"weight must be finite and >= 0, got {weight!r}")
    return w


def id_set(ids: Iterable[str]) -> set[str]:
    check_ids(ids, "exclude")
    return ids if isinstance(ids, set) else set(ids)


def check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


def flatten_exclude(exclude: Sequence[Iterable[str]], items: IdMap) -> tuple[np.ndarray, np.ndarray]:
    """``(user, item index)`` of every known item of ``exclude[r]``, in one id lookup (repeats kept)."""
    for ex in exclude:
        if isinstance(ex, (str, bytes)):
            raise InvalidInputError("exclude must be a sequence of ids, not a single string")
    try:  # entries are usually collections (a user's history dict, a set, a list) ...
        lens = np.fromiter(map(len, cast("Sequence[Sized]", exclude)), np.int64, len(exclude))
    except TypeError:  # ... any iterable will do: one without a length is read into a list first
        listed = [list(ex) for ex in exclude]
        lens = np.fromiter(map(len, listed), np.int64, len(listed))
        exclude = listed
    rows = np.array(list(map(items._index.get, chain.from_iterable(exclude), repeat(-1))), dtype=np.int64)
    eu = np.repeat(np.arange(len(exclude)), lens)
    ok = rows >= 0
    return eu[ok], rows[ok]


def run_ranks(keys: np.ndarray) -> np.ndarray:
    """For a 1-D array whose equal keys are adjacent (e.g. sorted): each element's position in its run.

    >>> run_ranks(np.array([4, 4, 4, 7, 9, 9])).tolist()
    [0, 1, 2, 0, 0, 1]
    """
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    first = np.empty(len(keys), bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    pos = np.arange(len(keys))
    ranks: np.ndarray = pos - np.maximum.accumulate(np.where(first, pos, 0))
    return ranks


def run_sums(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows of ``keys`` sorted ascending: whether each column ends a run of equal keys, and there the
    sum of ``values`` over the run (elsewhere a partial sum; use it at the run ends only).

    >>> last, sums = run_sums(np.array([[1, 1, 2, 5, 5, 5]]), np.array([[1.0, 2.0, 4.0, 1.0, 1.0, 1.0]]))
    >>> last.tolist(), sums[last].tolist()
    ([[False, True, True, False, False, True]], [3.0, 4.0, 3.0])
    """
    csum = np.cumsum(values, axis=1)
    last = np.ones(keys.shape, bool)
    last[:, :-1] = keys[:, :-1] != keys[:, 1:]
    ends = np.maximum.accumulate(np.where(last, np.arange(keys.shape[1]), -1), axis=1)
    before = np.zeros(csum.shape, csum.dtype)
    before[:, 1:] = np.where(ends[:, :-1] >= 0, np.take_along_axis(csum, np.maximum(ends[:, :-1], 0), 1), 0.0)
    return last, csum - before


def top_arrays(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` finite scores per row, highest first (ties: lower index first).

    Returns ``(columns, scores)``, both ``(rows, min(n, columns))``, padded with ``-1`` / ``-inf``.
    """
    b, m = scores.shape
    n = min(n, m)
    if n == 0:
        return np.zeros((b, 0), np.int64), np.zeros((b, 0), scores.dtype)
    if n < m:
        cand = np.argpartition(scores, m - n, axis=1)[:, m - n :]
        cand.sort(axis=1)  # by column first, so the stable sort below breaks ties by lower column
    else:
        cand = np.broadcast_to(np.arange(m), (b, m))
    r = np.arange(b)[:, None]
    vals = scores[r, cand]
    order = np.argsort(-vals, axis=1, kind="stable")
    cand, vals = cand[r, order], vals[r, order]
    cand[~np.isfinite(vals)] = -1  # -inf (excluded) sorts last
    return cand, vals


def as_lists(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> tuple[list[list[str]], list[list[float]]]:
    """Per row, the ids ``ids[rows[r]]`` and their scores as Python lists, stopping at the first ``-1``."""
    if rows.size == 0:
        return [[] for _ in range(len(rows))], [[] for _ in range(len(rows))]
    valid = rows >= 0
    names = ids[np.where(valid, rows, 0)].tolist()
    vals = scores.tolist()
    short = np.flatnonzero(~valid[:, -1]).tolist()  # padding is always at the end of a row
    if short:
        keep = valid.sum(1).tolist()
        for r in short:
            names[r] = names[r][: keep[r]]
            vals[r] = vals[r][: keep[r]]
    return names, vals


def select_top(scores: np.ndarray, n: int, ids: list[str]) -> list[list[tuple[str, float]]]:
    """Best ``n`` finite scores per row, highest first (ties: lower index first)."""
    cand, vals = top_arrays(scores, n)
    return [[(ids[j], s) for j, s in zip(c, v) if j >= 0] for c, v in zip(cand.tolist(), vals.tolist())]


def rank_arrays(
    score_rows: Callable[[int, int], np.ndarray],
    n_rows: int,
    n: int,
    items: IdMap,
    excluded: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N item indices and scores for ``n_rows`` users (``-1`` / ``-inf`` padded);
    ``score_rows(lo, hi)`` returns a fresh ``(hi-lo, n_items)`` block. ``excluded`` holds the
    ``(user row, item row)`` pairs never to return, user rows ascending (:func:`flatten_exclude`)."""
    n = check_n(n)
    width = min(n, len(items))
    rows_out = np.full((n_rows, width), -1, np.int64)
    vals_out = np.full((n_rows, width), -np.inf, np.float32)
    if n_rows == 0 or width == 0:
        return rows_out, vals_out
    step = max(1, _SCORE_BLOCK // max(len(items), 1))
    for lo in range(0, n_rows, step):
        hi = min(lo + step, n_rows)
        s = score_rows(lo, hi)
        if excluded is not None:
            a, z = np.searchsorted(excluded[0], (lo, hi))
            s[excluded[0][a:z] - lo, excluded[1][a:z]] = -np.inf
        rows_out[lo:hi], v = top_arrays(s, n)
        if lo == 0:
            vals_out = vals_out.astype(v.dtype)
        vals_out[lo:hi] = v
    return rows_out, vals_out


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, elementwise on ``uint64`` (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def id_normals(ids: Sequence[str], k: int, seed: int | None) -> np.ndarray:
    """``(len(ids), k)`` standard normal draws that depend only on each id and ``seed``.

    Any process, in any order, gets the same row for the same id: new items start
    from the same vector on every worker. Each id is hashed (BLAKE2b, 64 bits, keyed
    by the seed), a SplitMix64 counter stream turns the hash into uniforms and the
    Box-Muller transform into normals.

    >>> a = id_normals(["x", "y"], 3, seed=1)
    >>> b = id_normals(["y"], 3, seed=1)
    >>> a.shape, bool((a[1] == b[0]).all()), bool((a[0] == id_normals(["x"], 3, seed=2)[0]).all())
    ((2, 3), True, False)
    """
    key = int(seed or 0).to_bytes(8, "little", signed=True)
    hashes = np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest(), "little")
         for i in ids),
        np.uint64, len(ids),
    )  # fmt: skip
    pairs = (k + 1) // 2
    counters = np.arange(1, 2 * pairs + 1, dtype=np.uint64) * _GOLDEN
    with np.errstate(over="ignore"):
        bits = _splitmix64(hashes[:, None] + counters[None, :])
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    radius = np.sqrt(-2.0 * np.log(uniform[:, :pairs]))
    angle = 2.0 * np.pi * uniform[:, pairs:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :k]


def tag_tuple(tags: Iterable[str] | None) -> tuple[str, ...]:
    """Distinct tags in first-seen order; ``None`` means none. A bare string is rejected."""
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)):
        raise InvalidInputError("tags must be a sequence of strings, not a single string")
    out = tuple(dict.fromkeys(tags))
    if not all(isinstance(t, str) for t in out):
        raise InvalidInputError(f"tags must be strings, got {out!r}")
    return out


def check_tag_lists(tags: object, n: int) -> Sequence[Iterable[str] | None]:
    """Validate per-event tag lists: ``n`` entries, each a sequence of strings or ``None``."""
    if isinstance(tags, (str, bytes)) or not hasattr(tags, "__len__") or not hasattr(tags, "__getitem__"):
        raise InvalidInputError("item_tags must be a sequence with one list of tags per event")
    if len(tags) != n:
        raise InvalidInputError(f"item_tags has {len(tags)} entries for {n} events")
    return cast("Sequence[Iterable[str] | None]", tags)  # checked above: a sized, indexable non-string


def pack(kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise JSON metadata plus named arrays (``np.save`` back to back; no pickle, deterministic)."""
    header = {"format": kind, "version": FORMAT_VERSION, "arrays": list(arrays), **meta}
    buf = io.BytesIO()
    buf.write(MAGIC)
    np.save(buf, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), allow_pickle=False)
    for a in arrays.values():
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def unpack(data: bytes, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`pack`; raises :class:`InvalidInputError` on foreign or corrupt data."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise InvalidInputError(f"not {kind} bytes (bad magic)")
    buf = io.BytesIO(data)
    buf.seek(len(MAGIC))
    try:
        meta = json.loads(np.load(buf, allow_pickle=False).tobytes())
        arrays = {name: np.load(buf, allow_pickle=False) for name in meta["arrays"]}
        if buf.tell() != len(data):
            raise ValueError("trailing bytes")
    except Exception as e:  # truncated or garbled: all mean "not our blob"
        raise InvalidInputError(f"cannot decode {kind} bytes: {e}") from e
    if meta.get("format") != kind or meta.get("version") != FORMAT_VERSION:
        raise InvalidInputError(
            f"expected {kind} v{FORMAT_VERSION} bytes, got {meta.get('format')!r} v{meta.get('version')!r}"
        )
    return meta, arrays
