"""Seeded synthetic short-video traffic for demos, tests and benchmarks.

One file: the world's traffic and the malformed payloads are the two halves of test traffic, what
the event contract accepts and what it must reject, restating the same limits.

A :class:`SyntheticWorld` holds creators, items, users and communities (topic
tags) and emits events in the streamrec event contract::

    event_id  str <= 64, unique      user_id / item_id  str <= 128
    kind      "view"|"like"|"share"  ts                 int, ms since epoch
    watch_ms  int >= 0 (views only)  creator_id         str <= 128
    tags      list of <= 32 str, each <= 64 chars (the item's communities)
    (ts and watch_ms also stay below 2**53)

The world:

* creators belong to 1-2 communities; community sizes are mildly Zipf-skewed;
* items are made by creators (some creators are prolific) and carry 1-3 tags:
  a main tag from their creator's communities, sometimes the creator's other
  community, sometimes a cross-over community; every item has a Zipf-like
  popularity and a log-normal duration (median 20 s, 3 s to 3 min);
* users have Zipf-like activity and a sparse Dirichlet taste over communities
  (most users love 1-3 communities).

A session is one user watching one item: the community comes from the user's
taste (``explore_rate`` of sessions are "trending": any item by global
popularity), the item from that community by popularity. The funnel is
view -> like -> share on the same item; affinity (the user's taste for the
item's best tag, relative to their favourite) drives how much of the video is
watched and how likely a like/share is. Like and share probabilities are
calibrated so that likes/views ~= ``like_rate`` and shares/views ~=
``share_rate``.

``malformed_payloads`` returns Kafka (key, value) pairs that break the
contract, each labelled with one of the reason categories in
``MALFORMED_REASONS``:

=============  =================================================================
empty          the value has zero bytes
not_json       value is not strict UTF-8 JSON text: garbage, truncated,
               single quotes, NaN/Infinity literals, invalid UTF-8 bytes
not_object     valid JSON but not an object (array, number, string, null)
missing_field  a required field (event_id, user_id, item_id, kind, ts) is absent
               (``null`` counts as absent)
wrong_type     a field has the wrong JSON type (ts as string/float/bool,
               user_id as number, tags as string, ...); bools are not ints
bad_kind       ``kind`` is a string but not one of view/like/share
out_of_range   negative watch_ms, ts outside [0, 2**53), an empty id
too_long       a string or list longer than allowed (event_id > 64, ids > 128,
               > 32 tags, a tag > 64 chars)
too_large      the raw value exceeds 64 KiB (checked before parsing)
key_mismatch   the Kafka key of a valid event is missing, not UTF-8, or not
               its ``user_id``
=============  =================================================================

The categories and limits mirror ``streams.events`` (the validator), restated
here so that this module needs only numpy and the standard library.

Example:

>>> world = SyntheticWorld(WorldConfig(users=100, items=50, seed=1))
>>> world.user_ids[:2], world.item_ids[0], world.creator_ids[0]
(('u00000', 'u00001'), 'i00000', 'c0000')
>>> ev = next(world.events(1, start_ms=0))
>>> sorted(ev)
['creator_id', 'event_id', 'item_id', 'kind', 'tags', 'ts', 'user_id', 'watch_ms']
>>> ev["kind"], ev["ts"], ev["tags"] == world.item_tags(ev["item_id"])
('view', 0, True)
>>> fav = world.user_top_communities("u00007", 1)[0]
>>> [e["kind"] for e in world.engage("u00007", fav, n_items=2, start_ms=0)]
['view', 'like', 'share', 'view', 'like', 'share']
>>> [reason for _key, _value, reason in malformed_payloads(3)]
['not_json', 'not_object', 'missing_field']
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.events import KINDS, MAX_TAGS, MAX_TS
from streams.events import MAX_EVENT_ID as MAX_EVENT_ID_LEN
from streams.events import MAX_ID as MAX_ID_LEN
from streams.events import MAX_MESSAGE_BYTES as MAX_VALUE_BYTES
from streams.events import MAX_TAG as MAX_TAG_LEN

__all__ = [
    "BAD_KIND",
    "COMMUNITY_NAMES",
    "EMPTY",
    "KEY_MISMATCH",
    "KINDS",
    "MALFORMED_CASE_COUNT",
    "MALFORMED_REASONS",
    "MAX_EVENT_ID_LEN",
    "MAX_ID_LEN",
    "MAX_TAGS",
    "MAX_TAG_LEN",
    "MAX_TS",
    "MAX_VALUE_BYTES",
    "MISSING_FIELD",
    "NOT_JSON",
    "NOT_OBJECT",
    "OUT_OF_RANGE",
    "REQUIRED_FIELDS",
    "TOO_LARGE",
    "TOO_LONG",
    "WRONG_TYPE",
    "SyntheticWorld",
    "WorldConfig",
    "community_names",
    "malformed_payloads",
]

# --- the event contract -----------------------------------------------------
REQUIRED_FIELDS = ("event_id", "user_id", "item_id", "kind", "ts")

# --- dead-letter reason categories (see the module docstring) ----------------
EMPTY = "empty"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
BAD_KIND = "bad_kind"
OUT_OF_RANGE = "out_of_range"
TOO_LONG = "too_long"
TOO_LARGE = "too_large"
KEY_MISMATCH = "key_mismatch"
MALFORMED_REASONS = (
    NOT_JSON, NOT_OBJECT, MISSING_FIELD, WRONG_TYPE, BAD_KIND,
    OUT_OF_RANGE, TOO_LONG, TOO_LARGE, EMPTY, KEY_MISMATCH,
)

COMMUNITY_NAMES = (
    "dance", "cooking", "gaming", "pets", "comedy", "diy", "fitness", "beauty",
    "fashion", "music", "travel", "sports", "science", "tech", "art", "books",
    "cars", "gardening", "parenting", "finance", "movies", "education",
    "nature", "asmr",
)

_CHUNK = 4096  # sessions drawn per vectorised batch
_FUNNEL_AFFINITY_FLOOR = 0.05  # like/share propensity of a zero-affinity view


def community_names(n: int) -> list[str]:
    """Readable tag names: the built-in list, then ``topic-25``, ``topic-26``..."""
    return [COMMUNITY_NAMES[k] if k < len(COMMUNITY_NAMES) else f"topic-{k + 1}" for k in range(n)]


@dataclass(frozen=True)
class WorldConfig:
    """Shape of a synthetic world. All randomness derives from ``seed``."""

    users: int = 10_000
    items: int = 5_000
    creators: int = 500
    communities: int = 24
    item_zipf: float = 1.1  # popularity exponent over items
    user_zipf: float = 0.6  # activity exponent over users
    like_rate: float = 0.07  # likes per view
    share_rate: float = 0.015  # shares per view
    explore_rate: float = 0.10  # sessions drawn from global trending
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("users", "items", "creators", "communities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.item_zipf < 0 or self.user_zipf < 0:
            raise ValueError("zipf exponents must be >= 0")
        if not 0 <= self.share_rate <= self.like_rate <= 1:
            raise ValueError("need 0 <= share_rate <= like_rate <= 1")
        if not 0 <= self.explore_rate <= 1:
            raise ValueError("explore_rate must be in [0, 1]")
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed must be in [0, 2**63)")


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised weights 1/rank**exponent, ranks randomly assigned."""
    weights: np.ndarray = 1.0 / np.arange(1, n + 1) ** exponent
    shuffled: np.ndarray = rng.permutation(weights) / weights.sum()
    return shuffled


