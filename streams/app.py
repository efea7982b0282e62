"""The Faust application: ``faust -A streams.app worker`` or ``streamrec worker``.

Settings come from the environment (:class:`streams.settings.Settings`). Importing this
module builds the app, its topics and tables, and registers the agents.
"""

from __future__ import annotations

import faust

from streams.kafka import faust_credentials
from streams.settings import Settings

__all__ = ["app", "settings", "create_app"]


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured from ``settings`` (web server off or on localhost only)."""
    return faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="memory://",  # tables live in memory and are rebuilt from their Kafka changelogs
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_max_poll_records=settings.batch_max_events,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_max_events),
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
    )


settings = Settings.from_env()
app = create_app(settings)

import streams.agents  # noqa: E402,F401  (registers topics, tables, agents and timers on ``app``)
