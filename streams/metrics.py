"""Prometheus metrics for a newsflow worker: what it took in, what came out, how long it took.

Every Grafana panel and alert rule in `grafana/` and `deploy/prometheus/` reads a metric defined
here (or Faust's own sensor metrics, prefixed `faust_`, or Prometheus' `up`). `install(app)`
puts them on the worker's Faust web port at `/metrics`.

Recording is done from plain values (an outcome, a stage's seconds, offsets), never from inside
a stage, so the process that serves `/metrics` is the one that counts even when the stage work
runs elsewhere (a thread or a process pool); each worker process exposes its own counts and the
dashboards sum over instances. Every label has a bounded value set: unknown values become
"other", and nothing is ever labelled by URL or article id.

Invariant, summed over a group's workers (per worker too with dedup and stories off, since
those stages decide a page's outcome on whichever worker holds its partition):
pages_received = articles_out + duplicates + dead_letters + in_flight.
"""

from __future__ import annotations

import functools
import logging
import math
import platform
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from agents.records import Article, Failure

log = logging.getLogger(__name__)

NAMESPACE = "newsflow"

# Stage times: a clean or language call takes about a millisecond, a trafilatura extraction or
# a spaCy pass tens to hundreds; anything over 10 s is a pathological page.
STAGE_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# End-to-end: seconds when the worker keeps up, minutes when it works through a backlog; the
# `fetched` clock also holds the crawler's own delay, hence the hour and day buckets.
END_TO_END_BUCKETS = (
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0,
    86400.0,
)  # fmt: skip

DUPLICATE_KINDS = ("url", "exact", "near")
# Stages a failure or a timing can name; anything else is counted as "other".
STAGES = (
    "source", "envelope", "extract", "clean", "language", "entities", "pipeline", "dedup",
    "stories", "output",
)  # fmt: skip
# Every (reason, stage) a page on the enrich path can be dead-lettered with, pre-initialised so
# each series exists at 0 (tests/test_metrics.py checks this list against the stage code).
KNOWN_FAILURES = (
    *(
        (reason, "envelope")
        for reason in (
            "missing_url", "invalid_url", "field_too_large", "missing_body", "too_large",
            "empty_page", "malformed_envelope", "internal_error",
        )
    ),
    *(
        (reason, "extract")
        for reason in (
            "too_large", "not_html", "decode_error", "parse_error", "empty_text", "internal_error",
        )
    ),
    ("empty_text", "clean"),
    ("internal_error", "clean"),
    ("internal_error", "language"),
    # agents/supervisor.py: the page overran its budget, or the child process died on it
    *((reason, stage) for reason in ("timeout", "worker_crash")
      for stage in ("extract", "clean", "language")),
    ("internal_error", "pipeline"),
    ("unencodable_article", "output"),
    ("article_too_large", "output"),
    ("output_rejected", "output"),
)  # fmt: skip
END_TO_END_CLOCKS = ("fetched", "produced")
STORY_OUTCOMES = ("new", "joined", "no_time")

# ISO 639-1, plus "und" (undetermined) as agents/language.py answers it.
_ISO_639_1_CODES = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv
    cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht
    hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la
    lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj
    om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv
    sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    und"""
ISO_639_1 = frozenset(_ISO_639_1_CODES.split())
# spaCy's OntoNotes labels (the English models) and WikiNER's (the multilingual ones).
_ENTITY_LABEL_NAMES = """
    CARDINAL DATE EVENT FAC GPE LANGUAGE LAW LOC MONEY NORP ORDINAL ORG PERCENT PERSON PRODUCT
    QUANTITY TIME WORK_OF_ART PER MISC"""
ENTITY_LABELS = frozenset(_ENTITY_LABEL_NAMES.split())

OTHER = "other"
_SNAKE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_MAX_TIME_CHARS = 64


class BoundedLabel:
    """Maps a label value onto a bounded set.

    Values in `allowed` pass; others pass only if they look like a code (snake_case, short)
    and fewer than `cap` such extra values have been seen; everything else is "other". So a
    new reason code added in a stage shows up by name, and a bug that puts free text into a
    reason can still not blow up the series count.
    """

    def __init__(self, allowed: Collection[str] = (), cap: int = 0) -> None:
        self.allowed = frozenset(allowed)
        self.cap = cap
        self.extra: set[str] = set()

    def __call__(self, value: object) -> str:
        if not isinstance(value, str):
            return OTHER
        if value in self.allowed or value in self.extra:
            return value
        if len(self.extra) < self.cap and _SNAKE.fullmatch(value):
            self.extra.add(value)
            return value
        return OTHER


def parse_timestamp(value: object) -> float | None:
    """POSIX seconds from an ISO 8601 string (naive means UTC); None if it is not one."""
    if not isinstance(value, str) or not value or len(value) > _MAX_TIME_CHARS:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One consumed partition: the broker's high watermark and the group's committed offset."""

    topic: str
    partition: int
    highwater: int
    committed: int

    @property
    def lag(self) -> int:
        return max(self.highwater - self.committed, 0)


