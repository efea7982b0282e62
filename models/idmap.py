"""Growable string-to-index map."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat

import numpy as np

from .errors import InvalidInputError

__all__ = ["IdMap"]


def _check_ids(ids: object) -> None:
    if isinstance(ids, (str, bytes)):
        raise InvalidInputError("expected a sequence of ids, got a single string")


class IdMap:
    """Map external string ids to dense ``int64`` indices ``0, 1, 2, ...``.

    Indices are assigned in order of first sight and never change, so they can
    address rows of the factor matrices. Adding an id is amortised O(1).

    Parameters
    ----------
    ids
        Optional initial ids, indexed in order (must be unique).

    Examples
    --------
    >>> m = IdMap()
    >>> m.index(["a", "b", "a"]).tolist()
    [0, 1, 0]
    >>> m.lookup(["b", "zz"]).tolist(), m.get("a"), len(m)
    ([1, -1], 0, 2)
    >>> IdMap.from_list(m.to_list()).ids
    ['a', 'b']
    """

    __slots__ = ("_index", "_ids", "_arr", "_arr_n")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        _check_ids(ids)
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._arr = np.empty(0, dtype=object)
        self._arr_n = 0
        ids = list(ids)
        self.index(ids)
        if len(self._ids) != len(ids):
            raise InvalidInputError("initial ids must be unique")

    def index(self, ids: Sequence[str]) -> np.ndarray:
        """Return the indices of ``ids`` (``int64``), adding unseen ids first-seen first."""
        _check_ids(ids)
        d = self._index
        out = list(map(d.get, ids))
        if None in out:  # add unseen ids in order of first sight (the dict keeps insertion order)
            fresh = dict.fromkeys([x for x, j in zip(ids, out) if j is None])
            n0 = len(self._ids)
            d.update(zip(fresh, range(n0, n0 + len(fresh))))
            self._ids.extend(fresh)
            out = list(map(d.__getitem__, ids))
        return np.array(out, dtype=np.int64)

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Return the indices of ``ids`` (``int64``) with ``-1`` for unknown ids; never adds."""
        _check_ids(ids)
        return np.array(list(map(self._index.get, ids, repeat(-1))), dtype=np.int64)

    def _array(self) -> np.ndarray:
        """The ids as an object ndarray in index order (cached, extended as ids arrive; do not modify)."""
        n, arr, filled = len(self._ids), self._arr, self._arr_n
        if filled < n:
            if len(arr) < n:
                grown = np.empty(max(n, 2 * len(arr), 1024), dtype=object)
                grown[:filled] = arr[:filled]
                self._arr = arr = grown
            arr[filled:n] = self._ids[filled:n]
            self._arr_n = n
        return arr[:n]

    def get(self, id: str) -> int | None:
        """Return the index of ``id`` or ``None`` if unknown."""
        return self._index.get(id)

    @property
    def ids(self) -> list[str]:
        """A copy of the ids in index order."""
        return list(self._ids)

    def to_list(self) -> list[str]:
        """The ids in index order (a copy); inverse of :meth:`from_list`."""
        return list(self._ids)

    @classmethod
    def from_list(cls, ids: Iterable[str]) -> IdMap:
        """Rebuild a map whose id ``ids[j]`` has index ``j``."""
        return cls(ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        return id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __repr__(self) -> str:
        return f"IdMap(n={len(self._ids)})"
