"""`newsflow bench pipeline [PATH...]`: how fast pages become articles, in-process and through
the broker, per language group, with the NER quality the speed is bought with (issue 10).

    newsflow bench pipeline                       corpus + BASIL, every phase (~8 min)
    newsflow bench pipeline --no-e2e              in-process only (~2 min)
    newsflow bench pipeline DIR --json > r.json   any folder of pages (plus BASIL in `en`)
    newsflow bench pipeline --profile             also pyinstrument's top costs per group

Groups (`streams/bench/pages.py`): `all` inputs, `de`, `en` (+ BASIL articles as pages).
Per group:

1. In-process, one process (= one core): `Enricher.enrich_many` in batches of
   `NEWSFLOW_BATCH_SIZE`, as the worker calls it, NER model loaded before the clock starts,
   then the worker's dedup and stories stages; over as many passes of the group's pages as
   the one-worker backlog sends (a page seen again is cheaper); per-stage time from the
   chain's own stage timers; wall and CPU time. This is the ceiling.
2. NER agreement (`en`): the chain's entity sets, (text, label) per article, against NER of
   the full text of the same articles; micro precision/recall/F1. Then `en` again with NER
   on the first 5,000 characters (`NER_HEAD`, the choice before name windows), reported as
   `en*`: before and after from one run on one machine (`--no-ner-head` skips it).
3. Through the broker (embedded Tansu unless `KAFKA_BOOTSTRAP_SERVERS`): fresh topics, a
   backlog of whole shuffled passes over the group's pages produced first, then real
   `newsflow worker` processes, 1 and then 2 (fresh topics and group), each pinned to a
   core of its own unless `--no-pin` (as deployed: one CPU per worker). The rate counts the
   pages enriched while every worker was busy, from each worker's batch ends (its status
   page, read every 0.5 s: from the last worker's first batch end to the first worker's
   last), so start-up (imports, model, group join) is left out of it and reported apart as
   "from start". Not outcomes: dedup and stories hand articles on in waves, and a window
   opened at a wave's crest counted the ~100 articles enriched before it (`en`, one worker:
   18% high). The outcome-timestamp rate is still reported (`outcome_window`), with how
   long after the last batch the last outcome came (`outcome_lag_seconds`: downstream kept
   up when it is short). Ratio = rate / (workers x in-process rate). CPU time of each
   worker's process tree over the same window gives pages per CPU-second: on a shared
   machine that ratio is the steadier one. The embedded broker's and this harness's own CPU
   in the window is reported too (`others`): on a small machine they take their share of
   the workers' cores.
4. Latency: the one worker still running, pages produced at half its measured rate;
   latency = outcome record timestamp - raw-pages record timestamp (Kafka CreateTime, one
   host clock), and until this harness had read the outcome.
5. Memory: VmRSS and Pss summed over each worker's process tree (the worker and any child,
   such as a supervised enrichment process), sampled every 0.25 s; VmHWM per process.

The /proc sampler is `streams/bench/procs.py`, the machine description
`streams/bench/machine.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from agents.entities import EntitiesConfig, EntityTagger
from agents.pipeline import STAGES, Enricher, PipelineConfig
from agents.records import Article, Failure, RawPage
from streams.bench.machine import loadavg, machine
from streams.bench.pages import (
    GROUPS,
    PageSet,
    basil_pages,
    cycle,
    default_corpus,
    language_groups,
    load_pages,
)
from streams.bench.procs import TreeSampler
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
FULL_TEXT = 10**9  # EntitiesConfig.max_chars for "no bound"
# The NER input before name windows (issue 10): the first 5,000 characters, no propagation.
# Run beside the shipped settings on `en` so before/after come from one run on one machine.
NER_HEAD = {"select": "head", "max_chars": 5_000, "propagate": False}
UNSEEN = "<no Python frame>"  # profile samples pyinstrument saw no Python stack for
BURST_GAP = 0.05  # seconds between outcome records that still count as one batch

# The targets, as (key, description, test on the measured value).
TARGETS: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    ("ratio_1", "1 worker through the broker >= 0.9x the in-process chain", lambda v: v >= 0.9),
    ("ratio_2", "2 workers >= 0.9x (2 x in-process chain)", lambda v: v >= 0.9),
    ("per_core", ">= 15 pages/s per core end to end (2 workers / 2)", lambda v: v >= 15),
    ("scaling", "2 workers >= 1.8x one worker", lambda v: v >= 1.8),
    ("ner_f1", "entities >= 0.95 F1 against full-text NER", lambda v: v >= 0.95),
    ("p99", "p99 produce->outcome latency < 1 s at half load", lambda v: v < 1.0),
    ("rss", "peak memory per worker < 1 GB (Pss of its process tree)", lambda v: v < 1e9),
)


@dataclass(frozen=True)
class BenchOptions:
    """What one run measures; the defaults are the full run BENCHMARKS.md reports."""

    paths: tuple[str, ...] = ()  # default: ../shared/corpus
    pages: int | None = None  # only the first N input pages
    basil: int | None = None  # BASIL pages added to `en` (None: all 300, 0: none)
    e2e_groups: tuple[str, ...] = GROUPS
    workers: tuple[int, ...] = (1, 2)
    seconds: float = 20.0  # aimed length of a backlog phase (rounded up to whole passes)
    max_backlog: int = 2_000
    latency_seconds: float = 15.0
    latency_min_pages: int = 10
    ner_f1: bool = True
    ner_head: bool = True  # also run `en` in-process with NER_HEAD (before/after)
    profile: bool = False
    # Embedded broker only: batch produce requests as on Kafka instead of Tansu 0.6's one
    # record per batch. Its end offsets are then wrong, which the bench never relies on
    # (fresh topics, no restart, outcomes matched by input position).
    batched_produce: bool = False
    # Each worker on a core of its own, as deployed (deploy/k8s: one CPU per worker): the
    # ratios then compare equal numbers of cores. Off: workers share all cores.
    pin_workers: bool = True
    timeout: float = 900.0  # per phase
    quiet: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """A smoke-test size: a few pages, a few seconds, the `en` group through the broker."""
        base = cls(pages=6, basil=3, e2e_groups=("en",), seconds=2.0, max_backlog=40,
                   latency_seconds=1.0, latency_min_pages=4, timeout=180.0)  # fmt: skip
        return replace(base, **overrides)


# --- in-process --------------------------------------------------------------------------------


def _batched(items: Sequence[RawPage], size: int) -> Iterator[list[RawPage]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def chain_run(
    pages: Sequence[RawPage], config: PipelineConfig, batch_size: int, tagger: EntityTagger,
    settings: Settings | None = None, passes_for: Callable[[float], int] | None = None,
) -> tuple[dict[str, Any], list[Article | Failure]]:  # fmt: skip
    """Time the chain over `pages` in one thread; `tagger` is loaded already (shared between
    runs so the model loads once). Returns the report and the outcomes of the first pass
    (parallel to pages). `settings` gives the envelope and record caps the streaming
    overhead is measured with.

    `passes_for(first pass's rate)`: time that many passes over `pages`, as the broker backlog
    sends them, instead of one: a page seen again in a process is cheaper (on the corpus the
    second pass made 21.5 pages per CPU-second, the first 16.3), so the ceiling must see the
    repeats the worker sees. With `settings`, the passes then go through the worker's dedup
    and stories stages (`add_worker_stages`): the whole chain a worker runs."""
    enricher = Enricher(config)
    enricher.tagger = tagger
    outcomes: list[Article | Failure] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for batch in _batched(pages, batch_size):
        outcomes.extend(enricher.enrich_many(batch))
    first = outcomes[:]
    passes = 1
    if passes_for is not None and pages:
        passes = max(1, passes_for(len(pages) / max(time.perf_counter() - wall0, 1e-9)))
        for _ in range(passes - 1):
            for batch in _batched(pages, batch_size):
                outcomes.extend(enricher.enrich_many(batch))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sent = len(pages) * passes
    articles = [o for o in first if isinstance(o, Article)]
    ner_docs = sum(1 for a in articles if a.entities_note is None)
    stages = {}
    for stage in STAGES:
        seconds, calls = enricher.seconds[stage], enricher.calls[stage]
        stages[stage] = {
            "calls": calls,
            "seconds": round(seconds, 3),
            "ms_per_call": _r(1000 * seconds / calls, 2) if calls else None,
            "calls_per_second": _r(calls / seconds, 1) if seconds else None,
            "share": _r(seconds / wall, 3) if wall else None,
        }
    ner_s = enricher.seconds["entities"] / passes
    kinds = Counter("article" if isinstance(o, Article) else o.reason for o in first)
    words = sum(len(a.text.split()) for a in articles)
    report = {
        "pages": len(pages),
        "passes": passes,
        "outcomes": dict(kinds),
        "languages": dict(Counter(a.language for a in articles).most_common()),
        "batch_size": batch_size,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "pages_per_second": _r(sent / wall, 2) if wall else None,
        "pages_per_cpu_second": _r(sent / cpu, 2) if cpu else None,
        "stages": stages,
        "ner_docs": ner_docs,
        "ner_docs_per_second": _r(ner_docs / ner_s, 1) if ner_docs and ner_s else None,
        "html_kb_per_page": _r(sum(_size(p) for p in pages) / max(len(pages), 1) / 1024, 1),
        "words_per_article": _r(words / max(len(articles), 1), 0),
    }
    report["streaming_overhead"] = transport_costs(pages, first, settings or Settings())
    if settings is not None and passes_for is not None:
        add_worker_stages(report, outcomes, settings)
    return report, first


def add_worker_stages(report: dict[str, Any], outcomes: Sequence[Article | Failure],
                      settings: Settings) -> None:  # fmt: skip
    """Make `report` (a `chain_run` report over `outcomes`, every pass) the whole per-page
    chain a worker runs: add its dedup and stories stages (when on), in-process, pass after
    pass (a page sent again has the same id: a replay, whose first verdict and story come
    back from the state)."""
    from agents.dedup import Deduper, MemoryStore, order_key
    from agents.stories_agent import StoryAssigner

    report["enrich_pages_per_second"] = report["pages_per_second"]
    report["enrich_pages_per_cpu_second"] = report["pages_per_cpu_second"]
    articles = [o for o in outcomes if isinstance(o, Article)]
    deduper = Deduper(settings.dedup_config, MemoryStore())
    assigner = StoryAssigner(settings.story_config, {}, {}, {}, {})
    now = time.time()

    def dedup(article: Article) -> None:
        verdict = deduper.check(article.id, article.url, article.canonical_url, article.text,
                                order_key(article.fetched_at, article.id))  # fmt: skip
        if verdict is not None:
            article.duplicate_of = verdict.duplicate_of

    def stories(article: Article) -> None:
        if not article.duplicate_of:
            assigner.place(article, now=now)

    stages = [(n, f) for n, f, on in (("dedup", dedup, settings.dedup),
                                      ("stories", stories, settings.stories)) if on]  # fmt: skip
    sent = len(outcomes)
    wall, cpu = report["wall_seconds"], report["cpu_seconds"]
    for name, stage in stages:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for article in articles:
            stage(article)
        if name == "stories":
            assigner.flush()
        seconds = time.perf_counter() - wall0
        wall, cpu = wall + seconds, cpu + time.process_time() - cpu0
        report["stages"][name] = {
            "calls": len(articles),
            "seconds": round(seconds, 3),
            "ms_per_call": _r(1000 * seconds / len(articles), 2) if articles else None,
            "calls_per_second": _r(len(articles) / seconds, 1) if seconds else None,
        }
    report["pages_per_second"] = _r(sent / wall, 2) if wall else None
    report["pages_per_cpu_second"] = _r(sent / cpu, 2) if cpu else None


def _size(page: RawPage) -> int:
    return len(page.body) if isinstance(page.body, bytes) else len(page.body.encode())


def _r(value: float, digits: int) -> float:
    return round(value, digits) if digits else float(round(value))


def transport_costs(
    pages: Sequence[RawPage], outcomes: Sequence[Article | Failure], settings: Settings
) -> dict[str, Any]:
    """What the streaming path adds per page in CPU, measured apart: the raw-pages envelope
    (encode in the producer, parse in the worker) and the article record (orjson)."""
    from streams.envelope import envelope_key, page_to_envelope, parse_raw_page
    from streams.topics import article_value

    limits = settings.envelope_limits
    start = time.perf_counter()
    for page in pages:
        parse_raw_page(page_to_envelope(page), envelope_key(page), limits)
    envelope = time.perf_counter() - start
    articles = [o for o in outcomes if isinstance(o, Article)]
    start = time.perf_counter()
    for article in articles:
        article_value(article, settings.max_message_bytes)
    encode = time.perf_counter() - start
    return {
        "envelope_ms_per_page": _r(1000 * envelope / max(len(pages), 1), 3),
        "article_encode_ms_per_article": _r(1000 * encode / max(len(articles), 1), 3),
    }


def entity_sets(article: Article) -> set[tuple[str, str]]:
    return {(e.text, e.label) for e in article.entities}


def ner_agreement(
    articles: Sequence[Article], config: EntitiesConfig, tagger: EntityTagger | None = None
) -> dict[str, Any]:
    """The chain's entities (NER on part of each text) against NER of each article's full
    text: micro precision/recall/F1 over (text, label) sets; also the speed of the reference.
    `tagger` (loaded) lends its model to the reference."""
    tagged = [a for a in articles if a.entities_note is None]
    if not tagged:
        return {"articles": 0}
    whole = replace(config, select="head", max_chars=FULL_TEXT, propagate=False)
    full = tagger.sharing(whole) if tagger is not None else EntityTagger(whole)
    full.load()
    start = time.process_time()
    reference = full.tag_many([(a.text, a.language) for a in tagged])
    full_cpu = time.process_time() - start
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for article, (entities, _) in zip(tagged, reference, strict=True):
        got, want = entity_sets(article), {(e.text, e.label) for e in entities}
        origin = "basil" if article.source.startswith("basil/") else "inputs"
        for key in ("all", origin):
            totals[key].update(tp=len(got & want), fp=len(got - want), fn=len(want - got),
                               docs=1)  # fmt: skip
    longer = sum(1 for a in tagged if len(a.text) > config.max_chars)
    report: dict[str, Any] = {
        "articles": len(tagged),
        "select": config.select,
        "max_chars": config.max_chars,
        "longer_than_max_chars": longer,
        "full_text_docs_per_cpu_second": _r(len(tagged) / full_cpu, 1) if full_cpu else None,
    }
    for key, t in totals.items():
        p = t["tp"] / (t["tp"] + t["fp"]) if t["tp"] + t["fp"] else 1.0
        r = t["tp"] / (t["tp"] + t["fn"]) if t["tp"] + t["fn"] else 1.0
        scores = {"docs": t["docs"], "precision": round(p, 4), "recall": round(r, 4),
                  "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}  # fmt: skip
        if key == "all":
            report.update(scores)
        else:
            report.setdefault("by_origin", {})[key] = scores
    return report


def profile_chain(
    pages: Sequence[RawPage], config: PipelineConfig, batch_size: int, tagger: EntityTagger,
    top: int = 15,
) -> dict[str, Any]:  # fmt: skip
    """pyinstrument over one more pass of the chain (apart from the timed pass: the profiler
    slows it down): self time by function and by package. Time in C code (lxml, thinc's
    numpy) counts as self time of the Python function that called it."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"error": "pyinstrument is not installed: pip install pyinstrument"}
    enricher = Enricher(config)
    enricher.tagger = tagger
    profiler = Profiler(interval=0.002)
    profiler.start()
    for batch in _batched(pages, batch_size):
        enricher.enrich_many(batch)
    session = profiler.stop()
    by_function: Counter[tuple[str, str]] = Counter()
    by_package: Counter[str] = Counter()
    root = session.root_frame()
    # Samples whose stack pyinstrument could not see (Cython code such as spaCy's parser,
    # called from a generator) land on the thread's root frame.
    stack = [(root, (UNSEEN, ""))] if root is not None else []
    while stack:
        frame, owner = stack.pop()
        synthetic = frame is root or frame.file_path is None or frame.identifier.startswith("[")
        key = owner if synthetic else (frame.function, _short(frame.file_path, frame.line_no))
        own = frame.time - sum(child.time for child in frame.children)
        if own > 0:
            by_function[key] += own
            by_package[_package(key[1])] += own
        stack.extend((child, key) for child in frame.children)
    total = session.duration or 1.0
    return {
        "seconds": round(session.duration, 2),
        "pages": len(pages),
        "self_by_package": {k: round(v / total, 3) for k, v in by_package.most_common(top)},
        "self_by_function": [
            {"function": f, "where": w, "share": round(v / total, 3)}
            for (f, w), v in by_function.most_common(top)
        ],
    }