class ConsumerLagCollector:
    """Exports the last offsets reading per partition, replaced whole on each update.

    A collector rather than gauges, so a partition this worker lost in a rebalance disappears
    from `/metrics` at once instead of reporting a frozen lag forever.
    """

    def __init__(self) -> None:
        self.readings: tuple[PartitionOffsets, ...] = ()

    def update(self, readings: Iterable[PartitionOffsets]) -> None:
        self.readings = tuple(readings)

    def describe(self) -> list:
        return []  # Dynamic label sets: nothing to check for name clashes up front.

    def collect(self):
        lag = GaugeMetricFamily(
            f"{NAMESPACE}_consumer_lag_records",
            "Records in the partition not yet committed by this worker's consumer group.",
            labels=["topic", "partition"],
        )
        high = GaugeMetricFamily(
            f"{NAMESPACE}_consumer_highwater_offset",
            "The broker's high watermark (next offset to be written) of a consumed partition.",
            labels=["topic", "partition"],
        )
        done = GaugeMetricFamily(
            f"{NAMESPACE}_consumer_committed_offset",
            "The consumer group's committed offset (next offset to process) of a partition.",
            labels=["topic", "partition"],
        )
        for r in self.readings:
            labels = [r.topic, str(r.partition)]
            lag.add_metric(labels, r.lag)
            high.add_metric(labels, r.highwater)
            done.add_metric(labels, r.committed)
        return [lag, high, done]


