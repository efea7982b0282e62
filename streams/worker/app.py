"""The Faust app of a worker: :func:`create_app` and the bulk consumer behind it.

Nothing here is built at import: :func:`create_app` makes an app from settings, and the
topics, tables and agents are declared on it by :mod:`streams.worker.topics`,
:mod:`streams.worker.tables` and :mod:`streams.worker.agents`. The worker's one app is
:mod:`streams.worker.wiring` (``faust -A streams.worker.wiring worker`` or ``streamrec worker``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.io.kafka import faust_credentials
from streams.settings import Settings

__all__ = ["create_app", "StreamrecApp", "BulkHandler"]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes a 1.5 s fetch wait; brokers that hold a fetch that long (Tansu does)
    then add up to 1.5 s to every event's freshness. Use the app's ``fetch_max_wait_ms``
    (``STREAMREC_FETCH_MAX_WAIT_MS``)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # read by aiokafka when it starts
        return consumer


class BulkHandler(Protocol):
    """Takes every fetched record of one topic-partition at once (see :class:`_Consumer`)."""

    async def __call__(self, tp: TP, records: list[Any]) -> None: ...


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, plus a bulk path for the events topic.

    Faust hands every message to its streams one by one (a ``Message`` object, a
    ``Conductor`` dispatch, a queue hop and an ``Event`` each): ~40x the cost of a
    plain aiokafka consumer (measured on 2 cores: 4-5k events/s for an agent that does
    nothing, ~200k for ``getmany`` + ``orjson.loads``). Records of a topic registered in
    ``app.bulk_handlers`` skip all of that: each fetched list of records of one
    partition goes to its handler in one call. Everything else about Faust stays:
    group membership, rebalances, table recovery and changelogs, commits. The
    handler's owner acknowledges offsets with :meth:`ack_offsets` once their effects
    are durable; Faust commits acknowledged offsets as usual.
    """

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack_offsets(self, tp: TP, first: int, last: int) -> None:
        """Mark offsets ``first..last`` of ``tp`` processed, so the next commit may include them.

        A whole range, holes included: offsets missing from a topic (compaction,
        transaction markers) must not hold the commit back.
        """
        committed = self._committed_offset[tp]
        if committed is not None:
            first = max(first, committed)
        if first > last:
            return
        offsets = range(first, last + 1)
        index = self._acked_index[tp]
        fresh = [o for o in offsets if o not in index] if index else list(offsets)
        self._acked[tp].extend(fresh)
        index.update(fresh)
        self._n_acked += len(fresh)

    async def _seek_back_to_committed(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # as in Faust: the rebalance under way seeks again when it ends
            self.log.info("could not seek back to the committed offsets (%r); the rebalance will", exc)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        handlers: dict[str, BulkHandler] = getattr(self.app, "bulk_handlers", {})
        if not handlers:
            return await super()._drain_messages(fetcher)
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        callback = self.callback
        to_message = self._to_message
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    # As in Faust's getmany: records fetched while the flow was stopped (a
                    # rebalance raced the fetch) are not handed over, so the fetch position
                    # goes back to the committed offsets, or they would never be read.
                    await self._seek_back_to_committed()
                    continue
                generation_id = self.app.consumer_generation_id
                for tp, batch in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation_id:
                        break  # a rebalance started: what is not handed over is fetched again
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    last = read_offset[tp]  # as in Faust: the last offset handed over, or the seek position
                    if last is not None:
                        if batch[0].offset < last:
                            batch = [r for r in batch if r.offset >= last]
                            if not batch:
                                continue
                    handler = handlers.get(tp.topic)
                    if handler is not None:
                        # (No gap bookkeeping: the handler acknowledges whole offset ranges, holes included.)
                        handed = await self.wait_first(handler(tp, batch), self.suspend_flow.wait())
                        if handed.stopped or self.suspend_flow.is_set():
                            break  # a rebalance or shutdown interrupted the hand-over: fetched again later
                    else:
                        if last and batch[0].offset - last > 1 and self.app.topics.acks_enabled_for(tp.topic):
                            await self._add_gap(tp, last + 1, batch[0].offset)
                        for record in batch:
                            await self.wait_first(callback(to_message(tp, record)), self.suspend_flow.wait())
                    read_offset[tp] = batch[-1].offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamrecApp(faust.App):
    """faust.App with a consumer whose fetch wait follows the settings, and bulk topics.

    ``bulk_handlers`` maps a topic name to the :class:`BulkHandler` that receives its
    records in bulk (the topic still needs an agent, which declares the subscription).
    ``fetch_max_wait_ms``: the longest a fetch of the consumer waits at the broker.
    """

    bulk_handlers: dict[str, BulkHandler]
    fetch_max_wait_ms: int

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bulk_handlers = {}
        self.fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> StreamrecApp:
    """A Faust app configured from ``settings`` (web server off or on localhost only), with
    nothing declared on it yet."""
    return StreamrecApp(
        settings.app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="memory://",  # tables live in memory and are rebuilt from their Kafka changelogs
        # No standby replicas: a standby reads another worker's user changelog through Faust's per-message
        # path all the time, for a faster takeover; the takeover reads the changelog anyway when needed.
        table_standby_replicas=0,
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

