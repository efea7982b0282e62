"""``streamrec produce --synthetic``: synthetic events are never stamped ahead of the clock.

A worker dead-letters events more than STREAMREC_MAX_CLOCK_SKEW_S (300 s) ahead of its clock
(``future_ts``); 100,000 synthetic events stamped forward from now at the synthetic rate would
span ~2,000 s, so most of the README's ``streamrec produce --synthetic 100000`` would be
dead-lettered. They are stamped so that the last one is now.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from streams.tools.cli import main


class CollectingProducer:
    """Stands in for streams.client.EventProducer: keeps the events, connects to nothing."""

    last: "CollectingProducer | None" = None

    def __init__(self, settings: Any, **kwargs: Any) -> None:
        self.events: list[dict[str, Any]] = []
        CollectingProducer.last = self

    async def __aenter__(self) -> "CollectingProducer":
        return self

    async def __aexit__(self, *exc: object) -> None: ...

    @property
    def sent(self) -> int:
        return len(self.events)

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def flush(self) -> None: ...


@pytest.fixture
def produced(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("streams.client.EventProducer", CollectingProducer)
    monkeypatch.setattr("streams.tools.reach.check_kafka", lambda settings: None)  # no broker either

    def run(*args: str) -> tuple[list[dict[str, Any]], int, int]:
        before = int(time.time() * 1000)
        assert main(["produce", *args]) == 0
        after = int(time.time() * 1000)
        assert CollectingProducer.last is not None
        return CollectingProducer.last.events, before, after

    return run


def test_synthetic_events_as_fast_as_possible_are_stamped_up_to_now(produced):
    events, before, after = produced("--synthetic", "20000", "--users", "300", "--items", "200")
    stamps = [e["ts"] for e in events]
    assert len(events) == 20_000 and stamps == sorted(stamps)
    assert max(stamps) <= after  # none in the future
    assert min(stamps) >= before - 300_000  # the recent past, not hours ago


def test_synthetic_events_at_a_rate_are_stamped_as_they_are_sent(produced):
    events, before, after = produced("--synthetic", "2000", "--users", "300", "--items", "200", "--rate", "20000")
    stamps = [e["ts"] for e in events]
    assert len(events) == 2_000 and stamps == sorted(stamps)
    assert before <= min(stamps) and max(stamps) <= after + 1_000  # event time follows the pacing
