"""`streams.stall`: a partition counts as stuck on a dropped message only when, with nothing
of it in flight at or after its head, offsets beyond the head are acked or fetched; the
commit guard never commits over an offset nobody acked; an offset the consumer fetched is
never taken for a hole in the log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.app import create_app
from streams.consumer import first_offset_from
from streams.settings import Settings
from streams.stall import Fetched, dropped_at, guard_head_gap, track_fetched, unstick
from streams.topics import TopicNames, client_options, ensure_topics
from tests.streams.conftest import stream_settings  # noqa: F401  (a fixture)

P0, P1 = TP("claims", 0), TP("claims", 1)


def consumer(committed: dict, acked: dict, in_flight: list[tuple]) -> SimpleNamespace:
    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, committed),
        _acked=defaultdict(list, acked),
        _unacked_messages=[SimpleNamespace(tp=tp, offset=o) for tp, o in in_flight],
    )


def fetched_from(first: dict | None = None) -> Fetched:
    """What a consumer fetched, given the first offset fetched of each partition."""
    fetched = Fetched()
    for tp, offset in (first or {}).items():
        fetched.add(tp, [offset], committed=None)
    return fetched


def stuck(c: SimpleNamespace, positions: dict | None = None, first: dict | None = None):
    return dropped_at(c, positions or {}, fetched_from(first))


def test_a_gap_with_nothing_in_flight_is_a_dropped_message():
    """The case seen after a restart: 56-60 and 64.. handled, 61-63 never; committed 61."""
    c = consumer({P0: 61, P1: 40}, {P0: [64, 65, 66], P1: []}, [(P0, 70)])
    assert stuck(c, {P0: 71, P1: 40}) == {P0: 61}


def test_a_slow_batch_is_not_a_dropped_message():
    """The message at the committed offset is still being worked on (tracked, unacked)."""
    c = consumer({P0: 61}, {P0: [64, 65]}, [(P0, 61), (P0, 62), (P0, 63)])
    assert stuck(c, {P0: 66}) == {}


def test_the_last_messages_dropped_show_as_fetched_but_never_taken():
    """61-63 fetched (aiokafka's position 64) and dropped; nothing after them to ack."""
    assert stuck(consumer({P0: 61}, {P0: []}, []), {P0: 64}) == {P0: 61}
    # still being worked on, or all of it done (committed catches up), or nothing fetched yet
    assert stuck(consumer({P0: 61}, {P0: []}, [(P0, 61)]), {P0: 64}) == {}
    assert stuck(consumer({P0: 64}, {P0: []}, []), {P0: 64}) == {}
    assert stuck(consumer({P0: 61}, {P0: []}, []), {P0: 61}) == {}


def test_fetched_records_waiting_behind_a_busy_agent_are_not_dropped():
    """P1 records fetched while the agent works on P0's batch wait untracked in Faust's
    fetch loop: a false alarm unless nothing at all is in flight."""
    c = consumer({P0: 0, P1: 0}, {}, [(P0, 0), (P0, 1)])
    assert stuck(c, {P0: 5, P1: 9}) == {}


def test_a_message_acked_below_the_committed_offset_is_not_in_flight():
    """Faust keeps tracking a message acked after a commit passed it (a replay): seen next
    to a stuck partition after an outage restart; it must not hide the drop."""
    c = consumer({P0: 8}, {}, [(P0, 5), (P0, 6), (P0, 7)])
    assert stuck(c, {P0: 12}) == {P0: 8}


def test_with_nothing_committed_the_head_is_the_first_offset_fetched():
    """Messages 0-7 of a never-committed partition dropped, 8-11 done: without a head Faust
    would commit 12 over them."""
    c = consumer({}, {P0: [8, 9, 10, 11]}, [])
    assert stuck(c, {P0: 12}) == {}  # nothing fetched known: no guess
    assert stuck(c, {P0: 12}, {P0: 0}) == {P0: 0}
    assert stuck(consumer({}, {}, []), {P0: 8}, {P0: 0}) == {P0: 0}
    assert stuck(consumer({}, {P0: [0, 1]}, []), {P0: 2}, {P0: 0}) == {}


def test_nothing_acked_beyond_the_committed_offset_is_not_stuck():
    assert stuck(consumer({P0: 61}, {P0: [58, 59, 60]}, [])) == {}


def offsets(committed: int | None, acked: list[int]) -> SimpleNamespace:
    """The fields Faust's own `Consumer._new_offset` reads, for one partition."""
    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, {P0: committed}),
        _acked=defaultdict(list, {P0: list(acked)}),
        _acked_index=defaultdict(set, {P0: set(acked)}),
        _gap=defaultdict(IntervalTree),
    )


def faust_new_offset(c: SimpleNamespace):
    return lambda tp: Consumer._new_offset(c, tp)