class Metrics:
    """All newsflow metrics on one registry, with the small recording calls the agents make.

    One instance per worker process (`METRICS`); tests make their own on a fresh registry.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        build: Mapping[str, str] | None = None,
        process_collectors: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        if process_collectors:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        self.pages_received = Counter(
            "pages_received",
            "Raw pages taken off the input topic.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.articles_out = Counter(
            "articles_out",
            "Unique articles written to the articles topic.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.duplicates = Counter(
            "duplicates",
            "Pages found to duplicate an earlier article, by match kind.",
            ["kind"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Pages that produced no article, by reason code and stage.",
            ["reason", "stage"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.articles_by_language = Counter(
            "articles_by_language",
            "Articles out by detected language (ISO 639-1 or und).",
            ["language"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.entities = Counter(
            "entities",
            "Distinct entities tagged in articles out, by NER label.",
            ["label"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.stage_seconds = Histogram(
            "stage_duration_seconds",
            "Processing time of one page in one stage.",
            ["stage"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=STAGE_SECONDS_BUCKETS,
        )
        self.end_to_end = Histogram(
            "end_to_end_latency_seconds",
            "From the page's fetch (clock=fetched) or its write to the input topic "
            "(clock=produced) to its article being written out.",
            ["clock"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=END_TO_END_BUCKETS,
        )
        self.in_flight = Gauge(
            "pages_in_flight",
            "Pages received whose outcome is not written yet.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.dedup_entries = Gauge(
            "dedup_state_entries",
            "Entries held in the deduplication state, by index kind.",
            ["kind"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.story_assignments = Counter(
            "story_assignments",
            "Articles given a story: outcome=new opened one, joined joined a live one, "
            "no_time had no usable date (story_id null).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.stories_live = Gauge(
            "stories_live",
            "Stories in the state of this worker's stories partition (joinable, in window).",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.stories_held = Gauge(
            "stories_held",
            "Articles held before story assignment so they are assigned in date order.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.build = Info(
            "build",
            "Version of the running newsflow worker.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.lag = ConsumerLagCollector()
        reg.register(self.lag)
        self.faust: Any = None  # Faust's own sensor metrics, once `install` has added them

        self._stage = BoundedLabel(STAGES, cap=8)
        self._reason = BoundedLabel({r for r, _ in KNOWN_FAILURES}, cap=64)
        self._language = BoundedLabel(ISO_639_1)
        self._entity = BoundedLabel(ENTITY_LABELS)
        self._kind = BoundedLabel(DUPLICATE_KINDS)
        self.build.info(dict(build) if build is not None else build_info())
        # A labelled series exists only once its labels are touched; touch the bounded sets so
        # rate() and the dashboards see a 0 rather than nothing.
        for kind in DUPLICATE_KINDS:
            self.duplicates.labels(kind=kind)
            self.dedup_entries.labels(kind=kind).set(0)
        for reason, stage in KNOWN_FAILURES:
            self.dead_letters.labels(reason=reason, stage=stage)
        for clock in END_TO_END_CLOCKS:
            self.end_to_end.labels(clock=clock)
        for outcome in STORY_OUTCOMES:
            self.story_assignments.labels(outcome=outcome)
        for stage in ("extract", "clean", "language", "entities"):
            self.stage_seconds.labels(stage=stage)

    # -- recording ------------------------------------------------------------------------

    def page_received(self, count: int = 1) -> None:
        """Pages taken off the input topic; each stays in flight until `record_outcome`."""
        self.pages_received.inc(count)
        self.in_flight.inc(count)

    def record_outcome(
        self,
        outcome: Article | Failure,
        *,
        produced_at: float | None = None,
        now: float | None = None,
    ) -> None:
        """Count a page whose outcome has been written out.

        A `Failure` is a dead letter; an `Article` with `duplicate_kind` set is a duplicate;
        any other `Article` is an article out, counted by language and entity labels, with its
        end-to-end latency from `fetched_at` and from `produced_at` (the input record's Kafka
        timestamp, POSIX seconds) to `now`.
        """
        self.in_flight.dec()
        if not isinstance(outcome, Article | Failure):
            log.warning("not an outcome, not counted: %s", type(outcome).__name__)
            return
        if isinstance(outcome, Failure):
            self.dead_letters.labels(
                reason=self._reason(outcome.reason), stage=self._stage(outcome.stage)
            ).inc()
            return
        if outcome.duplicate_kind:
            self.duplicates.labels(kind=self._kind(outcome.duplicate_kind)).inc()
            return
        self.articles_out.inc()
        self.articles_by_language.labels(language=self._language(outcome.language)).inc()
        labels: dict[str, int] = {}
        for entity in outcome.entities:
            label = self._entity(entity.label)
            labels[label] = labels.get(label, 0) + 1
        for label, count in labels.items():
            self.entities.labels(label=label).inc(count)
        now = time.time() if now is None else now
        self._observe_since("fetched", parse_timestamp(outcome.fetched_at), now)
        self._observe_since("produced", produced_at, now)

    def record_failure(self, reason: str, stage: str) -> None:
        """A dead letter for a page that never became a `Failure` value (e.g. undecodable)."""
        self.record_outcome(Failure(reason, stage))

    def observe_stage_seconds(self, stage: str, seconds: float, pages: int = 1) -> None:
        """`seconds` spent in `stage` on `pages` pages, observed as that many per-page times.

        The pipeline times a stage per call and spaCy tags a whole batch in one call, so a
        batch's per-page time is its mean: p99 is then over batches, not single pages.
        """
        if pages <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        child = self.stage_seconds.labels(stage=self._stage(stage))
        per_page = seconds / pages
        for _ in range(pages):
            child.observe(per_page)

    def observe_stage_totals(
        self, before: Mapping[str, tuple[float, int]], after: Mapping[str, tuple[float, int]]
    ) -> None:
        """Observe the growth between two `stage_totals()` snapshots of an Enricher."""
        for stage, (seconds, calls) in after.items():
            seconds0, calls0 = before.get(stage, (0.0, 0))
            self.observe_stage_seconds(stage, seconds - seconds0, calls - calls0)

    def record_story(self, outcome: Any) -> None:
        """Count one story assignment (`agents.stories.Assignment`) or its Failure (no
        usable time). A replayed article (size 0: its story was counted) is not counted."""
        if isinstance(outcome, Failure):
            self.story_assignments.labels(outcome="no_time").inc()
        elif outcome.size:
            self.story_assignments.labels(outcome="new" if outcome.new else "joined").inc()

    def set_stories_live(self, stories: int) -> None:
        self.stories_live.set(stories)

    def set_stories_held(self, held: int) -> None:
        self.stories_held.set(held)

    def set_dedup_state_size(self, kind: str, entries: int) -> None:
        self.dedup_entries.labels(kind=self._kind(kind)).set(entries)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format, as `/metrics` serves it."""
        return generate_latest(self.registry)

    def _observe_since(self, clock: str, start: float | None, now: float) -> None:
        if start is None or not math.isfinite(start):
            return
        # A clock ahead of ours (skewed crawler) is counted as 0 s rather than dropped, so the
        # count of observations stays the count of articles.
        self.end_to_end.labels(clock=clock).observe(max(now - start, 0.0))


