"""Smoke runs of `newsflow bench pipeline` and `newsflow bench produce` at a tiny size, and the
arithmetic they report rates with. The reports' structure and invariants are checked (every
input accounted for, ratios computed from the rates they are ratios of), never a timing."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from agents.records import Article, Failure, RawPage
from streams.bench import pipeline as bench
from streams.bench import produce as bench_produce
from streams.bench.machine import loadavg, machine
from streams.bench.pages import basil_pages, cycle, language_groups
from streams.bench.procs import TreeSampler, cpu_seconds
from streams.cli import build_parser
from tests.streams.conftest import fresh_settings


def seen(worker: str, *times: float) -> list[bench.Seen]:
    return [bench.Seen("article", worker, t, t + 0.1) for t in times]


def test_one_worker_rate_leaves_out_the_first_batch():
    # Bursts of 4 outcomes at 10, 11 and 12 s: 8 outcomes in the 2 s after the first batch.
    times = [10.0, 10.001, 10.002, 10.003, 11.0, 11.001, 11.002, 11.003,
             12.0, 12.001, 12.002, 12.003]  # fmt: skip
    t0, t1, inside, all_busy = bench.busy_window(seen("h:1", *times))
    assert (round(t1 - t0, 3), inside, all_busy) == (2.0, 8, True)


def test_two_worker_rate_counts_only_while_both_are_busy():
    # Worker 2 starts at 12 (its first batch ends then) and worker 1 runs dry after 14.
    one = seen("h:1", 10.0, 11.0, 12.0, 13.0, 14.0)
    two = seen("h:2", 12.0, 13.0, 14.0, 15.0, 16.0)
    t0, t1, inside, all_busy = bench.busy_window(one + two)
    assert (t0, t1, all_busy) == (12.0, 14.0, True)
    assert inside == 4  # the batches ending at 13 and 14, of both workers


def test_a_single_batch_gives_no_rate():
    t0, t1, inside, _ = bench.busy_window(seen("h:1", 5.0, 5.01, 5.02))
    assert t1 <= t0 and inside == 0


def test_one_worker_progress_window_is_its_first_to_last_batch_end():
    progress = {0: [(10.0, 16), (11.0, 32), (11.0, 32), (12.0, 48)]}  # one batch polled twice
    assert bench.progress_window(progress) == (10.0, 12.0, 32, True)


def test_two_worker_progress_counts_pages_while_both_enriched():
    # Worker 1 ends at 14, worker 2 begins at 12; at 14 worker 2 is a third of the way
    # between its batch ends at 13 (32 pages) and 16 (80): 48.
    progress = {1: [(10.0, 16), (12.0, 48), (14.0, 80)], 2: [(12.0, 16), (13.0, 32), (16.0, 80)]}
    t0, t1, pages, all_busy = bench.progress_window(progress)
    assert (t0, t1, all_busy) == (12.0, 14.0, True)
    assert pages == pytest.approx((80 - 48) + (48 - 16))


def test_progress_of_workers_that_never_overlapped_spans_both():
    progress = {1: [(10.0, 16), (11.0, 32)], 2: [(12.0, 16), (13.0, 32)]}
    assert bench.progress_window(progress) == (10.0, 13.0, 32, False)


def test_no_progress_gives_no_window():
    t0, t1, pages, _ = bench.progress_window({0: [], 1: [(5.0, 16)]})
    assert t1 <= t0 and pages == 0


def test_percentiles_of_known_values():
    q = bench.percentiles([i / 100 for i in range(1, 101)])
    assert (q["n"], q["p50"], q["p90"], q["p99"], q["max"]) == (100, 0.5, 0.9, 0.99, 1.0)
    assert bench.percentiles([]) == {"n": 0}


def test_backlog_is_whole_passes_within_the_cap():
    options = bench.BenchOptions(seconds=10.0, max_backlog=500)
    assert bench.backlog_size(30, 1, 7.0, options) == 90  # 70 pages aimed -> 3 passes
    assert bench.backlog_size(30, 2, 7.0, options) == 150  # 140 -> 5 passes
    assert bench.backlog_size(300, 2, 70.0, options) == 300  # capped, but one pass at least
    assert bench.backlog_size(0, 1, 7.0, options) == 0


def test_cycle_gives_every_page_once_per_pass():
    pages = [RawPage(url=f"https://example.com/{i}", body=b"<p>x</p>") for i in range(7)]
    out = [p.url for p in cycle(pages, 17)]
    assert len(out) == 17
    assert sorted(out[:7]) == sorted(out[7:14]) == sorted(p.url for p in pages)
    assert len(set(out[14:])) == 3


def test_language_groups_follow_the_detected_language():
    pages = [RawPage(url=f"https://example.com/{i}", body=b"") for i in range(3)]
    outcomes = [Article(id="a", url=pages[0].url, language="de"),
                Article(id="b", url=pages[1].url, language="en"),
                Failure("empty_page", "extract")]  # fmt: skip
    extra = basil_pages(3)
    groups = language_groups(pages, outcomes, extra)
    assert [len(groups[g]) for g in ("all", "de", "en")] == [3, 1, 1 + len(extra)]
    assert groups["en"].origin == {"inputs": 1, "basil": 3}


def test_sampler_reads_this_process_from_proc():
    sampler = TreeSampler()
    sampler.watch("me", os.getpid(), tree=False)
    sum(i * i for i in range(200_000))  # some CPU between the two samples
    sampler.sample("me")
    memory = sampler.memory("me")
    assert memory["samples"] == 2 and memory["rss_peak_bytes"] > 0
    assert memory["vm_hwm_bytes"][str(os.getpid())] >= memory["rss_peak_bytes"] // 2
    assert cpu_seconds(os.getpid()) > 0
    assert machine()["cpus"] >= 1 and loadavg() is not None


def test_a_process_alone_leaves_out_its_children_time():
    """The harness is the parent of the workers it measures: its own CPU must not grow by
    theirs when they are reaped."""
    import subprocess
    import sys

    alone, tree = TreeSampler(), TreeSampler()
    alone.watch("me", os.getpid(), tree=False)
    tree.watch("me", os.getpid())
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    alone.sample("me")
    tree.sample("me")
    child = tree.between("me", tree.watched["me"].samples[0].at, time.time())
    mine = alone.between("me", alone.watched["me"].samples[0].at, time.time())
    assert child > mine + 0.05  # the reaped child's seconds count in the tree only


def test_plain_bench_runs_the_pipeline_bench():
    args = build_parser().parse_args(["bench"])
    assert args.func is bench.cmd_bench_pipeline and args.paths == []
    assert build_parser().parse_args(["bench", "produce"]).func is bench_produce.cmd_bench_produce


def test_batched_produce_is_off_unless_asked():
    """The embedded broker keeps one record per batch (right end offsets) unless the bench is
    told that it may batch as on Kafka."""
    plain = bench.options_from_args(build_parser().parse_args(["bench", "pipeline"]))
    asked = build_parser().parse_args(["bench", "pipeline", "--batched-produce"])
    assert not plain.batched_produce and bench.options_from_args(asked).batched_produce


@pytest.fixture
def bench_settings(broker, tmp_path: Path):
    # Small batches so the tiny backlog still spans several batches (a rate needs two).
    return replace(fresh_settings(broker, tmp_path / "state"), batch_size=4)


def test_pipeline_quick_report_accounts_for_every_page(bench_settings):
    report = bench.run(bench.BenchOptions.quick(quiet=True), bench_settings)
    orjson.dumps(report)  # the --json output
    assert "en" in bench.format_report(report)
    m = report["machine"]
    assert m["cpus"] >= 1 and m["cpu_model"] and m["versions"]["spacy"]
    groups = report["groups"]
    assert groups["all"]["pages"] == report["inputs"]["pages"] == 6
    assert groups["en"]["origin"]["basil"] == report["inputs"]["basil_pages"] == 3
    for name in ("all", "de", "en"):
        ip = groups[name].get("in_process")
        if ip is None:
            continue
        assert sum(ip["outcomes"].values()) == ip["pages"] == groups[name]["pages"]
        assert ip["stages"]["extract"]["calls"] == ip["pages"] * ip["passes"]
        assert ip["pages_per_second"] > 0 and ip["pages_per_cpu_second"] > 0
        # The ceiling is the worker's whole chain: dedup and stories over every page sent.
        articles = ip["outcomes"].get("article", 0)
        for stage in ("dedup", "stories"):
            assert ip["stages"][stage]["calls"] == ip["passes"] * articles
        assert ip["pages_per_cpu_second"] < ip["enrich_pages_per_cpu_second"]
    ner = groups["en"]["ner_f1"]
    assert ner["articles"] == groups["en"]["in_process"]["ner_docs"] > 0
    assert 0.0 <= ner["precision"] <= 1.0 and 0.0 <= ner["f1"] <= 1.0
    # Before/after in one run: the same `en` pages with NER on the head only.
    head = groups["en"]["in_process_ner_head"]
    assert head["pages"] == groups["en"]["pages"] and head["ner_docs"] == ner["articles"]
    assert groups["en"]["ner_f1_head"]["select"] == "head" and ner["select"] == "names"
    assert "en*" in bench.format_report(report)

    e2e = groups["en"]["e2e"]
    # The ceiling's dedup and stories saw the pass mix the one worker's backlog has.
    assert e2e["workers_1"]["sent"] == groups["en"]["in_process"]["passes"] * groups["en"]["pages"]
    ceiling = groups["en"]["in_process"]["pages_per_second"]
    for key, workers in (("workers_1", 1), ("workers_2", 2)):
        run = e2e[key]
        assert run["cores"] is None or len(set(run["cores"])) == workers  # one core each
        assert run["complete"] and run["missing"] == 0
        assert run["outcomes"] == run["sent"] == sum(run["kinds"].values())
        assert run["sent"] % groups["en"]["pages"] == 0  # whole passes over the group
        assert 1 <= run["workers_with_outcomes"] <= workers
        assert run["outcomes_from_unknown_worker"] == 0
        assert run["pages_per_second"] > 0
        # The rate counts pages enriched (status batch ends), not the outcomes' waves.
        assert run["rate_from"] == "enriched" or workers == 2
        assert run["outcome_window"]["outcomes"] <= run["outcomes"]
        assert run["ratio_to_in_process"] == pytest.approx(
            run["pages_per_second"] / (workers * ceiling),
            rel=5e-3,  # from rounded rates
        )
        enriched = sum(w["pages_enriched"] for w in run["per_worker"].values())
        assert enriched >= run["sent"]  # every page sent was enriched by some worker
        others = run["others_cpu_utilisation"]
        assert others["harness"] >= 0 and ("broker" in others) == (not bench_settings.servers)
        for worker in run["per_worker"].values():
            assert worker["pss_peak_bytes"] > 0 and worker["rss_peak_bytes"] > 0
            assert worker["vm_hwm_bytes"] and worker["cpu_utilisation"] is not None
    assert e2e["scaling_2_over_1"] == pytest.approx(
        e2e["workers_2"]["pages_per_second"] / e2e["workers_1"]["pages_per_second"], rel=5e-3
    )
    latency = e2e["latency"]
    assert latency["complete"] and latency["outcomes"] == latency["sent"] >= 4
    q = latency["latency_seconds"]
    assert q["n"] == latency["sent"]
    assert 0 < q["p50"] <= q["p99"] <= q["max"]
    targets = {t["target"] for t in report["targets"] if t["group"] == "en"}
    assert targets == {"ratio_1", "ratio_2", "per_core", "scaling", "ner_f1", "p99", "rss"}


def test_produce_quick_report_accounts_for_every_page(bench_settings, tmp_path: Path):
    report = bench_produce.run([], bench_settings, repeat=2, limit=3)
    orjson.dumps(report)
    assert report["built"]["records"] == 6
    assert report["read"]["pages"] == 6 and not report["read"]["errors"]
    assert report["produce"]
    for result in report["produce"].values():
        assert result["read"] == result["sent"] == 6
        assert result["failed"] == result["skipped"] == 0
        assert result["pages_per_second"] > 0 and result["file_mb_per_second"] > 0
    assert "produce" in bench_produce.format_report(report)


def test_sampler_reads_pss_only_when_due_or_rss_peaks(monkeypatch):
    """Pss costs the kernel a walk of every page: read every `pss_interval` and on a new RSS
    high, not on every sample."""
    from streams.bench import procs

    reads = []
    rss = {"VmRSS": 100 << 20}
    monkeypatch.setattr(procs, "_pss", lambda pid: reads.append(pid) or rss["VmRSS"] // 2)
    monkeypatch.setattr(procs, "_status", lambda pid: dict(rss))
    sampler = TreeSampler(pss_interval=3600)
    sampler.watch("me", os.getpid(), tree=False)
    for _ in range(5):
        sampler.sample("me")
    assert len(reads) == 1
    rss["VmRSS"] = 120 << 20  # a new high: Pss is read again
    sampler.sample("me")
    sampler.sample("me")
    assert len(reads) == 2
    assert sampler.memory("me")["pss_peak_bytes"] == 60 << 20
    sampler.pss_interval = 0.0
    sampler.sample("me")
    assert len(reads) == 3
