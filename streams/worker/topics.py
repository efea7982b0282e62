"""The topics: events in, dead letters and metrics out. Keys and values are raw bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.settings import Settings

__all__ = ["Topics", "declare_topics"]


@dataclass(frozen=True)
class Topics:
    """The worker's topics, declared on one app."""

    events: Any
    dlq: Any
    metrics: Any


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the events, dead-letter and metrics topics of ``settings`` on ``app``."""
    events = app.topic(
        settings.events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    dlq = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    metrics = app.topic(settings.metrics_topic, key_serializer="raw", value_serializer="raw", partitions=1)
    return Topics(events=events, dlq=dlq, metrics=metrics)