def stage_totals(enricher: Any) -> dict[str, tuple[float, int]]:
    """Snapshot an `agents.pipeline.Enricher`'s cumulative `(seconds, calls)` per stage."""
    return {s: (enricher.seconds[s], enricher.calls[s]) for s in list(enricher.calls)}


def build_info() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def _version(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "unknown"

    return {
        "version": _version("newsflow"),
        "faust_version": _version("faust-streaming"),
        "python_version": platform.python_version(),
    }


async def read_partition_offsets(
    consumer: Any, topics: Collection[str] | None = None
) -> list[PartitionOffsets]:
    """Offsets of the partitions a Faust consumer is assigned (of `topics`, if given).

    High watermarks come from a ListOffsets request (`consumer.highwaters`), not from the last
    fetch, so they are current even while the worker is too busy to fetch. Committed offsets
    are the ones Faust itself commits and seeks to (`Consumer._committed_offset`: Faust has no
    public reader for them); a partition the group never committed counts from its earliest
    offset, as the consumer would read it.
    """
    tps = sorted(
        (tp for tp in consumer.assignment() if topics is None or tp.topic in topics),
        key=lambda tp: (tp.topic, tp.partition),
    )
    if not tps:
        return []
    highwaters = await consumer.highwaters(*tps)
    committed: Mapping = getattr(consumer, "_committed_offset", {})
    missing = [tp for tp in tps if committed.get(tp) is None]
    earliest = await consumer.earliest_offsets(*missing) if missing else {}
    readings = []
    for tp in tps:
        high = highwaters.get(tp)
        if high is None:
            continue
        done = committed.get(tp)
        if done is None:
            done = earliest.get(tp) or 0
        readings.append(PartitionOffsets(tp.topic, tp.partition, int(high), int(done)))
    return readings


METRICS = Metrics()


class _CachedLabels:
    """A labelled metric whose `labels()` children are looked up once per label set."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple, Any] = {}

    def labels(self, *values: Any, **named: Any) -> Any:
        key = (values, tuple(named.items()))
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self.metric.labels(*values, **named)
        return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)


@functools.cache
def _monitor_class() -> type:
    """Faust's Prometheus monitor with its label lookups cached. It calls `labels()` (a lock
    and a tuple lookup) on every message in, event, record sent and table key read or written,
    and the stories and dedup agents touch a few hundred table keys an article: 3-4% of the
    Faust process's CPU (py-spy). Built on first use: importing Faust's sensors is not free
    for the CLI commands that never start a worker."""
    from faust.sensors.prometheus import PrometheusMonitor

    class CachedLabelsMonitor(PrometheusMonitor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._metrics = self._metrics._replace(**{  # a NamedTuple of metrics
                name: _CachedLabels(metric) for name, metric in self._metrics._asdict().items()
                if getattr(metric, "_labelnames", None)
            })  # fmt: skip

    return CachedLabelsMonitor


def install(
    app: Any,
    metrics: Metrics = METRICS,
    *,
    topics: Collection[str] | None = None,
    path: str = "/metrics",
    lag_interval: float = 5.0,
) -> None:
    """Serve `metrics` plus Faust's own sensor metrics at `path` on the app's web port, and
    refresh consumer offsets and lag every `lag_interval` seconds.

    `topics`: the input topics whose lag to report; default all assigned topics except table
    changelogs (their offsets are not committed by the group, so their "lag" would only grow).
    Call once, before the app starts.
    """
    from aiohttp.web import Response
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import disable_created_metrics

    # `_created` samples double the series count and no panel or rule reads them.
    disable_created_metrics()
    if metrics.faust is None:  # once per registry: a second app in one process shares them
        metrics.faust = FaustMetrics.create(metrics.registry, "faust")
        # Faust observes event runtime in milliseconds under an `_ms` name, which
        # `promtool check metrics` rejects; our stage histogram measures that time in seconds.
        metrics.registry.unregister(metrics.faust.events_runtime_latency)
    app.monitor = _monitor_class()(metrics=metrics.faust)

    @app.page(path)
    async def prometheus_metrics(self, request):
        return Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.timer(interval=lag_interval, name="newsflow.metrics.measure_lag")
    async def measure_lag() -> None:
        wanted = topics
        if wanted is None:
            changelogs = app.tables.changelog_topics
            wanted = {tp.topic for tp in app.consumer.assignment()} - changelogs
        try:
            metrics.lag.update(await read_partition_offsets(app.consumer, wanted))
        except Exception as exc:  # a failed reading must not stop the timer
            # No reading is better than a stale one: the lag panels show a gap, not a lie.
            metrics.lag.update(())
            log.warning("could not read consumer offsets: %s: %s", type(exc).__name__, exc)
