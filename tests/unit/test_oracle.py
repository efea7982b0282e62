"""The fault tests' oracle explains a mismatch: what differs, and whether the events reached the topic."""

from __future__ import annotations

import asyncio

from streams.settings import Settings
from tests.integration import oracle
from tests.integration.oracle import Expected, Observed


def test_the_diagnosis_names_the_difference_and_the_events_never_produced(monkeypatch):
    events = [{"event_id": f"e{k}", "user_id": "u1", "item_id": "i1", "kind": "view", "ts": 0} for k in range(3)]
    expected = Expected.of(events)
    observed = Observed({"u1": {"i1"}}, {("item", "i1"): [2, 0, 0]}, set(), 0, {})

    async def facts(settings):
        return {"e0", "e1"}, {0: 2}, {0: (1, "w1")}

    monkeypatch.setattr(oracle, "_topic_facts", facts)
    text = oracle.diagnose(Settings(), expected, observed)
    assert "3 events expected, 2 counted" in text
    assert "('item', 'i1'): expected [3, 0, 0], counted [2, 0, 0]" in text
    assert "2 of 3 expected events are in it; never produced, e.g. ['e2']" in text
    assert "{0: (2, (1, 'w1'))}" in text


def test_the_diagnosis_survives_unreadable_topics(monkeypatch):
    async def broken(settings):
        await asyncio.sleep(0)
        raise ConnectionError("no broker")

    monkeypatch.setattr(oracle, "_topic_facts", broken)
    text = oracle.diagnose(Settings(), Expected.of([]), Observed({}, {("item", "i9"): [1, 0, 0]}, set(), 0, {}))
    assert "0 events expected, 1 counted" in text and "could not read the topics" in text
