"""Story clustering through a real broker: 4 raw-pages partitions, 2 workers, dedup on.

The same pages, enriched, deduplicated and clustered in-process in date order
(`newsflow enrich --dedup --stories`), must give every article the same story as the stream,
where stories join articles handled on different partitions and by different workers, and
reach the stories agent out of order (the hold restores it). `newsflow tail --stories` then
shows those stories.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from agents.pipeline import Enricher
from agents.records import Article, RawPage
from agents.stories_agent import order_key
from streams.bench.stories import basil_items
from streams.cli import with_dedup, with_stories
from streams.consumer import OutcomeTally, wait_for_outcomes
from streams.envelope import envelope_key, page_to_envelope
from streams.producer import producer_options
from streams.sources import iter_pages
from streams.topics import TopicNames, ensure_topics
from tests.conftest import SEEDS, SHARED

from .conftest import Broker, Workers, fresh_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

HOLD = 15.0  # s; the skew between two workers on this input is a few seconds


def pages() -> tuple[list[RawPage], list[RawPage], list[RawPage]]:
    """Phase 1: 44 BASIL articles (15 events, three outlets each, less the last report of the
    latest event). Phase 2, after a restart: that report, which must join its event's story
    from the restored state. Phase 3: the seeds (no date in the page: their fetch time,
    today) and 20 corpus pages, most of them dated after the BASIL events."""
    basil = sorted(basil_items(limit=45), key=lambda i: (_date(i.page), i.page.url))
    later = basil.pop().page
    seeds = [p for p in iter_pages([SEEDS]) if isinstance(p, RawPage)]
    corpus = [p for p in iter_pages([SHARED / "corpus"]) if isinstance(p, RawPage)]
    return [i.page for i in basil], [later], seeds + corpus[:20]


def _date(page: RawPage) -> str:
    return re.search(rb'published_time" content="([^"]+)', page.body).group(1).decode()


def in_process(phases: list[list[RawPage]], settings) -> list[dict[str, str | None]]:
    """Per phase, article id -> story id, from the CLI's in-process path: each phase's
    articles in date order, the state carried over from one phase to the next."""
    enricher = Enricher(settings.pipeline)
    ordered = []
    for raw in phases:
        articles = [a for a in enricher.enrich_many(raw) if isinstance(a, Article)]
        ordered.append(sorted(articles, key=order_key))
    flat = ((a.url, a) for phase in ordered for a in phase)
    stories = {a.id: a.story_id for _, a in with_stories(with_dedup(flat, settings), settings)
               if not a.duplicate_of}  # fmt: skip
    return [{a.id: stories[a.id] for a in phase if a.id in stories} for phase in ordered]


async def produce(settings, raw: list[RawPage]) -> set[tuple[str, int, int]]:
    """Send the pages in order; returns their input positions."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        topic = TopicNames.from_settings(settings).raw_pages
        sent = [await producer.send(topic, page_to_envelope(p), key=envelope_key(p)) for p in raw]
        return {(topic, m.partition, m.offset) for m in await asyncio.gather(*sent)}
    finally:
        await producer.stop()


def test_stream_gives_the_in_process_stories(broker: Broker, workers: Workers, tmp_path: Path):
    settings = fresh_settings(broker, tmp_path / "state", story_hold=HOLD)
    phases = pages()
    expected = in_process(list(phases), settings)
    assert len({s for s in expected[0].values() if s}) <= len(expected[0]) - 20  # grouped
    late_report = _id(phases[1][0])
    assert expected[1][late_report] in set(expected[0].values())  # joins its phase-1 story
    # Produce in the in-process order (date), as a live feed would arrive.
    position = {ident: i for i, ident in enumerate(k for phase in expected for k in phase)}
    asyncio.run(ensure_topics(settings))

    def run(raw: list[RawPage]) -> OutcomeTally:
        ordered = sorted(raw, key=lambda p: position[_id(p)])
        tally = OutcomeTally(asyncio.run(produce(settings, ordered)))
        assert asyncio.run(wait_for_outcomes(settings, tally, timeout=240)), tally.missing()
        assert tally.conflicts == []  # (earlier phases' outcomes count as unmatched)
        return tally

    workers.start(settings, count=2)
    tally = run(phases[0])
    workers.stop_all()
    assert tally.unmatched == 0
    got = stories_of(tally)
    assert got == expected[0]
    # Stories whose articles came in on different raw-pages partitions (so, with two workers
    # of two partitions each, were enriched and deduplicated on different workers).
    partitions: dict[str, set[int]] = defaultdict(set)
    for outcome in tally.outcomes.values():
        if outcome.kind == "article" and outcome.value["story_id"]:
            partitions[outcome.value["story_id"]].add(outcome.input[1])
    assert sum(1 for parts in partitions.values() if len(parts) > 1) >= 5

    # A new worker process: the story the late report joins exists only in the changelogs.
    workers.start(settings, count=1)
    assert stories_of(run(phases[1])) == expected[1]
    last = stories_of(run(phases[2]))
    assert last == expected[2]
    seeds = [last[_id(p)] for p in phases[2][:2]]
    assert seeds[0] == seeds[1] is not None
    assert list(last.values()).count(seeds[0]) == 2  # no corpus page joins the seeds' story

    cli = [str(Path(sys.executable).parent / "newsflow"), "tail", "--stories",
           "--from-beginning", "--idle-timeout", "5", "--format", "summary"]  # fmt: skip
    env = {**os.environ, **settings.env()}
    shown = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"{seeds[0]}  2 article(s)" in shown.stdout
    all_stories = {s for phase in expected for s in phase.values() if s}
    assert f"{len(all_stories)} stories" in shown.stdout


def stories_of(tally: OutcomeTally) -> dict[str, str | None]:
    return {o.value["id"]: o.value["story_id"] for o in tally.outcomes.values()
            if o.kind == "article"}  # fmt: skip


def _id(page: RawPage) -> str:
    from agents.records import article_id

    return article_id(page.url)
