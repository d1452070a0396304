"""Streaming deduplication (agents/dedup_agent.py): the claims/gather protocol, first without a
broker (every delivery order a seeded scheduler can make, with redeliveries), then through a
real broker with 4 partitions and 2 workers: copies whose originals sit on other partitions,
copies of articles seen before a worker restart, and near-identical pages sent all at once.

Pages are real news texts (BASIL, ../shared/stories) in minimal HTML, so every page goes
through the whole enrich chain before dedup sees it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import Counter, defaultdict, deque
from dataclasses import replace
from html import escape
from pathlib import Path

import jsonschema
import orjson
import pytest

from agents.dedup import DedupConfig, signature, similarity
from agents.dedup_agent import (
    ARTICLES,
    CLAIMS,
    GATHER,
    PROBE_HEADER,
    ClaimsCore,
    GatherCore,
    PageProbe,
    first_claim,
    partition_for,
)
from agents.records import Article, RawPage, article_id
from streams.consumer import OutcomeTally, end_offsets, wait_for_outcomes
from streams.demo import start_worker
from streams.envelope import page_to_envelope
from streams.producer import producer_options
from streams.settings import Settings
from streams.topics import INPUT_HEADER, TopicNames, ensure_topics
from tests.conftest import STORIES

from .conftest import Broker, Workers, fresh_settings

SCHEMA = Path(__file__).resolve().parents[2] / "streams" / "schemas" / "duplicate.schema.json"
CFG = DedupConfig()
N = 4  # partitions, in the simulation and on the broker


# ------------------------------------------------------------------------------ test pages


def basil_articles(count: int, min_words: int = 250) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) of real articles, one per BASIL event: different events, so no
    two of them are near duplicates of each other."""
    found, events = [], set()
    for path in sorted((STORIES / "basil").glob("*.json")):
        doc = json.loads(path.read_text())
        paragraphs = [" ".join(p) for p in doc["body-paragraphs"] if p]
        if doc["triplet-uuid"] in events or len(" ".join(paragraphs).split()) < min_words:
            continue
        events.add(doc["triplet-uuid"])
        found.append((doc["title"], paragraphs))
        if len(found) == count:
            return found
    raise AssertionError(f"only {len(found)} BASIL articles with {min_words}+ words")


def html(title: str, paragraphs: list[str]) -> str:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return (f"<html><head><title>{escape(title)}</title></head><body><article>"
            f"<h1>{escape(title)}</h1>{body}</article></body></html>")  # fmt: skip


def edited(paragraphs: list[str], rate: float, rnd: random.Random) -> list[str]:
    """About `rate` of the words replaced by words that occur nowhere else."""
    out = []
    for p in paragraphs:
        words = p.split()
        for i in range(len(words)):
            if rnd.random() < rate:
                words[i] = f"edit{rnd.randrange(10**9)}"
        out.append(" ".join(words))
    return out


def page(url: str, title: str, paragraphs: list[str], fetched_at: str) -> RawPage:
    return RawPage(url, html(title, paragraphs), "text/html", fetched_at, "test")


# ------------------------------------------------------------------- the protocol, no broker


