"""Item tags: which items carry which tags, and where a new tagged item starts.

A new item's factors start as small noise (:func:`models._common.id_normals`), so
it ranks by chance until someone engages it. An item that arrives with tags
starts instead at its tags' *prior* plus that noise: for each of its tags that has
items, the mean factor vector and mean bias of that tag's newest :data:`PRIOR_ITEMS`
items; then the mean over those tags (unknown or empty tags are ignored). It then
ranks with the items it resembles from its first appearance. The prior is computed
before any of the new items joins a tag, so a batch of new items gets the same
priors in any order.

:class:`TagIndex` is the index both ways (item to tags, tag to items, by dense
index); :class:`~models.BPRMF` and :class:`~models.Popularity` keep one each.
The functions take the index and the model's item factors ``V`` and biases ``b``.

>>> import numpy as np
>>> index = TagIndex()
>>> V = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 0.0]], np.float32)
>>> b = np.array([1.0, 3.0, 0.0], np.float32)
>>> set_tags(index, V, b, np.array([0, 1]), [("rock",), ("rock",)], fresh=2)
>>> tag_prior(index, V, b, ("rock", "unknown"))
(array([2., 0.], dtype=float32), 2.0)
>>> set_tags(index, V, b, np.array([2]), [("rock", "pop")], fresh=2)  # item 2 is new: it starts at the prior
>>> V[2].tolist(), float(b[2]), index.names(2)
([2.0, 0.0], 2.0, ('rock', 'pop'))
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._common import tag_tuple
from .idmap import IdMap

__all__ = ["PRIOR_ITEMS", "TagIndex", "add_priors", "register_tags", "set_tags", "tag_prior"]

#: A new item's tag prior averages at most this many of each tag's newest items.
PRIOR_ITEMS = 256
#: Tags per item kept as an array (:attr:`TagIndex.first_tags`) for vectorised lookups.
FIRST_TAGS = 2


def _first_tags(tags: tuple[int, ...]) -> tuple[int, ...]:
    """The first :data:`FIRST_TAGS` of ``tags``, padded with -1: a row of :attr:`TagIndex.first_tags`."""
    return (tags + (-1,) * FIRST_TAGS)[:FIRST_TAGS]


class TagIndex:
    """Which tags each item carries and which items carry each tag, by dense index.

    Items are the owning model's item indices. A tag's members are kept in
    ascending item index, i.e. oldest item first, so "the most recent members"
    are the last ones. Serialises to the tag vocabulary plus two ``int64``
    arrays in CSR layout (``ptr``, ``idx``).
    """

    __slots__ = ("vocab", "item_tags", "members", "tagged", "first_tags")

    def __init__(self) -> None:
        self.vocab = IdMap()
        self.item_tags: list[tuple[int, ...]] = []  # per item index; () = untagged
        self.members: list[list[int]] = []  # per tag index, ascending item indices
        self.tagged = np.zeros(0, bool)  # per item index, a vectorised view of bool(item_tags[i])
        self.first_tags = np.full((0, FIRST_TAGS), -1, np.int32)  # per item index, its first tags (-1: none)

    def grow(self, n_items: int) -> None:
        """Make room for items ``0 .. n_items - 1`` (new ones untagged)."""
        if len(self.item_tags) < n_items:
            self.item_tags.extend([()] * (n_items - len(self.item_tags)))
        if len(self.tagged) < n_items:
            t = np.zeros(max(n_items, 2 * len(self.tagged), 16), bool)
            t[: len(self.tagged)] = self.tagged
            self.tagged = t
            f = np.full((len(t), FIRST_TAGS), -1, np.int32)
            f[: len(self.first_tags)] = self.first_tags
            self.first_tags = f

    def set(self, item: int, tags: tuple[str, ...]) -> None:
        """Replace the tags of ``item`` (``()`` untags it)."""
        self.grow(item + 1)
        for t in self.item_tags[item]:
            mem = self.members[t]
            del mem[bisect.bisect_left(mem, item)]
        idx = tuple(self.vocab.index(list(tags)).tolist()) if tags else ()
        self.members.extend([] for _ in range(len(self.vocab) - len(self.members)))
        for t in idx:
            mem = self.members[t]
            if not mem or mem[-1] < item:
                mem.append(item)
            else:
                bisect.insort(mem, item)
        self.item_tags[item] = idx
        self.tagged[item] = bool(idx)
        self.first_tags[item] = _first_tags(idx)

    def pending(self, items: np.ndarray, tags: Sequence[Iterable[str] | None]) -> dict[int, tuple[str, ...]]:
        """For each untagged item of ``items``, the first non-empty entry of ``tags`` (aligned with ``items``)."""
        out: dict[int, tuple[str, ...]] = {}
        events = np.flatnonzero(~self.tagged[items])
        for e, x in zip(events.tolist(), items[events].tolist()):
            if x not in out:
                t = tags[e]
                if t:
                    if not (type(t) is tuple and len(t) == 1 and type(t[0]) is str):
                        t = tag_tuple(t)  # checks and de-duplicates
                    out[x] = t
        return out

    def set_untagged(self, new: dict[int, tuple[str, ...]]) -> None:
        """:meth:`set` for many *untagged* items at once (e.g. the output of :meth:`pending`), in dict order."""
        if not new:
            return
        items = list(new)
        self.grow(max(items) + 1)
        flat = [t for tags in new.values() for t in tags]
        idx = self.vocab.index(flat).tolist()  # new tags get indices in the order set() would give them
        self.members.extend([] for _ in range(len(self.vocab) - len(self.members)))
        per_tag: dict[int, list[int]] = {}
        pos = 0
        item_tags = self.item_tags
        for x, tags in zip(items, new.values()):
            row = tuple(idx[pos : pos + len(tags)])
            pos += len(tags)
            item_tags[x] = row
            self.first_tags[x] = _first_tags(row)
            for t in row:
                per_tag.setdefault(t, []).append(x)
        for t, xs in per_tag.items():
            xs.sort()
            mem = self.members[t]
            if not mem or mem[-1] < xs[0]:
                mem.extend(xs)
            else:
                mem.extend(xs)
                mem.sort()
        self.tagged[np.array(items, dtype=np.int64)] = True

    def recent_members(self, tags: Iterable[str], limit: int) -> list[np.ndarray]:
        """Per known tag of ``tags`` that has members: its ``limit`` newest member indices."""
        out = []
        for name in tags:
            t = self.vocab.get(name)
            if t is not None and self.members[t]:
                out.append(np.array(self.members[t][-limit:], dtype=np.int64))
        return out

    def names(self, item: int | None) -> tuple[str, ...]:
        """The tags of item index ``item`` (``()`` for ``None``, an index past the end or an untagged item)."""
        if item is None or item >= len(self.item_tags):
            return ()
        ids = self.vocab._ids
        return tuple(ids[t] for t in self.item_tags[item])

    def to_arrays(self, n_items: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        self.grow(n_items)
        rows = self.item_tags[:n_items]
        ptr = np.zeros(n_items + 1, np.int64)
        ptr[1:] = np.cumsum([len(r) for r in rows])
        idx = np.fromiter((t for r in rows for t in r), np.int64, int(ptr[-1]))
        return self.vocab.to_list(), ptr, idx

    @classmethod
    def from_arrays(cls, vocab: list[str], ptr: np.ndarray, idx: np.ndarray, n_items: int) -> TagIndex:
        """Inverse of :meth:`to_arrays`; raises ``ValueError`` on inconsistent arrays."""
        out = cls()
        out.vocab = IdMap.from_list(vocab)
        out.members = [[] for _ in range(len(out.vocab))]
        if ptr.shape != (n_items + 1,) or ptr[0] != 0 or ptr[-1] != len(idx) or (np.diff(ptr) < 0).any():
            raise ValueError("tag arrays do not match the items")
        if len(idx) and not (idx.min() >= 0 and idx.max() < len(out.vocab)):
            raise ValueError("tag index out of range")
        p, x = ptr.tolist(), idx.tolist()
        out.item_tags = [tuple(x[p[r] : p[r + 1]]) for r in range(n_items)]
        out.grow(n_items)
        for item, row in enumerate(out.item_tags):
            for t in row:
                out.members[t].append(item)
            out.tagged[item] = bool(row)
            out.first_tags[item] = _first_tags(row)
        return out


def tag_prior(index: TagIndex, V: np.ndarray, b: np.ndarray, tags: Iterable[str]) -> tuple[np.ndarray, float]:
    """The prior of an item with ``tags``: factor vector ``(k,)`` and bias (zeros with no known tag)."""
    groups = index.recent_members(tags, PRIOR_ITEMS)
    if not groups:
        return np.zeros(V.shape[1], V.dtype), 0.0
    vec = np.mean([V[g].mean(0) for g in groups], axis=0).astype(V.dtype)
    return vec, float(np.mean([b[g].mean() for g in groups]))


def add_priors(index: TagIndex, V: np.ndarray, b: np.ndarray, wanted: dict[int, tuple[str, ...]]) -> None:
    """Add to each new item ``x`` of ``wanted`` its tags' prior (:func:`tag_prior`), in place, vectorised.

    The item's bias is set to the prior's (a new item's bias is 0). Each tag's mean is computed
    once, then each item averages the means of its known tags (items are grouped by how many known
    tags they have). Same arithmetic as :func:`tag_prior`.
    """
    vocab, members = index.vocab, index.members
    means: dict[str, tuple[np.ndarray, np.floating[Any]] | None] = {}
    groups: dict[int, tuple[list[int], list[tuple[np.ndarray, ...]], list[tuple[np.floating[Any], ...]]]] = {}
    for x, tags in wanted.items():
        vecs, biases = [], []
        for name in tags:
            if name not in means:
                t = vocab.get(name)
                if t is None or not members[t]:
                    means[name] = None
                else:
                    g = np.array(members[t][-PRIOR_ITEMS:], dtype=np.int64)
                    means[name] = (V[g].mean(0), b[g].mean())
            m = means[name]
            if m is not None:
                vecs.append(m[0])
                biases.append(m[1])
        if vecs:
            xs, vs, bs = groups.setdefault(len(vecs), ([], [], []))
            xs.append(x)
            vs.append(tuple(vecs))
            bs.append(tuple(biases))
    for xs, vs, bs in groups.values():
        rows = np.array(xs, dtype=np.int64)
        V[rows] += np.array(vs, dtype=V.dtype).mean(axis=1).astype(V.dtype)
        b[rows] = np.array(bs, dtype=V.dtype).mean(axis=1)


def register_tags(
    index: TagIndex,
    V: np.ndarray,
    b: np.ndarray,
    items: np.ndarray,
    tags: Sequence[Iterable[str] | None],
    fresh: int,
    priors: bool = True,
) -> None:
    """Tag the untagged items among ``items`` (aligned with ``tags``; the first non-empty tags of each win).

    How events tag items. Items with index >= ``fresh`` are new: with ``priors`` they start at their
    tags' prior (:func:`add_priors`), computed before any of them joins a tag.
    """
    new = index.pending(items, tags)
    if not new:
        return
    if priors:
        add_priors(index, V, b, {x: t for x, t in new.items() if x >= fresh})
    index.set_untagged(new)


def set_tags(
    index: TagIndex,
    V: np.ndarray,
    b: np.ndarray,
    items: np.ndarray,
    tags: Sequence[tuple[str, ...]],
    fresh: int,
    priors: bool = True,
) -> None:
    """Set (replace) the tags of ``items`` (``tags[r]``, checked tuples, belongs to ``items[r]``; ``()`` untags).

    Items with index >= ``fresh`` are new: with ``priors`` they start at their tags' prior
    (:func:`add_priors`), computed before any of them joins a tag.
    """
    rows = items.tolist()
    if priors:
        add_priors(index, V, b, {x: t for x, t in zip(rows, tags) if x >= fresh and t})
    for x, t in zip(rows, tags):
        index.set(x, t)
