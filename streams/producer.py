"""Put pages on raw-pages: the engine of `newsflow produce`, also used by the demo and tests.

Throughput comes from the Kafka producer's own batching (`NEWSFLOW_PRODUCER_LINGER_MS`,
`NEWSFLOW_PRODUCER_BATCH_BYTES`) and compression (`NEWSFLOW_PRODUCER_COMPRESSION`, zstd by
default: HTML shrinks 4-8x); sends are pipelined (up to `NEWSFLOW_PRODUCER_MAX_IN_FLIGHT`
awaiting acknowledgement) rather than awaited one by one. A send that fails with a retriable
error is retried `NEWSFLOW_PRODUCER_RETRIES` times with exponential backoff; one that still
fails is counted and reported with its URL, never dropped silently.

Keys and partitions (`ProduceOptions`):
  key=url (default)   the URL is the key: every version of a page goes to one partition, in order
  key=none            no key: records spread over partitions (the dead letter then has no key)
  partition_by=host   partition chosen from the URL's host (murmur2, as Kafka's default
                      partitioner): one site's pages stay together and in order, e.g. for
                      per-site politeness or dedup locality, at the risk of a hot partition
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

from agents.records import RawPage
from streams.envelope import envelope_key, page_to_envelope
from streams.settings import Settings
from streams.sources import SourceError
from streams.topics import client_options

log = logging.getLogger(__name__)

KEY_MODES = ("url", "none")
PARTITION_MODES = ("key", "host")
MAX_PROBLEMS_KEPT = 100


@dataclass(frozen=True)
class ProduceOptions:
    key: str = "url"
    partition_by: str = "key"
    rate: float | None = None  # pages per second; None = as fast as the broker takes them

    def __post_init__(self) -> None:
        if self.key not in KEY_MODES:
            raise ValueError(f"key must be one of {KEY_MODES}, not {self.key!r}")
        if self.partition_by not in PARTITION_MODES:
            raise ValueError(f"partition_by must be one of {PARTITION_MODES}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")


@dataclass
class ProduceReport:
    """What happened to every input: sent + skipped + failed == read."""

    read: int = 0
    sent: int = 0
    skipped: int = 0  # unreadable or over a size cap: never sent
    failed: int = 0  # sent, but the broker did not take it after all retries
    retried: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    # (partition, offset) of every record the broker acknowledged, in acknowledgement order.
    positions: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS_KEPT, for the report

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "sent": self.sent,
            "skipped": self.skipped,
            "failed": self.failed,
            "retried": self.retried,
            "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3),
            "pages_per_second": round(self.sent / self.seconds, 2) if self.seconds else None,
            "problems": self.problems,
        }


def producer_options(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options from settings (also what tests use to write raw records)."""
    return {
        **client_options(settings),
        "acks": "all" if settings.producer_acks == "all" else int(settings.producer_acks),
        "compression_type": None if settings.producer_compression == "none"
        else settings.producer_compression,
        "linger_ms": settings.producer_linger_ms,
        # A batch smaller than any record makes every record its own batch (Tansu quirk).
        "max_batch_size": 1 if settings.one_record_per_batch else settings.producer_batch_bytes,
        "max_request_size": settings.max_message_bytes,
        "enable_idempotence": settings.producer_idempotence,
        "retry_backoff_ms": int(settings.producer_retry_backoff * 1000),
    }


