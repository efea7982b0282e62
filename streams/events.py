"""The event contract: decoding and validating view / like / share events.

One JSON object per Kafka message, key = ``user_id`` (UTF-8). The JSON Schema of
the same contract is ``streams/schemas/event.schema.json``. Anything invalid raises
:class:`InvalidEvent`, whose ``reason`` is one of :data:`REASONS`; the worker sends
such messages, untouched, to the dead-letter topic.

A message may also carry a *batch*: a JSON array of up to :data:`MAX_BATCH_EVENTS`
events, marked by the header :data:`BATCH_HEADER` (``streamrec.format: batch``), sent
to the partition that Kafka's default partitioner gives every event's ``user_id``
(the key is not used). :class:`~streams.client.EventProducer` sends batches; other
producers may keep sending one event per message. Each event of a batch is validated
on its own: a bad one is dead-lettered alone (reason ``wrong_partition`` if its user
belongs to another partition), its neighbours are applied.

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

import functools
from typing import Any, Final, Literal, Mapping, NamedTuple

import orjson
from aiokafka.partitioner import murmur2

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
    "encode_batch",
    "join_batch",
    "decode_batch",
    "is_batch",
    "kafka_partition",
    "BATCH_HEADER",
    "MAX_BATCH_EVENTS",
    "MAX_BATCH_BYTES",
]

EventKind = Literal["view", "like", "share"]
KINDS: Final = ("view", "like", "share")
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_EVENT_ID: Final = 64
MAX_ID: Final = 128
MAX_TAGS: Final = 32
MAX_TAG: Final = 64
MAX_TS: Final = 2**53  # beyond this a JSON number loses integer precision in most clients
MAX_BATCH_EVENTS: Final = 2000
MAX_BATCH_BYTES: Final = 1024 * 1024
#: The Kafka header that marks a message whose value is a JSON array of events.
BATCH_HEADER: Final = ("streamrec.format", b"batch")

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
    "wrong_partition",  # an event of a batch message whose user_id belongs to another partition
    "future_ts",  # ts further ahead of the worker's clock than STREAMREC_MAX_CLOCK_SKEW_S
    "internal_error",  # the worker failed on a batch: the whole batch is dead-lettered, not dropped
)


class InvalidEvent(StreamrecError):
    """An event that breaks the contract; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Event(NamedTuple):
    """A validated event (immutable)."""

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


_KIND_OF_NAME: Final[dict[str, EventKind]] = {kind: kind for kind in KINDS}
#: The kind of a name, or None: a membership test that also types the kind (one lookup).
_kind_named: Final = _KIND_OF_NAME.get


def validate_event(obj: Any) -> Event:
    """Check a decoded JSON value against the contract; unknown fields are ignored."""
    if type(obj) is dict:  # the common, valid case in one pass; anything odd takes the checked path
        get = obj.get
        event_id, user_id, item_id, kind, ts = get("event_id"), get("user_id"), get("item_id"), get("kind"), get("ts")
        watch_ms, creator_id, tags_value = get("watch_ms"), get("creator_id"), get("tags")
        if (
            type(event_id) is str and 0 < len(event_id) <= MAX_EVENT_ID
            and type(user_id) is str and 0 < len(user_id) <= MAX_ID
            and type(item_id) is str and 0 < len(item_id) <= MAX_ID
            and type(kind) is str and (event_kind := _kind_named(kind)) is not None
            and type(ts) is int and 0 <= ts < MAX_TS
            and (watch_ms is None or (type(watch_ms) is int and 0 <= watch_ms < MAX_TS))
            and (creator_id is None or (type(creator_id) is str and 0 < len(creator_id) <= MAX_ID))
        ):  # fmt: skip
            if tags_value is None:
                return Event(event_id, user_id, item_id, event_kind, ts, watch_ms, creator_id, ())
            tags = _known_tags(tags_value)
            if tags is not None:
                return Event(event_id, user_id, item_id, event_kind, ts, watch_ms, creator_id, tags)
    return _validate_checked(obj)


_TAG_LISTS: dict[tuple[Any, ...], tuple[str, ...]] = {}  # tag lists seen valid -> deduplicated
_TAG_LISTS_MAX = 50_000