def _short(path: str, line: int | None) -> str:
    marker = "site-packages/"
    if marker in path:
        path = path.split(marker, 1)[1]
    elif path.startswith(str(REPO)):
        path = path[len(str(REPO)) + 1 :]
    return f"{path}:{line}" if line else path


def _package(where: str) -> str:
    if not where:
        return UNSEEN
    head = where.split("/", 1)[0].split(":", 1)[0]
    if head.endswith(".py"):
        head = head[:-3]
    return "python" if where.startswith("/") else head


# --- through the broker ------------------------------------------------------------------------


Position = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Seen:
    """One input's first outcome as read back."""

    kind: str
    worker: str
    at: float  # the outcome record's timestamp (CreateTime), seconds
    received: float  # when this harness read it, time.time()


def fresh(settings: Settings, data_dir: Path) -> Settings:
    """Settings with topics and a consumer group nobody has used."""
    tag = f"bench-{uuid.uuid4().hex[:10]}"
    return replace(settings, app_id=f"newsflow-{tag}", topic_raw_pages=f"{tag}-raw-pages",
                   topic_articles=f"{tag}-articles", topic_dead_letter=f"{tag}-dead-letter",
                   topic_duplicates=f"{tag}-duplicates", data_dir=str(data_dir),
                   web_bind="127.0.0.1", create_topics=True)  # fmt: skip


