"""The event contract: decoding and validating view / like / share events.

One JSON object per Kafka message, key = ``user_id`` (UTF-8). The JSON Schema of
the same contract is ``streams/schemas/event.schema.json``. Anything invalid raises
:class:`InvalidEvent`, whose ``reason`` is one of :data:`REASONS`; the worker sends
such messages, untouched, to the dead-letter topic.

>>> ev = decode_event(b"u1", b'{"event_id":"e1","user_id":"u1","item_id":"i9","kind":"like","ts":1700000000000}')
>>> ev.user_id, ev.item_id, ev.kind, ev.watch_ms, ev.tags
('u1', 'i9', 'like', None, ())
>>> try:
...     decode_event(b"u1", b'{"event_id":"e1","user_id":"u1","item_id":"i9","kind":"poke","ts":1}')
... except InvalidEvent as exc:
...     print(exc.reason)
bad_kind
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, Mapping

import orjson

from streams.errors import StreamrecError

__all__ = [
    "Event",
    "EventKind",
    "InvalidEvent",
    "KINDS",
    "REASONS",
    "MAX_MESSAGE_BYTES",
    "decode_event",
    "validate_event",
    "encode_event",
]

EventKind = Literal["view", "like", "share"]
KINDS: Final = ("view", "like", "share")
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_EVENT_ID: Final = 64
MAX_ID: Final = 128
MAX_TAGS: Final = 32
MAX_TAG: Final = 64
MAX_TS: Final = 2**53  # beyond this a JSON number loses integer precision in most clients

#: Dead-letter reasons, the value of the ``streamrec.reason`` header.
REASONS: Final = (
    "too_large",  # message bigger than the limit (checked before decoding)
    "empty",  # no value (null or zero bytes)
    "not_json",  # not valid UTF-8 JSON, NaN/Infinity literals, too deep nesting
    "not_object",  # valid JSON but not an object
    "missing_field",  # a required field is absent
    "wrong_type",  # a field has the wrong JSON type (ts must be an integer, ...)
    "bad_kind",  # kind is not view, like or share
    "out_of_range",  # empty id, negative watch_ms, ts outside [0, 2**53)
    "too_long",  # a string or the tag list is longer than allowed
    "key_mismatch",  # message key missing, not UTF-8, or not equal to user_id
    "internal_error",  # the worker failed on a batch: the whole batch is dead-lettered, not dropped
)


class InvalidEvent(StreamrecError):
    """An event that breaks the contract; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event."""

    event_id: str
    user_id: str
    item_id: str
    kind: EventKind
    ts: int
    watch_ms: int | None = None
    creator_id: str | None = None
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "kind": self.kind,
            "ts": self.ts,
        }
        if self.watch_ms is not None:
            out["watch_ms"] = self.watch_ms
        if self.creator_id is not None:
            out["creator_id"] = self.creator_id
        if self.tags:
            out["tags"] = list(self.tags)
        return out


def _string(obj: Mapping[str, Any], name: str, limit: int, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"{name!r} is required")
        return None
    if type(value) is not str:
        raise InvalidEvent("wrong_type", f"{name!r} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent("out_of_range", f"{name!r} must not be empty")
    if len(value) > limit:
        raise InvalidEvent("too_long", f"{name!r} is {len(value)} characters, limit {limit}")
    return value


def _integer(obj: Mapping[str, Any], name: str, required: bool) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"{name!r} is required")
        return None
    if type(value) is not int:  # bool is a subclass of int: excluded by the exact type check
        raise InvalidEvent("wrong_type", f"{name!r} must be an integer, got {type(value).__name__}")
    if not 0 <= value < MAX_TS:
        raise InvalidEvent("out_of_range", f"{name!r} must be in [0, 2**53), got {value}")
    return value


def validate_event(obj: Any) -> Event:
    """Check a decoded JSON value against the contract; unknown fields are ignored."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"an event is a JSON object, got {type(obj).__name__}")
    event_id = _string(obj, "event_id", MAX_EVENT_ID)
    user_id = _string(obj, "user_id", MAX_ID)
    item_id = _string(obj, "item_id", MAX_ID)
    kind = obj.get("kind")
    if kind is None:
        raise InvalidEvent("missing_field", "'kind' is required")
    if kind not in KINDS:
        raise InvalidEvent("bad_kind", f"'kind' must be one of view, like, share; got {str(kind)[:40]!r}")
    ts = _integer(obj, "ts", required=True)
    watch_ms = _integer(obj, "watch_ms", required=False)
    creator_id = _string(obj, "creator_id", MAX_ID, required=False)
    tags_value = obj.get("tags")
    tags: tuple[str, ...] = ()
    if tags_value is not None:
        if type(tags_value) is not list:
            raise InvalidEvent("wrong_type", f"'tags' must be a list of strings, got {type(tags_value).__name__}")
        if len(tags_value) > MAX_TAGS:
            raise InvalidEvent("too_long", f"'tags' has {len(tags_value)} entries, limit {MAX_TAGS}")
        for tag in tags_value:
            if type(tag) is not str:
                raise InvalidEvent("wrong_type", f"every tag must be a string, got {type(tag).__name__}")
            if not tag or len(tag) > MAX_TAG:
                raise InvalidEvent("too_long", f"a tag must have 1 to {MAX_TAG} characters, got {len(tag)}")
        tags = tuple(dict.fromkeys(tags_value))  # order kept, duplicates dropped
    assert event_id is not None and user_id is not None and item_id is not None and ts is not None
    return Event(event_id, user_id, item_id, kind, ts, watch_ms, creator_id, tags)


def decode_event(key: bytes | None, value: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Event:
    """Decode one Kafka message into an :class:`Event` or raise :class:`InvalidEvent`.

    The size limit is enforced before any decoding; the key must be the UTF-8 ``user_id``.
    """
    if not value:
        raise InvalidEvent("empty", "the message has no value")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"message is {len(value)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:200]) from None
    event = validate_event(obj)
    if key is None:
        raise InvalidEvent("key_mismatch", "the message key must be the user_id, got no key")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("key_mismatch", "the message key is not valid UTF-8") from None
    if key_text != event.user_id:
        raise InvalidEvent("key_mismatch", f"the message key {key_text[:40]!r} is not the user_id {event.user_id[:40]!r}")
    return event


def encode_event(event: Event | Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Validate and encode an event as a Kafka (key, value) pair.

    >>> encode_event({"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "view", "ts": 5})
    (b'u1', b'{"event_id":"e1","user_id":"u1","item_id":"i1","kind":"view","ts":5}')
    """
    checked = event if isinstance(event, Event) else validate_event(dict(event))
    value = orjson.dumps(checked.to_dict())
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidEvent("too_large", f"event is {len(value)} bytes, limit {MAX_MESSAGE_BYTES}")
    return checked.user_id.encode(), value