async def send_all(topics: Mapping[str, Any], records: Sequence[Any]) -> list[BaseException | None]:
    """Send each record (`role`, `key`, `value`, `partition`, `headers`) to its role's Faust
    topic, then wait for every acknowledgement: one error, or None, per record. A record
    refused before it was sent (e.g. over `max_request_size`) gets its error too."""
    pending: list[Any] = []
    for r in records:
        try:
            pending.append(await topics[r.role].send(key=r.key, value=r.value,
                                                     partition=r.partition,
                                                     headers=list(r.headers)))  # fmt: skip
        except Exception as exc:
            pending.append(asyncio.sleep(0, exc))
    results = await asyncio.gather(*pending, return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def exit_without_committing(reason: str) -> NoReturn:
    """Exit 70 (EX_SOFTWARE) at once, the batch in hand unacked, so it replays after the
    restart. Raising would not do: Faust acks and commits a batch whose agent raised."""
    log.critical("%s; exiting without committing", reason)
    logging.shutdown()
    os._exit(70)


def record_refused(error: BaseException) -> bool:
    """True if the broker (or the client, before sending) refused this one record for good:
    too large for the topic, invalid, not authorised. Sending it again cannot help, so the
    worker dead-letters its input (`output_rejected`). False for everything else, above all a
    delivery timeout (`KafkaTimeoutError`, the broker unreachable for longer than
    `NEWSFLOW_DELIVERY_TIMEOUT`) and connection or other retriable errors: the record is
    fine and the broker may come back, so a dead letter would lose a good page; the worker
    exits without committing instead, and the batch replays after the restart."""
    from aiokafka.errors import BrokerResponseError, KafkaError, RecordTooLargeError

    while not isinstance(error, KafkaError) and isinstance(error.__cause__, BaseException):
        error = error.__cause__  # Faust raises ProducerSendError from the aiokafka error
    if isinstance(error, RecordTooLargeError):
        return True
    return isinstance(error, BrokerResponseError) and not error.retriable


def host_partition(url: str, partitions: int) -> int:
    """The partition for a URL's host: murmur2 like Kafka's default partitioner, so the
    mapping is the one a Java producer keyed by host would pick."""
    from aiokafka.partitioner import murmur2

    host = (urlsplit(url).hostname or "").encode("utf-8", "replace")
    return (murmur2(host) & 0x7FFFFFFF) % partitions


class _Done:
    pass


DONE = _Done()


async def produce(
    items: Iterable[RawPage | SourceError],
    settings: Settings,
    options: ProduceOptions | None = None,
    *,
    progress: Callable[[ProduceReport], None] | None = None,
    report: ProduceReport | None = None,
) -> ProduceReport:
    """Send every page in `items` to raw-pages; return (and fill in `report`) the counts.

    `items` is read in a helper thread, so a slow source (stdin from a crawler) never stalls
    the producer's network I/O. `progress` is called after each input.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    options = options or ProduceOptions()
    report = report if report is not None else ProduceReport()
    topic = settings.topic_raw_pages
    loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(**producer_options(settings))
    in_flight = asyncio.Semaphore(settings.producer_max_in_flight)
    pending: set[asyncio.Task] = set()
    start = time.perf_counter()

    async def send(value: bytes, key: bytes | None, partition: int | None):
        """Queue one record; returns the delivery future (aiokafka batches behind it)."""
        return await producer.send(topic, value, key=key, partition=partition)

    async def deliver(first: Any, value: bytes, key: bytes | None, partition: int | None,
                      url: str) -> None:  # fmt: skip
        attempt = 0
        delivery = first
        try:
            while True:
                try:
                    if isinstance(delivery, BaseException):
                        raise delivery
                    meta = await delivery
                    report.sent += 1
                    report.bytes_sent += len(value)
                    report.positions.append((meta.partition, meta.offset))
                    return
                except KafkaError as exc:
                    if not exc.retriable or attempt >= settings.producer_retries:
                        report.failed += 1
                        report.problem(f"failed: {url}: {type(exc).__name__}: {exc}")
                        log.warning("send failed for %s: %r", url, exc)
                        return
                    attempt += 1
                    report.retried += 1
                    await asyncio.sleep(settings.producer_retry_backoff * 2 ** (attempt - 1))
                    try:
                        delivery = await send(value, key, partition)
                    except KafkaError as again:
                        delivery = again
        finally:
            in_flight.release()

    await producer.start()
    iterator: Iterator = iter(items)
    try:
        partitions = None
        if options.partition_by == "host":
            partitions = len(await producer.partitions_for(topic))
        while True:
            item = await loop.run_in_executor(None, next, iterator, DONE)
            if item is DONE:
                break
            report.read += 1
            if isinstance(item, SourceError):
                report.skipped += 1
                report.problem(f"skipped: {item.source}: {item.failure.reason}: "
                               f"{item.failure.message}")  # fmt: skip
            else:
                await _send_page(item, settings, options, partitions, report, send, deliver,
                                 in_flight, pending)  # fmt: skip
            if options.rate:
                delay = start + report.read / options.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if progress:
                progress(report)
        if pending:
            await asyncio.gather(*pending)
    finally:
        for task in pending:
            task.cancel()
        await producer.stop()  # flushes what is still batched
        report.seconds = time.perf_counter() - start
    return report


async def _send_page(page: RawPage, settings: Settings, options: ProduceOptions,
                     partitions: int | None, report: ProduceReport, send, deliver,
                     in_flight: asyncio.Semaphore, pending: set) -> None:  # fmt: skip
    from aiokafka.errors import KafkaError

    body_bytes = len(page.body) if isinstance(page.body, bytes) else len(page.body.encode())
    if body_bytes > settings.max_page_bytes:
        report.skipped += 1
        report.problem(f"skipped: {page.url}: too_large: {body_bytes} bytes > "
                       f"{settings.max_page_bytes}")  # fmt: skip
        return
    value = page_to_envelope(page)
    if len(value) > settings.max_message_bytes:
        report.skipped += 1
        report.problem(f"skipped: {page.url}: too_large: envelope {len(value)} bytes > "
                       f"{settings.max_message_bytes}")  # fmt: skip
        return
    key = envelope_key(page) if options.key == "url" else None
    partition = host_partition(page.url, partitions) if partitions else None
    await in_flight.acquire()
    try:
        first = await send(value, key, partition)
    except KafkaError as exc:
        first = exc
    task = asyncio.ensure_future(deliver(first, value, key, partition, page.url))
    pending.add(task)
    task.add_done_callback(pending.discard)
