"""`streams.app`: where the worker departs from Faust's defaults (fetch wait, producer buffer)."""

from __future__ import annotations

import asyncio

from streams.app import create_app
from streams.consumer import consumer_options
from streams.demo import embedded_settings
from streams.settings import Settings


async def worker_fetch_wait(settings: Settings) -> int:
    app = create_app(settings).app
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return consumer._fetch_max_wait_ms
    finally:
        await consumer.stop()


def test_each_app_gets_its_own_fetch_wait():
    """Two apps in one process (as in the tests): the patch reads the wait per app."""
    base = Settings(bootstrap_servers="127.0.0.1:1", dedup=False, stories=False)

    async def both() -> list[int]:
        return [await worker_fetch_wait(base.with_pipeline()),
                await worker_fetch_wait(embedded_settings(base, "127.0.0.1:1").with_pipeline())]

    assert asyncio.run(both()) == [500, 100]


def test_readers_take_the_same_wait():
    settings = Settings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=250)
    assert consumer_options(settings)["fetch_max_wait_ms"] == 250


def test_a_batch_of_changelog_writes_does_not_stall_dispatch(caplog):
    """Faust stops dispatching messages while more than 100 changelog records wait in its
    producer buffer (it warns, then waits them out one by one); a stories batch queues
    thousands, and the agents wait for their own records' acknowledgements anyway."""
    from agents.stories_agent import BATCH_EVENTS

    async def ebb_with_one_batch_queued() -> None:
        app = create_app(Settings(bootstrap_servers="127.0.0.1:1").with_pipeline()).app
        for _ in range(BATCH_EVENTS * 110):  # ~100 story keys an article
            app.producer.buffer.pending.put_nowait(None)
        await app.producer.buffer.wait_until_ebb()

    asyncio.run(ebb_with_one_batch_queued())
    assert "producer buffer full" not in caplog.text
