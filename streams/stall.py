"""Un-stick a partition whose committed offset cannot move because Faust dropped a message.

faust-streaming 0.15.3 lets a restarted worker fetch stream partitions while it restores its
tables, then seeks them back to their committed offsets. Messages fetched around that can be
dropped: records aiokafka hands over for a partition Faust has paused at that moment are
skipped (`Consumer.getmany`), and a message fetched before the seek-back is discarded when
refetched, as "already read". Such a message is never handed to an agent and never acked.
Faust commits only up to the first unacked offset, so the partition's committed offset stays
there for good, and its page never gets an outcome until the worker restarts. Seen after
SIGTERM and outage restarts in tests/test_reliability.py: a claims partition handled 56-60
and 64-98 but never 61-63, committed stuck at 61; raw-pages partitions whose records past the
committed offset were fetched by aiokafka and never reached the agent.

The signature is exact. Within a partition one stream takes messages in order and tracks each
until it is acked, so the partition is stuck on a dropped message when, with nothing of it in
flight at or after its head (the committed offset; if none, the first offset fetched), either
an offset beyond the head is acked, or, with nothing of any partition in flight, aiokafka's
fetch position (the next offset it will hand over) is past the head. `install` checks on a
timer and, when a partition shows the same sign on two checks in a row, seeks it back to the
head: the dropped messages are fetched and handled, any after them replayed
(harmless: every agent is idempotent, see README "Reliability").

That only works if the commit waits at the dropped message, and Faust's
`Consumer._new_offset` does not always: it treats `min(acked) - committed == 1` as a gap to
skip (faust-streaming issue #606, open), and with no committed offset at all it commits from
whatever is acked first, so messages dropped from the start of a never-committed partition
are skipped. `guard_head_gap` makes the commit wait at any gap at the head. A real hole in
the log (compaction, transaction markers) goes through Faust's own gap bookkeeping, so the
guard stands aside under exactly-once, and when the head itself lies in a known gap. With
nothing committed, the head is the first offset fetched (the log start: the group resets to
the earliest offset); it is noted at that fetch, so a worker stopped before its first commit
still commits what it did (it once waited for a timer to ask the broker, and a SIGTERM in
the first seconds committed nothing).

Faust's gaps themselves could not be trusted: its fetch loop records a gap wherever two
messages it hands on skip offsets, meant for holes in the log, and a drop makes exactly that.
Seen after a SIGTERM restart: records fetched before Faust's post-recovery seek were handed to
streams that skipped them (flow stopped), their refetch was discarded as already read, then
the seek's read offset landed and the next record looked like a gap; the commit passed over
the lot (raw-pages 25-28 of a partition, dedup claims 101-109; the read-offset reset of
robinhood/faust issue #559, open). So `track_fetched` keeps the offsets the consumer has
fetched since the committed one, and only offsets never fetched are recorded as a gap: a
fetched offset exists, and a drop of it waits at the guard until the timer seeks back to it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from intervaltree import IntervalTree

log = logging.getLogger(__name__)


def dropped_at(consumer: Any, positions: Mapping[Any, int], fetched: Fetched) -> dict[Any, int]:
    """Partitions stuck on a dropped message: topic partition -> its head (the offset to seek
    back to). Reads the Faust consumer's own ack bookkeeping; `positions` are aiokafka's
    fetch positions of the acked (stream) partitions, `fetched` what was fetched of them."""
    heads = {tp: head(consumer, tp, fetched) for tp in {*positions, *consumer._acked}}
    in_flight: dict[Any, int] = {}
    for message in list(consumer._unacked_messages):
        start = heads.get(message.tp)
        # Faust never forgets a message acked below the committed offset: not in flight.
        if start is not None and message.offset >= start:
            low = in_flight.get(message.tp, message.offset)
            in_flight[message.tp] = min(low, message.offset)
    found = {}
    for tp, start in heads.items():
        if start is None:
            continue
        acked = consumer._acked.get(tp, ())
        if start in acked:
            continue  # the head is done: the next commit moves it
        beyond = [offset for offset in acked if offset > start]
        earliest = in_flight.get(tp)
        if beyond and (earliest is None or earliest > min(beyond)):
            found[tp] = start  # later messages done, the head one never taken
        elif not beyond and not in_flight and positions.get(tp, start) > start:
            # Fetched past the head with nothing of any partition in flight: the last ones
            # dropped. (While an agent is busy, fetched records can wait in Faust's fetch
            # loop, untracked, for as long as the batch takes: not a drop.)
            found[tp] = start
    return found


def head(consumer: Any, tp: Any, fetched: Fetched) -> int | None:
    """The first offset of `tp` not yet committed, if known."""
    committed = consumer._committed_offset.get(tp)
    return committed if committed is not None else fetched.first(tp)


def fetch_positions(app: Any) -> dict[Any, int]:
    """aiokafka's fetch position of each assigned partition of a stream (acked) topic."""
    from faust.types import TP

    try:
        aio = app.consumer._thread._ensure_consumer()
        consumed = aio._subscription.subscription.assignment.all_consumed_offsets()
    except Exception:  # not started, no assignment yet, or a rebalance under way
        return {}
    acked_topic = app.topics.acks_enabled_for
    return {TP(tp.topic, tp.partition): meta.offset
            for tp, meta in consumed.items() if acked_topic(tp.topic)}  # fmt: skip


