"""Reliability through a real broker and real workers: a soak of bad inputs mixed with real
pages, a frozen broker (for less and for more than the delivery timeout), and a graceful
stop. Each counts outcomes per input (the `newsflow-input` header), so "nothing lost" means
every input record has exactly the outcome a fault-free run gives it. The crash test (kill -9)
is in tests/test_crash_restart.py.

    .venv/bin/python -m pytest tests/test_reliability.py -q                    # suite sizes
    NEWSFLOW_FULL_TESTS=1 .venv/bin/python -m pytest tests/test_reliability.py -s  # README

Suite: 1,000 bad inputs in the soak; `NEWSFLOW_FULL_TESTS=1`: 10,000 (the numbers in the
README; `-s` prints them). The broker freeze is 30 s in both.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.records import RawPage
from streams.broker import EmbeddedBroker
from streams.consumer import OutcomeTally, wait_for_outcomes
from streams.envelope import envelope_key, page_to_envelope
from streams.producer import producer_options
from streams.settings import Settings
from streams.sources import iter_pages
from streams.topics import TopicNames, client_options, ensure_topics
from tests.streams.conftest import Broker, Workers, broker, fresh_settings  # noqa: F401
from tests.test_bad_input import CATALOGUE, bad_records

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FULL = os.environ.get("NEWSFLOW_FULL_TESTS", "").strip() == "1"
SOAK_BAD_INPUTS = 10_000 if FULL else 1_000
FREEZE_SECONDS = 30.0
DELIVERY_TIMEOUT = 4.0  # NEWSFLOW_DELIVERY_TIMEOUT for the outage past it
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
Record = tuple[str, bytes | None, bytes | None]  # (label, key, value)


def good_records() -> list[Record]:
    """The seeds and the corpus as producers send them: URL key, JSON envelope."""
    pages = iter_pages([SHARED / "seeds", SHARED / "corpus"])
    return [(f"good:{p.url}", envelope_key(p), page_to_envelope(p))
            for p in pages if isinstance(p, RawPage)]  # fmt: skip


async def produce(settings: Settings, records: list[Record]) -> dict[tuple[str, int, int], str]:
    """Send every record, pipelined; returns input position -> label."""
    from aiokafka import AIOKafkaProducer

    topic = TopicNames.from_settings(settings).raw_pages
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for _, key, value in records]
        metas = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {(topic, m.partition, m.offset): label
            for m, (label, _, _) in zip(metas, records, strict=True)}  # fmt: skip


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The worker group's committed offset per raw-pages partition (next offset to read).
    Read with a consumer of that group that never subscribes, so it does not join it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = TopicNames.from_settings(settings).raw_pages
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=settings.app_id,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        found = {}
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            offset = await consumer.committed(TopicPartition(topic, partition))
            if offset is not None:
                found[partition] = offset
        return found
    finally:
        await consumer.stop()


async def outcome_records(settings: Settings) -> dict[tuple, list[tuple[str, str]]]:
    """Every outcome record written so far, as input position -> [(kind, worker)]."""
    from streams.consumer import read_records
    from streams.topics import decode_outcome, outcome_kind

    names = TopicNames.from_settings(settings)
    seen: dict[tuple, list[tuple[str, str]]] = {}
    async for record in read_records(settings, names.outcomes, start="beginning", idle_timeout=3):
        outcome = decode_outcome(outcome_kind(names, record.topic), record.key, record.value,
                                 record.headers)  # fmt: skip
        seen.setdefault(outcome.input, []).append((outcome.kind, outcome.worker))
    return seen


def expected_outcome(label: str) -> set[tuple[str, str]]:
    """What a fault-free run gives an input: (kind, reason) pairs. A real page is an article,
    or a duplicate when the dedup stage (NEWSFLOW_DEDUP) has seen its text before."""
    if label.startswith("good:"):
        return {("article", ""), ("duplicate", "")}
    case = next(c for c in CATALOGUE if c.name == label)
    return {("dead_letter", case.reason)}


def outcome_of(tally: OutcomeTally, position) -> tuple[str, str]:
    outcome = tally.outcomes[position]
    return (outcome.kind, (outcome.value or {}).get("reason", "") if outcome.kind == "dead_letter"
            else "")  # fmt: skip


def check_every_input(tally: OutcomeTally, labels: dict) -> None:
    assert not tally.missing(), f"{len(tally.missing())} inputs without an outcome"
    assert tally.conflicts == [] and tally.unmatched == 0
    wrong = [(labels[p], outcome_of(tally, p)) for p in labels
             if outcome_of(tally, p) not in expected_outcome(labels[p])]  # fmt: skip
    assert wrong == [], wrong[:10]


def scrape(worker) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


# --- soak --------------------------------------------------------------------------------------


def test_soak_bad_inputs_mixed_with_real_pages(broker, tmp_path):  # noqa: F811
    """Bad inputs of every class, shuffled in among the seeds and the corpus, through one
    worker: it never stops, and articles + dead letters = inputs, each with its reason, on the
    topics and in the worker's metrics alike."""
    settings = fresh_settings(broker, tmp_path / "state", max_page_bytes=1_000_000)
    records = good_records() + list(bad_records(SOAK_BAD_INPUTS, seed=9))
    random.Random(9).shuffle(records)
    pool = Workers(tmp_path / "workers")
    pool.workdir.mkdir()
    try:
        asyncio.run(ensure_topics(settings))
        (worker,) = pool.start(settings, 1)
        started = time.perf_counter()
        labels = asyncio.run(produce(settings, records))
        tally = OutcomeTally(expected=set(labels))
        done = asyncio.run(
            wait_for_outcomes(
                settings,
                tally,
                timeout=900 if FULL else 300,
                should_stop=lambda: worker.proc.poll() is not None,
            )
        )
        seconds = time.perf_counter() - started
        assert worker.proc.poll() is None, worker.log_tail()  # 0 worker crashes
        assert done, (f"{len(tally.missing())} of {len(labels)} inputs have no outcome",
                      worker.log_tail())  # fmt: skip
        check_every_input(tally, labels)
        summary = tally.summary()
        assert summary["articles"] + summary["duplicates"] + summary["dead_letters"] == len(records)
        assert summary["redelivered"] == 0  # nothing went round twice: no restart, no rebalance

        status = worker.status()
        assert status["inputs"] == len(records) and status["batches"] > 0
        metrics = scrape(worker)
        received = total(metrics, "newsflow_pages_received_total")
        out = (total(metrics, "newsflow_articles_out_total")
               + total(metrics, "newsflow_duplicates_total")
               + total(metrics, "newsflow_dead_letters_total"))  # fmt: skip
        assert received == out == len(records)
        by_reason = Counter(
            reason
            for label in labels.values()
            for kind, reason in expected_outcome(label)
            if kind == "dead_letter"
        )
        for reason, count in by_reason.items():
            if reason:
                got = sum(
                    v
                    for (n, lab), v in metrics.items()
                    if n == "newsflow_dead_letters_total" and ("reason", reason) in lab
                )
                assert got == count, reason
        print(
            f"\nsoak: {len(records)} inputs ({SOAK_BAD_INPUTS} bad) in {seconds:.1f}s = "
            f"{len(records) / seconds:.0f} inputs/s; {summary['articles']} articles, "
            f"{summary['dead_letters']} dead letters, 0 worker crashes; "
            f"reasons {summary['dead_letter_reasons']}"
        )
    finally:
        assert pool.stop_all() == [0], "the worker did not shut down cleanly"