def simulate(articles: list[Article], seed: int, redeliver: float = 0.0, crash: float = 0.0,
             one_by_one: bool = False) -> dict[int, list]:  # fmt: skip
    """Run the claims and gather cores over dict state with one FIFO queue per partition and
    a seeded scheduler picking which partition moves next (and when the next page arrives).
    `redeliver`: that share of messages is delivered again later (at-least-once);
    `crash`: that share of handled messages loses its sends (the process died after its state
    was written) and is handled again, by a fresh core on the same state;
    `one_by_one`: in list order, each page once the previous one is decided.
    Returns input index -> [(role, record)] of every outcome sent for it."""
    rnd = random.Random(seed)
    claims = ClaimsCore({}, {}, {}, CFG, N)
    gather = GatherCore({}, {}, CFG, N, "sim:1")
    queues = {(t, p): deque() for t in (GATHER, CLAIMS) for p in range(N)}
    outcomes: dict[int, list] = defaultdict(list)
    arrivals = list(enumerate(articles))[::-1]
    if not one_by_one:
        rnd.shuffle(arrivals)
    while True:
        busy = [k for k, q in queues.items() if q]
        if arrivals and (not busy or (not one_by_one and rnd.random() < 0.3)):
            i, a = arrivals.pop()  # what the enrich agent sends, in its order
            probe = PageProbe.of(a, CFG, 1.0)
            ref = orjson.dumps({"topic": "raw", "partition": 0, "offset": i})
            headers = [(PROBE_HEADER, probe.header()), (INPUT_HEADER, ref)]
            queues[(GATHER, partition_for(a.id, N))].append((page_value(a), headers))
            for s in first_claim(probe, CFG, N):
                queues[(CLAIMS, s.partition)].append((s.value, []))
            continue
        if not busy:
            return outcomes
        where = rnd.choice(busy)
        value, headers = queues[where].popleft()
        if rnd.random() < redeliver:
            queues[where].append((value, headers))
        sends = claims.handle(value) if where[0] == CLAIMS else gather.handle(value, headers)
        if rnd.random() < crash:  # replayed from the last committed offset: this message
            queues[where].appendleft((value, headers))
            gather = GatherCore(gather.records, gather.waiting, CFG, N, "sim:2")
            continue
        for ident in list(gather.unconfirmed):  # the sends are acknowledged
            gather.confirm(ident)
        for s in sends:
            if s.role in (GATHER, CLAIMS):
                queues[(s.role, s.partition)].append((s.value, list(s.headers)))
            else:
                position = orjson.loads(dict(s.headers)[INPUT_HEADER])
                outcomes[position["offset"]].append((s.role, orjson.loads(s.value)))


def page_value(article: Article) -> bytes:
    return orjson.dumps(article.to_dict())


def synthetic_groups(groups: int, seed: int) -> tuple[list[Article], list[int]]:
    """Groups of mutually similar articles (near copies, an exact copy, a URL variant) made
    of random words, so groups never resemble each other; returns articles and group ids."""
    rnd = random.Random(seed)
    articles, labels = [], []
    for g in range(groups):
        base = [" ".join(f"w{rnd.randrange(20000)}" for _ in range(60)) for _ in range(5)]
        variants = [base] + [edited(base, 0.02, rnd) for _ in range(3)]
        for c, paragraphs in enumerate(variants):
            url = f"https://site{c}.example/g{g}"
            articles.append(Article(id=article_id(url), url=url, text="\n".join(paragraphs),
                                    fetched_at=f"2024-05-01T10:00:{rnd.randrange(60):02d}Z"))
        for url in (f"https://mirror.example/g{g}", f"https://site0.example/g{g}?utm_source=x"):
            articles.append(replace(articles[-4], id=article_id(url), url=url))
        labels.extend([g] * 6)
    return articles, labels


def check_outcomes(outcomes: dict[int, list], articles: list[Article], labels: list[int]):
    """Every input has outcomes of one kind; no two similar canonicals; every duplicate_of
    chain ends at a canonical of its own group; exactly one canonical per group."""
    assert set(outcomes) == set(range(len(articles)))
    final = {}
    for i, records in outcomes.items():
        assert len({(role, orjson.dumps(r)) for role, r in records}) == 1, records
        final[i] = records[0]
    by_id = {a.id: i for i, a in enumerate(articles)}
    canonical = {i for i, (role, _) in final.items() if role == ARTICLES}
    for i, (role, record) in final.items():
        seen = {i}
        while role != ARTICLES:
            i = by_id[record["duplicate_of"]]
            assert i not in seen, "a duplicate_of cycle"
            seen.add(i)
            role, record = final[i]
        assert len({labels[j] for j in seen}) == 1
    assert sorted(labels[i] for i in canonical) == sorted(set(labels))
    sigs = {i: signature(articles[i].text) for i in canonical}
    for i in canonical:
        for j in canonical:
            assert i >= j or similarity(sigs[i], sigs[j]) < CFG.threshold