async def collect(
    settings: Settings, start: Any, tally: Any, seen: dict[Position, Seen], *,
    deadline: float, check: Callable[[], None],
) -> bool:  # fmt: skip
    """Read outcome records into `tally` (and their timestamps into `seen`) until every
    expected input has one (True) or `deadline` (False); `check()` raises to abort."""
    from streams.consumer import TopicReader
    from streams.topics import TopicNames, decode_outcome, outcome_kind

    names = TopicNames.from_settings(settings)
    async with TopicReader(settings, names.outcomes, start) as reader:
        while not tally.done:
            if time.monotonic() >= deadline:
                return False
            check()
            for record in await reader.poll(0.25):
                kind = outcome_kind(names, record.topic)
                outcome = decode_outcome(kind, record.key, record.value, record.headers)
                if tally.add(outcome):
                    seen[outcome.input] = Seen(outcome.kind, outcome.worker,
                                               record.timestamp / 1000, time.time())  # fmt: skip
    return True


async def record_times(
    settings: Settings, topic: str, start: Any, positions: set[Position], deadline: float
) -> dict[Position, float]:
    """The CreateTime (seconds) of the records at `positions` of `topic`."""
    from streams.consumer import TopicReader

    times: dict[Position, float] = {}
    async with TopicReader(settings, [topic], start) as reader:
        while len(times) < len(positions) and time.monotonic() < deadline:
            for record in await reader.poll(0.25):
                position = (record.topic, record.partition, record.offset)
                if position in positions:
                    times[position] = record.timestamp / 1000
    return times


