"""A started service freezes its start-up heap (wiring.settle_heap: a full collection of it took
70-90 ms, one landing mid-request held the alerts in flight that long), and stop thaws it."""

from __future__ import annotations

import asyncio
import gc

from casewatch.wiring import create_service, run_service
from tests.test_delivery_support import make_settings


async def test_a_started_service_freezes_its_heap_and_stop_thaws_it(sqlite_url: str) -> None:
    settings = make_settings(
        database={"url": sqlite_url}, http={"host": "127.0.0.1", "port": 0}, slack={"mode": "off"},
    )
    assert gc.get_freeze_count() == 0
    service = await create_service(settings)
    stop_event = asyncio.Event()
    frozen: list[int] = []

    def ready(_port: int) -> None:
        frozen.append(gc.get_freeze_count())
        stop_event.set()

    await asyncio.wait_for(run_service(service, stop_event=stop_event, on_ready=ready), 30)
    assert frozen and frozen[0] > 1000  # the start-up heap: modules, settings, mappers
    assert gc.get_freeze_count() == 0