@pytest.mark.parametrize("seed", range(12))
def test_any_delivery_order_gives_one_canonical_per_group(seed):
    articles, labels = synthetic_groups(6, seed)
    outcomes = simulate(articles, seed, redeliver=0.1 if seed % 2 else 0.0,
                        crash=0.1 if seed % 3 else 0.0)  # fmt: skip
    check_outcomes(outcomes, articles, labels)
    kinds = Counter(r.get("kind") for records in outcomes.values() for _, r in records[:1])
    assert kinds["url"] >= 6 and kinds["exact"] >= 1 and kinds["near"] >= 6


def test_a_copy_finds_its_original_through_another_partition():
    articles, _ = synthetic_groups(1, 99)
    original = articles[0]
    copy = next(a for a in articles[1:4]
                if partition_for(a.id, N) != partition_for(original.id, N))  # fmt: skip
    for seed in range(4):
        outcomes = simulate([original, copy], seed, one_by_one=True)
        assert outcomes[0] == [(ARTICLES, orjson.loads(page_value(original)))]
        ((role, record),) = outcomes[1]
        assert (role, record["kind"], record["duplicate_of"]) == ("duplicates", "near",
                                                                  original.id)  # fmt: skip
        assert CFG.threshold <= record["similarity"] < 1.0


# ------------------------------------------------------------------------- through the broker


async def produce_pages(settings: Settings, pages: list[RawPage]) -> dict[str, tuple]:
    """Produce pages keyed by URL; returns url -> (topic, partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        sent = [await producer.send(settings.topic_raw_pages, page_to_envelope(p),
                                    key=p.url.encode()) for p in pages]  # fmt: skip
        metas = [await s for s in sent]
    finally:
        await producer.stop()
    return {p.url: (settings.topic_raw_pages, m.partition, m.offset)
            for p, m in zip(pages, metas, strict=True)}  # fmt: skip


def run_pages(settings: Settings, pages: list[RawPage], started, timeout: float = 150):
    """Produce `pages`, wait for one outcome each; returns (url -> Outcome, tally) of the
    outcomes written from now on."""

    async def go():
        start = await end_offsets(settings, TopicNames.from_settings(settings).outcomes)
        positions = await produce_pages(settings, pages)
        tally = OutcomeTally(expected=set(positions.values()))
        done = await wait_for_outcomes(settings, tally, start=start, timeout=timeout,
                                       should_stop=lambda: any(w.proc.poll() is not None
                                                               for w in started))  # fmt: skip
        assert done, f"no outcome for {sorted(tally.missing())}"
        return {url: tally.outcomes[pos] for url, pos in positions.items()}, tally

    return asyncio.run(go())


def variant(url: str, make, settings: Settings) -> str:
    """The first `make(k)` URL whose raw-pages and gather partitions both differ from
    `url`'s: the copy is enriched and decided on other partitions than its original."""
    n = settings.partitions
    for k in range(100):
        candidate = make(k)
        if (partition_for(candidate, n) != partition_for(url, n)
                and partition_for(article_id(candidate), n) != partition_for(article_id(url), n)):
            return candidate
    raise AssertionError("no URL variant on other partitions")


def copies_of(original: RawPage, title: str, paragraphs: list[str], settings: Settings,
              rnd: random.Random) -> dict[str, RawPage]:  # fmt: skip
    """kind -> copy: the same URL with tracking parameters, the same page under another
    URL, and the page with ~5 % of its words changed on a third site (fetched later)."""
    u = original.url
    path = u.split("://", 1)[1]
    later = "2024-05-02T08:00:00+00:00"
    return {
        "url": replace(original, url=variant(u, lambda k: f"{u}?utm_source=feed&utm_term={k}",
                                             settings), fetched_at=later),
        "exact": replace(original, url=variant(u, lambda k: f"https://mirror{k}.example/{path}",
                                               settings), fetched_at=later),
        "near": page(variant(u, lambda k: f"https://syndicated{k}.example/{path}", settings),
                     title, edited(paragraphs, 0.05, rnd), later),
    }  # fmt: skip