@contextmanager
def busy_worker(tmp_path: Path, records: list[Record], at: int, **overrides):
    """A broker of the test's own (the session's is not ours to freeze) and one worker, given
    `records`; yields `(tansu, settings, pool, worker, labels)` once `at` of them have an
    outcome and some have not."""
    with EmbeddedBroker() as tansu:
        settings = fresh_settings(Broker(tansu.bootstrap_servers, embedded=True),
                                  tmp_path / "state", max_page_bytes=1_000_000,
                                  **overrides)  # fmt: skip
        pool = Workers(tmp_path / "workers")
        pool.workdir.mkdir()
        try:  # from here on the test stops the pool (and checks its exit codes)
            asyncio.run(ensure_topics(settings))
            (worker,) = pool.start(settings, 1)
            labels = asyncio.run(produce(settings, records))
            tally = OutcomeTally(expected=set(labels))
            stop = lambda: len(tally.outcomes) >= at  # noqa: E731
            asyncio.run(wait_for_outcomes(settings, tally, timeout=120, should_stop=stop))
            assert at <= len(tally.outcomes) < len(labels), "freeze it while it has work"
        except BaseException:
            pool.stop_all()
            raise
        yield tansu, settings, pool, worker, labels


# --- broker outage -----------------------------------------------------------------------------


