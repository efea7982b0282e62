"""The intake queue between the consumer and the processing loop."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace as Record

from streams.worker.intake import Intake


def test_a_take_whose_records_a_rebalance_dropped_while_it_gathered_waits_for_new_ones() -> None:
    async def run() -> list:
        intake = Intake(max_events=100)
        await intake.put("revoked", [Record(value=b"{}", headers=())])
        take = asyncio.create_task(intake.take(max_events=10, within_s=0.05))
        await asyncio.sleep(0.01)  # the take is gathering for more
        assert intake.drop({"revoked"}) == 1  # a rebalance took the partition away meanwhile
        await asyncio.sleep(0.08)  # past the gathering time: nothing to take, the take must keep waiting
        assert not take.done()
        await intake.put("kept", [Record(value=b"{}", headers=())] * 2)
        return await asyncio.wait_for(take, 1.0)

    taken = asyncio.run(run())
    assert [(tp, len(records)) for tp, records in taken] == [("kept", 2)]
