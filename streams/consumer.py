"""Read newsflow's output topics back: `newsflow tail`, the demo's outcome count, the tests.

Reads without a consumer group (partitions assigned by hand, nothing committed), so watching
a topic never joins, rebalances or moves the offsets of the workers' group.
`OutcomeTally` matches outcome records to the raw-pages records they came from (by the
`newsflow-input` header, see streams/topics.py): that is how "every input has exactly one
outcome" is checked, and at-least-once redeliveries are recognised instead of double-counted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.settings import Settings
from streams.topics import Outcome, TopicNames, client_options, decode_outcome, outcome_kind

Position = tuple[str, int, int]  # (topic, partition, offset)


def consumer_options(settings: Settings) -> dict[str, Any]:
    return {
        **client_options(settings),
        "group_id": None,
        "enable_auto_commit": False,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "max_partition_fetch_bytes": settings.max_message_bytes,
        "fetch_max_bytes": max(settings.max_message_bytes, 50 * 1024 * 1024),
    }


async def _assign(consumer, topics: Collection[str]) -> list:
    from aiokafka import TopicPartition

    await consumer.topics()  # one metadata request that also covers `topics`
    tps = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist on the broker")
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
    consumer.assign(tps)
    return tps


async def first_offset_from(settings: Settings, topic: str, partition: int, offset: int,
                            timeout: float = 5.0) -> int | None:  # fmt: skip
    """The offset of the first record at or after `offset` in one partition, as a consumer
    reads it (transaction markers and compacted-away offsets hold none); None if none came
    within `timeout`. Tells a hole in the log from a record a worker dropped."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**consumer_options(settings))
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
    finally:
        await consumer.stop()
    records = batch.get(tp, [])
    return records[0].offset if records else None


async def end_offsets(settings: Settings, topics: Collection[str]) -> dict[tuple[str, int], int]:
    """Current end offset of every partition of `topics` (where "from now on" starts).
    On Tansu 0.6.0 this is only exact if every record batch held one record."""
    async with TopicReader(settings, topics, "end") as reader:
        tps = list(reader.consumer.assignment())
        ends = await reader.consumer.end_offsets(tps)
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


class TopicReader:
    """All partitions of `topics`, read from `start` without a group:

        async with TopicReader(settings, ["articles"], start="beginning") as reader:
            records = await reader.poll(timeout=0.5)

    `start`: "beginning", "end", or an offset per (topic, partition) (missing: beginning).
    """

    def __init__(self, settings: Settings, topics: Collection[str],
                 start: str | Mapping[tuple[str, int], int] = "end") -> None:  # fmt: skip
        from aiokafka import AIOKafkaConsumer

        self.topics = list(topics)
        self.start = start
        self.consumer = AIOKafkaConsumer(**consumer_options(settings))

    async def __aenter__(self) -> TopicReader:
        consumer = self.consumer
        try:
            await consumer.start()
            tps = await _assign(consumer, self.topics)
            if self.start == "beginning":
                await consumer.seek_to_beginning(*tps)
            elif self.start == "end":
                await consumer.seek_to_end(*tps)
            else:
                for tp in tps:
                    offset = self.start.get((tp.topic, tp.partition))
                    if offset is None:
                        await consumer.seek_to_beginning(tp)
                    else:
                        consumer.seek(tp, offset)
        except BaseException:
            await consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout: float = 0.2, max_records: int = 500) -> list[Any]:
        """Records that arrived within `timeout` seconds (possibly none), in partition order."""
        batches = await self.consumer.getmany(timeout_ms=int(timeout * 1000),
                                              max_records=max_records)  # fmt: skip
        return [record for records in batches.values() for record in records]


