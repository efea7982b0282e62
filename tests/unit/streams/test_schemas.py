"""The JSON Schemas in streams/schemas agree with the code.

* ``event.schema.json`` accepts and rejects the same JSON values as
  :func:`streams.events.validate_event` (the one known gap: JSON Schema counts
  ``1.0`` as an integer, streamrec does not; see :func:`_strict_validator`).
* ``metrics.schema.json`` describes every record the worker emits.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streams.events import (
    KINDS,
    MAX_EVENT_ID,
    MAX_ID,
    MAX_TAG,
    MAX_TAGS,
    MAX_TS,
    REASONS,
    Event,
    InvalidEvent,
    validate_event,
)
from streams.tools.synthetic import SyntheticWorld, WorldConfig, malformed_payloads
from streams.worker.metrics import EngagementWindows, HealthCounters

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "streams" / "schemas"

# Reasons decided before or after the JSON value is looked at: no schema can see them.
NOT_SCHEMA_REASONS = {"empty", "not_json", "too_large", "key_mismatch", "wrong_partition", "future_ts", "internal_error"}


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def _strict_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A 2020-12 validator whose ``integer`` is a JSON integer literal, as in streamrec.

    JSON Schema defines ``integer`` by value (``1.0`` is one); streamrec, like most
    typed decoders, requires an integer literal. That difference is the only one, and
    it is written into the schema's description of ``ts``.
    """
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: type(value) is int
    )
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return cls(schema)