def test_a_frozen_broker_loses_nothing_and_the_worker_recovers_alone(tmp_path):
    """SIGSTOP the broker for 30 s while the worker has a backlog, then SIGCONT: no restart by
    anyone, and every page still ends as the article (or dead letter) a fault-free run gives."""
    records = good_records() + list(bad_records(60, seed=3))
    random.Random(3).shuffle(records)
    with busy_worker(tmp_path, records, 30) as (tansu, settings, pool, worker, labels):
        try:
            os.kill(tansu.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(FREEZE_SECONDS)
            finally:
                os.kill(tansu.proc.pid, signal.SIGCONT)
            assert worker.proc.poll() is None, worker.log_tail()
            tally = OutcomeTally(expected=set(labels))
            stopped = lambda: worker.proc.poll() is not None  # noqa: E731
            done = asyncio.run(wait_for_outcomes(settings, tally, timeout=300, should_stop=stopped))
            assert worker.proc.poll() is None, worker.log_tail()  # it recovered by itself
            assert done, (f"{len(tally.missing())} inputs have no outcome", worker.log_tail())
            check_every_input(tally, labels)
            status = worker.status()
            assert status["partitions"] == list(range(settings.partitions))  # back in the group
            print(
                f"\noutage: {len(labels)} inputs, broker frozen {FREEZE_SECONDS:.0f}s; "
                f"{tally.redelivered} redelivered; worker log tail:\n{worker.log_tail(600)}"
            )
        finally:
            assert pool.stop_all() == [0], "the worker did not shut down cleanly"


def test_an_outage_past_the_delivery_timeout_stops_the_worker_without_committing(tmp_path):
    """The broker frozen for longer than NEWSFLOW_DELIVERY_TIMEOUT: the worker's sends time
    out and it exits (70) with the batch uncommitted, instead of turning good pages into
    `output_rejected` dead letters (the broker is back before such dead letters would time
    out, so they would be written). Restarted, it gives every input its fault-free outcome."""
    records = good_records()[:40] + list(bad_records(10, seed=4))
    random.Random(4).shuffle(records)
    overrides = {"dedup": False, "delivery_timeout": DELIVERY_TIMEOUT}
    with busy_worker(tmp_path, records, 8, **overrides) as (tansu, settings, pool, worker, labels):
        try:
            os.kill(tansu.proc.pid, signal.SIGSTOP)
            try:  # every send started in the next ~2 s times out; then the broker is back
                time.sleep(DELIVERY_TIMEOUT + 3)
            finally:
                os.kill(tansu.proc.pid, signal.SIGCONT)
            assert worker.proc.wait(60) == 70, worker.log_tail()

            committed = asyncio.run(committed_offsets(settings))
            before = OutcomeTally(expected=set(labels))
            asyncio.run(wait_for_outcomes(settings, before, timeout=10))  # all written so far
            reasons = Counter(outcome_of(before, p) for p in before.outcomes)
            assert reasons[("dead_letter", "output_rejected")] == 0, reasons
            committed_inputs = {p for p in labels if p[2] < committed.get(p[1], 0)}
            # Nothing is committed whose outcome is not written (the failed batch is not),
            # except pages handed on to a later stage (stories), whose own topic holds them
            # until the restart (checked below); never a lost dead letter.
            pending = committed_inputs - set(before.outcomes)
            assert all(labels[p].startswith("good:") for p in pending), pending
            assert len(before.outcomes) < len(labels)

            (second,) = pool.start(settings, 1)
            tally = OutcomeTally(expected=set(labels))
            done = asyncio.run(wait_for_outcomes(settings, tally, timeout=240))
            missing = sorted(tally.missing())
            committed = asyncio.run(committed_offsets(settings))
            assert done, (f"{len(missing)} inputs have no outcome: {missing[:8]}; "
                          f"committed {committed}", second.log_tail())  # fmt: skip
            check_every_input(tally, labels)
            print(
                f"\noutage past the delivery timeout: exit 70 after {len(before.outcomes)} of "
                f"{len(labels)} outcomes, {len(committed_inputs)} committed ({len(pending)} in a "
                f"later stage); {tally.redelivered} replayed after the restart"
            )
        finally:
            codes = pool.stop_all()
        assert codes == [70, 0], codes


# --- graceful stop -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_after", [3, 40], ids=["before_first_commit", "mid_backlog"])
def test_sigterm_hands_back_in_flight_work_and_commits_what_was_done(broker, tmp_path,  # noqa: F811
                                                                     stop_after):  # fmt: skip
    """SIGTERM mid-backlog: the worker exits 0, the group's committed offsets cover every
    input whose outcome is written, and a new worker does the rest: every input ends with its
    outcome (nothing lost) and nothing finished before the stop is done again. Stopped after
    3 outcomes, the stop's commit is the group's first."""
    settings = fresh_settings(broker, tmp_path / "state", max_page_bytes=1_000_000)
    records = good_records() + list(bad_records(40, seed=5))
    random.Random(5).shuffle(records)
    pool = Workers(tmp_path / "workers")
    pool.workdir.mkdir()
    try:
        asyncio.run(ensure_topics(settings))
        (first,) = pool.start(settings, 1)
        labels = asyncio.run(produce(settings, records))
        tally = OutcomeTally(expected=set(labels))
        asyncio.run(
            wait_for_outcomes(
                settings, tally, timeout=120, should_stop=lambda: len(tally.outcomes) >= stop_after
            )
        )
        assert stop_after <= len(tally.outcomes) < len(labels), "stop it while it has work"
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(60) == 0, first.log_tail()

        committed = asyncio.run(committed_offsets(settings))
        done_before = OutcomeTally(expected=set(labels))
        asyncio.run(wait_for_outcomes(settings, done_before, timeout=10))  # all written so far
        processed = set(done_before.outcomes)
        committed_inputs = {p for p in labels if p[2] < committed.get(p[1], 0)}
        # What the worker finished is committed: the new worker has nothing to redo.
        assert processed <= committed_inputs, sorted(processed - committed_inputs)[:5]
        # Committed with no outcome yet: only pages handed on to the dedup stage, whose own
        # topic holds them until the restart (checked below); never a lost dead letter.
        pending = committed_inputs - processed
        assert all(labels[p].startswith("good:") for p in pending), pending

        pool.start(settings, 1)
        tally = OutcomeTally(expected=set(labels))
        done = asyncio.run(wait_for_outcomes(settings, tally, timeout=240))
        missing = tally.missing()
        assert done, (f"{len(missing & pending)} handed to dedup and {len(missing - pending)} "
                      f"handed back have no outcome: {sorted(missing)[:8]}")  # fmt: skip
        check_every_input(tally, labels)
        # Nothing the first worker finished is done again by the second: the stop committed it.
        # (Replays after a restart are allowed by at-least-once and carry the same outcome;
        # `check_every_input` has made sure no input got two different ones.)
        written = asyncio.run(outcome_records(settings))
        redone = {p: written[p] for p in processed if len(written[p]) > 1}
        assert redone == {}, redone
        print(
            f"\ngraceful stop: {len(processed)} inputs done before SIGTERM, {len(pending)} "
            f"handed to dedup, {len(labels) - len(processed) - len(pending)} handed back; "
            f"{tally.redelivered} replayed after the restart"
        )
    finally:
        assert all(code == 0 for code in pool.stop_all())
