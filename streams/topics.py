"""The topics newsflow reads and writes, how they are created, and what their records hold.

    raw-pages    key = URL (or none)      value = JSON envelope or bare HTML (streams/envelope.py)
    articles     key = article id         value = orjson of `Article.to_dict()` (has schema_version)
    dead-letter  key = the input's key    value = `dead_letter_value` (input reference + reason)
    duplicates   key = article id         value = `{id, url, duplicate_of, kind, similarity}`

Internal, with `NEWSFLOW_DEDUP` on (agents/dedup_agent.py; names derived from the app id):
`<app id>-dedup-claims` (one partition owns each URL key, fingerprint and LSH band key) and
`<app id>-dedup-gather` (one partition owns each article id's verdict). Faust creates the
changelog topics of the dedup tables itself (`<app id>-dedup-*-changelog`). With
`NEWSFLOW_STORIES` on: `<app id>-stories`, one partition, canonical articles on their way to
the story agent (agents/stories_agent.py), and its tables' `<app id>-stories-*-changelog`.

Schemas: `streams/schemas/{raw-page,article,dead-letter,duplicate}.schema.json`. Every outcome
record (articles, dead-letter, duplicates) carries the header `newsflow-input` = JSON
`{"topic", "partition", "offset"}` of the raw-pages record it came from, so anyone can check
that each input ended in exactly one outcome, and `newsflow-worker` = `host:pid`.
Topic bytes are handled here, never by Faust's codecs: a malformed input must become a
dead-letter record, not a deserialisation crash inside the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.records import Article, Failure
from streams.settings import Settings

log = logging.getLogger(__name__)

INPUT_HEADER = "newsflow-input"
WORKER_HEADER = "newsflow-worker"
DEAD_LETTER_SCHEMA_VERSION = 1
MAX_MESSAGE_CHARS = 2_000
# What an encoded article may use of a record: the rest is headroom for key and headers.
RECORD_HEADROOM = 64 * 1024


@dataclass(frozen=True)
class TopicNames:
    raw_pages: str
    articles: str
    dead_letter: str
    duplicates: str
    dedup_claims: str = ""  # internal; "" when dedup is off
    dedup_gather: str = ""
    stories: str = ""  # internal, one partition; "" when stories are off

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        internal = ((f"{settings.app_id}-dedup-claims", f"{settings.app_id}-dedup-gather")
                    if settings.dedup else ("", ""))  # fmt: skip
        stories = f"{settings.app_id}-stories" if settings.stories else ""
        return cls(settings.topic_raw_pages, settings.topic_articles,
                   settings.topic_dead_letter, settings.topic_duplicates, *internal,
                   stories)  # fmt: skip

    @property
    def outcomes(self) -> tuple[str, str, str]:
        """The topics where an input can end up."""
        return (self.articles, self.dead_letter, self.duplicates)

    @property
    def internal(self) -> tuple[str, ...]:
        """Topics only the workers read and write (the dedup and stories agents')."""
        return tuple(n for n in (self.dedup_claims, self.dedup_gather, self.stories) if n)

    def partitions(self, name: str, settings: Settings) -> int:
        """The stories topic has one partition (one agent decides every story); the rest
        have `NEWSFLOW_PARTITIONS`."""
        return 1 if name == self.stories else settings.partitions

    def all(self) -> tuple[str, ...]:
        return (self.raw_pages, *self.outcomes, *self.internal)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------- topic administration


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka options every newsflow client shares."""
    if not settings.servers:
        raise ValueError("no broker: set KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port])")
    return {
        "bootstrap_servers": settings.servers,
        "request_timeout_ms": int(settings.request_timeout * 1000),
        "client_id": f"newsflow-{settings.app_id}",
    }


async def ensure_topics(settings: Settings, names: tuple[str, ...] | None = None) -> list[str]:
    """Create the missing topics with our partition count; returns the ones created.

    Explicit creation, before anything else touches them, because a broker that auto-creates
    topics (Tansu, many Kafka installs) would pick its own partition count on first use.
    An existing topic is left as it is, whatever its partition count.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    known = TopicNames.from_settings(settings)
    names = names or known.all()
    config = {"max.message.bytes": str(settings.max_message_bytes)}
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        new = [NewTopic(n, known.partitions(n, settings), settings.replication_factor,
                        topic_configs=config) for n in names]  # fmt: skip
        response = await admin.create_topics(new, timeout_ms=int(settings.request_timeout * 1000))
        created = []
        for name, code, message in (e[:3] for e in response.topic_errors):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"cannot create topic {name!r}: error {code}: {message}")
        if created:
            log.info("created topics %s with %d partitions", created, settings.partitions)
        return created
    finally:
        await admin.close()


