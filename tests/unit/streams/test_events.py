from __future__ import annotations

import orjson
import pytest

from streams.events import REASONS, Event, InvalidEvent, decode_event, encode_event, validate_event

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "share", "ts": 1_700_000_000_000,
        "watch_ms": 1200, "creator_id": "c1", "tags": ["dance", "dance", "funny"], "extra": {"ignored": True}}


def reason_of(key: bytes | None, value: bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_event(key, value)
    assert info.value.reason in REASONS
    return info.value.reason


def test_valid_event_decodes_and_ignores_unknown_fields():
    ev = decode_event(b"u1", orjson.dumps(GOOD))
    assert ev == Event("e1", "u1", "i1", "share", 1_700_000_000_000, 1200, "c1", ("dance", "funny"))
    assert encode_event(ev) == (b"u1", orjson.dumps(ev.to_dict()))


@pytest.mark.parametrize("change, reason", [
    ({"kind": "poke"}, "bad_kind"), ({"ts": "1"}, "wrong_type"), ({"ts": 1.5}, "wrong_type"),
    ({"ts": True}, "wrong_type"), ({"ts": -1}, "out_of_range"), ({"ts": 2**53}, "out_of_range"),
    ({"watch_ms": -5}, "out_of_range"), ({"user_id": 7}, "wrong_type"), ({"event_id": "e" * 65}, "too_long"),
    ({"item_id": "i" * 129}, "too_long"), ({"tags": ["t"] * 33}, "too_long"), ({"tags": ["x" * 65]}, "too_long"),
    ({"tags": "dance"}, "wrong_type"), ({"tags": [1]}, "wrong_type"), ({"item_id": ""}, "out_of_range"),
])
def test_each_broken_field_has_its_reason(change, reason):
    assert reason_of(b"u1", orjson.dumps({**GOOD, **change})) == reason


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "kind", "ts"])
def test_missing_required_field(field):
    event = {k: v for k, v in GOOD.items() if k != field}
    assert reason_of(b"u1", orjson.dumps(event)) == "missing_field"


def test_message_level_failures():
    assert reason_of(b"u1", b"") == "empty"
    assert reason_of(b"u1", b"{not json") == "not_json"
    assert reason_of(b"u1", b'{"ts": NaN}') == "not_json"
    assert reason_of(b"u1", b'{"ts": 1e999}') == "not_json"
    assert reason_of(b"u1", b"\xff\xfe") == "not_json"
    assert reason_of(b"u1", b"[1, 2]") == "not_object"
    assert reason_of(b"u1", b"[" * 5000 + b"]" * 5000) == "not_json"
    assert reason_of(b"u1", b" " * (64 * 1024 + 1)) == "too_large"
    assert reason_of(None, orjson.dumps(GOOD)) == "key_mismatch"
    assert reason_of(b"u2", orjson.dumps(GOOD)) == "key_mismatch"
    assert reason_of(b"\xff", orjson.dumps(GOOD)) == "key_mismatch"


def test_size_limit_is_checked_before_decoding(monkeypatch):
    def boom(_: bytes) -> None:
        raise AssertionError("decoded an oversized message")

    monkeypatch.setattr("streams.events.orjson.loads", boom)
    with pytest.raises(InvalidEvent):
        decode_event(b"u1", b"{" + b" " * 70_000 + b"}")


def test_encode_refuses_invalid_events():
    with pytest.raises(InvalidEvent):
        encode_event({**GOOD, "kind": "poke"})
    assert validate_event(GOOD).tags == ("dance", "funny")


def test_kafka_partition_is_the_default_partitioner_of_aiokafka() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from streams.events import kafka_partition

    every = list(range(6))
    for n in range(300):
        key = f"user-{n}".encode()
        assert kafka_partition(key, 6) == DefaultPartitioner()(key, every, every)


def test_encode_batch_validates_every_event_and_the_limits() -> None:
    from streams.events import MAX_BATCH_EVENTS, decode_batch, encode_batch

    good = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "view", "ts": 5}
    assert decode_batch(encode_batch([good, {**good, "event_id": "e2"}]))[1]["event_id"] == "e2"
    with pytest.raises(InvalidEvent) as bad:
        encode_batch([good, {**good, "kind": "poke"}])
    assert bad.value.reason == "bad_kind"
    with pytest.raises(InvalidEvent):
        encode_batch([])
    with pytest.raises(InvalidEvent) as many:
        decode_batch(b"[" + b",".join([b"1"] * (MAX_BATCH_EVENTS + 1)) + b"]")
    assert many.value.reason == "too_long"
    with pytest.raises(InvalidEvent) as large:
        decode_batch(b"[" + b" " * 100 + b"]", max_bytes=50)
    assert large.value.reason == "too_large"