def duplicates_by_kind(workers) -> Counter:
    """newsflow_duplicates_total by kind, summed over the workers' /metrics."""
    total: Counter = Counter()
    for w in workers:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.web_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("newsflow_duplicates_total{"):
                    kind = line.split('kind="')[1].split('"')[0]
                    total[kind] += int(float(line.rsplit(" ", 1)[1]))
    return total


def check_duplicate_records(outcomes) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for o in outcomes:
        if o.kind == "duplicate":
            validator.validate(o.value)
            assert o.key == o.value["id"].encode()


@pytest.mark.broker
@pytest.mark.slow
def test_copies_are_caught_across_partitions_and_workers(
    broker: Broker, tmp_path: Path, workers: Workers
):
    settings = fresh_settings(broker, tmp_path / "state", partitions=N)
    asyncio.run(ensure_topics(settings))
    started = workers.start(settings, 2)
    rnd = random.Random(5)
    sources = basil_articles(4)
    originals = [page(f"https://news{i}.example/story/{i}", title, paragraphs,
                      "2024-05-01T08:00:00+00:00")
                 for i, (title, paragraphs) in enumerate(sources)]  # fmt: skip
    first, _ = run_pages(settings, originals, started)
    assert all(o.kind == "article" for o in first.values()), first
    ids = {p.url: first[p.url].value["id"] for p in originals}

    copies = {(o.url, kind): c for o, (title, paragraphs) in zip(originals, sources, strict=True)
              for kind, c in copies_of(o, title, paragraphs, settings, rnd).items()}  # fmt: skip
    got, tally = run_pages(settings, list(copies.values()), started)
    for (url, kind), copy in copies.items():
        outcome = got[copy.url]
        assert outcome.kind == "duplicate", (kind, copy.url, outcome.value)
        assert (outcome.value["kind"], outcome.value["duplicate_of"]) == (kind, ids[url])
        assert outcome.value["id"] == article_id(copy.url) and outcome.value["url"] == copy.url
        if kind == "near":
            assert CFG.threshold <= outcome.value["similarity"] < 1.0
    check_duplicate_records(got.values())
    assert tally.conflicts == [] and tally.unmatched == 0
    # Both workers decided some verdicts, and the duplicates are counted by kind.
    statuses = [w.status() for w in started]
    assert all(sum(s["dedup"]["verdicts"].values()) > 0 for s in statuses), statuses
    assert all(s["dedup"]["errors"] == 0 and s["dedup"]["orphans"] == 0 for s in statuses)
    assert duplicates_by_kind(started) == Counter({"url": 4, "exact": 4, "near": 4})
    assert workers.stop_all() == [0, 0]