def _known_tags(value: Any) -> tuple[str, ...] | None:
    """The deduplicated tags of a valid tag list, None if it needs the checked path.

    Communities are few, so the same lists come back: validated once, then looked up.
    """
    if type(value) is not list or len(value) > MAX_TAGS:
        return None
    key = tuple(value)
    try:
        tags = _TAG_LISTS.get(key)
    except TypeError:  # an unhashable element (a list, an object): not a valid tag list
        return None
    if tags is None:
        for tag in value:
            if type(tag) is not str or not 0 < len(tag) <= MAX_TAG:
                return None
        if len(_TAG_LISTS) >= _TAG_LISTS_MAX:
            _TAG_LISTS.clear()
        tags = _TAG_LISTS[key] = tuple(dict.fromkeys(value))  # order kept, duplicates dropped
    return tags


def _validate_checked(obj: Any) -> Event:
    """The field-by-field validation: finds the reason an event is invalid."""
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


def _load_json(value: bytes | None, max_bytes: int, what: str) -> Any:
    """The JSON in ``value``, its size checked first; else :class:`InvalidEvent` (empty, too_large, not_json)."""
    if not value:
        raise InvalidEvent("empty", f"the {what} has no value")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"{what} is {len(value)} bytes, limit {max_bytes}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:200]) from None


def decode_event(key: bytes | None, value: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Event:
    """Decode one Kafka message into an :class:`Event` or raise :class:`InvalidEvent`.

    The size limit is enforced before any decoding; the key must be the UTF-8 ``user_id``.
    """
    event = validate_event(_load_json(value, max_bytes, "message"))
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


def is_batch(headers: Any) -> bool:
    """True if Kafka ``headers`` (a sequence of (key, value) pairs) mark a batch message."""
    return bool(headers) and BATCH_HEADER in tuple(headers)


def decode_batch(value: bytes | None, max_bytes: int = MAX_BATCH_BYTES) -> list[Any]:
    """The JSON array of a batch message (its items not yet validated), or raise :class:`InvalidEvent`.

    >>> decode_batch(b'[{"a": 1}, 2]')
    [{'a': 1}, 2]
    >>> try:
    ...     decode_batch(b'{"a": 1}')
    ... except InvalidEvent as exc:
    ...     print(exc.reason)
    not_object
    """
    items = _load_json(value, max_bytes, "batch message")
    if type(items) is not list:
        raise InvalidEvent("not_object", f"a batch is a JSON array of events, got {type(items).__name__}")
    if not items:
        raise InvalidEvent("empty", "the batch holds no events")
    if len(items) > MAX_BATCH_EVENTS:
        raise InvalidEvent("too_long", f"the batch holds {len(items)} events, limit {MAX_BATCH_EVENTS}")
    return items


def encode_batch(events: list[Event | Mapping[str, Any]]) -> bytes:
    """Validate and encode events as the value of one batch message (send it with :data:`BATCH_HEADER`).

    >>> encode_batch([{"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "view", "ts": 5}])
    b'[{"event_id":"e1","user_id":"u1","item_id":"i1","kind":"view","ts":5}]'
    """
    if not 0 < len(events) <= MAX_BATCH_EVENTS:
        raise InvalidEvent("too_long", f"a batch holds 1 to {MAX_BATCH_EVENTS} events, got {len(events)}")
    checked = [e if isinstance(e, Event) else validate_event(dict(e)) for e in events]
    value = orjson.dumps([e.to_dict() for e in checked])
    if len(value) > MAX_BATCH_BYTES:
        raise InvalidEvent("too_large", f"batch is {len(value)} bytes, limit {MAX_BATCH_BYTES}")
    return value


def join_batch(encoded_events: list[bytes]) -> bytes:
    """The value of a batch message from events already encoded (by :func:`encode_event`).

    >>> join_batch([b'{"a":1}', b'{"b":2}'])
    b'[{"a":1},{"b":2}]'
    """
    return b"[" + b",".join(encoded_events) + b"]"


@functools.lru_cache(maxsize=1 << 18)
def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key``, as producers of events do.

    Memoised: murmur2 is pure Python (~2 µs), and the same users come back (producers,
    batch validation, checkpoints, rebalances all ask); 262,144 keys at most.

    >>> kafka_partition(b"u1", 4) == kafka_partition(b"u1", 4) < 4
    True
    """
    hashed: int = murmur2(key)  # aiokafka has no type information
    return (hashed & 0x7FFFFFFF) % partitions
