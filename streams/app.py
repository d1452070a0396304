"""The Faust app: one consumer group (`NEWSFLOW_APP_ID`) running the enrich agent.

Built from `Settings` by `create_app`, so each worker process (and each test) gets its own
configuration without module-level globals. Run it with `newsflow worker [faust worker
options]`; scale by starting one worker per core with the same app id (the group splits the
raw-pages partitions between them; more workers than partitions leaves some idle).

Web endpoint (Faust's, port `NEWSFLOW_WEB_PORT`): `/newsflow/status/` answers with this
worker's assigned partitions and what it has processed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from agents.dedup_agent import CLAIMS, GATHER, attach_dedup_agents
from agents.enrich_agent import ARTICLES, DEAD_LETTER, AgentStats, attach_enrich_agent
from agents.stories_agent import STORIES, attach_story_agent
from streams import metrics, stall
from streams.consumer import first_offset_from
from streams.producer import exit_without_committing
from streams.settings import Settings
from streams.topics import TopicNames, worker_name

log = logging.getLogger(__name__)

STATUS_PATH = "/newsflow/status/"


@dataclass
class NewsflowApp:
    """The Faust app plus the handles tests and the CLI need."""

    app: faust.App
    settings: Settings
    topics: dict[str, Any]  # role -> faust topic: raw_pages, articles, dead_letter, duplicates
    agent: Any
    stats: AgentStats
    dedup: Any = None  # agents.dedup_agent.DedupAgents when NEWSFLOW_DEDUP is on
    stories: Any = None  # agents.stories_agent.StoryAgents when NEWSFLOW_STORIES is on


def broker_url(settings: Settings) -> str:
    """`host1:9092,host2:9092` -> `kafka://host1:9092;kafka://host2:9092` (Faust's form)."""
    if not settings.servers:
        raise ValueError("no broker: set KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port])")
    return ";".join(f"kafka://{server}" for server in settings.servers)


class QuietWorker(faust.Worker):
    """Faust's worker without its terminal spinner. To spin on every log record, Faust sets
    the root logger to DEBUG whenever the level asked for is WARN or above (the default), so
    each debug call in Faust and aiokafka (several per record sent) builds a LogRecord that
    the WARN handler then drops: 6-7% of the worker process's CPU under load (py-spy)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def faust_options(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours; each one is a `Settings` field (see README)."""
    return {
        "broker": broker_url(settings),
        "store": settings.store,
        "datadir": settings.data_dir,
        "autodiscover": False,
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "table_standby_replicas": settings.standby_replicas,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": settings.heartbeat_interval,
        "broker_rebalance_timeout": settings.rebalance_timeout,
        "broker_request_timeout": max(settings.request_timeout, settings.session_timeout + 5),
        "consumer_max_fetch_size": settings.max_message_bytes,
        "consumer_auto_offset_reset": "earliest",
        # Bound what sits fetched but unprocessed: pages are big (up to NEWSFLOW_MAX_PAGE_BYTES)
        # and slow, so Faust's default of 4096 buffered events would mean gigabytes of RAM and
        # minutes of redelivery after a rebalance.
        "stream_buffer_maxsize": 4 * settings.batch_size,
        "broker_max_poll_records": 2 * settings.batch_size,
        "producer_max_request_size": settings.max_message_bytes,
        "producer_linger": settings.producer_linger_ms / 1000,
        "producer_max_batch_size": 1 if settings.one_record_per_batch
        else settings.producer_batch_bytes,
        "producer_compression_type": None if settings.producer_compression == "none"
        else settings.producer_compression,
        "producer_acks": -1 if settings.producer_acks == "all" else int(settings.producer_acks),
        "producer_request_timeout": settings.delivery_timeout,
        "processing_guarantee": "exactly_once" if settings.exactly_once else "at_least_once",
        "Worker": QuietWorker,
    }


def exit_when_changelog_writes_fail() -> None:
    """Faust sends table changelog records from a background task of its producer buffer (ours
    only under exactly-once: otherwise the agents send them, `changelog_futures`); a
    send that fails there (a delivery timeout in an outage) crashes the task and the worker
    stops gracefully with exit 1, while the agent waiting on those records is cancelled
    mid-batch. Exit 70 at once instead, as the agents do on a failed delivery: nothing is
    committed past what was delivered, and the batch replays after the restart."""
    from faust.transport.producer import ProducerBuffer

    send = ProducerBuffer._send_pending
    if getattr(send, "exits_on_failure", False):
        return

    async def send_or_exit(self: ProducerBuffer, fut: Any) -> None:
        try:
            await send(self, fut)
        except Exception as exc:
            exit_without_committing(f"cannot write a table changelog record ({exc!r})")

    send_or_exit.exits_on_failure = True  # type: ignore[attr-defined]
    ProducerBuffer._send_pending = send_or_exit  # type: ignore[method-assign]


def use_fetch_max_wait(app: faust.App, milliseconds: int) -> None:
    """Give `app`'s consumer our fetch max wait: faust-streaming 0.15 hard-codes 1500 ms
    (`AIOKafkaConsumerThread._create_worker_consumer`), which on Tansu, which answers a fetch
    only when the wait expires, adds 0-1.5 s to every hop (p50 2.1 s produce -> article)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    app.newsflow_fetch_max_wait_ms = milliseconds
    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "newsflow_fetch_wait", False):
        return

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        wait = getattr(self.app, "newsflow_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait  # read by consumer.start() for its fetcher
        return consumer

    create_worker_consumer.newsflow_fetch_wait = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def unthrottle_changelog_writes(app: faust.App, limit: int = 100_000) -> None:
    """Table writes queue their changelog records in the producer's buffer (under exactly-once;
    otherwise the agents send them, `changelog_futures`), and Faust stops dispatching incoming
    messages whenever more than 100 wait there: it logs a warning and waits for them one by
    one (a `wait_for` each). A batch of the dedup or stories agents writes thousands at once
    (40 band keys a page, ~100 story keys an article), and each agent waits for its batch's
    records to be acknowledged before its next batch, which bounds the buffer already; the ebb
    cost 8% of the worker process (py-spy). (Not a `faust.App`
    subclass: mode gives a subclass's module logger a NullHandler, silencing this module's
    last words when logging is not configured.)"""
    new_producer = app._new_producer

    def _new_producer() -> Any:
        producer = new_producer()
        producer.buffer.max_messages = limit
        return producer

    app._new_producer = _new_producer  # type: ignore[method-assign]


def create_app(settings: Settings) -> NewsflowApp:
    app = faust.App(settings.app_id, **faust_options(settings))
    use_fetch_max_wait(app, settings.fetch_max_wait_ms)
    unthrottle_changelog_writes(app)
    names = TopicNames.from_settings(settings)

    def raw_topic(name: str):
        # Bytes in, bytes out: our code parses (streams/envelope.py) and encodes (orjson), so a
        # malformed input becomes a dead letter instead of a codec error inside Faust.
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=settings.partitions)  # fmt: skip

    topics = {
        "raw_pages": raw_topic(names.raw_pages),
        ARTICLES: raw_topic(names.articles),
        DEAD_LETTER: raw_topic(names.dead_letter),
        "duplicates": raw_topic(names.duplicates),
    }
    # Internal topics: declared internal too, so Faust creates them (with our partition count
    # and record size) even when NEWSFLOW_CREATE_TOPICS is off.
    config = {"max.message.bytes": str(settings.max_message_bytes)}
    internal = ((GATHER, names.dedup_gather), (CLAIMS, names.dedup_claims),
                (STORIES, names.stories))  # fmt: skip
    for role, name in internal:
        if name:
            topics[role] = app.topic(name, key_type=bytes, value_type=bytes,
                                     key_serializer="raw", value_serializer="raw",
                                     partitions=names.partitions(name, settings),
                                     internal=True, config=config)  # fmt: skip
    stories = attach_story_agent(app, topics, settings) if settings.stories else None
    dedup = attach_dedup_agents(app, topics, settings) if settings.dedup else None
    agent, stats, executor = attach_enrich_agent(app, topics["raw_pages"], topics, settings,
                                                 dedup=dedup and dedup.router)  # fmt: skip
    metrics.install(app, topics=[names.raw_pages])  # /metrics on the web port, lag timer
    # Re-reads a message Faust dropped around a recovery; commits past real holes (stall.py).
    stall.install(app, probe=lambda tp, offset: first_offset_from(
        settings, tp.topic, tp.partition, offset))  # fmt: skip
    exit_when_changelog_writes_fail()
    worker = worker_name()

    @app.page(STATUS_PATH)
    async def status(web, request):
        assigned = sorted(
            (tp.topic, tp.partition) for tp in app.consumer.assignment()
            if tp.topic == names.raw_pages
        ) if app.consumer else []  # fmt: skip
        return web.json({
            "app_id": settings.app_id,
            "worker": worker,
            "partitions": [p for _, p in assigned],
            **stats.to_dict(),
            "dedup": dedup.stats.to_dict() if dedup else None,
            "stories_held": len(stories.buffer) if stories else None,
        })  # fmt: skip

    @app.on_before_shutdown.connect
    async def stop_executor(sender: Any, **_kwargs: Any) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    return NewsflowApp(app, settings, topics, agent, stats, dedup, stories)