def start_one(pool: Workers, settings: Settings, index: int):
    """One worker on data dir `worker-<index>` (reused if it exists); waits for the group."""
    worker = start_worker(settings, pool.workdir, index, loglevel="warn")
    pool.started.append(worker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        status = worker.status()
        if status and sorted(status["partitions"]) == list(range(settings.partitions)):
            return worker
        time.sleep(0.25)
    pytest.fail(f"worker did not get the partitions:\n{worker.log_tail()}")


def stop(worker) -> None:
    worker.proc.terminate()
    assert worker.proc.wait(60) == 0, worker.log_tail()


def persisted_offsets(datadir: Path, table: str) -> dict[str, int]:
    """The changelog offset each RocksDB partition file says it holds data up to (Faust reads
    it to resume recovery there): file name -> offset."""
    from rocksdict import AccessType, Options, Rdict

    found = {}
    for path in sorted(datadir.rglob(f"{table}-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            raw = db.get(b"__faust\0offset__")
        finally:
            db.close()
        if raw is not None:
            found[path.name] = int(raw)
    return found


@pytest.mark.broker
@pytest.mark.slow
def test_copies_of_articles_seen_before_a_restart_are_caught(
    broker: Broker, tmp_path: Path, workers: Workers
):
    """RocksDB tables: the worker restarts on its own data dir (local state + changelog
    tail), then a worker with an empty data dir takes over (changelog recovery only)."""
    settings = fresh_settings(broker, tmp_path / "state", partitions=N, store="rocksdb://")
    asyncio.run(ensure_topics(settings))
    rnd = random.Random(9)
    sources = basil_articles(6)
    originals = [page(f"https://before{i}.example/story", title, paragraphs,
                      "2024-05-01T08:00:00+00:00")
                 for i, (title, paragraphs) in enumerate(sources)]  # fmt: skip

    def copies(i: int) -> dict[str, RawPage]:
        title, paragraphs = sources[i]
        return copies_of(originals[i], title, paragraphs, settings, rnd)

    worker = start_one(workers, settings, 0)
    first, _ = run_pages(settings, originals[:3], [worker])
    assert all(o.kind == "article" for o in first.values())
    stop(worker)
    # The agents send their changelog records themselves (TrackedTable): the offsets acked
    # must still reach RocksDB, or every restart would replay the whole changelog.
    offsets = persisted_offsets(workers.workdir / "worker-0", "dedup-band-members")
    assert offsets and max(offsets.values()) > 0, offsets

    worker = start_one(workers, settings, 0)  # same RocksDB files
    batch = [c for i in range(3) for c in copies(i).values()] + originals[3:]
    second, _ = run_pages(settings, batch, [worker])
    assert [o.kind for o in second.values()] == ["duplicate"] * 9 + ["article"] * 3
    stop(worker)

    assert not (workers.workdir / "worker-1").exists()
    worker = start_one(workers, settings, 1)  # empty data dir: state from the changelogs
    batch = [c for i in range(3, 6) for c in copies(i).values()]
    batch.append(page("https://again.example/story", *sources[0], "2024-05-03T00:00:00+00:00"))
    third, _ = run_pages(settings, batch, [worker])
    for copy in batch:
        outcome = third[copy.url]
        assert outcome.kind == "duplicate", (copy.url, outcome.value)
    assert third[batch[-1].url].value["duplicate_of"] == first[originals[0].url].value["id"]
    stop(worker)


@pytest.mark.broker
@pytest.mark.slow
def test_near_identical_pages_sent_at_once_give_one_canonical_each(
    broker: Broker, tmp_path: Path, workers: Workers
):
    settings = fresh_settings(broker, tmp_path / "state", partitions=N, batch_size=4)
    asyncio.run(ensure_topics(settings))
    started = workers.start(settings, 2)
    rnd = random.Random(11)
    pages, group_of = [], {}
    stamp = "2024-05-01T08:00:00+00:00"  # one fetch time: ties go by id, arrival is a race
    for g, (title, paragraphs) in enumerate(basil_articles(8)):
        group = [page(f"https://outlet{c}.example/{g}", title, edited(paragraphs, 0.01, rnd),
                      stamp) for c in range(3)]  # fmt: skip
        group.append(replace(group[0], url=f"https://copy.example/{g}"))
        group.append(replace(group[1], url=f"https://outlet1.example/{g}?utm_medium=social"))
        for p in group:
            group_of[p.url] = g
        pages.extend(group)
    rnd.shuffle(pages)
    partitions = {partition_for(p.url, N) for p in pages}
    assert partitions == set(range(N))
    got, tally = run_pages(settings, pages, started)
    assert tally.conflicts == [] and len(got) == len(pages)
    by_id = {o.value["id"]: url for url, o in got.items()}
    canonical = Counter(group_of[url] for url, o in got.items() if o.kind == "article")
    assert canonical == Counter(range(8)), canonical
    for start, outcome in got.items():
        url, hops = start, 0
        while outcome.kind == "duplicate":  # the chain ends at its group's canonical
            url = by_id[outcome.value["duplicate_of"]]
            outcome, hops = got[url], hops + 1
            assert hops < len(pages)
        assert group_of[url] == group_of[start]
    # Per group: one URL variant, one exact copy, and two of the three other winners lose.
    kinds = Counter(o.value["kind"] for o in got.values() if o.kind == "duplicate")
    assert kinds == Counter({"url": 8, "exact": 8, "near": 16}), kinds
    check_duplicate_records(got.values())
    names = TopicNames.from_settings(settings)
    assert names.dedup_claims and names.dedup_gather