def guard_head_gap(consumer: Any, fetched: Fetched) -> None:
    """Wrap the consumer's `_new_offset` so it never commits over an offset nobody acked.
    With no committed offset, the head is the first offset fetched (`fetched`, filled in by
    `track_fetched`); until that is known, the commit waits."""
    faust_new_offset = consumer._new_offset

    def new_offset(tp: Any) -> int | None:
        acked, start = consumer._acked[tp], head(consumer, tp, fetched)
        if acked and (start is None or (min(acked) > start and not consumer._gap[tp][start])):
            return None  # the message at the head is in flight or was dropped: wait
        return faust_new_offset(tp)

    consumer._new_offset = new_offset


class Fetched:
    """The offsets fetched per partition, as runs of consecutive offsets from the committed
    offset on: an offset in a run exists in the log, whatever became of its message."""

    def __init__(self) -> None:
        self.runs: dict[Any, IntervalTree] = defaultdict(IntervalTree)

    def add(self, tp: Any, offsets: Sequence[int], committed: int | None) -> None:
        runs = self.runs[tp]
        if committed:
            runs.chop(0, committed)
        if offsets[-1] - offsets[0] + 1 == len(offsets):  # the usual batch: one run
            runs.addi(offsets[0], offsets[-1] + 1)
        else:
            start = previous = offsets[0]
            for offset in offsets[1:]:
                if offset != previous + 1:
                    runs.addi(start, previous + 1)
                    start = offset
                previous = offset
            runs.addi(start, previous + 1)
        runs.merge_overlaps(strict=False)

    def first(self, tp: Any) -> int | None:
        """The lowest offset kept: with nothing committed (nothing chopped), the first one
        fetched, where the consumer began (the log start: the group resets to earliest)."""
        runs = self.runs.get(tp)
        return runs.begin() if runs else None

    def never_fetched(self, tp: Any, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of offsets `start` to `end` (exclusive) not in any run."""
        rest = IntervalTree.from_tuples([(start, end)])
        for run in self.runs[tp].overlap(start, end):
            rest.chop(run.begin, run.end)
        return sorted((part.begin, part.end) for part in rest)


def track_fetched(consumer: Any, fetched: Fetched) -> None:
    """Wrap the consumer's `_wait_next_records` to note what each fetch returned (stream
    topics only), and its `_add_gap` to record as a gap only the offsets never fetched."""
    wait_next_records, add_gap = consumer._wait_next_records, consumer._add_gap
    acked_topic = consumer.app.topics.acks_enabled_for

    async def _wait_next_records(timeout: float) -> tuple[Any, Any]:
        records, active = await wait_next_records(timeout)
        for tp, batch in (records or {}).items():
            if batch and acked_topic(tp.topic):
                fetched.add(tp, [r.offset for r in batch], consumer._committed_offset.get(tp))
        return records, active

    async def _add_gap(tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust's range ends with the message it is handing on (fetched, of course).
        holes = fetched.never_fetched(tp, offset_from, offset_to)
        if holes != [(offset_from, offset_to)]:
            log.warning("%s[%d]: offsets %d-%d taken for a hole in the log by Faust's fetch "
                        "loop were fetched: the commit waits for them (holes: %s)", tp.topic,
                        tp.partition, offset_from, offset_to - 1, holes or "none")  # fmt: skip
        for start, end in holes:
            await add_gap(tp, start, end - 1)

    consumer._wait_next_records = _wait_next_records
    consumer._add_gap = _add_gap


# (partition, offset) -> offset of the first record at or after it, None if none yet
Probe = Callable[[Any, int], Awaitable[int | None]]


def install(app: Any, interval: float = 5.0, probe: Probe | None = None) -> None:
    """Under at least once, patch the app's consumer as it is made (its first fetch comes
    during the first table recovery, before any `app.task` runs): gaps only where nothing
    was fetched, commits guarded. Start a timer on `app` that seeks a partition back to its
    head once it has shown a dropped message on two checks in a row (`interval` seconds
    apart), or, if `probe` finds no record there, commits past the hole."""
    from faust.types.enums import ProcessingGuarantee

    suspects: dict[Any, tuple[int, int | None]] = {}
    fetched = Fetched()  # stays empty under exactly-once

    if app.conf.processing_guarantee != ProcessingGuarantee.EXACTLY_ONCE:
        new_consumer = app._new_consumer

        def _new_consumer() -> Any:
            consumer = new_consumer()
            track_fetched(consumer, fetched)
            guard_head_gap(consumer, fetched)
            return consumer

        assert app._consumer is None, "install before the consumer is made"
        app._new_consumer = _new_consumer

    @app.timer(interval=interval, name="newsflow.stall.reseek")
    async def reseek_dropped() -> None:
        nonlocal suspects
        consumer = app.consumer
        if not consumer.flow_active or not app.flow_control.is_active():
            suspects = {}  # a rebalance or a stop is under way: Faust seeks by itself
            return
        positions = fetch_positions(app)
        stuck = dropped_at(consumer, positions, fetched)
        found = {tp: (start, positions.get(tp)) for tp, start in stuck.items()}
        for tp, (start, position) in found.items():
            if suspects.get(tp) == (start, position):
                await unstick(consumer, tp, start, position, probe)
        suspects = found


async def unstick(consumer: Any, tp: Any, start: int, position: int | None,
                  probe: Probe | None) -> None:  # fmt: skip
    """Partition `tp` is stuck at offset `start`. If the log has no record there (a
    transaction marker, compaction: `probe` says where the next record is), record the hole
    as a gap so the commit moves past it; Faust misses a hole right at the offset it sought
    to (after a restart, a committed offset is often a transaction's marker). Otherwise the
    message was dropped: seek back to it."""
    first = None
    if probe is not None:
        try:
            first = await probe(tp, start)
        except Exception as exc:  # then seeking back is the safe guess
            log.warning("%s[%d]: cannot look up offset %d: %r", tp.topic, tp.partition, start, exc)
    if first is not None and first > start:
        log.warning("%s[%d]: offsets %d-%d hold no record (a transaction marker or compaction): "
                    "a hole in the log; the commit moves past it", tp.topic, tp.partition, start,
                    first - 1)  # fmt: skip
        consumer._gap[tp].addi(start, first)
        return
    log.warning("%s[%d]: message at offset %d was dropped (fetched up to %s, none in flight); "
                "seeking back to it", tp.topic, tp.partition, start, position)  # fmt: skip
    # In the consumer's thread, read offset reset too (as Faust's recovery does).
    await consumer.seek_wait({tp: start})
