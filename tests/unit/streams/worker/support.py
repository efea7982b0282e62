"""Settings, topic-partitions, event messages and a plug-in model shared by the learner's and the service's tests."""

from __future__ import annotations

from typing import NamedTuple

from models import BPRMF
from streams.events import encode_event
from streams.settings import Settings
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from streams.worker.learner import RawMessage

SETTINGS = Settings(n_factors=8, top_n=10, worker_id="test")


class TP(NamedTuple):
    topic: str
    partition: int


def messages(events, first_offset=0):
    return [RawMessage(*encode_event(e), "t.events", 0, first_offset + n) for n, e in enumerate(events)]


def world_events(n=3000, seed=1):
    return list(SyntheticWorld(WorldConfig(users=60, items=80, seed=seed)).events(n, start_ms=1_700_000_000_000))


class CountingBPRMF(BPRMF):
    """A model plugged in through ``STREAMREC_MODEL`` (``tests.unit.streams.worker.support:CountingBPRMF``):
    BPRMF that keeps the keyword arguments it was built with and counts the batches it learns."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built_with = kwargs
        self.batches_learned = 0

    def learn_batch(self, *args, **kwargs):
        self.batches_learned += 1
        return super().learn_batch(*args, **kwargs)
