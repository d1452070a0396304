"""End to end through a real broker: files and raw records in, one outcome per input out.

One worker runs the seeds, the corpus and a handful of malformed records; two workers in one
group run the same inputs on fresh topics. The articles must equal what `Enricher` makes of
the same pages in-process, and both runs must agree on every outcome and id.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from agents.pipeline import Enricher
from agents.records import Article, RawPage
from streams.consumer import OutcomeTally, wait_for_outcomes
from streams.envelope import parse_raw_page
from streams.producer import ProduceOptions, produce, producer_options
from streams.settings import Settings
from streams.sources import iter_pages
from streams.topics import TopicNames, ensure_topics

from .conftest import Broker, Workers, fresh_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SCHEMAS = Path(__file__).resolve().parents[2] / "streams" / "schemas"
BIG_PAGE_CAP = 1_000_000  # the tests' NEWSFLOW_MAX_PAGE_BYTES, so "too large" stays cheap


def raw_records() -> list[tuple[str, bytes | None, bytes | None]]:
    """(label, key, value) of records a careless or broken crawler could write."""
    html = "<html><head><title>Bare</title></head><body><article>" + "".join(
        f"<p>Paragraph {i}: the council met on Tuesday to discuss the new bridge over the "
        f"river, which residents have asked for since the old ferry stopped running.</p>"
        for i in range(12)
    ) + "</article></body></html>"  # fmt: skip
    return [
        ("malformed_json", b"https://bad.example/1", b'{"url": "https://bad.example/1", "html": '),
        ("binary_no_key", None, bytes(range(256))),
        ("tombstone", b"https://bad.example/3", None),
        ("ftp_url", b"ftp://bad.example/4",
         orjson.dumps({"url": "ftp://bad.example/4", "html": "<p>x</p>"})),
        ("too_large", b"https://bad.example/5",
         orjson.dumps({"url": "https://bad.example/5", "html": "<p>" + "x" * BIG_PAGE_CAP})),
        ("bare_html", b"https://bare.example/bridge", html.encode()),
        ("empty_article", b"https://bad.example/7",
         orjson.dumps({"url": "https://bad.example/7", "html": "<html><body></body></html>"})),
    ]  # fmt: skip


# What the envelope stage must say about the records that cannot be pages at all.
ENVELOPE_REASONS = {
    "malformed_json": "malformed_envelope",
    "binary_no_key": "missing_url",
    "tombstone": "missing_body",
    "ftp_url": "invalid_url",
    "too_large": "too_large",
}


@dataclass
class Run:
    settings: Settings
    tally: OutcomeTally
    file_inputs: int
    raw_positions: dict[str, tuple[str, int, int]]  # label -> input position
    statuses: list[dict[str, Any]] = field(default_factory=list)

    def articles_by_url(self) -> dict[str, dict]:
        """Articles without `story_id`, which the in-process core does not set and which
        depends on arrival order (tests/streams/test_stories_broker.py checks it)."""
        return {o.value["url"]: {k: v for k, v in o.value.items() if k != "story_id"}
                for o in self.tally.outcomes.values() if o.kind == "article"}  # fmt: skip

    def outcome_of(self, label: str):
        return self.tally.outcomes[self.raw_positions[label]]

    def outcome_set(self) -> set[tuple]:
        """Every outcome, identified without Kafka positions: comparable across runs."""
        by_position = {pos: label for label, pos in self.raw_positions.items()}
        found = set()
        for position, o in self.tally.outcomes.items():
            who = by_position.get(position) or o.value.get("url")
            what = o.value["id"] if o.kind == "article" else o.value["reason"]
            found.add((who, o.kind, what))
        return found


async def _produce_raw(settings: Settings) -> dict[str, tuple[str, int, int]]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        positions = {}
        for label, key, value in raw_records():
            meta = await (await producer.send(settings.topic_raw_pages, value, key=key))
            positions[label] = (settings.topic_raw_pages, meta.partition, meta.offset)
        return positions
    finally:
        await producer.stop()


def run_pipeline(settings: Settings, pool: Workers, inputs: list[Path], workers: int) -> Run:
    asyncio.run(ensure_topics(settings))
    started = pool.start(settings, workers)

    async def go() -> Run:
        report = await produce(iter_pages(inputs, limits=settings.envelope_limits), settings,
                               ProduceOptions())  # fmt: skip
        assert (report.sent, report.skipped, report.failed) == (report.read, 0, 0), report
        raw = await _produce_raw(settings)
        names = TopicNames.from_settings(settings)
        expected = {(names.raw_pages, p, o) for p, o in report.positions} | set(raw.values())
        tally = OutcomeTally(expected=expected)
        done = await wait_for_outcomes(settings, tally, start="beginning", timeout=240,
                                       should_stop=lambda: any(w.proc.poll() is not None
                                                               for w in started))  # fmt: skip
        assert done, f"no outcome for {sorted(tally.missing())}"
        return Run(settings, tally, report.read, raw)

    run = asyncio.run(go())
    run.statuses = [w.status() for w in started]
    return run


@pytest.fixture(scope="module")
def inputs(seeds_dir: Path, corpus_dir: Path) -> list[Path]:
    return [seeds_dir, corpus_dir]


@pytest.fixture(scope="module")
def single_run(broker: Broker, inputs, tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("single")
    pool = Workers(tmp)
    try:
        settings = fresh_settings(broker, tmp / "state", max_page_bytes=BIG_PAGE_CAP)
        return run_pipeline(settings, pool, inputs, workers=1)
    finally:
        assert pool.stop_all() == [0], "the worker did not shut down cleanly"


@pytest.fixture(scope="module")
def in_process(single_run: Run, inputs) -> dict[str, Any]:
    """What the core makes of the same inputs without Kafka: url -> Article | Failure, and
    label -> outcome for the raw records."""
    settings = single_run.settings
    enricher = Enricher(settings.pipeline)
    pages = [p for p in iter_pages(inputs, limits=settings.envelope_limits)
             if isinstance(p, RawPage)]  # fmt: skip
    by_url = dict(zip((p.url for p in pages), enricher.enrich_many(pages), strict=True))
    by_label = {}
    for label, key, value in raw_records():
        parsed = parse_raw_page(value, key, settings.envelope_limits)
        by_label[label] = enricher.enrich(parsed) if isinstance(parsed, RawPage) else parsed
    return {"by_url": by_url, "by_label": by_label}


def test_every_input_has_exactly_one_outcome(single_run: Run):
    tally = single_run.tally
    assert len(tally.outcomes) == single_run.file_inputs + len(raw_records())
    assert not tally.missing()
    assert tally.conflicts == []  # never an article and a dead letter for one input
    assert tally.unmatched == 0  # no outcome without an input reference


def test_articles_are_what_the_core_makes_in_process(single_run: Run, in_process):
    streamed = single_run.articles_by_url()
    expected = {url: {k: v for k, v in a.to_dict().items() if k != "story_id"}
                for url, a in in_process["by_url"].items() if isinstance(a, Article)}  # fmt: skip
    assert len(expected) >= 100  # the corpus is real news and blog pages: most are articles
    assert set(streamed) - {"https://bare.example/bridge"} == set(expected)
    for url, article in expected.items():
        got = streamed[url]
        for name in ("id", "title", "language", "entities", "text"):
            assert got[name] == article[name], (url, name)
        assert got == article, url


def test_broken_records_are_dead_lettered_with_their_input_reference(single_run: Run, in_process):
    for label, (key, value) in ((r[0], r[1:]) for r in raw_records()):
        outcome = single_run.outcome_of(label)
        local = in_process["by_label"][label]
        if isinstance(local, Article):
            assert outcome.kind == "article", label
            assert outcome.value == local.to_dict()
            continue
        assert outcome.kind == "dead_letter", label
        doc = outcome.value
        assert (doc["reason"], doc["stage"]) == (local.reason, local.stage), label
        if label in ENVELOPE_REASONS:
            assert (doc["stage"], doc["reason"]) == ("envelope", ENVELOPE_REASONS[label])
        topic, partition, offset = single_run.raw_positions[label]
        assert doc["input"] == {
            "topic": topic, "partition": partition, "offset": offset,
            "key": key.decode() if key is not None else None,
            "value_bytes": len(value or b""),
        }  # fmt: skip
        assert outcome.key == key  # the dead letter is keyed like its input
    assert single_run.outcome_of("empty_article").kind == "dead_letter"


def test_records_match_the_published_schemas(single_run: Run):
    validators = {
        kind: jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))
        for kind, name in (("article", "article.schema.json"),
                           ("dead_letter", "dead-letter.schema.json"))
    }  # fmt: skip
    kinds = set()
    for outcome in single_run.tally.outcomes.values():
        validators[outcome.kind].validate(outcome.value)
        kinds.add(outcome.kind)
    assert kinds == {"article", "dead_letter"}


def test_worker_reports_what_it_did(single_run: Run):
    (status,) = single_run.statuses
    assert status["partitions"] == [0, 1, 2, 3]
    assert status["inputs"] == len(single_run.tally.outcomes)
    assert sum(status["outcomes"].values()) == status["inputs"]


def test_two_workers_split_the_partitions_and_agree_with_one(
    broker: Broker, inputs, single_run: Run, tmp_path: Path, workers: Workers
):
    settings = fresh_settings(broker, tmp_path / "state", max_page_bytes=BIG_PAGE_CAP)
    run = run_pipeline(settings, workers, inputs, workers=2)
    owned = [set(s["partitions"]) for s in run.statuses]
    assert all(owned) and owned[0].isdisjoint(owned[1])
    assert owned[0] | owned[1] == {0, 1, 2, 3}
    assert all(s["inputs"] > 0 for s in run.statuses), run.statuses
    assert len(run.tally.summary()["workers"]) == 2  # both wrote outcome records
    assert not run.tally.missing() and run.tally.conflicts == []
    # Another group, other topics, other processes: the same outcomes, the same ids.
    assert run.outcome_set() == single_run.outcome_set()
    assert run.articles_by_url() == single_run.articles_by_url()
    assert workers.stop_all() == [0, 0]


def test_a_worker_stopped_mid_batch_loses_nothing(
    broker: Broker, corpus_dir: Path, tmp_path: Path, workers: Workers
):
    """SIGTERM while batches are in flight, then a new worker in the same group: every input
    still gets its outcome (replays allowed, they carry the same ids)."""
    settings = fresh_settings(broker, tmp_path / "state")
    asyncio.run(ensure_topics(settings))
    names = TopicNames.from_settings(settings)
    (first,) = workers.start(settings, 1)

    pages = sorted((corpus_dir / "pages").glob("*.html.gz"))[:48]

    async def produce_all() -> set:
        report = await produce(iter_pages(pages), settings, ProduceOptions())
        return {(names.raw_pages, p, o) for p, o in report.positions}

    expected = asyncio.run(produce_all())
    tally = OutcomeTally(expected=expected)
    asyncio.run(wait_for_outcomes(settings, tally, timeout=120,
                                  should_stop=lambda: len(tally.outcomes) >= 16))  # fmt: skip
    assert 16 <= len(tally.outcomes) < len(expected), "stop it while it still has work"
    assert first.status()["last_batch_size"]
    first.proc.terminate()
    assert first.proc.wait(60) == 0
    workers.start(settings, 1)
    tally = OutcomeTally(expected=expected)
    assert asyncio.run(wait_for_outcomes(settings, tally, timeout=240)), sorted(tally.missing())
    assert tally.conflicts == []