def bursts(times: Iterable[float], gap: float = BURST_GAP) -> list[tuple[float, int]]:
    """(end, outcomes) of each burst: a worker sends a batch's outcomes back to back, so
    outcomes less than `gap` seconds apart belong to one batch."""
    out: list[tuple[float, int]] = []
    for t in sorted(times):
        if out and t - out[-1][0] <= gap:
            out[-1] = (t, out[-1][1] + 1)
        else:
            out.append((t, 1))
    return out


def busy_window(seen: Iterable[Seen]) -> tuple[float, float, float, bool]:
    """(start, end, outcomes, all_busy) of the outcome records' window: `progress_window`
    over each worker's outcome bursts (a batch's outcomes go out back to back), so a worker's
    first batch (start-up) is left out and several workers count where all were busy."""
    times: dict[str, list[float]] = defaultdict(list)
    for s in seen:
        times[s.worker].append(s.at)
    progress: dict[str, Progress] = {}
    for worker, at in times.items():
        ends, counts = zip(*bursts(at), strict=True)
        progress[worker] = list(zip(ends, itertools.accumulate(counts), strict=True))
    return progress_window(progress)


Progress = list[tuple[float, int]]  # (when a batch ended, pages the worker had enriched then)


def progress_window(progress: dict[Any, Progress]) -> tuple[float, float, float, bool]:
    """(start, end, pages, all_busy) of the window a rate is measured over, from each
    worker's progress: one worker from its first batch end to its last (start-up is before
    the first); several where all were busy, from the latest first-batch end to the earliest
    last-batch end, counting each one's pages in it (linear between its batch ends). When
    that is empty (a worker got no partition or ran dry early) it is the span over all, and
    `all_busy` is False; `end <= start` when there is no window (a single batch)."""
    runs = {w: sorted(set(points)) for w, points in progress.items() if points}
    if not runs:
        return 0.0, 0.0, 0, False
    t0 = max(points[0][0] for points in runs.values())
    t1 = min(points[-1][0] for points in runs.values())
    all_busy = t1 > t0
    if not all_busy and len(runs) > 1:  # a worker ran dry before another began: the span
        t0 = min(points[0][0] for points in runs.values())
        t1 = max(points[-1][0] for points in runs.values())
    pages = sum(_enriched_at(p, t1) - _enriched_at(p, t0) for p in runs.values())
    return t0, t1, pages, all_busy


def _enriched_at(points: Progress, at: float) -> float:
    if at <= points[0][0]:
        return points[0][1]
    for (a0, n0), (a1, n1) in itertools.pairwise(points):
        if a0 <= at <= a1:
            return n0 + (n1 - n0) * (at - a0) / (a1 - a0)
    return points[-1][1]


class ProgressPoller:
    """Reads each worker's status page every `interval` seconds in a thread: the end of its
    last batch and the pages it had enriched by then; a batch polled twice is kept once.
    `last` holds each worker's latest status page (the final one once the poller exits)."""

    def __init__(self, procs: Sequence[Any], interval: float = 0.5) -> None:
        self.procs = procs
        self.interval = interval
        self.points: dict[int, Progress] = {i: [] for i in range(len(procs))}
        self.last: list[dict[str, Any]] = [{} for _ in procs]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-progress", daemon=True)

    def __enter__(self) -> ProgressPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the last batch, once every outcome is in

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        for i, worker in enumerate(self.procs):
            status = worker.status(timeout=1.0) or {}
            if status:
                self.last[i] = status
            point = (status.get("last_batch_at"), status.get("inputs"))
            if None not in point and (not self.points[i] or self.points[i][-1] != point):
                self.points[i].append(point)


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

    mean = sum(ordered) / len(ordered)
    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": round(ordered[-1], 3), "mean": round(mean, 3)}  # fmt: skip


@dataclass
class Context:
    """What every broker phase shares: base settings, where workers keep their files, the
    sampler, where the broker is, and progress output."""

    settings: Settings
    workdir: Path
    sampler: TreeSampler
    options: BenchOptions
    broker: str = ""
    say: Callable[[str], None] = lambda text: None
    phase: int = 0

    def next_dir(self, label: str) -> Path:
        self.phase += 1
        path = self.workdir / f"{self.phase:02d}-{label}"
        path.mkdir(parents=True)
        return path


async def backlog_phase(
    ctx: Context, group: PageSet, workers: int, count: int, in_process: dict[str, Any],
    keep: list[tuple[Any, str]] | None = None,
) -> tuple[dict[str, Any], Settings]:  # fmt: skip
    """Produce `count` pages, then start `workers` workers and time them through it. With
    `keep`, the workers are left running (appended to it with their sampler names) for the
    latency phase; returns the report and the phase's settings (its topics)."""
    from streams.consumer import OutcomeTally
    from streams.demo import start_worker
    from streams.producer import ProduceOptions, produce
    from streams.topics import TopicNames, ensure_topics

    workdir = ctx.next_dir(f"{group.name}-{workers}w")
    settings = fresh(ctx.settings, workdir)
    names = TopicNames.from_settings(settings)
    await ensure_topics(settings)
    load_before = loadavg()
    sent = await produce(cycle(group.pages, count), settings, ProduceOptions(key="none"))
    expected = {(names.raw_pages, p, o) for p, o in sent.positions}
    ctx.say(f"{group.name}: {len(expected)} pages produced in {sent.seconds:.1f}s; "
            f"starting {workers} worker(s)")  # fmt: skip
    started = time.time()
    cores = worker_cores(workers) if ctx.options.pin_workers else None
    procs = [start_worker(settings, workdir, i, cpus=cores and {cores[i]})
             for i in range(workers)]  # fmt: skip
    watched = [f"{workdir.name}/worker-{i}" for i in range(workers)]
    for name, worker in zip(watched, procs, strict=True):
        ctx.sampler.watch(name, worker.proc.pid)
    tally = OutcomeTally(expected=expected)
    seen: dict[Position, Seen] = {}
    try:
        deadline = time.monotonic() + ctx.options.timeout
        with ProgressPoller(procs) as progress:
            done = await collect(settings, "beginning", tally, seen, deadline=deadline,
                                 check=lambda: _check_alive(procs))  # fmt: skip
    finally:
        if keep is None:
            for worker in procs:
                _stop(worker)
        else:
            keep.extend(zip(procs, watched, strict=True))
    result = _throughput(ctx, watched, procs, settings, sent, tally, seen, progress.points,
                         done, started, in_process, load_before)  # fmt: skip
    result["cores"] = cores  # None: the workers shared every core
    for i, status in enumerate(progress.last):  # who enriched what: outcomes name their last writer
        result["per_worker"][str(i)].update(raw_partitions=status.get("partitions"),
                                            pages_enriched=status.get("inputs"))  # fmt: skip
    return result, settings