def _ids(prefix: str, n: int, min_width: int) -> tuple[str, ...]:
    width = max(min_width, len(str(n - 1)))
    return tuple(f"{prefix}{k:0{width}d}" for k in range(n))


class SyntheticWorld:
    """Creators, items, users and their tastes; a seeded source of events."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = cfg = config or WorldConfig()
        rng = np.random.default_rng([cfg.seed, 3])
        n_comm = cfg.communities
        self.communities: tuple[str, ...] = tuple(community_names(n_comm))
        self.user_ids = _ids("u", cfg.users, 5)
        self.item_ids = _ids("i", cfg.items, 5)
        self.creator_ids = _ids("c", cfg.creators, 4)
        self._community_index = {name: k for k, name in enumerate(self.communities)}
        self._user_index = {uid: k for k, uid in enumerate(self.user_ids)}
        self._item_index = {iid: k for k, iid in enumerate(self.item_ids)}
        self._creator_index = {cid: k for k, cid in enumerate(self.creator_ids)}
        self._seq = 0  # next event sequence number (event ids are unique per world)

        # Creators: a primary community, half of them a second one.
        community_weight = _zipf_weights(n_comm, 0.7, rng)
        primary = rng.choice(n_comm, cfg.creators, p=community_weight)
        secondary = rng.choice(n_comm, cfg.creators, p=community_weight)
        has_second = (rng.random(cfg.creators) < 0.5) & (secondary != primary)
        self._creator_comms = [
            (int(p), int(s)) if two else (int(p),)
            for p, s, two in zip(primary, secondary, has_second)
        ]

        # Items: creator, 1-3 tags, popularity, duration.
        self._item_creator = rng.choice(cfg.creators, cfg.items, p=_zipf_weights(cfg.creators, 0.8, rng))
        main_pick = rng.integers(0, 2, cfg.items)
        add_other = rng.random(cfg.items) < 0.5
        add_crossover = rng.random(cfg.items) < 0.15
        crossover = rng.choice(n_comm, cfg.items, p=community_weight)
        item_tag_idx = np.full((cfg.items, 3), -1, dtype=np.int64)  # -1 pads (see _taste_norm)
        draws = zip(self._item_creator.tolist(), main_pick.tolist(), add_other.tolist(),
                    add_crossover.tolist(), crossover.tolist())
        for i, (creator, main, other, cross, extra) in enumerate(draws):
            comms = self._creator_comms[creator]
            tags = [comms[main % len(comms)]]
            if len(comms) == 2 and other:
                tags.append(comms[1 - main])
            if cross and extra not in tags:
                tags.append(extra)
            item_tag_idx[i, : len(tags)] = tags
        self._item_tag_idx = item_tag_idx
        self._item_tags = [tuple(self.communities[t] for t in row if t >= 0) for row in item_tag_idx.tolist()]
        self._item_creator_ids: list[str] = [self.creator_ids[c] for c in self._item_creator.tolist()]
        self._popularity = _zipf_weights(cfg.items, cfg.item_zipf, rng)
        self._item_cdf = np.cumsum(self._popularity)
        self._duration_ms = np.clip(rng.lognormal(np.log(20_000), 0.8, cfg.items), 3_000, 180_000).astype(np.int64)

        # Community blocks: items of community c (by popularity, descending) laid
        # out contiguously; _block_cdf holds c + within-community cumulative weight
        # so one searchsorted on (c + u) samples an item of community c.
        members: list[np.ndarray] = []
        cdfs: list[np.ndarray] = []
        for c in range(n_comm):
            items = np.flatnonzero((item_tag_idx == c).any(axis=1))
            items = items[np.argsort(-self._popularity[items], kind="stable")]
            weights = np.cumsum(self._popularity[items])
            members.append(items)
            cdfs.append(c + weights / weights[-1] if len(items) else weights)
        self._block_items = np.concatenate(members)
        self._block_cdf = np.concatenate(cdfs)
        sizes = np.array([len(m) for m in members])
        self._block_end = np.cumsum(sizes)
        self._block_start = self._block_end - sizes
        self._block_size = sizes

        # Users: Zipf activity, sparse Dirichlet taste over non-empty communities
        # with 1-3 favourites (chosen by community popularity via Gumbel top-k).
        self._user_cdf = np.cumsum(_zipf_weights(cfg.users, cfg.user_zipf, rng))
        n_fav = rng.choice([1, 2, 3], cfg.users, p=[0.4, 0.35, 0.25])
        nonempty = sizes > 0
        log_weight = np.where(nonempty, np.log(community_weight), -np.inf)
        keys = log_weight + rng.gumbel(size=(cfg.users, n_comm))
        rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
        alpha = np.where(rank < n_fav[:, None], 2.0, 0.02)
        taste = rng.gamma(alpha) * nonempty
        taste /= taste.sum(axis=1, keepdims=True)
        self._taste = taste
        self._taste_cdf = np.cumsum(taste, axis=1)
        # Affinity lookup: taste relative to the user's favourite; column -1 is 0.
        self._taste_norm = np.hstack([taste / taste.max(axis=1, keepdims=True), np.zeros((cfg.users, 1))])

        # Calibrate funnel probabilities so likes/views and shares/views hit the rates.
        _users, _items, affinity, watched = self._draw_sessions(np.random.default_rng([cfg.seed, 1]), 20_000)
        propensity = _FUNNEL_AFFINITY_FLOOR + affinity * watched
        self._like_scale = cfg.like_rate / propensity.mean()
        self._share_scale = cfg.share_rate / (self._like_scale * (propensity**2).mean())

    # --- lookups ------------------------------------------------------------
    def item_tags(self, item_id: str) -> list[str]:
        return list(self._item_tags[self._item_index[item_id]])

    def item_creator(self, item_id: str) -> str:
        return self._item_creator_ids[self._item_index[item_id]]

    def item_duration_ms(self, item_id: str) -> int:
        return int(self._duration_ms[self._item_index[item_id]])

    def creator_communities(self, creator_id: str) -> list[str]:
        return [self.communities[c] for c in self._creator_comms[self._creator_index[creator_id]]]

    def user_top_communities(self, user_id: str, n: int = 3) -> list[str]:
        """The user's ``n`` most-loved communities, strongest first."""
        taste = self._taste[self._user_index[user_id]]
        order = np.argsort(-taste, kind="stable")[:n]
        return [self.communities[c] for c in order.tolist() if taste[c] > 0]

    def _community_block(self, tag: str) -> np.ndarray:
        """Item indices of the community ``tag``, most popular first."""
        c = self._community_index[tag]
        return self._block_items[self._block_start[c] : self._block_end[c]]

    def community_items(self, tag: str) -> list[str]:
        """Items carrying ``tag``, most popular first."""
        return [self.item_ids[i] for i in self._community_block(tag).tolist()]

    def binge_next_odds(self, tag: str, seen: Iterable[str], n: int) -> float:
        """The chance that a binge of ``tag`` (:meth:`engage`) picks next one of the ``n`` likeliest items
        not in ``seen``: the best hit rate any list of ``n`` items without ``seen`` can have.

        >>> world = SyntheticWorld(WorldConfig(users=50, items=40, communities=2, seed=0))
        >>> tag = world.communities[0]
        >>> items = world.community_items(tag)
        >>> world.binge_next_odds(tag, [], len(items))
        1.0
        >>> world.binge_next_odds(tag, items[:1], 1) < world.binge_next_odds(tag, [], 1)  # the favourite is gone
        True
        """
        block = self._community_block(tag)
        weights = self._popularity[block].astype(np.float64)
        gone = [self._item_index[i] for i in seen if i in self._item_index]
        weights[np.isin(block, gone)] = 0.0  # engage draws by popularity without replacement
        total = weights.sum()
        return float(np.sort(weights)[::-1][:n].sum() / total) if total > 0 else 0.0

    # --- event generation ---------------------------------------------------
    def _draw_sessions(
        self, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised draw of ``size`` sessions: users, items, affinity, watched fraction."""
        users = np.minimum(np.searchsorted(self._user_cdf, rng.random(size), side="right"), len(self._user_cdf) - 1)
        comm = (self._taste_cdf[users] <= rng.random(size)[:, None]).sum(axis=1)
        comm = np.minimum(comm, len(self.communities) - 1)
        explore = (rng.random(size) < self.config.explore_rate) | (self._block_size[comm] == 0)
        pos = np.searchsorted(self._block_cdf, comm + rng.random(size), side="right")
        pos = np.clip(pos, self._block_start[comm], self._block_end[comm] - 1)  # float round-off guard
        trending = np.minimum(np.searchsorted(self._item_cdf, rng.random(size), side="right"), len(self.item_ids) - 1)
        items = np.where(explore, trending, self._block_items[pos])
        affinity = self._taste_norm[users[:, None], self._item_tag_idx[items]].max(axis=1)
        watched = rng.beta(1 + 6 * affinity, 1 + 5 * (1 - affinity))  # fans watch most, others swipe
        return users, items, affinity, watched

    def events(
        self, n: int, *, start_ms: int | None = None, rate_per_s: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Exactly ``n`` events (the last session's funnel may be cut).

        ``ts`` is ``start_ms + i * 1000 / rate_per_s`` (floored) when a rate is
        given, else ``start_ms`` plus small random increasing gaps; ``start_ms``
        defaults to now. Event ids are ``f"{seed:08x}-{seq:012x}"`` with a
        per-world sequence, so a fresh world with the same seed and the same
        sequence of calls yields identical events, and ids never repeat.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        if rate_per_s is not None and not rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        start = int(time.time() * 1000) if start_ms is None else int(start_ms)
        first_seq, self._seq = self._seq, self._seq + n  # reserve ids now: generation is lazy
        return self._generate(n, first_seq, start, rate_per_s)

    def _generate(self, n: int, first_seq: int, start: int, rate_per_s: float | None) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.config.seed, 0, first_seq])
        prefix = f"{self.config.seed:08x}-"
        user_ids, item_ids, creators, item_tags = self.user_ids, self.item_ids, self._item_creator_ids, self._item_tags
        seq, end_seq, clock = first_seq, first_seq + n, start
        while seq < end_seq:
            users, items, affinity, watched = self._draw_sessions(rng, _CHUNK)
            watch_ms = (watched * self._duration_ms[items]).astype(np.int64)
            propensity = _FUNNEL_AFFINITY_FLOOR + affinity * watched
            liked = rng.random(_CHUNK) < self._like_scale * propensity
            shared = liked & (rng.random(_CHUNK) < self._share_scale * propensity)
            depth = 1 + liked.astype(np.int64) + shared
            n_events = int(depth.sum())
            if rate_per_s is None:
                gaps = rng.integers(1, 40, n_events)
                if seq == first_seq:
                    gaps[0] = 0
                stamps = clock + np.cumsum(gaps)
                clock = int(stamps[-1])
            else:
                index = seq - first_seq + np.arange(n_events)
                stamps = start + np.floor(index * (1000.0 / rate_per_s)).astype(np.int64)
            ts = stamps.tolist()
            k = 0
            for u, i, w, d in zip(users.tolist(), items.tolist(), watch_ms.tolist(), depth.tolist()):
                user, item, creator, tags = user_ids[u], item_ids[i], creators[i], item_tags[i]
                for kind in KINDS[:d]:
                    event = {"event_id": f"{prefix}{seq:012x}", "user_id": user, "item_id": item,
                             "kind": kind, "ts": ts[k], "creator_id": creator, "tags": list(tags)}
                    if kind == "view":
                        event["watch_ms"] = w
                    yield event
                    seq += 1
                    k += 1
                    if seq == end_seq:
                        return

    def engage(self, user_id: str, tag: str, n_items: int, start_ms: int) -> list[dict[str, Any]]:
        """A user fully watching, liking and sharing ``n_items`` items of ``tag``.

        Items are drawn by popularity without replacement (capped at the
        community size), deterministically from (seed, tag, user_id). Returns
        view, like, share per item; ``user_id`` need not belong to the world.
        """
        block = self._community_block(tag)
        n_items = min(n_items, len(block))
        c = self._community_index[tag]
        rng = np.random.default_rng([self.config.seed, 2, c, zlib.crc32(user_id.encode())])
        weights = self._popularity[block] / self._popularity[block].sum()
        picks = rng.choice(block, n_items, replace=False, p=weights).tolist()
        prefix = f"{self.config.seed:08x}-"
        out: list[dict[str, Any]] = []
        t = start_ms
        for i in picks:
            duration = int(self._duration_ms[i])
            for offset, kind in enumerate(KINDS):
                event = {"event_id": f"{prefix}{self._seq:012x}", "user_id": user_id, "item_id": self.item_ids[i],
                         "kind": kind, "ts": t + 1000 * offset, "creator_id": self._item_creator_ids[i],
                         "tags": list(self._item_tags[i])}
                if kind == "view":
                    event["watch_ms"] = duration
                out.append(event)
                self._seq += 1
            t += duration + 3000
        return out


# --- malformed payloads -----------------------------------------------------
_Event = dict[str, Any]
_Case = Callable[[_Event, random.Random], tuple[bytes | None, bytes]]


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _keyed(event: _Event, **changes: Any) -> tuple[bytes | None, bytes]:
    """The event with ``changes`` applied, keyed by its (original) user id."""
    return str(event["user_id"]).encode(), _dump({**event, **changes})


def _with_user(event: _Event, user_id: object) -> tuple[bytes | None, bytes]:
    """The event with another ``user_id``, keyed consistently with it."""
    return str(user_id).encode(), _dump({**event, "user_id": user_id})


def _without(field: str) -> _Case:
    return lambda ev, _rng: (ev["user_id"].encode(), _dump({k: v for k, v in ev.items() if k != field}))


def _invalid_utf8(ev: _Event, _rng: random.Random) -> tuple[bytes | None, bytes]:
    item = ev["item_id"].encode()
    return ev["user_id"].encode(), _dump(ev).replace(item, item[:1] + b"\xff\xfe" + item[1:])


_CASES: dict[str, list[_Case]] = {
    NOT_JSON: [
        lambda ev, _rng: (None, f"{ev['kind']} {ev['user_id']} {ev['item_id']}".encode()),
        lambda ev, _rng: (ev["user_id"].encode(), _dump(ev)[: len(_dump(ev)) // 2]),
        lambda ev, _rng: (ev["user_id"].encode(), repr(ev).encode()),  # single quotes
        lambda ev, _rng: _keyed(ev, watch_ms=float("nan")),
        lambda ev, _rng: _keyed(ev, ts=float("inf")),
        lambda ev, _rng: _keyed(ev, watch_ms=float("-inf")),
        _invalid_utf8,
    ],
    EMPTY: [
        lambda ev, _rng: (ev["user_id"].encode(), b""),
    ],
    NOT_OBJECT: [
        lambda ev, _rng: (ev["user_id"].encode(), _dump([ev])),
        lambda ev, _rng: (None, _dump(ev["ts"])),
        lambda ev, _rng: (None, _dump(ev["kind"])),
        lambda ev, _rng: (None, b"null"),
    ],
    MISSING_FIELD: [_without(field) for field in REQUIRED_FIELDS],
    WRONG_TYPE: [
        lambda ev, _rng: _keyed(ev, ts=str(ev["ts"])),
        lambda ev, _rng: _keyed(ev, ts=ev["ts"] + 0.5),
        lambda ev, _rng: _keyed(ev, ts=True),
        lambda ev, rng: _with_user(ev, rng.randrange(10**6)),
        lambda ev, _rng: _keyed(ev, item_id=[ev["item_id"]]),
        lambda ev, _rng: _keyed(ev, watch_ms=str(ev.get("watch_ms", 0))),
        lambda ev, _rng: _keyed(ev, tags=",".join(ev["tags"])),
        lambda ev, _rng: _keyed(ev, tags=[*ev["tags"], 7]),
    ],
    BAD_KIND: [
        lambda ev, rng: _keyed(ev, kind=rng.choice(["click", "VIEW", "dislike", ""])),
    ],
    OUT_OF_RANGE: [
        lambda ev, rng: _keyed(ev, watch_ms=-rng.randrange(1, 10_000)),
        lambda ev, rng: _keyed(ev, ts=-rng.randrange(1, 10**12)),
        lambda ev, _rng: _keyed(ev, ts=MAX_TS),
        lambda ev, _rng: _keyed(ev, item_id=""),
    ],
    TOO_LONG: [
        lambda ev, _rng: _keyed(ev, tags=[f"topic-{k}" for k in range(MAX_TAGS + 1)]),
        lambda ev, _rng: _keyed(ev, tags=["t" * (MAX_TAG_LEN + 1)]),
        lambda ev, _rng: _keyed(ev, event_id="e" * (MAX_EVENT_ID_LEN + 1)),
        lambda ev, _rng: _with_user(ev, "u" * (MAX_ID_LEN + 1)),
        lambda ev, _rng: _keyed(ev, item_id="i" * (MAX_ID_LEN + 1)),
        lambda ev, _rng: _keyed(ev, creator_id="c" * (MAX_ID_LEN + 1)),
    ],
    TOO_LARGE: [  # otherwise valid JSON padded with whitespace past the limit
        lambda ev, _rng: (ev["user_id"].encode(), _dump(ev) + b" " * MAX_VALUE_BYTES),
    ],
    KEY_MISMATCH: [
        lambda ev, rng: (f"u{rng.randrange(10**5):05d}x".encode(), _dump(ev)),
        lambda ev, _rng: (None, _dump(ev)),
        lambda ev, _rng: (b"\xff" + ev["user_id"].encode(), _dump(ev)),
    ],
}
# Round-robin over reasons: the first len(MALFORMED_REASONS) payloads cover every reason.
_ORDERED_CASES: list[tuple[str, _Case]] = [
    (reason, _CASES[reason][k])
    for k in range(max(len(cases) for cases in _CASES.values()))
    for reason in MALFORMED_REASONS
    if k < len(_CASES[reason])
]
MALFORMED_CASE_COUNT = len(_ORDERED_CASES)


def malformed_payloads(n: int, seed: int = 0) -> list[tuple[bytes | None, bytes, str]]:
    """``n`` (Kafka key, raw value, expected reason) triples that break the contract.

    Each payload has exactly one defect. The cases cycle round-robin over the
    reasons, so ``n >= len(MALFORMED_REASONS)`` covers every reason and
    ``n >= MALFORMED_CASE_COUNT`` covers every case; the underlying valid
    events (ids, kinds, timestamps) vary with ``seed``.
    """
    rng = random.Random(seed)  # noqa: S311 - seeded test data, not a secret
    out: list[tuple[bytes | None, bytes, str]] = []
    for k in range(n):
        event: _Event = {
            "event_id": f"bad-{seed:x}-{k:x}",
            "user_id": f"u{rng.randrange(10**5):05d}",
            "item_id": f"i{rng.randrange(10**5):05d}",
            "kind": rng.choice(KINDS),
            "ts": 1_700_000_000_000 + rng.randrange(10**10),
            "creator_id": f"c{rng.randrange(10**4):04d}",
            "tags": rng.sample(COMMUNITY_NAMES, rng.randint(1, 3)),
        }
        if event["kind"] == "view":
            event["watch_ms"] = rng.randrange(60_000)
        reason, case = _ORDERED_CASES[k % MALFORMED_CASE_COUNT]
        key, value = case(event, rng)
        out.append((key, value, reason))
    return out