@pytest.fixture(scope="module")
def event_schema() -> dict[str, Any]:
    schema = _load("event.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def event_validator(event_schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    return _strict_validator(event_schema)


@pytest.fixture(scope="module")
def metrics_validator() -> jsonschema.protocols.Validator:
    schema = _load("metrics.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _python_accepts(obj: Any) -> bool:
    try:
        validate_event(obj)
    except InvalidEvent:
        return False
    return True


def _agree(validator: jsonschema.protocols.Validator, obj: Any) -> bool:
    """Whether both validators accept ``obj``; fails the test when they disagree."""
    schema_ok = validator.is_valid(obj)
    python_ok = _python_accepts(obj)
    assert schema_ok == python_ok, (
        f"schema {'accepts' if schema_ok else 'rejects'} but validate_event "
        f"{'accepts' if python_ok else 'rejects'}: {obj!r}"
    )
    return schema_ok


# --- the schema files ----------------------------------------------------------------------


def test_schemas_are_package_data() -> None:
    """The schemas ship in the wheel: pyproject's package-data covers every one of them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["streams"]
    files = sorted(SCHEMAS.glob("*.json"))
    assert {"event.schema.json", "metrics.schema.json"} <= {p.name for p in files}
    for path in files:
        relative = path.relative_to(ROOT / "streams").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)
        assert json.loads(path.read_text(encoding="utf-8"))["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_event_schema_restates_the_limits(event_schema: dict[str, Any]) -> None:
    props = event_schema["properties"]
    assert set(event_schema["required"]) == {"event_id", "user_id", "item_id", "kind", "ts"}
    assert set(props) == set(Event._fields)
    assert props["event_id"]["maxLength"] == MAX_EVENT_ID
    for name in ("user_id", "item_id", "creator_id"):
        assert props[name]["maxLength"] == MAX_ID
        assert props[name]["minLength"] == 1
    assert tuple(props["kind"]["enum"]) == KINDS
    for name in ("ts", "watch_ms"):
        assert props[name]["minimum"] == 0
        assert props[name]["maximum"] == MAX_TS - 1
    assert props["tags"]["maxItems"] == MAX_TAGS
    assert props["tags"]["items"] == {"type": "string", "minLength": 1, "maxLength": MAX_TAG}
    assert event_schema.get("additionalProperties", True) is True


# --- events: both validators agree ---------------------------------------------------------


def test_synthetic_events_are_valid_under_both(event_validator: jsonschema.protocols.Validator) -> None:
    world = SyntheticWorld(WorldConfig(users=50, items=40, seed=3))
    events = list(world.events(500))
    assert len(events) == 500
    for event in events:
        obj = orjson.loads(orjson.dumps(event))  # exactly what the worker decodes
        errors = [e.message for e in event_validator.iter_errors(obj)]
        assert not errors, (obj, errors)
        validate_event(obj)


def test_malformed_payloads_are_rejected_by_both(event_validator: jsonschema.protocols.Validator) -> None:
    checked: set[str] = set()
    for _key, value, reason in malformed_payloads(60):
        if reason in NOT_SCHEMA_REASONS:
            continue
        obj = orjson.loads(value)  # JSON-level reasons: the value always decodes
        assert not event_validator.is_valid(obj), (reason, obj)
        with pytest.raises(InvalidEvent) as caught:
            validate_event(obj)
        assert caught.value.reason == reason
        checked.add(reason)
    assert checked == set(REASONS) - NOT_SCHEMA_REASONS


def _base(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "view", "ts": 1_700_000_000_000}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()

EDGE_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("minimal", _base(), True),
    ("all optional fields", _base(watch_ms=1500, creator_id="c1", tags=["dance", "music"]), True),
    ("ts 0", _base(ts=0), True),
    ("ts 2**53 - 1", _base(ts=MAX_TS - 1), True),
    ("ts 2**53", _base(ts=MAX_TS), False),
    ("ts negative", _base(ts=-1), False),
    ("ts bool", _base(ts=True), False),
    ("ts float", _base(ts=1_700_000_000_000.5), False),
    ("ts integral float", _base(ts=1_700_000_000_000.0), False),  # see _strict_validator
    ("ts string", _base(ts="1700000000000"), False),
    ("ts absent", _base(ts=_DROP), False),
    ("ts null", _base(ts=None), False),
    ("watch_ms 0", _base(watch_ms=0), True),
    ("watch_ms negative", _base(watch_ms=-1), False),
    ("watch_ms bool", _base(watch_ms=False), False),
    ("watch_ms null", _base(watch_ms=None), True),
    ("empty tags list", _base(tags=[]), True),
    ("32 tags", _base(tags=[f"t{k}" for k in range(MAX_TAGS)]), True),
    ("33 tags", _base(tags=[f"t{k}" for k in range(MAX_TAGS + 1)]), False),
    ("duplicate tags", _base(tags=["a", "a"]), True),
    ("empty tag", _base(tags=[""]), False),
    ("tag of 64", _base(tags=["t" * MAX_TAG]), True),
    ("tag of 65", _base(tags=["t" * (MAX_TAG + 1)]), False),
    ("tags null", _base(tags=None), True),
    ("tags object", _base(tags={"a": 1}), False),
    ("unknown extra field", _base(campaign="spring", nested={"x": [1, 2]}), True),
    ("kind upper case", _base(kind="VIEW"), False),
    ("kind number", _base(kind=1), False),
    ("kind absent", _base(kind=_DROP), False),
    ("creator_id null", _base(creator_id=None), True),
    ("creator_id empty", _base(creator_id=""), False),
    ("creator_id number", _base(creator_id=7), False),
    ("event_id of 64", _base(event_id="e" * MAX_EVENT_ID), True),
    ("event_id of 65", _base(event_id="e" * (MAX_EVENT_ID + 1)), False),
    ("user_id of 128 non-ASCII", _base(user_id="ü" * MAX_ID), True),
    ("user_id of 129", _base(user_id="u" * (MAX_ID + 1)), False),
    ("item_id empty", _base(item_id=""), False),
    ("item_id null", _base(item_id=None), False),
    ("not an object", ["e1", "u1"], False),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("obj", "valid"), [(obj, valid) for _, obj, valid in EDGE_CASES],
                         ids=[name for name, _, _ in EDGE_CASES])
def test_edge_cases(event_validator: jsonschema.protocols.Validator, obj: Any, valid: bool) -> None:
    assert _agree(event_validator, obj) is valid


def test_plain_json_schema_counts_integral_floats_as_integers(event_schema: dict[str, Any]) -> None:
    """The documented gap: a standard validator accepts ``"ts": 1.0``; streamrec dead-letters it (wrong_type)."""
    obj = orjson.loads(b'{"event_id":"e1","user_id":"u1","item_id":"i1","kind":"view","ts":1700000000000.0}')
    assert jsonschema.Draft202012Validator(event_schema).is_valid(obj)
    with pytest.raises(InvalidEvent) as caught:
        validate_event(obj)
    assert caught.value.reason == "wrong_type"
    assert "integer literal" in event_schema["properties"]["ts"]["description"]


# --- metrics records -----------------------------------------------------------------------


def _events(n: int, start_ms: int) -> list[Any]:
    world = SyntheticWorld(WorldConfig(users=50, items=40, seed=3))
    return [validate_event(e) for e in world.events(n, start_ms=start_ms)]


def test_window_records_validate(metrics_validator: jsonschema.protocols.Validator) -> None:
    windows = EngagementWindows(window_ms=10_000, grace_ms=0)
    events = _events(500, start_ms=1_700_000_000_000)
    windows.add(events)
    last = max(e.ts for e in events)
    records = windows.close_due(now_ms=last + 20_000)
    # A late event of an emitted window: a revision-1 record, possibly without views.
    late = events[0]._replace(event_id="late", kind="like")
    windows.add([late])
    records += windows.close_all()
    assert {r["type"] for r in records} == {"item", "creator", "tag"}
    assert any(r["revision"] == 1 and r["views"] == 0 and r["like_rate"] is None for r in records)
    for record in records:
        obj = orjson.loads(orjson.dumps(record))
        errors = [e.message for e in metrics_validator.iter_errors(obj)]
        assert not errors, (obj, errors)


def test_health_records_validate(metrics_validator: jsonschema.protocols.Validator) -> None:
    import numpy as np

    health = HealthCounters(worker_id="w1", started_ms=1_700_000_000_000)
    empty = health.record(now_ms=1_700_000_010_000)  # nothing happened: null percentiles
    assert empty["freshness_p50_ms"] is None
    health.events_processed = 900
    for reason in REASONS:
        health.dead_lettered(reason)
    health.duplicates_skipped = 3
    health.users_refreshed = 40
    health.freshness_samples.append(np.array([5, 12, 40], dtype=np.int64))
    busy = health.record(now_ms=1_700_000_020_000)
    for record in (empty, busy):
        obj = orjson.loads(orjson.dumps(record))
        errors = [e.message for e in metrics_validator.iter_errors(obj)]
        assert not errors, (obj, errors)


def test_metrics_schema_rejects_drift(metrics_validator: jsonschema.protocols.Validator) -> None:
    """Undocumented fields, unknown reasons and unknown types are caught (the schema is closed)."""
    health = HealthCounters(worker_id="w1", started_ms=0).record(now_ms=10_000)
    assert metrics_validator.is_valid(health)
    assert not metrics_validator.is_valid({**health, "surprise": 1})
    assert not metrics_validator.is_valid({**health, "dead_letter_reasons": {"made_up": 1}})
    windows = EngagementWindows(window_ms=10_000, grace_ms=0)
    windows.add(_events(20, start_ms=0))
    item = next(r for r in windows.close_all() if r["type"] == "item")
    assert metrics_validator.is_valid(item)
    assert not metrics_validator.is_valid({**item, "type": "user"})
    assert not metrics_validator.is_valid({k: v for k, v in item.items() if k != "tags"})


async def test_records_emitted_by_the_service_validate(metrics_validator: jsonschema.protocols.Validator) -> None:
    """What RecommenderService really sends: window records and health records with its extra fields."""
    from streams.settings import Settings
    from streams.state.store import MemoryStateStore
    from streams.worker.learner import RawMessage
    from streams.worker.service import RecommenderService

    class FakeWriter:
        async def write_lists(self, users: Any, items: Any, scores: Any, **_kwargs: Any) -> None:
            pass

        async def heartbeat(self, worker_id: str, status: Any, ttl_s: int = 30) -> None:
            pass

    sent: list[bytes] = []

    async def send_metric(records: Any) -> None:
        for _key, value, _headers in records:
            assert value is not None
            sent.append(value)

    async def send_dead_letter(records: Any) -> None:
        pass

    settings = Settings.from_env({}, worker_id="test-worker", n_factors=8)
    service = RecommenderService(settings, MemoryStateStore(), FakeWriter(), send_dead_letter, send_metric)  # type: ignore[arg-type]
    world = SyntheticWorld(WorldConfig(users=50, items=40, seed=3))
    messages = []
    for offset, event in enumerate(world.events(200, start_ms=1_700_000_000_000)):
        messages.append(RawMessage(event["user_id"].encode(), orjson.dumps(event), "streamrec.events", 0, offset))
    for offset, (key, value, _reason) in enumerate(malformed_payloads(20), start=len(messages)):
        messages.append(RawMessage(key, value, "streamrec.events", 0, offset))

    await service.handle(messages)
    await service.shutdown()
    records = [orjson.loads(v) for v in sent]
    assert {r["type"] for r in records} == {"item", "creator", "tag", "health", "fence"}
    health = [r for r in records if r["type"] == "health"]
    assert health[-1]["events_dead_lettered"] > 0 and "ready" in health[-1]
    for record in records:
        errors = [e.message for e in metrics_validator.iter_errors(record)]
        assert not errors, (record, errors)
