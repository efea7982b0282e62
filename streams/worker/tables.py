"""Changelog-backed user state, partitioned like the events.

``user_state`` is keyed by the UTF-8 user id and its changelog is partitioned with
Kafka's default partitioner (murmur2), exactly like the events topic (key = user_id),
so each worker owns, and recovers, the users of its partitions. The worker reads and
writes it through :class:`streams.state.table_store.TableStateStore`. The item side of
the model is not a table: every worker keeps a full replica, kept in step by the item
exchange (:mod:`streams.worker.exchange`, :mod:`streams.worker.item_log`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.events import kafka_partition
from streams.settings import Settings

__all__ = ["Tables", "KeyPartitionedTable", "declare_tables"]


class KeyPartitionedTable(faust.Table):
    """A table whose changelog partition is the key's Kafka partition, known without broker metadata."""

    def partition_for_key(self, key: Any) -> int:
        return kafka_partition(key, self.partitions)


@dataclass(frozen=True)
class Tables:
    """The worker's tables, declared on one app."""

    user_state: KeyPartitionedTable


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    """Declare the user-state table (``settings.partitions`` changelog partitions) on ``app``."""
    user_state = app.tables.add(
        KeyPartitionedTable(
            app, name="user-state", key_type=bytes, value_type=bytes, partitions=settings.partitions,
            beacon=app.tables.beacon, help="per-user factors and engaged items",
        )
    )
    return Tables(user_state=user_state)
