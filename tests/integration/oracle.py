"""The oracle of the fault-injection tests: what a known input stream must leave behind.

For a list of valid events and a list of malformed payloads, exactly:

* every user's engaged-item set, read back from the user-state changelog (last value per key);
* views / likes / shares per item, creator and tag, summed over every window record (all
  revisions) on the metrics topic;
* the malformed payloads, each dead-lettered once per source position (the dead-letter copy
  names its source partition, offset and batch index).

Factors are approximate and not checked here; counts and sets are exact.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from streams.io.kafka import aiokafka_options, assign_all_partitions
from streams.settings import Settings
from streams.state.codecs import decode_user

WINDOW_TYPES = ("item", "creator", "tag")
COLUMNS = {"view": 0, "like": 1, "share": 2}


@dataclass
class Expected:
    engaged: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    counts: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    dead_letters: int = 0
    event_ids: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, events: Iterable[Mapping[str, Any]], malformed: int = 0) -> "Expected":
        expected = cls(dead_letters=malformed)
        seen: set[str] = set()
        for e in events:
            if e["event_id"] in seen:
                continue  # a duplicate: applied once
            seen.add(e["event_id"])
            expected.event_ids.add(e["event_id"])
            expected.engaged[e["user_id"]].add(e["item_id"])
            keys = [("item", e["item_id"])] + [("tag", t) for t in dict.fromkeys(e.get("tags") or ())]
            if e.get("creator_id") is not None:
                keys.append(("creator", e["creator_id"]))
            for key in keys:
                expected.counts[key][COLUMNS[e["kind"]]] += 1
        return expected

    @property
    def events(self) -> int:
        return sum(c[0] + c[1] + c[2] for (kind, _), c in self.counts.items() if kind == "item")


@dataclass
class Observed:
    engaged: dict[str, set[str]]
    counts: dict[tuple[str, str], list[int]]
    dead_letter_positions: set[tuple[int, int, int]]
    dead_letter_messages: int
    dead_letter_reasons: Counter[str]

    def count_mismatches(self, expected: Expected) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
        keys = set(expected.counts) | set(self.counts)
        return {k: (expected.counts.get(k, [0, 0, 0]), self.counts.get(k, [0, 0, 0]))
                for k in keys if expected.counts.get(k, [0, 0, 0]) != self.counts.get(k, [0, 0, 0])}

    def set_mismatches(self, expected: Expected) -> dict[str, tuple[set[str], set[str]]]:
        return {u: (items, self.engaged.get(u, set())) for u, items in expected.engaged.items()
                if self.engaged.get(u, set()) != items}


def assert_oracle(settings: Settings, observed: Observed, expected: Expected) -> None:
    """Fail, with a diagnosis, unless counts, sets and dead letters are exactly the expected ones."""
    counts, sets = observed.count_mismatches(expected), observed.set_mismatches(expected)
    dead = len(observed.dead_letter_positions)
    if counts or sets or dead != expected.dead_letters:
        pytest.fail(diagnose(settings, expected, observed), pytrace=False)


def diagnose(settings: Settings, expected: Expected, observed: Observed) -> str:
    """What differs, and where the missing events are: never produced, or not applied."""
    counts, sets = observed.count_mismatches(expected), observed.set_mismatches(expected)
    counted = sum(c[0] + c[1] + c[2] for (kind, _), c in observed.counts.items() if kind == "item")
    lines = [
        f"oracle mismatch: {expected.events} events expected, {counted} counted "
        f"({len(counts)} keys differ, {len(sets)} users' sets differ); "
        f"dead letters {len(observed.dead_letter_positions)} of {expected.dead_letters}",
    ]
    for key, (want, got) in sorted(counts.items())[:5]:
        lines.append(f"  {key}: expected {want}, counted {got}")
    try:
        in_topic, ends, fences = asyncio.run(_topic_facts(settings))
    except Exception as exc:  # the diagnosis must not hide the failure
        return "\n".join([*lines, f"(could not read the topics to diagnose further: {exc!r})"])
    missing = expected.event_ids - in_topic
    lines.append(f"events topic: {len(expected.event_ids) - len(missing)} of {len(expected.event_ids)} expected "
                 f"events are in it" + (f"; never produced, e.g. {sorted(missing)[:3]}" if missing else ""))
    lines.append(f"per partition, end offset and latest fence: "
                 f"{ {p: (ends.get(p), fences.get(p)) for p in sorted(ends)} }")
    return "\n".join(lines)


async def _topic_facts(settings: Settings) -> tuple[set[str], dict[int, int], dict[int, tuple[int, str]]]:
    """Event ids in the events topic, its end offsets, and the latest fence (offset, worker) per partition."""
    ids: set[str] = set()
    ends: dict[int, int] = {}
    for record in await _read_all(settings, settings.events_topic):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
        try:
            data = orjson.loads(record.value)
        except (orjson.JSONDecodeError, TypeError):  # a malformed payload of a fuzz test
            continue
        for event in data if isinstance(data, list) else [data]:
            if isinstance(event, dict) and isinstance(event.get("event_id"), str):
                ids.add(event["event_id"])
    fences: dict[int, tuple[int, str]] = {}
    for record in await _read_all(settings, settings.metrics_topic):
        if record.key and record.key.startswith(b"fence:"):
            fence = orjson.loads(record.value)
            for partition, offset in fence.get("offsets", {}).items():
                fences[int(partition)] = (offset, fence.get("worker_id"))
    return ids, ends, fences


def health_records(settings: Settings) -> list[dict[str, Any]]:
    """Every worker health record on the metrics topic, oldest first."""
    records = asyncio.run(_read_all(settings, settings.metrics_topic))
    health = [data for data in (orjson.loads(r.value) for r in records) if data.get("type") == "health"]
    return sorted(health, key=lambda r: r["window_end_ms"])


def observe(settings: Settings) -> Observed:
    """Read the user-state changelog, the metrics topic and the dead-letter topic from the beginning."""
    return asyncio.run(_observe(settings))


def wait_for_oracle(settings: Settings, expected: Expected, timeout: float = 120.0, settle_s: float = 3.0) -> Observed:
    """Poll until the observed counts reach the expected ones (or the timeout), then, after ``settle_s``
    (anything extra, like a double count, would show by then), return the final observation."""
    deadline = time.monotonic() + timeout
    observed = observe(settings)
    while time.monotonic() < deadline:
        total = sum(c[0] + c[1] + c[2] for (kind, _), c in observed.counts.items() if kind == "item")
        if (total >= expected.events and len(observed.dead_letter_positions) >= expected.dead_letters
                and not observed.set_mismatches(expected)):
            break
        time.sleep(1.0)
        observed = observe(settings)
    time.sleep(settle_s)
    return observe(settings)


async def _observe(settings: Settings) -> Observed:
    engaged: dict[str, set[str]] = {}
    for key, value in (await _latest(settings, f"{settings.app_id}-user-state-changelog")).items():
        if not key.startswith(b"\xff") and value:
            engaged[key.decode()] = set(decode_user(value)[1])
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in await _read_all(settings, settings.metrics_topic):
        data = orjson.loads(record.value)
        if data.get("type") in WINDOW_TYPES:
            c = counts[(data["type"], data["id"])]
            c[0] += data["views"]
            c[1] += data["likes"]
            c[2] += data["shares"]
    positions: set[tuple[int, int, int]] = set()
    reasons: Counter[str] = Counter()
    dead = await _read_all(settings, settings.dlq_topic)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        position = (int(headers["streamrec.source.partition"]), int(headers["streamrec.source.offset"]),
                    int(headers.get("streamrec.source.batch_index", -1)))
        if position not in positions:
            positions.add(position)
            reasons[headers["streamrec.reason"]] += 1
    return Observed(engaged, dict(counts), positions, len(dead), reasons)


async def _latest(settings: Settings, topic: str) -> dict[bytes, bytes]:
    latest: dict[bytes, bytes] = {}
    for record in await _read_all(settings, topic):
        if record.key is not None:
            latest[record.key] = record.value
    return latest


async def _read_all(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` (all partitions) up to its end when the call started."""
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=32 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        tps = await assign_all_partitions(consumer, settings, topic, from_beginning=True)
        if not tps:
            return []
        # (Tansu reports an end that may fall inside the last record batch; fetches return whole
        # batches, so reading until the position passes it still reads everything.)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout_s:.0f} s")
            for batch in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()
