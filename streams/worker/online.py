"""Online quality: was an arriving event's item in the list the worker last cached for its user?

The production twin of prequential evaluation (:mod:`models.evaluate`). :class:`CachedLists`
keeps, per user, the item indices of the last top-N written to Redis (its first ``depth``
entries, int32) and when it was written. Each batch of events is checked against them before
it is learned: ``hit@10`` (the item is in the first 10), ``hit@50`` (in the first 50, i.e. the
whole list when ``top_n`` is shorter) and the list's age at the event (event ts minus the
time the list was written, clamped at 0). Users without a cached list are not checked.

Memory: ``4 * depth + 8`` bytes per user with a list, plus one dict entry. The worker's
lists are refreshed once per batch, not per event, so a user's events of one batch are all
checked against the list written before that batch.

>>> lists = CachedLists(depth=3)
>>> lists.remember(["u1", "u2"], np.array([[7, 8, 9], [1, 2, -1]]), written_ms=1_000)
>>> check = lists.check(["u1", "u1", "u2", "u3"], np.array([8, 5, 2, 8]), np.array([1_500, 1_500, 900, 0]), short=1)
>>> check.checked, check.hits_short, check.hits_long, check.ages_ms.tolist()
(3, 0, 2, [500, 500, 0])
"""

from __future__ import annotations

from itertools import repeat
from typing import Callable, Iterable, NamedTuple, Sequence, cast

import numpy as np

__all__ = ["CachedLists", "OnlineCheck", "HIT_SHORT", "HIT_LONG"]

#: The cut-offs of ``online_hit_at_10`` and ``online_hit_at_50``.
HIT_SHORT, HIT_LONG = 10, 50


class OnlineCheck(NamedTuple):
    """What one batch's check found: events checked, hits in the first ``short`` / in the whole kept list,
    and each checked event's list age (ms, int64)."""

    checked: int
    hits_short: int
    hits_long: int
    ages_ms: np.ndarray


class CachedLists:
    """The last top-N list written for each user, as item indices (``-1`` pads a shorter list).

    A slot per user in one growing ``(slots, depth)`` int32 array; slots of forgotten users
    are reused.
    """

    def __init__(self, depth: int = HIT_LONG) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.depth = depth
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._items = np.full((0, depth), -1, np.int32)
        self._written_ms = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._slot)

    def remember(self, users: Sequence[str], items: np.ndarray, written_ms: int) -> None:
        """The lists of ``users`` written at ``written_ms``: ``items[r]`` (item indices, best first, ``-1``
        padded) is user ``r``'s; columns past ``depth`` are not kept."""
        n = len(users)
        if n == 0:
            return
        items = np.asarray(items)
        if items.ndim != 2 or items.shape[0] != n:
            raise ValueError(f"items must be one row per user, got shape {items.shape} for {n} users")
        slots = np.fromiter(map(self._slot_of, users), np.int64, n)
        width = min(items.shape[1], self.depth)
        self._items[slots, :width] = items[:, :width]
        if width < self.depth:
            self._items[slots, width:] = -1
        self._written_ms[slots] = written_ms

    def check(self, users: Sequence[str], items: Sequence[str] | np.ndarray, ts_ms: np.ndarray, *,
              item_index: Callable[[Sequence[str]], np.ndarray] | None = None, short: int = HIT_SHORT) -> OnlineCheck:
        """Check events (``users[r]`` engaged ``items[r]`` at ``ts_ms[r]``) against the cached lists.

        ``items`` are item indices (``-1``: an item not known yet, never a hit), or ids that
        ``item_index`` maps to indices (only those of the events checked are looked up)."""
        get, n = self._slot.get, len(users)
        if not self._slot or n == 0:
            return OnlineCheck(0, 0, 0, np.zeros(0, np.int64))
        slots = np.fromiter(map(get, users, repeat(-1)), np.int64, n)
        rows = np.flatnonzero(slots >= 0)
        if rows.size == 0:
            return OnlineCheck(0, 0, 0, np.zeros(0, np.int64))
        every = rows.size == n
        if item_index is not None:
            ids = cast("Sequence[str]", items)
            item = np.asarray(item_index(ids if every else [ids[r] for r in rows.tolist()]), np.int64)
        else:
            item = np.asarray(items, np.int64) if every else np.asarray(items, np.int64)[rows]
        ts_ms = np.asarray(ts_ms, np.int64) if every else np.asarray(ts_ms, np.int64)[rows]
        if not every:
            slots = slots[rows]
        equal = self._items[slots] == item[:, None]
        equal &= (item >= 0)[:, None]  # an unknown item matches no -1 padding
        ages = np.maximum(ts_ms - self._written_ms[slots], 0)
        return OnlineCheck(int(rows.size), int(equal[:, :short].any(1).sum()), int(equal.any(1).sum()), ages)

    def forget(self, users: Iterable[str]) -> int:
        """Drop the lists of ``users`` (their partitions went to another worker); returns how many."""
        dropped = 0
        for user in users:
            slot = self._slot.pop(user, None)
            if slot is not None:
                self._free.append(slot)
                dropped += 1
        return dropped

    def users(self) -> list[str]:
        """The users with a cached list."""
        return list(self._slot)

    def _slot_of(self, user: str) -> int:
        slot = self._slot.get(user)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._slot)
                if slot >= len(self._written_ms):
                    self._grow(max(1024, 2 * len(self._written_ms)))
            self._slot[user] = slot
        return slot

    def _grow(self, capacity: int) -> None:
        items = np.full((capacity, self.depth), -1, np.int32)
        items[: len(self._items)] = self._items
        written = np.zeros(capacity, np.int64)
        written[: len(self._written_ms)] = self._written_ms
        self._items, self._written_ms = items, written
