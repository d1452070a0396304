"""Crash test: kill -9 the worker (and its enrichment child) at random moments while it works
through real pages and their copies, restart it each time, and compare what comes out with
an independent fault-free run.

    .venv/bin/python -m pytest tests/test_crash_restart.py -q -s                # suite size
    NEWSFLOW_FULL_TESTS=1 .venv/bin/python -m pytest tests/test_crash_restart.py -s  # README
    NEWSFLOW_CRASH_SEED=123 ...      # replay one run: inputs and kill moments come from it

Inputs (built here from ../shared, never written back): the seeds and the corpus, BASIL news
articles as minimal HTML and "digests" of paragraphs recombined from many BASIL articles (all
distinct texts: phase A); then copies of those pages under new URLs, near-duplicates (about
3% of the words edited) and same-URL re-fetches (phase B); bad inputs from the catalogue in
both. Suite: 200 inputs, 2 kills; `NEWSFLOW_FULL_TESTS=1`: 2,000 inputs, 5 kills.

The reference is the in-process path: the worker's `EnrichBatch` core with the plain
`Enricher`, then `agents.dedup.Deduper` over the articles in production order. It is an
independent implementation of the dedup rules (sequential, no claims, no tables), which makes
it a stronger check than a second broker run sharing all the streaming code. It gives the same
canonical set as any fault-free streaming run because of how the inputs are ordered: phase B
is produced only once every phase-A input has its outcome, phase A holds no duplicates (checked
on the reference), and every phase-B article is a duplicate of a phase-A one or a re-fetch of
its URL (checked too). Then whoever arrives first inside a phase cannot matter: every URL and
text claim a phase-B page can lose is owned by a finished phase-A article, which is older and
registered at all its bands, so `decide` gives the same verdict in either implementation.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import pytest

from agents.dedup import Deduper, order_key
from agents.enrich_agent import ARTICLES, EnrichBatch
from agents.pipeline import Enricher
from agents.records import Article, RawPage
from streams.consumer import OutcomeTally, read_records, wait_for_outcomes
from streams.envelope import envelope_key, page_to_envelope
from streams.settings import Settings
from streams.sources import iter_pages
from streams.topics import InputRef, TopicNames, decode_outcome, ensure_topics, outcome_kind
from tests.conftest import CORPUS, SEEDS
from tests.streams.conftest import Workers, broker, fresh_settings  # noqa: F401
from tests.streams.test_dedup_broker import html
from tests.test_bad_input import bad_records
from tests.test_reliability import produce

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FULL = os.environ.get("NEWSFLOW_FULL_TESTS", "").strip() == "1"
SEED = int(os.environ.get("NEWSFLOW_CRASH_SEED") or random.SystemRandom().randrange(10**6))


@dataclass(frozen=True)
class Size:
    real: int  # seeds + corpus pages
    basil: int  # BASIL articles as minimal HTML
    digests: int  # pages of paragraphs recombined from many BASIL articles
    bad: int  # catalogue bad inputs, half in each phase
    variants: int  # phase B: copies, near-duplicates, re-fetches
    kills: int

    @property
    def total(self) -> int:
        return self.real + self.basil + self.digests + self.bad + self.variants


SIZE = (Size(real=112, basil=300, digests=100, bad=40, variants=1448, kills=5) if FULL
        else Size(real=24, basil=36, digests=8, bad=10, variants=122, kills=2))  # fmt: skip
Record = tuple[str, bytes | None, bytes | None]  # (label, key, value), as test_reliability


# --- inputs ------------------------------------------------------------------------------------


def basil_texts() -> list[tuple[str, str, list[str]]]:
    """(name, title, paragraphs) of every BASIL article (100 events x 3 outlets)."""
    import orjson

    from tests.conftest import STORIES

    out = []
    for path in sorted((STORIES / "basil").glob("*.json")):
        doc = orjson.loads(path.read_bytes())
        paragraphs = [" ".join(p) for p in doc["body-paragraphs"] if p]
        if len(" ".join(paragraphs)) >= 600:
            out.append((path.stem, doc["title"], paragraphs))
    return out


def originals(rng: random.Random, size: Size) -> list[RawPage]:
    """Phase A: pages with pairwise distinct texts."""
    real = [p for p in iter_pages([SEEDS, CORPUS]) if isinstance(p, RawPage)]
    pages = rng.sample(real, min(size.real, len(real)))
    basil = basil_texts()
    rng.shuffle(basil)
    for n, (name, title, paragraphs) in enumerate(basil[: size.basil]):
        pages.append(RawPage(f"https://news{n % 7}.example.org/{name}", html(title, paragraphs),
                             "text/html", f"2026-01-01T{n // 60 % 24:02d}:{n % 60:02d}:00+00:00",
                             "crash-test"))  # fmt: skip
    # Digests: 8 paragraphs, each from a different article and used by no other digest, so a
    # digest shares under 1/8 of its text with any page.
    pool = [(i, p) for i, (_, _, ps) in enumerate(basil) for p in ps if len(p.split()) >= 25]
    rng.shuffle(pool)
    for n in range(size.digests):
        chosen, used = [], set()
        while len(chosen) < 8 and pool:
            source, paragraph = pool.pop()
            if source not in used:
                used.add(source)
                chosen.append(paragraph)
        pages.append(RawPage(f"https://digest.example.com/{n}", html(f"Digest {n}", chosen),
                             "text/html", "2026-01-02T00:00:00+00:00", "crash-test"))  # fmt: skip
    return pages


def _edit_words(text: str, rng: random.Random, rate: float) -> str:
    return re.sub(r"[A-Za-z]{4,}",
                  lambda m: f"edit{rng.randrange(10**6)}" if rng.random() < rate else m[0],
                  text)  # fmt: skip


def near_copy(page: RawPage, rng: random.Random, url: str) -> RawPage:
    """About 3% of the words in the page's text nodes replaced: a syndicated, lightly edited
    copy. Only ASCII words change, so any ASCII-compatible charset survives."""
    body = page.body if isinstance(page.body, str) else page.body.decode("latin-1")
    if page.content_type.startswith("text/plain"):
        edited = _edit_words(body, rng, 0.03)
    else:
        edited = re.sub(r">([^<>]+)<", lambda m: f">{_edit_words(m[1], rng, 0.03)}<", body)
    if not isinstance(page.body, str):
        edited = edited.encode("latin-1")
    return RawPage(url, edited, page.content_type, "2026-02-01T00:00:00+00:00", "crash-test")


def variants(rng: random.Random, pages: list[RawPage], count: int) -> list[RawPage]:
    """Phase B: exact copies under new URLs, near-duplicates, same-URL re-fetches."""
    out = []
    for n in range(count):
        page = rng.choice(pages)
        kind = rng.choices(("copy", "near", "refetch"), weights=(4, 4, 2))[0]
        url = f"https://mirror{n % 5}.example.net/{kind}/{n}"
        if kind == "copy":
            out.append(RawPage(url, page.body, page.content_type, "2026-02-01T00:00:00+00:00",
                               "crash-test"))  # fmt: skip
        elif kind == "near":
            out.append(near_copy(page, rng, url))
        else:
            out.append(RawPage(page.url, page.body, page.content_type,
                               "2026-02-02T00:00:00+00:00", "crash-test"))  # fmt: skip
    return out


def phases(seed: int, size: Size) -> tuple[list[Record], list[Record]]:
    """The two phases' records, shuffled, each page labelled `<phase>:<kind>:<url>`."""
    rng = random.Random(seed)
    first = originals(rng, size)
    second = variants(rng, first, size.variants)
    bad = list(bad_records(size.bad, seed=seed))
    records_a = [(f"A:page:{p.url}", envelope_key(p), page_to_envelope(p)) for p in first]
    records_b = [(f"B:page:{p.url}", envelope_key(p), page_to_envelope(p)) for p in second]
    records_a += [(f"A:bad:{name}", k, v) for name, k, v in bad[: size.bad // 2]]
    records_b += [(f"B:bad:{name}", k, v) for name, k, v in bad[size.bad // 2 :]]
    rng.shuffle(records_a)
    rng.shuffle(records_b)
    return records_a, records_b


# --- the fault-free reference ------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One input's fault-free outcome: kind, the article id, the canonical it resolves to
    (its own id for a canonical article), and a dead letter's reason."""

    kind: str
    id: str = ""
    canonical: str = ""
    reason: str = ""


def reference(settings: Settings, records: list[Record]) -> list[Expected]:
    """The in-process path over `records` in order: the worker's `EnrichBatch` core with the
    plain `Enricher`, then `Deduper` with the streaming order keys."""
    work = EnrichBatch(settings, Enricher(settings.pipeline), worker="reference:0")
    deduper = Deduper(settings.dedup_config)
    outputs = []
    for start in range(0, len(records), settings.batch_size):
        chunk = records[start : start + settings.batch_size]
        outputs += work([(InputRef("ref", 0, start + i, key, len(value or b"")), value)
                         for i, (_, key, value) in enumerate(chunk)])  # fmt: skip
    duplicate_of: dict[str, str] = {}
    found = []
    for out in outputs:
        if out.role != ARTICLES:
            found.append(Expected("dead_letter", reason=out.outcome.reason))
            continue
        article: Article = out.outcome
        verdict = deduper.check(article.id, article.url, article.canonical_url, article.text,
                                order_key(article.fetched_at, article.id))  # fmt: skip
        if verdict is None:
            found.append(Expected("article", article.id))
        else:
            duplicate_of[article.id] = verdict.duplicate_of
            found.append(Expected("duplicate", article.id))
    return [replace(e, canonical=resolve(e.id, duplicate_of)) if e.id else e for e in found]


def resolve(ident: str, duplicate_of: dict[str, str]) -> str:
    """Follow `duplicate_of` to the group's canonical article."""
    seen = set()
    while ident in duplicate_of and ident not in seen:
        seen.add(ident)
        ident = duplicate_of[ident]
    return ident


# --- the crash run -----------------------------------------------------------------------------


def kill_group(worker) -> None:
    """SIGKILL the worker's process group (the worker, its fork server and enrichment child:
    `spawn_child` makes the worker a group leader) and make sure nothing of it survives."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    assert worker.proc.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(worker.proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    survivors = subprocess.run(["ps", "-o", "pid,stat,cmd", "-g", str(worker.proc.pid)],
                               capture_output=True, text=True).stdout  # fmt: skip
    raise AssertionError(f"processes of the killed worker survive:\n{survivors}")


async def all_outcomes(settings: Settings, expected: set) -> dict[tuple, list]:
    """Every outcome record, as input position -> [(kind, id, duplicate_of, reason)]."""
    names = TopicNames.from_settings(settings)
    seen: dict[tuple, list] = defaultdict(list)
    async for record in read_records(settings, names.outcomes, start="beginning", idle_timeout=3):
        o = decode_outcome(outcome_kind(names, record.topic), record.key, record.value,
                           record.headers)  # fmt: skip
        assert o.input in expected, f"an outcome for an input we did not send: {o.input}"
        value = o.value or {}
        seen[o.input].append((o.kind, value.get("id", ""), value.get("duplicate_of"),
                              value.get("reason", "")))  # fmt: skip
    return seen


def progress(settings: Settings, labels: dict, worker, target: int, wait_for: set | None,
             deadline: float) -> tuple[bool, OutcomeTally]:  # fmt: skip
    """Read the outcomes until every input in `labels` has one (True), or `target` inputs have
    one, or every input in `wait_for` has one, or the worker died, or the deadline passed."""
    tally = OutcomeTally(expected=set(labels))

    def stop() -> bool:
        if worker.proc.poll() is not None or len(tally.outcomes) >= target:
            return True
        return wait_for is not None and wait_for <= tally.outcomes.keys()

    left = deadline - time.monotonic()
    done = asyncio.run(wait_for_outcomes(settings, tally, timeout=left, should_stop=stop))
    return done, tally


@pytest.mark.timeout(3000 if FULL else 600)
def test_kill_9_at_random_moments_gives_the_fault_free_outcomes(broker, tmp_path):  # noqa: F811
    """Pages and their copies through one dedup worker that is SIGKILLed (with its child) at
    random moments and restarted: every input ends with exactly the outcome of the fault-free
    run, the distinct ids in `articles` are exactly its canonical articles, and no two of
    them belong to one duplicate group. Replays may repeat a record, never change it."""
    print(f"\ncrash test: NEWSFLOW_CRASH_SEED={SEED}")
    started = time.perf_counter()
    settings = fresh_settings(broker, tmp_path / "state", max_page_bytes=1_000_000, dedup=True)
    records_a, records_b = phases(SEED, SIZE)
    ref = reference(settings, records_a + records_b)
    ref_seconds = time.perf_counter() - started
    ref_a, ref_b = ref[: len(records_a)], ref[len(records_a) :]
    canonical = {e.id for e in ref if e.kind == "article"}
    # The preconditions that make the reference every fault-free run's answer (module doc).
    assert all(e.kind != "duplicate" for e in ref_a), "phase A must hold distinct texts"
    assert all(e.canonical in {a.id for a in ref_a} for e in ref_b if e.id), \
        "every phase-B article must be a duplicate or re-fetch of a phase-A one"  # fmt: skip
    kinds = Counter(e.kind for e in ref)
    assert kinds["duplicate"] > len(records_b) // 2 and kinds["dead_letter"] >= SIZE.bad

    rng = random.Random(SEED)
    total = len(records_a) + len(records_b)
    # Kill when this many inputs have an outcome, plus up to 2 s: anywhere in a batch.
    moments = sorted(rng.sample(range(total // 20, total * 9 // 10), SIZE.kills))
    pool = Workers(tmp_path / "workers")
    pool.workdir.mkdir()
    kills: list[int] = []
    try:
        asyncio.run(ensure_topics(settings))
        (worker,) = pool.start(settings, 1)
        labels = asyncio.run(produce(settings, records_a))
        phase_a = set(labels)
        deadline = time.monotonic() + (1500 if FULL else 400)
        while True:
            target = moments[len(kills)] if len(kills) < len(moments) else total + 1
            in_phase_a = len(labels) == len(records_a)
            done, tally = progress(settings, labels, worker, target,
                                   phase_a if in_phase_a else None, deadline)  # fmt: skip
            assert worker.proc.poll() is None, worker.log_tail()
            if in_phase_a and phase_a <= tally.outcomes.keys():
                labels |= asyncio.run(produce(settings, records_b))  # phase B after phase A
                continue
            if done and len(labels) == total:
                break
            assert len(tally.outcomes) >= target, (
                f"seed {SEED}: {len(tally.missing())} of {len(labels)} inputs have no outcome "
                f"after {len(kills)} kills\n{worker.log_tail()}"
            )
            time.sleep(rng.uniform(0.0, 2.0))
            kill_group(worker)
            kills.append(len(tally.outcomes))
            (worker,) = pool.start(settings, 1)
        assert len(kills) == SIZE.kills, f"seed {SEED}: the work ended before every kill"
        seconds = time.perf_counter() - started - ref_seconds

        written = asyncio.run(all_outcomes(settings, set(labels)))
        positions = list(labels)  # production order: phase A, then phase B, as `ref`
        assert len(positions) == len(ref)
        wrong, repeated = [], 0
        group_of: dict[str, str] = {}
        for position, expected in zip(positions, ref, strict=True):
            got = written.get(position, [])
            repeated += len(got) - 1
            assert got, f"seed {SEED}: {labels[position]} has no outcome"
            assert len(set(got)) == 1, f"seed {SEED}: {labels[position]} got {set(got)}"
            kind, ident, duplicate_of, reason = got[0]
            if (kind, ident, reason) != (expected.kind, expected.id, expected.reason):
                wrong.append((labels[position], got[0], expected))
            if kind == "duplicate":
                group_of[ident] = duplicate_of
        assert wrong == [], f"seed {SEED}: {len(wrong)} inputs differ: {wrong[:5]}"
        articles = {o[1] for outs in written.values() for o in outs if o[0] == "article"}
        assert articles == canonical, (sorted(articles - canonical)[:5],
                                       sorted(canonical - articles)[:5])  # fmt: skip
        # No two different canonical articles are duplicates of each other (per the reference
        # groups), and every duplicate resolves to the canonical the reference gives it.
        ref_group = {e.id: e.canonical for e in ref if e.id}
        groups = Counter(ref_group[a] for a in articles)
        assert [g for g, n in groups.items() if n > 1] == []
        astray = [(e.id, resolve(e.id, group_of), e.canonical) for e in ref
                  if e.kind == "duplicate" and resolve(e.id, group_of) != e.canonical]  # fmt: skip
        assert astray == [], f"seed {SEED}: duplicates resolve elsewhere: {astray[:5]}"
        article_records = sum(1 for outs in written.values() for o in outs if o[0] == "article")
        print(
            f"crash test: {total} inputs ({len(records_a)} phase A, {len(records_b)} phase B), "
            f"{SIZE.kills} kills at {kills} outcomes, in {seconds:.1f}s "
            f"(reference {ref_seconds:.1f}s); outcomes {dict(kinds)}; "
            f"{len(canonical)} canonical articles; {repeated} outcome records repeated by "
            f"replays ({article_records} article records for {len(articles)} ids)"
        )
    finally:
        codes = pool.stop_all()
    assert codes == [-signal.SIGKILL] * SIZE.kills + [0], codes  # the last one stops cleanly