def worker_cores(workers: int) -> list[int] | None:
    """A core per worker, from those this process may use; None if there are too few."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[:workers] if len(cores) >= workers else None


def _throughput(ctx: Context, watched: list[str], procs: list[Any], settings: Settings, sent: Any,
                tally: Any, seen: dict[Position, Seen], progress: dict[int, Progress],
                done: bool, started: float, in_process: dict[str, Any],
                load_before: Any) -> dict[str, Any]:  # fmt: skip
    workers = len(procs)
    o0, o1, out_inside, out_busy = busy_window(seen.values())
    t0, t1, inside, all_busy = progress_window(progress)
    rate_from = "enriched"
    if not (t1 > t0 and inside):  # too few batches, or no status page: the outcome window
        t0, t1, inside, all_busy, rate_from = o0, o1, out_inside, out_busy, "outcomes"
    rate = inside / (t1 - t0) if t1 > t0 and inside else None
    last_batch = max((p[-1][0] for p in progress.values() if p), default=None)
    pid_of = {w.proc.pid: i for i, w in enumerate(procs)}
    per_worker: dict[str, Any] = {}
    cpu_total = 0.0
    cpu_known = True
    for i, name in enumerate(watched):
        cpu = ctx.sampler.between(name, t0, t1)
        wait = ctx.sampler.between(name, t0, t1, "wait")
        mine = [s for s in seen.values() if _pid(s.worker) == procs[i].proc.pid]
        per_worker[str(i)] = {
            "outcomes": len(mine),
            "cpu_seconds_in_window": _r(cpu, 2) if cpu is not None else None,
            "cpu_utilisation": _r(cpu / (t1 - t0), 2) if cpu is not None and t1 > t0 else None,
            "run_queue_wait_share": _r(wait / (t1 - t0), 2)
            if wait is not None and t1 > t0
            else None,
            **ctx.sampler.memory(name),
        }
        if cpu is None:
            cpu_known = False
        else:
            cpu_total += cpu
    # What else ran on the same cores in the window: the embedded broker and this harness.
    others = {name: _r(cpu / (t1 - t0), 2) for name in ("broker", "harness")
              if name in ctx.sampler.watched and t1 > t0
              and (cpu := ctx.sampler.between(name, t0, t1)) is not None}  # fmt: skip
    unknown = sum(1 for s in seen.values() if _pid(s.worker) not in pid_of)
    ceiling = in_process.get("pages_per_second")
    per_cpu = inside / cpu_total if cpu_known and cpu_total else None
    ceiling_cpu = in_process.get("pages_per_cpu_second")
    last = max((s.at for s in seen.values()), default=started)
    kinds = Counter(s.kind for s in seen.values())
    return {
        "workers": workers,
        "workers_with_outcomes": len({s.worker for s in seen.values()}),
        "sent": sent.sent,
        "produce_seconds": round(sent.seconds, 2),
        "outcomes": len(seen),
        "complete": done,
        "missing": len(tally.missing()),
        "kinds": dict(kinds),
        "redelivered": tally.redelivered,
        "outcomes_from_unknown_worker": unknown,
        "rate_from": rate_from,
        "window_seconds": round(t1 - t0, 2),
        "window_pages": round(inside),
        "outcome_window": {
            "seconds": round(o1 - o0, 2),
            "outcomes": round(out_inside),
            "per_second": _r(out_inside / (o1 - o0), 2) if o1 > o0 else None,
        },
        "outcome_lag_seconds": _r(last - last_batch, 2) if last_batch else None,
        "others_cpu_utilisation": others,
        "all_workers_busy": all_busy,
        "pages_per_second": _r(rate, 2) if rate else None,
        "ratio_to_in_process": _r(rate / (workers * ceiling), 3) if rate and ceiling else None,
        "pages_per_cpu_second": _r(per_cpu, 2) if per_cpu else None,
        "cpu_ratio_to_in_process": _r(per_cpu / ceiling_cpu, 3)
        if per_cpu and ceiling_cpu
        else None,
        "from_start_seconds": round(last - started, 2),
        "from_start_pages_per_second": _r(len(seen) / (last - started), 2)
        if last > started
        else None,
        "per_worker": per_worker,
        "loadavg": {"before": load_before, "after": loadavg()},
        "settings": {
            "partitions": settings.partitions,
            "batch_size": settings.batch_size,
            "batch_within": settings.batch_within,
        },
    }


def _pid(worker: str) -> int | None:
    try:
        return int(worker.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


async def latency_phase(
    ctx: Context, group: PageSet, procs: list[Any], settings: Settings, rate: float
) -> dict[str, Any]:
    """Produce at `rate` pages/s to the running workers and time each page to its outcome."""
    from streams.consumer import OutcomeTally, end_offsets
    from streams.producer import ProduceOptions, ProduceReport, produce
    from streams.topics import TopicNames

    names = TopicNames.from_settings(settings)
    count = max(ctx.options.latency_min_pages, round(rate * ctx.options.latency_seconds))
    raw_start = await end_offsets(settings, [names.raw_pages])
    out_start = await end_offsets(settings, names.outcomes)
    tally = OutcomeTally(expected=None)
    seen: dict[Position, Seen] = {}
    report = ProduceReport()
    ctx.say(f"{group.name}: latency, {count} pages at {rate:.2f} pages/s")

    async def send() -> None:
        pages = cycle(group.pages, count, seed=1)
        await produce(pages, settings, ProduceOptions(key="none", rate=rate), report=report)
        tally.expected = {(names.raw_pages, p, o) for p, o in report.positions}

    producing = asyncio.ensure_future(send())

    def check() -> None:
        _check_alive(procs)
        if producing.done() and producing.exception() is not None:
            raise producing.exception()

    deadline = time.monotonic() + ctx.options.timeout
    try:
        done = await collect(settings, out_start, tally, seen, deadline=deadline, check=check)
    finally:
        if not producing.done():
            producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
    expected = tally.expected or set()
    raw_at = await record_times(settings, names.raw_pages, raw_start, expected, deadline)
    written = [s.at - raw_at[p] for p, s in seen.items() if p in raw_at]
    read = [s.received - raw_at[p] for p, s in seen.items() if p in raw_at]
    return {
        "rate": round(rate, 3),
        "sent": report.sent,
        "outcomes": len(seen),
        "complete": done,
        "produce_seconds": round(report.seconds, 2),
        "latency_seconds": percentiles(written),
        "latency_to_read_seconds": percentiles(read),
    }


def _check_alive(procs: list[Any]) -> None:
    for worker in procs:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.proc.returncode}; log:\n"
                               f"{worker.log_tail()}")  # fmt: skip


def _stop(worker: Any) -> None:
    from streams.broker import stop_child

    stop_child(worker.proc, timeout=20)


def backlog_size(pages: int, workers: int, rate: float | None, options: BenchOptions) -> int:
    """Whole passes over the group's pages: enough for about `options.seconds` of work at the
    in-process rate times `workers`, at least one pass, at most `max_backlog` (whole)."""
    if pages == 0:
        return 0
    aimed = (rate or 0.0) * workers * options.seconds
    passes = max(1, math.ceil(aimed / pages))
    most = max(1, options.max_backlog // pages)
    return pages * min(passes, most)


async def e2e_group(ctx: Context, group: PageSet, in_process: dict[str, Any]) -> dict[str, Any]:
    """1 worker (then the latency phase on it), then 2 workers, each on fresh topics."""
    out: dict[str, Any] = {}
    rate = in_process["enrich_pages_per_second"]
    for workers in ctx.options.workers:
        count = backlog_size(len(group), workers, rate, ctx.options)
        if workers == 1:  # the passes the ceiling was timed on
            count = len(group) * in_process["passes"]
        kept: list[tuple[Any, str]] = []
        try:
            result, settings = await backlog_phase(ctx, group, workers, count, in_process,
                                                   kept if workers == 1 else None)  # fmt: skip
            ctx.say(f"{group.name}: {workers} worker(s): {result['pages_per_second']} pages/s "
                    f"(ratio {result['ratio_to_in_process']})")  # fmt: skip
            out[f"workers_{workers}"] = result
            if kept and result["pages_per_second"] and ctx.options.latency_seconds > 0:
                procs = [worker for worker, _ in kept]
                half = result["pages_per_second"] / 2
                out["latency"] = await latency_phase(ctx, group, procs, settings, half)
                for i, (_, name) in enumerate(kept):  # peaks now cover the latency phase too
                    ctx.sampler.sample(name)
                    result["per_worker"][str(i)].update(ctx.sampler.memory(name))
        finally:
            for worker, _ in kept:
                _stop(worker)
    one, two = out.get("workers_1", {}), out.get("workers_2", {})
    if one.get("pages_per_second") and two.get("pages_per_second"):
        out["scaling_2_over_1"] = _r(two["pages_per_second"] / one["pages_per_second"], 3)
    return out


# --- the run ---------------------------------------------------------------------------------


def run(options: BenchOptions, settings: Settings, command: str = "") -> dict[str, Any]:
    """The whole benchmark; returns the report (see `format_report`)."""
    say = (lambda text: None) if options.quiet else _say
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": command,
        "machine": machine(settings),
        "options": asdict(options),
    }
    config = settings.pipeline
    paths = list(options.paths) or [str(default_corpus())]
    pages, unreadable = load_pages(paths, settings.max_page_bytes, options.pages)
    extra = basil_pages(options.basil) if options.basil != 0 else []
    report["inputs"] = {"paths": paths, "pages": len(pages), "unreadable": dict(unreadable),
                        "basil_pages": len(extra)}  # fmt: skip
    say(f"{len(pages)} input pages, {len(extra)} BASIL pages; loading the NER model")
    tagger = EntityTagger(config.entities)
    tagger.load()
    _warm_up(pages or extra, config, tagger)
    batch = settings.batch_size
    groups_report: dict[str, Any] = {}

    def passes_for(count: int) -> Callable[[float], int]:
        """The passes of the one-worker backlog, given the first pass's rate."""
        return lambda rate: backlog_size(count, 1, rate, options) // count

    say("in-process: all inputs")
    all_report, outcomes = chain_run(pages, config, batch, tagger, settings,
                                     passes_for(len(pages)))  # fmt: skip
    groups = language_groups(pages, outcomes, extra)
    for name in GROUPS:
        group = groups[name]
        entry: dict[str, Any] = {"pages": len(group), "origin": group.origin}
        if not len(group):
            groups_report[name] = {**entry, "note": "no pages in this group"}
            continue
        if name == "all":
            entry["in_process"], group_outcomes = all_report, outcomes
        else:
            say(f"in-process: {name} ({len(group)} pages)")
            entry["in_process"], group_outcomes = chain_run(group.pages, config, batch, tagger,
                                                            settings, passes_for(len(group)))
        passes = entry["in_process"]["passes"]
        if name == "en" and options.ner_f1:
            say("NER agreement: against NER of the full text")
            articles = [o for o in group_outcomes if isinstance(o, Article)]
            entry["ner_f1"] = ner_agreement(articles, config.entities, tagger)
        if name == "en" and options.ner_head:
            say(f"in-process: {name} with NER on the head only (before name windows)")
            head = replace(config, entities=replace(config.entities, **NER_HEAD))
            entry["in_process_ner_head"], head_outcomes = chain_run(
                group.pages, head, batch, tagger.sharing(head.entities), settings,
                lambda _rate, n=passes: n,
            )
            if options.ner_f1:
                articles = [o for o in head_outcomes if isinstance(o, Article)]
                entry["ner_f1_head"] = ner_agreement(articles, head.entities, tagger)
        if options.profile:
            say(f"profiling: {name}")
            entry["profile"] = profile_chain(group.pages, config, batch, tagger)
        groups_report[name] = entry
    report["groups"] = groups_report
    e2e = [g for g in options.e2e_groups if groups_report.get(g, {}).get("in_process")]
    if e2e:
        report["broker"] = _run_e2e(options, settings, groups, groups_report, e2e, say)
    report["machine"]["loadavg_end"] = loadavg()
    report["targets"] = evaluate_targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _warm_up(pages: Sequence[RawPage], config: PipelineConfig, tagger: EntityTagger) -> None:
    """One page through the chain untimed: language profiles, lxml, first-call costs."""
    if pages:
        chain_run(pages[:1], config, 1, tagger)