def create_topics(settings: Settings) -> list[str]:
    """Synchronous `ensure_topics`, for commands that run before any event loop."""
    return asyncio.run(ensure_topics(settings))


# ---------------------------------------------------------------- outcome records


@dataclass(frozen=True, slots=True)
class InputRef:
    """Where an input record sits: enough to find it again (and to replay it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value_bytes: int = 0

    def header(self) -> bytes:
        return orjson.dumps({"topic": self.topic, "partition": self.partition,
                             "offset": self.offset})  # fmt: skip

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def outcome_headers(ref: InputRef, worker: str) -> list[tuple[str, bytes]]:
    return [(INPUT_HEADER, ref.header()), (WORKER_HEADER, worker.encode())]


def _text(value: bytes | None, cap: int) -> str | None:
    if value is None:
        return None
    return value[: 4 * cap].decode("utf-8", "backslashreplace")[:cap]


def dead_letter_value(
    ref: InputRef, failure: Failure, *, url: str | None = None, worker: str = "",
    now: datetime | None = None, max_key_chars: int = 4_096,
) -> bytes:  # fmt: skip
    """The dead-letter record: the input's reference (not its content: replay by offset),
    the reason code and stage that ended it, and when."""
    now = now or datetime.now(UTC)
    doc = {
        "schema_version": DEAD_LETTER_SCHEMA_VERSION,
        "input": {
            "topic": ref.topic,
            "partition": ref.partition,
            "offset": ref.offset,
            "key": _text(ref.key, max_key_chars),
            "value_bytes": ref.value_bytes,
        },
        "url": url[:max_key_chars] if url else None,
        "reason": failure.reason,
        "stage": failure.stage,
        "message": failure.message[:MAX_MESSAGE_CHARS],
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "worker": worker,
    }
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:  # lone surrogates in a message or URL: not valid JSON text
        return orjson.dumps(_scrub(doc))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def article_value(article: Article, max_bytes: int) -> bytes | Failure:
    """orjson of the article, or a Failure when it cannot travel (lone surrogates from a
    broken decode; a record over `max_bytes`): the input then dead-letters instead of
    taking the worker down at send time."""
    try:
        value = orjson.dumps(article)  # a dataclass: orjson writes what asdict would, 7x faster
    except (orjson.JSONEncodeError, TypeError) as exc:
        return Failure("unencodable_article", "output", f"{exc}"[:MAX_MESSAGE_CHARS])
    if len(value) > max_bytes - RECORD_HEADROOM:
        cap = max_bytes - RECORD_HEADROOM
        return Failure("article_too_large", "output", f"{len(value)} bytes > {cap}")
    return value


# ---------------------------------------------------------------- reading outcomes back


@dataclass(frozen=True, slots=True)
class Outcome:
    """One outcome record as read back from articles / dead-letter / duplicates."""

    kind: str  # "article" | "dead_letter" | "duplicate"
    input: tuple[str, int, int] | None  # (topic, partition, offset) of the raw-pages record
    key: bytes | None
    value: dict[str, Any] | None
    worker: str = ""


def outcome_kind(names: TopicNames, topic: str) -> str:
    return {names.articles: "article", names.dead_letter: "dead_letter",
            names.duplicates: "duplicate"}.get(topic, topic)  # fmt: skip


def decode_outcome(kind: str, key: bytes | None, value: bytes | None, headers) -> Outcome:
    """Never raises: an unreadable value gives `value=None` (counted, not fatal)."""
    found = dict(headers or ())
    position = None
    if INPUT_HEADER in found:
        try:
            ref = orjson.loads(found[INPUT_HEADER])
            position = (str(ref["topic"]), int(ref["partition"]), int(ref["offset"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            position = None
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        doc = None
    worker = found.get(WORKER_HEADER, b"").decode("utf-8", "replace")
    if position is None and isinstance(doc, dict) and isinstance(doc.get("input"), dict):
        ref = doc["input"]  # dead letters carry the reference in the value too
        position = (ref.get("topic"), ref.get("partition"), ref.get("offset"))
    return Outcome(kind, position, key, doc if isinstance(doc, dict) else None, worker)
