"""Unit tests for the synthetic short-video traffic generator."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from typing import Any

import pytest

from streams.tools.synthetic import (
    BAD_KIND,
    EMPTY,
    KEY_MISMATCH,
    KINDS,
    MALFORMED_CASE_COUNT,
    MALFORMED_REASONS,
    MAX_EVENT_ID_LEN,
    MAX_ID_LEN,
    MAX_TAG_LEN,
    MAX_TAGS,
    MAX_TS,
    MAX_VALUE_BYTES,
    MISSING_FIELD,
    NOT_JSON,
    NOT_OBJECT,
    OUT_OF_RANGE,
    REQUIRED_FIELDS,
    TOO_LARGE,
    TOO_LONG,
    WRONG_TYPE,
    SyntheticWorld,
    WorldConfig,
    community_names,
    malformed_payloads,
)

SMALL = WorldConfig(users=500, items=300, creators=40, seed=7)


def _reject_constant(literal: str) -> None:
    raise ValueError(f"non-standard JSON literal {literal}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def violation(key: bytes | None, value: bytes) -> str | None:
    """A local reference checker of the event contract: the reason, or None if valid."""
    if not value:
        return EMPTY
    if len(value) > MAX_VALUE_BYTES:
        return TOO_LARGE
    try:
        event: Any = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return NOT_JSON
    if not isinstance(event, dict):
        return NOT_OBJECT
    if any(event.get(field) is None for field in REQUIRED_FIELDS):
        return MISSING_FIELD
    strings = ["event_id", "user_id", "item_id", "kind"] + (["creator_id"] if "creator_id" in event else [])
    if not all(isinstance(event[f], str) for f in strings) or not _is_int(event["ts"]):
        return WRONG_TYPE
    if "watch_ms" in event and not _is_int(event["watch_ms"]):
        return WRONG_TYPE
    tags = event.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return WRONG_TYPE
    if event["kind"] not in KINDS:
        return BAD_KIND
    if (
        len(event["event_id"]) > MAX_EVENT_ID_LEN
        or any(len(event[f]) > MAX_ID_LEN for f in ("user_id", "item_id", "creator_id") if f in event)
        or len(tags) > MAX_TAGS
        or any(len(t) > MAX_TAG_LEN for t in tags)
    ):
        return TOO_LONG
    if not all(0 <= event.get(f, 0) < MAX_TS for f in ("ts", "watch_ms")):
        return OUT_OF_RANGE
    if not all(event[f] for f in ("event_id", "user_id", "item_id")) or event.get("creator_id") == "":
        return OUT_OF_RANGE
    if key != event["user_id"].encode():
        return KEY_MISMATCH
    return None


def check_event(event: dict[str, Any]) -> str | None:
    return violation(event["user_id"].encode(), json.dumps(event).encode())


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(seed=42))


@pytest.fixture(scope="module")
def stream(world: SyntheticWorld) -> list[dict[str, Any]]:
    return list(world.events(200_000, start_ms=1_700_000_000_000))


@pytest.fixture(scope="module")
def views(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in stream if e["kind"] == "view"]


@pytest.fixture(scope="module")
def top3(world: SyntheticWorld) -> dict[str, list[str]]:
    return {user: world.user_top_communities(user, 3) for user in world.user_ids}


def test_same_seed_same_events_and_prefix_stable() -> None:
    first = list(SyntheticWorld(SMALL).events(5_000, start_ms=0))
    assert first == list(SyntheticWorld(SMALL).events(5_000, start_ms=0))
    assert first[:100] == list(SyntheticWorld(SMALL).events(100, start_ms=0))
    other = list(SyntheticWorld(WorldConfig(users=500, items=300, creators=40, seed=8)).events(5_000, start_ms=0))
    assert [e["item_id"] for e in first] != [e["item_id"] for e in other]


def test_world_structure_is_deterministic_and_readable() -> None:
    a, b = SyntheticWorld(SMALL), SyntheticWorld(SMALL)
    assert a.user_ids[42] == "u00042" and a.item_ids[123] == "i00123" and a.creator_ids[12] == "c0012"
    assert [a.item_tags(i) for i in a.item_ids] == [b.item_tags(i) for i in b.item_ids]
    for item in a.item_ids:
        assert 1 <= len(a.item_tags(item)) <= 3
        assert a.item_tags(item)[0] in a.creator_communities(a.item_creator(item))
        assert all(item in a.community_items(tag) for tag in a.item_tags(item))
    assert all(1 <= len(a.creator_communities(c)) <= 2 for c in a.creator_ids)
    assert community_names(26)[:3] == ["dance", "cooking", "gaming"]
    assert community_names(26)[-2:] == ["topic-25", "topic-26"]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4_096, 10_001])
def test_exactly_n_events(n: int) -> None:
    assert sum(1 for _ in SyntheticWorld(SMALL).events(n, start_ms=0)) == n


def test_every_event_satisfies_the_contract(world: SyntheticWorld, stream: list[dict[str, Any]]) -> None:
    for event in stream[:20_000]:
        assert check_event(event) is None, event
        assert event["tags"] == world.item_tags(event["item_id"])
        assert event["creator_id"] == world.item_creator(event["item_id"])
        assert ("watch_ms" in event) == (event["kind"] == "view")
    assert len({e["event_id"] for e in stream}) == len(stream)
    assert stream[0]["ts"] == 1_700_000_000_000
    assert all(a["ts"] < b["ts"] for a, b in pairwise(stream))


def test_event_ids_unique_across_calls_and_tiny_worlds() -> None:
    tiny = SyntheticWorld(WorldConfig(users=3, items=2, creators=1, communities=30, seed=1))
    events = list(tiny.events(50, start_ms=0))
    events += tiny.engage("someone-else", tiny.item_tags("i00000")[0], n_items=5, start_ms=0)
    events += list(tiny.events(50))
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(check_event(e) is None for e in events)


def test_rate_gives_deterministic_timestamps() -> None:
    events = list(SyntheticWorld(SMALL).events(9_000, start_ms=1_000, rate_per_s=300.0))
    assert [e["ts"] for e in events] == [1_000 + (i * 1000) // 300 for i in range(9_000)]


def test_funnel_view_then_like_then_share(stream: list[dict[str, Any]]) -> None:
    viewed: set[tuple[str, str]] = set()
    liked: set[tuple[str, str]] = set()
    for event in stream:
        pair = (event["user_id"], event["item_id"])
        if event["kind"] == "view":
            viewed.add(pair)
        elif event["kind"] == "like":
            assert pair in viewed
            liked.add(pair)
        else:
            assert pair in liked


def test_popularity_is_skewed(world: SyntheticWorld, views: list[dict[str, Any]]) -> None:
    counts = Counter(e["item_id"] for e in views)
    top_1pct = sum(c for _, c in counts.most_common(len(world.item_ids) // 100))
    assert top_1pct / len(views) > 0.3


def test_views_concentrate_on_user_top_communities(views: list[dict[str, Any]], top3: dict[str, list[str]]) -> None:
    on_top = sum(not set(e["tags"]).isdisjoint(top3[e["user_id"]]) for e in views)
    assert on_top / len(views) > 0.75


def test_like_and_share_rates_are_realistic(stream: list[dict[str, Any]]) -> None:
    kinds = Counter(e["kind"] for e in stream)
    assert 0.05 <= kinds["like"] / kinds["view"] <= 0.10
    assert 0.01 <= kinds["share"] / kinds["view"] <= 0.02


def test_fans_watch_longer_and_like_more(
    world: SyntheticWorld, stream: list[dict[str, Any]], top3: dict[str, list[str]]
) -> None:
    """Fans (item in the user's favourite community) vs strangers (outside the top 3)."""
    watched: dict[bool, list[float]] = {True: [], False: []}
    likes: Counter[bool] = Counter()
    for e in stream:
        top = top3[e["user_id"]]
        fan = top[0] in e["tags"]
        if not fan and not set(e["tags"]).isdisjoint(top):
            continue
        if e["kind"] == "view":
            watched[fan].append(e["watch_ms"] / world.item_duration_ms(e["item_id"]))
        elif e["kind"] == "like":
            likes[fan] += 1
    fan_watch, stranger_watch = (sum(w) / len(w) for w in (watched[True], watched[False]))
    assert fan_watch > 0.7 and stranger_watch < 0.35
    assert likes[True] / len(watched[True]) > 3 * likes[False] / len(watched[False])


def test_engage_is_deterministic_and_on_topic() -> None:
    a, b = SyntheticWorld(SMALL), SyntheticWorld(SMALL)
    tag = max(a.communities, key=lambda t: len(a.community_items(t)))
    events = a.engage("u00003", tag, n_items=4, start_ms=5_000)
    assert events == b.engage("u00003", tag, n_items=4, start_ms=5_000)
    assert [e["kind"] for e in events] == list(KINDS) * 4
    assert len({e["item_id"] for e in events}) == 4
    assert all(tag in e["tags"] and check_event(e) is None for e in events)
    assert all(x["ts"] < y["ts"] for x, y in pairwise(events))
    assert len(a.engage("u00003", tag, n_items=10**6, start_ms=0)) == 3 * len(a.community_items(tag))


def test_malformed_payloads_cover_every_reason_and_are_invalid() -> None:
    payloads = malformed_payloads(3 * MALFORMED_CASE_COUNT, seed=3)
    assert len(payloads) == 3 * MALFORMED_CASE_COUNT
    assert {reason for _, _, reason in payloads[: len(MALFORMED_REASONS)]} == set(MALFORMED_REASONS)
    for key, value, reason in payloads:
        assert violation(key, value) == reason, (key, value[:200], reason)
    assert malformed_payloads(40, seed=3) == payloads[:40]
    assert malformed_payloads(40, seed=4) != payloads[:40]


def test_payloads_and_events_agree_with_the_service_validator(stream: list[dict[str, Any]]) -> None:
    """Cross-check with streams.events (the real dead-letter validator) when it is importable."""
    events_module = pytest.importorskip("streams.events")
    for key, value, reason in malformed_payloads(2 * MALFORMED_CASE_COUNT, seed=5):
        with pytest.raises(events_module.InvalidEvent) as caught:
            events_module.decode_event(key, value)
        assert caught.value.reason == reason, (key, value[:200])
    for event in stream[:2_000]:
        events_module.decode_event(event["user_id"].encode(), json.dumps(event).encode())


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        WorldConfig(users=0)
    with pytest.raises(ValueError):
        WorldConfig(like_rate=0.01, share_rate=0.02)
    with pytest.raises(ValueError):
        next(SyntheticWorld(SMALL).events(1, rate_per_s=0))