def test_faust_alone_commits_over_a_single_unacked_offset():
    """The bug the guard is for (faust-streaming #606): 61 never acked, 62-63 acked."""
    c = offsets(61, [62, 63])
    assert faust_new_offset(c)(P0) == 64


def test_the_guard_waits_at_a_gap_at_the_head_and_commits_once_it_is_filled():
    c = offsets(61, [62, 63])
    c._new_offset = faust_new_offset(c)
    guard_head_gap(c, Fetched())
    assert c._new_offset(P0) is None
    c._acked[P0].append(61)
    c._acked_index[P0].add(61)
    assert c._new_offset(P0) == 64


def test_before_a_first_commit_the_guard_waits_for_the_first_offset_fetched():
    """Faust alone commits 10 over 0-7 that nobody acked."""
    assert faust_new_offset(offsets(None, [8, 9]))(P0) == 10

    def guarded(first: dict) -> SimpleNamespace:
        c = offsets(None, [8, 9])
        c._new_offset = faust_new_offset(c)
        guard_head_gap(c, fetched_from(first))
        return c

    assert guarded({})._new_offset(P0) is None  # nothing fetched known
    assert guarded({P0: 0})._new_offset(P0) is None  # 0-7 missing
    assert guarded({P0: 8})._new_offset(P0) == 10  # retention removed 0-7


def test_a_first_fetch_gives_the_head_so_the_first_commit_needs_no_timer():
    """A SIGTERM seconds after a fresh group's first fetch: the stop's commit covers what was
    done. (The head once came from a 5 s timer asking the broker for the log start, and a
    worker stopped before its first tick committed nothing.)"""
    c, fetched = gapping(None), Fetched()
    track_fetched(c, fetched)
    guard_head_gap(c, fetched)
    fetch(c, 0, 1, 2, 3)
    fetch(c, 4, 5)  # later fetches do not move the head
    assert fetched.first(P0) == 0
    ack(c, 0, 1, 2)
    assert c._new_offset(P0) == 3


def test_the_guard_stands_aside_for_known_gaps():
    c = offsets(10, [12, 13])
    c._gap[P0].addi(10, 12)  # compacted away: Faust fills the gap itself
    c._new_offset = faust_new_offset(c)
    guard_head_gap(c, Fetched())
    assert c._new_offset(P0) == 14


def test_a_known_gap_elsewhere_does_not_let_the_head_go():
    """The guard used to stand aside for any gap of the partition, and Faust then commits
    over a single unacked offset at the head (#606)."""
    def consumer() -> SimpleNamespace:
        c = offsets(61, [62, 63])
        c._gap[P0].addi(70, 72)
        return c

    assert faust_new_offset(consumer())(P0) == 64
    c = consumer()
    c._new_offset = faust_new_offset(c)
    guard_head_gap(c, Fetched())
    assert c._new_offset(P0) is None


def test_fetched_offsets_are_kept_as_runs_from_the_committed_offset():
    fetched = Fetched()
    fetched.add(P0, [10, 11, 12], committed=10)
    fetched.add(P0, [13, 14, 16, 17], committed=10)  # 15: a hole (a transaction marker)
    assert fetched.never_fetched(P0, 10, 20) == [(15, 16), (18, 20)]
    fetched.add(P0, [18], committed=14)
    assert sorted((r.begin, r.end) for r in fetched.runs[P0]) == [(14, 15), (16, 19)]
    assert fetched.never_fetched(P1, 0, 3) == [(0, 3)]


def gapping(committed: int | None) -> SimpleNamespace:
    """The fields Faust's `_add_gap`, `_new_offset` and our wrappers use, for P0."""
    c = offsets(committed, [])
    c.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

    async def wait_next_records(timeout: float):
        return c.next_records, None

    async def add_gap(tp, offset_from, offset_to):
        await Consumer._add_gap(c, tp, offset_from, offset_to)

    c._wait_next_records, c._add_gap = wait_next_records, add_gap
    c._new_offset = faust_new_offset(c)
    return c


def fetch(c: SimpleNamespace, *offsets: int) -> None:
    c.next_records = {P0: [SimpleNamespace(offset=o) for o in offsets]}
    asyncio.run(c._wait_next_records(1.0))


def ack(c: SimpleNamespace, *offsets: int) -> None:
    c._acked[P0].extend(offsets)
    c._acked_index[P0].update(offsets)


