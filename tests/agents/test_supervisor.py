"""The supervised enricher: same outcomes as the in-process `Enricher` on real pages, a page
over its budget is a `timeout`, a child that dies is a `worker_crash` for the page it was on,
the rest of the batch (NER included) goes on in a fresh child, and no child outlives its
parent. Faults are real: slow pages, and signals sent to the real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents.entities import EntitiesConfig
from agents.pipeline import Enricher, PipelineConfig
from agents.records import Article, Failure, RawPage
from agents.supervisor import (
    ModelLoadError,
    PageBudget,
    SupervisedEnricher,
    SupervisorError,
)
from streams.sources import iter_pages

SHARED = Path(__file__).resolve().parents[3] / "shared"
REPO = Path(__file__).resolve().parents[2]
BUDGET = PageBudget(seconds=1.5, seconds_per_mb=0.0)  # CPU s; corpus pages take < 0.2 s


def slow_page(rows: int = 40_000) -> RawPage:
    """A 2.5 MB table: trafilatura needs ~8 CPU seconds for it (3.2 s per MB of rows)."""
    body = "".join(f"<tr><td>cell {i} alpha</td><td>beta {i} gamma delta</td></tr>"
                   for i in range(rows))  # fmt: skip
    return RawPage("https://slow.example/table", f"<html><body><table>{body}</table></body></html>")


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def as_data(outcome: Article | Failure):
    return outcome.to_dict() if isinstance(outcome, Article) else outcome


def kill_when(enricher: SupervisedEnricher, stage: str, sig: int, times: int = 1,
              after: float = 0.0) -> threading.Thread:  # fmt: skip
    """In the background: each time a (new) child is seen running `stage`, wait `after`
    seconds and send it `sig`; `times` children in all."""

    def watch() -> None:
        hit: set[int] = set()
        deadline = time.monotonic() + 120
        while len(hit) < times and time.monotonic() < deadline:
            running = enricher.running()
            if running and running[1] == stage and running[0] not in hit:
                time.sleep(after)
                os.kill(running[0], sig)
                hit.add(running[0])
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def pages() -> list[RawPage]:
    corpus = sorted((SHARED / "corpus" / "pages").glob("*.html.gz"))[:10]
    found = [p for p in iter_pages([SHARED / "seeds", *corpus]) if isinstance(p, RawPage)]
    return [
        *found,
        RawPage("https://bad.example/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        RawPage("https://bad.example/empty", "<html><body></body></html>"),
        RawPage("https://bad.example/pdf", b"%PDF-1.7 ...", "application/pdf"),
    ]


@pytest.fixture(scope="module")
def in_process() -> Enricher:
    return Enricher(PipelineConfig())


@pytest.fixture(scope="module")
def supervised():
    with SupervisedEnricher(PipelineConfig(), BUDGET) as enricher:
        yield enricher


def test_outcomes_and_stage_counts_equal_the_in_process_enricher(pages, in_process, supervised):
    before = dict(supervised.calls)
    got = supervised.enrich_many(pages)
    want = in_process.enrich_many(pages)
    assert [as_data(o) for o in got] == [as_data(o) for o in want]
    assert (
        sum(isinstance(o, Article) and bool(o.entities) for o in got) >= 2
    )  # NER ran in the child
    assert {s: supervised.calls[s] - before.get(s, 0) for s in supervised.calls} == {
        s: n for s, n in in_process.calls.items() if n
    }
    assert all(supervised.seconds[s] > 0 for s in ("extract", "clean", "language", "entities"))
    assert supervised.enrich_many([]) == []


def test_a_page_over_its_budget_times_out_and_the_batch_goes_on(pages, in_process, supervised):
    first = supervised.pid
    restarts, timeouts = supervised.restarts, supervised.timeouts
    batch = [pages[0], slow_page(), pages[1], pages[2]]
    got = supervised.enrich_many(batch)
    failure = got[1]
    assert isinstance(failure, Failure)
    assert (failure.reason, failure.stage) == ("timeout", "extract")
    assert "1.5s budget" in failure.message
    # pages[0] was made by the killed child and tagged by the next one: same article.
    want = in_process.enrich_many([pages[0], pages[1], pages[2]])
    assert [as_data(o) for o in (got[0], got[2], got[3])] == [as_data(o) for o in want]
    assert (supervised.restarts, supervised.timeouts) == (restarts + 1, timeouts + 1)
    assert not alive(first) and supervised.pid not in (None, first)


def test_a_child_that_dies_mid_page_is_a_worker_crash(pages, in_process, supervised):
    crashes = supervised.crashes
    watcher = kill_when(supervised, "extract", signal.SIGSEGV, after=0.3)  # mid slow page
    got = supervised.enrich_many([slow_page(), pages[0], pages[3]])
    watcher.join(5)
    failure = got[0]
    assert isinstance(failure, Failure)
    assert (failure.reason, failure.stage) == ("worker_crash", "extract")
    assert "SIGSEGV" in failure.message
    want = in_process.enrich_many([pages[0], pages[3]])
    assert [as_data(o) for o in got[1:]] == [as_data(o) for o in want]
    assert supervised.crashes == crashes + 1


def test_a_child_that_dies_between_batches_is_replaced_without_blame(pages, in_process,
                                                                     supervised):  # fmt: skip
    old = supervised.pid
    os.kill(old, signal.SIGKILL)
    got = supervised.enrich_many(pages[:2])
    assert [as_data(o) for o in got] == [as_data(o) for o in in_process.enrich_many(pages[:2])]
    assert supervised.pid != old


def basil_page(count: int) -> RawPage:
    """A long English text/plain page: `count` BASIL news bodies one after another."""
    bodies = []
    for path in sorted((SHARED / "stories" / "basil").glob("*.json"))[:count]:
        doc = json.loads(path.read_text())
        bodies.append("\n".join(" ".join(p) for p in doc["body-paragraphs"]))
    return RawPage("https://long.example/basil", "Many stories\n" + "\n".join(bodies),
                   "text/plain")  # fmt: skip


def test_ner_lost_in_a_batch_is_retried_one_article_at_a_time(pages):
    """The child is killed in the batch's NER, then again while it tags the long article
    alone: that article keeps its text with a note, the others get their entities."""
    config = replace(PipelineConfig(), entities=EntitiesConfig(max_chars=100_000))
    batch = [basil_page(25), pages[0], pages[1]]  # NER of the long one takes ~1.5 s
    want = Enricher(config).enrich_many(batch)
    with SupervisedEnricher(config, PageBudget(seconds=30)) as enricher:
        watcher = kill_when(enricher, "entities", signal.SIGKILL, times=2, after=0.2)
        got = enricher.enrich_many(batch)
        watcher.join(5)
        assert enricher.crashes == 2
    long_article = got[0]
    assert isinstance(long_article, Article) and isinstance(want[0], Article)
    assert (long_article.entities, long_article.entities_note) == ([], "failed: worker_crash")
    assert long_article.text == want[0].text and want[0].entities
    assert [as_data(o) for o in got[1:]] == [as_data(o) for o in want[1:]]


def test_a_missing_model_fails_at_start_not_per_page():
    config = replace(PipelineConfig(), entities=EntitiesConfig(model="no_such_spacy_model"))
    enricher = SupervisedEnricher(config, BUDGET)
    with pytest.raises(ModelLoadError, match="no_such_spacy_model"):
        enricher.start()
    enricher.close()


def test_a_closed_enricher_stops_its_child_and_takes_no_work(pages):
    enricher = SupervisedEnricher(PipelineConfig(), BUDGET).start()
    pid = enricher.pid
    enricher.close()
    assert not alive(pid) and enricher.pid is None
    with pytest.raises(SupervisorError, match="closed"):
        enricher.enrich_many(pages[:1])
    enricher.close()  # idempotent


def test_the_child_dies_with_a_killed_parent():
    """kill -9 of the worker must not leave its enrichment process running a 30 s page."""
    script = ("from agents.supervisor import SupervisedEnricher\n"
              "e = SupervisedEnricher().start()\n"
              "print(e.pid, flush=True)\n"
              "import time; time.sleep(120)\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    try:
        child = int(proc.stdout.readline())
        assert alive(child)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        proc.kill()
        proc.wait(10)


def test_budget_grows_with_the_body_and_refuses_nonsense():
    budget = PageBudget(seconds=10, seconds_per_mb=3)
    assert budget.for_page(RawPage("https://a.example/", b"x" * 2_000_000)) == 16.0
    assert budget.for_entities(4) == 14.0
    for bad in ({"seconds": 0}, {"seconds_per_mb": -1}, {"max_wall_factor": 0.5}):
        with pytest.raises(ValueError):
            PageBudget(**bad)