async def read_records(
    settings: Settings,
    topics: Collection[str],
    *,
    start: str | Mapping[tuple[str, int], int] = "end",
    idle_timeout: float | None = None,
    limit: int | None = None,
) -> AsyncIterator[Any]:
    """Yield aiokafka `ConsumerRecord`s; stop after `limit` records, or when nothing arrived
    for `idle_timeout` seconds (None: run until cancelled)."""
    count = 0
    async with TopicReader(settings, topics, start) as reader:
        last = time.monotonic()
        while limit is None or count < limit:
            records = await reader.poll()
            if not records:
                if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                    return
                continue
            last = time.monotonic()
            for record in records[: None if limit is None else limit - count]:
                count += 1
                yield record


@dataclass
class OutcomeTally:
    """Outcomes keyed by the input they came from; `expected` limits them to our inputs."""

    expected: set[Position] | None = None
    outcomes: dict[Position, Outcome] = field(default_factory=dict)
    redelivered: int = 0  # the same input's outcome seen again (at-least-once replay)
    conflicts: list[tuple[Position, str, str]] = field(default_factory=list)  # kinds disagree
    unmatched: int = 0  # outcome records with no (or a foreign) input reference

    def add(self, outcome: Outcome) -> bool:
        """Record one outcome; True if it was the first for its input."""
        position = outcome.input
        if position is None or (self.expected is not None and position not in self.expected):
            self.unmatched += 1
            return False
        seen = self.outcomes.get(position)
        if seen is None:
            self.outcomes[position] = outcome
            return True
        self.redelivered += 1
        if seen.kind != outcome.kind:
            self.conflicts.append((position, seen.kind, outcome.kind))
        return False

    @property
    def done(self) -> bool:
        return self.expected is not None and len(self.outcomes) >= len(self.expected)

    def missing(self) -> set[Position]:
        return (self.expected or set()) - set(self.outcomes)

    def summary(self, top: int = 10) -> dict[str, Any]:
        """Counts for people: outcomes by kind, dead letters by reason, languages, entities."""
        kinds = Counter(o.kind for o in self.outcomes.values())
        reasons: Counter[str] = Counter()
        languages: Counter[str] = Counter()
        entities: Counter[tuple[str, str]] = Counter()
        for o in self.outcomes.values():
            value = o.value or {}
            if o.kind == "dead_letter":
                reasons[f"{value.get('stage')}/{value.get('reason')}"] += 1
            elif o.kind == "article":
                languages[str(value.get("language"))] += 1
                for e in value.get("entities") or []:
                    entities[(e.get("text"), e.get("label"))] += int(e.get("count") or 1)
        return {
            "outcomes": len(self.outcomes),
            "articles": kinds.get("article", 0),
            "dead_letters": kinds.get("dead_letter", 0),
            "duplicates": kinds.get("duplicate", 0),
            "stories": len({(o.value or {}).get("story_id") for o in self.outcomes.values()
                            if o.kind == "article" and (o.value or {}).get("story_id")}),
            "dead_letter_reasons": dict(reasons.most_common()),
            "languages": dict(languages.most_common()),
            "top_entities": [
                {"text": t, "label": label, "count": c}
                for (t, label), c in entities.most_common(top)
            ],
            "redelivered": self.redelivered,
            "conflicts": len(self.conflicts),
            "workers": sorted({o.worker for o in self.outcomes.values() if o.worker}),
        }


async def wait_for_outcomes(
    settings: Settings,
    tally: OutcomeTally,
    *,
    start: str | Mapping[tuple[str, int], int] = "beginning",
    timeout: float = 600.0,
    progress: Callable[[OutcomeTally], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Consume articles / dead-letter / duplicates into `tally` until it is `done` (True),
    `timeout` seconds pass or `should_stop()` says so, e.g. the worker died (False)."""
    names = TopicNames.from_settings(settings)
    deadline = time.monotonic() + timeout
    async with TopicReader(settings, names.outcomes, start) as reader:
        while not tally.done:
            if time.monotonic() >= deadline or (should_stop is not None and should_stop()):
                return False
            for record in await reader.poll(0.25):
                kind = outcome_kind(names, record.topic)
                tally.add(decode_outcome(kind, record.key, record.value, record.headers))
            if progress is not None:
                progress(tally)
    return True
