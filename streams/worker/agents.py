"""The Faust side of the worker: the event subscription, the processing task, the timer, the signals.

Records of the events topic reach :class:`~streams.worker.service.RecommenderService` in bulk
(``app.bulk_handlers``, see :class:`streams.worker.app._Consumer`), not through Faust's
per-message stream: the ``learn`` agent only declares the subscription, so that Faust's
group membership, partition assignment and table co-partitioning work as usual.
:func:`register_agents` declares all of it on one app, for one service.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Sequence

from streams.worker.app import StreamrecApp
from streams.worker.service import RecommenderService

__all__ = ["register_agents"]

logger = logging.getLogger(__name__)


def register_agents(
    app: StreamrecApp,
    events_topic: Any,
    service: RecommenderService,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Subscribe ``app`` to ``events_topic`` with ``service.offer`` as its bulk handler, run the
    service's processing loop and timer, hand it partition assignments and revocations, and shut
    it down before the app stops (then await each of ``closers``: the senders it used)."""
    events = events_topic.get_topic_name()
    app.bulk_handlers[events] = service.offer

    @app.agent(events_topic)
    async def learn(stream: Any) -> None:
        """Declares the subscription to the events topic; its records go to ``service.offer`` in bulk."""
        async for _event in stream:
            logger.error("an event reached the per-message path; the bulk handler is not registered")

    @app.task
    async def process_events() -> None:
        """Every batch of events: validate, learn, refresh the users' lists, checkpoint."""
        await service.run()

    @app.timer(interval=1.0)
    async def tick() -> None:
        recovery = app.tables.recovery
        await service.tick(recovered=recovery.completed.is_set() and not app.rebalancing and not recovery.in_recovery)

    @app.on_partitions_assigned.connect
    async def _on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        await service.on_partitions_assigned({tp for tp in assigned if tp.topic == events})

    @app.on_partitions_revoked.connect
    async def _on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        await service.on_partitions_revoked(set(revoked))

    @app.on_before_shutdown.connect
    async def _flush_on_shutdown(app: Any, **kwargs: Any) -> None:
        await service.shutdown()
        for close in closers:
            await close()
