"""The Faust application: ``faust -A streams.app worker`` or ``streamrec worker``.

Settings come from the environment (:class:`streams.settings.Settings`). Importing this
module builds the app, its topics and tables, and registers the agents.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.kafka import faust_credentials
from streams.settings import Settings

__all__ = ["app", "settings", "create_app", "StreamrecApp"]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes a 1.5 s fetch wait; brokers that hold a fetch that long (Tansu does)
    then add up to 1.5 s to every event's freshness. Use ``STREAMREC_FETCH_MAX_WAIT_MS``."""

    fetch_max_wait_ms = 100

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read by aiokafka when it starts
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamrecApp(faust.App):
    """faust.App with a consumer whose fetch wait follows the settings."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured from ``settings`` (web server off or on localhost only)."""
    _ConsumerThread.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return StreamrecApp(
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