def _say(text: str) -> None:
    print(f"newsflow bench: {text}", file=sys.stderr, flush=True)


def _run_e2e(options: BenchOptions, settings: Settings, groups: dict[str, PageSet],
             groups_report: dict[str, Any], names: Sequence[str],
             say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    from streams.broker import EmbeddedBroker
    from streams.demo import embedded_settings

    broker = None
    workdir = Path(tempfile.mkdtemp(prefix="newsflow-bench-"))
    sampler = TreeSampler().start()
    try:
        if settings.servers:
            where = f"configured broker at {settings.bootstrap_servers}"
        else:
            say("starting the embedded Tansu broker")
            broker = EmbeddedBroker().start()
            settings = embedded_settings(settings, broker.bootstrap_servers)
            if options.batched_produce:
                settings = replace(settings, one_record_per_batch=False)
            where = f"embedded Tansu at {broker.bootstrap_servers}"
            sampler.watch("broker", broker.proc.pid)
        sampler.watch("harness", os.getpid(), tree=False)  # its workers are its children
        ctx = Context(settings, workdir, sampler, options, where, say)
        for name in names:
            entry = groups_report[name]
            entry["e2e"] = asyncio.run(e2e_group(ctx, groups[name], entry["in_process"]))
        info: dict[str, Any] = {"where": where, "partitions": settings.partitions,
                                "one_record_per_batch": settings.one_record_per_batch}
        if broker is not None:
            info["broker_cpu_seconds"] = _r(sampler.watched["broker"].samples[-1].cpu, 1)
            info["broker_memory"] = sampler.memory("broker")
        return info
    finally:
        sampler.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 10 against the measured value, per group where it applies."""
    rows = []
    for name, group in report.get("groups", {}).items():
        e2e = group.get("e2e") or {}
        one, two = e2e.get("workers_1") or {}, e2e.get("workers_2") or {}
        memory = [w.get("pss_peak_bytes") for phase in (one, two)
                  for w in (phase.get("per_worker") or {}).values()]  # fmt: skip
        values = {
            "ratio_1": one.get("ratio_to_in_process"),
            "ratio_2": two.get("ratio_to_in_process"),
            "per_core": two["pages_per_second"] / 2 if two.get("pages_per_second") else None,
            "scaling": e2e.get("scaling_2_over_1"),
            "ner_f1": (group.get("ner_f1") or {}).get("f1"),
            "p99": ((e2e.get("latency") or {}).get("latency_seconds") or {}).get("p99"),
            "rss": max((m for m in memory if m), default=None),
        }
        for key, text, test in TARGETS:
            value = values[key]
            if value is not None:
                rows.append({"group": name, "target": key, "description": text,
                             "value": value, "met": bool(test(value))})  # fmt: skip
    return rows


# --- output ----------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return f"{value / 1e6:.0f} MB" if value else "-"


def _v(value: Any, fmt: str = "") -> str:
    return "-" if value is None else format(value, fmt)


def _each(workers: Iterable[dict[str, Any]], field: str, fmt: str = "") -> str:
    """One value per worker, as `a/b`."""
    return "/".join(_v(w.get(field), fmt) for w in workers)


def _in_process_row(name: str, ip: dict[str, Any]) -> str:
    st = ip["stages"]
    return (
        f"{name:<6}{ip['pages']:>6}{_v(ip['pages_per_second']):>9}"
        f"{_v(ip['pages_per_cpu_second']):>9}{_v(st['extract']['ms_per_call']):>9}"
        f"{_v(st['clean']['ms_per_call']):>7}{_v(st['language']['ms_per_call']):>7}"
        f"{_v(st['entities']['ms_per_call']):>9}{_v(ip['ner_docs_per_second']):>8}"
        f"{_v(st.get('dedup', {}).get('ms_per_call')):>7}"
        f"{_v(st.get('stories', {}).get('ms_per_call')):>8}{_v(ip.get('passes')):>7}"
        f"{_v(ip['streaming_overhead']['envelope_ms_per_page']):>9}"
    )


def format_report(report: dict[str, Any]) -> str:
    """The report as tables for people (the JSON has everything)."""
    m = report["machine"]
    lines = [
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB, "
        f"Python {m['python']}; load {m['loadavg_start']} -> {m.get('loadavg_end')}",
        f"inputs: {report['inputs']['pages']} pages from {', '.join(report['inputs']['paths'])}"
        f" + {report['inputs']['basil_pages']} BASIL pages in en; "
        f"unreadable {report['inputs']['unreadable'] or 'none'}",
        "",
        "in-process, one process (ms per call; pages/s = the ceiling per core: the worker's "
        "chain, dedup and stories included, over `passes` passes, as the backlog sends)",
        f"{'group':<6}{'pages':>6}{'pages/s':>9}{'p/cpu-s':>9}{'extract':>9}{'clean':>7}"
        f"{'lang':>7}{'entities':>9}{'NER d/s':>8}{'dedup':>7}{'stories':>8}{'passes':>7}"
        f"{'envelope':>9}",
    ]  # fmt: skip
    groups = report["groups"]
    for name, g in groups.items():
        ip = g.get("in_process")
        if not ip:
            lines.append(f"{name:<6}{g['pages']:>6}  {g.get('note', '')}")
            continue
        lines.append(_in_process_row(name, ip))
        if g.get("in_process_ner_head"):
            lines.append(_in_process_row(f"{name}*", g["in_process_ner_head"]))
    if groups.get("en", {}).get("in_process_ner_head"):
        lines.append(f"  en* = the same pages with NER on the head only ({NER_HEAD}), "
                     "as before name windows")  # fmt: skip
    for key, what in (("ner_f1", "en"), ("ner_f1_head", "en*")):
        f1 = groups.get("en", {}).get(key)
        if f1 and f1.get("articles"):
            lines += ["",
                      f"NER agreement ({what}) against full-text NER: {f1['articles']} articles,"
                      f" select {f1.get('select')}, max {f1['max_chars']} chars "
                      f"({f1['longer_than_max_chars']} texts longer): precision "
                      f"{f1['precision']}, recall {f1['recall']}, F1 {f1['f1']}; by origin "
                      + ", ".join(f"{k} F1 {v['f1']} ({v['docs']})"
                                  for k, v in f1.get("by_origin", {}).items())]  # fmt: skip
    if "broker" in report:
        b = report["broker"]
        lines += ["", f"through the broker: {b['where']}, {b['partitions']} partitions",
                  f"{'group':<6}{'wrk':>4}{'pages':>6}{'pages/s':>9}{'ratio':>7}{'p/cpu-s':>9}"
                  f"{'cpu-r':>7}{'util':>10}{'wait':>10}{'enriched':>10}{'start p/s':>10}"
                  f"{'out p/s':>8}{'redeliv':>8}{'peak Pss':>9}{'peak RSS':>9}{'others':>8}",
                  "  pages/s = pages enriched while every worker was busy; ratio = pages/s / "
                  "(workers x in-process pages/s); cpu-r = the same per CPU-second;",
                  "  out p/s = outcome records per second in their own window (waves of "
                  "dedup and stories: not the rate);",
                  "  per worker: util = CPU-seconds per second it got, wait = seconds per second "
                  "it was runnable but queued for a CPU, enriched = pages it enriched;",
                  "  others = CPU-seconds per second of the embedded broker + this harness "
                  "on the same cores"]  # fmt: skip
        for name, g in groups.items():
            for key in ("workers_1", "workers_2"):
                r = (g.get("e2e") or {}).get(key)
                if not r:
                    continue
                ws = r["per_worker"].values()
                lines.append(
                    f"{name:<6}{r['workers']:>4}{r['sent']:>6}{_v(r['pages_per_second']):>9}"
                    f"{_v(r['ratio_to_in_process']):>7}{_v(r['pages_per_cpu_second']):>9}"
                    f"{_v(r['cpu_ratio_to_in_process']):>7}"
                    f"{_each(ws, 'cpu_utilisation', '.2f'):>10}"
                    f"{_each(ws, 'run_queue_wait_share', '.2f'):>10}"
                    f"{_each(ws, 'pages_enriched'):>10}"
                    f"{_v(r['from_start_pages_per_second']):>10}"
                    f"{_v(r['outcome_window']['per_second']):>8}{r['redelivered']:>8}"
                    f"{_mb(max(w['pss_peak_bytes'] for w in ws)):>9}"
                    f"{_mb(max(w['rss_peak_bytes'] for w in ws)):>9}"
                    f"{_v(sum((r.get('others_cpu_utilisation') or {}).values()), '.2f'):>8}"
                )
        lines += ["", "latency, 1 worker fed at half its rate (seconds, produce -> outcome "
                  "record; 'read' = until this harness read it)",
                  f"{'group':<6}{'rate':>7}{'n':>5}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}"
                  f"{'read p99':>9}{'scaling 2/1':>12}"]  # fmt: skip
        for name, g in groups.items():
            e2e = g.get("e2e") or {}
            lat = e2e.get("latency")
            if not lat:
                continue
            q, read = lat["latency_seconds"], lat["latency_to_read_seconds"]
            lines.append(
                f"{name:<6}{lat['rate']:>7}{q['n']:>5}{_v(q.get('p50')):>7}"
                f"{_v(q.get('p90')):>7}{_v(q.get('p99')):>7}{_v(q.get('max')):>7}"
                f"{_v(read.get('p99')):>9}{_v(e2e.get('scaling_2_over_1')):>12}"
            )
    for name, g in groups.items():
        prof = g.get("profile")
        if prof and "self_by_package" in prof:
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(prof["self_by_package"].items())[:8])
            lines += ["", f"profile {name} ({prof['seconds']} s): self time by package: {top}"]
            lines += [f"  {row['share']:>6.1%}  {row['function']}  ({row['where']})"
                      for row in prof["self_by_function"][:10]]  # fmt: skip
    if report.get("targets"):
        lines += ["", "targets (issue 10)"]
        for t in report["targets"]:
            value = t["value"]
            shown = _mb(value) if t["target"] == "rss" else f"{value:.4g}"
            lines.append(f"  {'met ' if t['met'] else 'MISS'}  {t['group']:<4} {shown:>8}  "
                         f"{t['description']}")  # fmt: skip
    lines.append(f"\n{report['seconds']} s in all")
    return "\n".join(lines)


# --- command ---------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    base = BenchOptions.quick() if args.quick else BenchOptions()
    changes: dict[str, Any] = {"paths": tuple(args.paths), "profile": args.profile,
                               "quiet": args.quiet}  # fmt: skip
    if args.no_e2e:
        changes["e2e_groups"] = ()
    elif args.e2e_group:
        changes["e2e_groups"] = tuple(args.e2e_group)
    for name in ("pages", "basil", "seconds", "latency_seconds", "timeout"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.workers:
        changes["workers"] = tuple(args.workers)
    if args.no_f1:
        changes["ner_f1"] = False
    if args.no_ner_head:
        changes["ner_head"] = False
    if args.batched_produce:
        changes["batched_produce"] = True
    if args.no_pin:
        changes["pin_workers"] = False
    return replace(base, **changes)


def cmd_bench_pipeline(args: argparse.Namespace, settings: Settings | None) -> int:
    from streams.broker import BrokerError

    settings = settings or Settings.from_env()
    command = "newsflow " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
    try:
        report = run(options_from_args(args), settings, command)
    except (BrokerError, RuntimeError) as exc:
        print(f"newsflow bench pipeline: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_report(report))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `pipeline` under `newsflow bench`."""
    p = subparsers.add_parser(
        "pipeline", help="throughput in-process and through the broker, per language group, "
        "with NER F1, latency and memory (embedded broker unless configured)")  # fmt: skip
    p.add_argument("paths", nargs="*", metavar="PATH", help="default: ../shared/corpus")
    p.add_argument("--pages", type=int, help="only the first N input pages")
    p.add_argument("--basil", type=int, help="BASIL pages added to `en` (default all 300; 0: none)")
    p.add_argument("--e2e-group", action="append", choices=GROUPS,
                   help="groups run through the broker (repeatable; default all)")  # fmt: skip
    p.add_argument("--no-e2e", action="store_true", help="in-process only, no broker")
    p.add_argument("--workers", type=int, action="append",
                   help="worker counts to run (repeatable; default 1 and 2)")  # fmt: skip
    p.add_argument("--seconds", type=float,
                   help="aimed length of a backlog phase (default 20; whole passes)")  # fmt: skip
    p.add_argument("--latency-seconds", type=float, help="length of the latency phase (default 15)")
    p.add_argument("--timeout", type=float, help="give up a phase after this many seconds")
    p.add_argument("--no-f1", action="store_true", help="skip the full-text NER comparison")
    p.add_argument("--no-ner-head", action="store_true",
                   help="skip the en pass with NER on the head only (before)")  # fmt: skip
    p.add_argument("--batched-produce", action="store_true",
                   help="embedded broker: batch produce requests as Kafka allows (Tansu 0.6 "
                        "then misreports end offsets; the bench does not use them)")
    p.add_argument("--no-pin", action="store_true",
                   help="let the workers share every core (default: one core per worker)")
    p.add_argument("--profile", action="store_true",
                   help="also profile each group with pyinstrument (a separate pass)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke-test size (a few pages)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_bench_pipeline)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="newsflow bench")
    add_parser(parser.add_subparsers(dest="what", required=True))
    args = parser.parse_args(["pipeline", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args, None)


if __name__ == "__main__":
    sys.exit(main())