def test_offsets_fetched_then_dropped_are_not_a_gap_and_the_commit_waits_for_them():
    """The SIGTERM-restart loss: claims 101-109 fetched before Faust's post-recovery seek and
    skipped by the stream (flow stopped), their refetch discarded as already read, then the
    read offset set back to 101 by the seek: 110 arrived as a gap over 102-109. Faust
    commits over 101-109; with the fetched offsets known, nothing until they are done."""
    faust_alone = gapping(101)
    asyncio.run(faust_alone._add_gap(P0, 102, 110))
    ack(faust_alone, 110, 111, 112, 113, 114, 115)
    assert faust_alone._new_offset(P0) == 111

    c = gapping(101)
    fetched = Fetched()
    track_fetched(c, fetched)
    guard_head_gap(c, fetched)
    fetch(c, *range(101, 110))
    fetch(c, *range(101, 110))  # the refetch after the seek
    fetch(c, *range(110, 116))
    asyncio.run(c._add_gap(P0, 102, 110))
    ack(c, 110, 111, 112, 113, 114, 115)
    assert not c._gap[P0]
    assert c._new_offset(P0) is None
    ack(c, *range(101, 110))  # handed on again after the timer's seek back
    assert c._new_offset(P0) == 116


def test_a_hole_never_fetched_is_still_a_gap():
    """A transaction marker or compaction: offsets no fetch ever returned."""
    c = gapping(10)
    fetched = Fetched()
    track_fetched(c, fetched)
    guard_head_gap(c, fetched)
    fetch(c, 10, 11, 14, 15)  # 12-13 absent from the log
    asyncio.run(c._add_gap(P0, 12, 14))
    assert sorted((iv.begin, iv.end) for iv in c._gap[P0]) == [(12, 14)]
    ack(c, 10, 11, 14, 15)
    assert c._new_offset(P0) == 16


def test_the_worker_consumer_is_patched_before_its_first_fetch():
    """The first fetch comes during the first table recovery, before any `app.task` runs."""
    app = create_app(Settings(bootstrap_servers="127.0.0.1:1").with_pipeline()).app
    consumer = app.consumer
    assert "track_fetched" in consumer._wait_next_records.__qualname__
    assert "track_fetched" in consumer._add_gap.__qualname__
    assert "guard_head_gap" in consumer._new_offset.__qualname__


def test_a_changelog_write_that_fails_in_fausts_buffer_exits_70():
    """Faust's producer buffer task raises when a send times out in an outage, which stopped
    the worker with exit 1 mid-batch; `streams.app` makes it exit 70 at once, as the agents
    do on a failed delivery."""
    script = """
import asyncio
from types import SimpleNamespace
from faust.transport.producer import ProducerBuffer
from streams.app import exit_when_changelog_writes_fail

async def publish_message(fut, wait):
    raise RuntimeError("KafkaTimeoutError")

exit_when_changelog_writes_fail()
exit_when_changelog_writes_fail()  # idempotent: one wrapper
fut = SimpleNamespace(message=SimpleNamespace(channel=SimpleNamespace(
    publish_message=publish_message)))
asyncio.run(ProducerBuffer._send_pending(None, fut))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2])  # fmt: skip
    assert done.returncode == 70, done.stderr
    assert "cannot write a table changelog record" in done.stderr


def stuck_at(committed: int, acked: list[int]) -> SimpleNamespace:
    """A guarded consumer stuck at its head `committed`, recording the seeks asked of it."""
    c = offsets(committed, acked)
    c._new_offset = faust_new_offset(c)
    guard_head_gap(c, Fetched())
    c.sought = []

    async def seek_wait(positions):
        c.sought.append(dict(positions))

    c.seek_wait = seek_wait
    return c


def test_a_hole_at_the_head_is_committed_past_not_sought_back_forever():
    """After a restart at a transaction's marker (10), the first record is 11: Faust notes no
    gap (off by one after a seek), the guard waits at 10, and seeking back to it changes
    nothing. The next record's offset, from the log, shows the hole."""
    c = stuck_at(10, [11, 12])
    assert c._new_offset(P0) is None

    async def probe(tp, offset):
        return 11

    asyncio.run(unstick(c, P0, 10, 13, probe))
    assert c.sought == []
    assert c._new_offset(P0) == 13


def test_a_record_that_is_there_was_dropped_and_is_sought_back():
    async def probe(tp, offset):
        return offset

    async def broken(tp, offset):
        raise OSError("broker gone")

    for p in (probe, broken, None):
        c = stuck_at(10, [11, 12])
        asyncio.run(unstick(c, P0, 10, 13, p))
        assert c.sought == [{P0: 10}]
        assert c._new_offset(P0) is None


@pytest.mark.broker
def test_first_offset_from_reads_the_log(stream_settings):  # noqa: F811
    from aiokafka import AIOKafkaProducer

    settings = stream_settings
    topic = TopicNames.from_settings(settings).raw_pages

    async def run():
        await ensure_topics(settings)
        producer = AIOKafkaProducer(**client_options(settings))
        await producer.start()
        try:
            for i in range(6):
                await producer.send_and_wait(topic, b"%d" % i, partition=1)
        finally:
            await producer.stop()
        return (await first_offset_from(settings, topic, 1, 0),
                await first_offset_from(settings, topic, 1, 4),
                await first_offset_from(settings, topic, 1, 6, timeout=0.5))  # fmt: skip

    assert asyncio.run(run()) == (0, 4, None)
