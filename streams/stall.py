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
flight at or after its head (the committed offset; the log start if nothing was committed),
either an offset beyond the head is acked, or, with nothing of any partition in flight,
aiokafka's fetch position (the next offset it will hand over) is past the head. `install`
checks on a timer and, when a partition shows the same sign on two checks in a row, seeks it
back to the head: the dropped messages are fetched and handled, any after them replayed
(harmless: every agent is idempotent, see README "Reliability").

That only works if the commit waits at the dropped message, and Faust's
`Consumer._new_offset` does not always: it treats `min(acked) - committed == 1` as a gap to
skip (faust-streaming issue #606, open), and with no committed offset at all it commits from
whatever is acked first, so messages dropped from the start of a never-committed partition
are skipped. `guard_head_gap` makes the commit wait at any gap at the head. A real hole in
the log (compaction, transaction markers) goes through Faust's own gap bookkeeping, so the
guard stands aside for partitions with known gaps and under exactly-once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def dropped_at(consumer: Any, positions: Mapping[Any, int],
               log_start: Mapping[Any, int]) -> dict[Any, int]:  # fmt: skip
    """Partitions stuck on a dropped message: topic partition -> its head (the offset to seek
    back to). Reads the Faust consumer's own ack bookkeeping; `positions` are aiokafka's
    fetch positions of the acked (stream) partitions, `log_start` the first offset of those
    without a committed offset."""
    heads = {tp: head(consumer, tp, log_start) for tp in {*positions, *consumer._acked}}
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


def head(consumer: Any, tp: Any, log_start: Mapping[Any, int]) -> int | None:
    """The first offset of `tp` not yet committed, if known."""
    committed = consumer._committed_offset.get(tp)
    return committed if committed is not None else log_start.get(tp)


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


def guard_head_gap(consumer: Any, log_start: Mapping[Any, int]) -> None:
    """Wrap the consumer's `_new_offset` so it never commits over an offset nobody acked.
    With no committed offset, the head is the partition's log start (`log_start`, filled in
    by the `install` timer); until that is known, the commit waits."""
    faust_new_offset = consumer._new_offset

    def new_offset(tp: Any) -> int | None:
        acked, start = consumer._acked[tp], head(consumer, tp, log_start)
        if acked and not consumer._gap[tp] and (start is None or min(acked) > start):
            return None  # the message at the head is in flight or was dropped: wait
        return faust_new_offset(tp)

    consumer._new_offset = new_offset


def install(app: Any, interval: float = 5.0) -> None:
    """Guard the commits (at least once only) and start a timer on `app` that seeks a
    partition back to its head once it has shown a dropped message on two checks in a row
    (`interval` seconds apart)."""
    from faust.types.enums import ProcessingGuarantee

    suspects: dict[Any, tuple[int, int | None]] = {}
    log_start: dict[Any, int] = {}

    if app.conf.processing_guarantee != ProcessingGuarantee.EXACTLY_ONCE:

        @app.task
        async def guard_commits() -> None:
            guard_head_gap(app.consumer, log_start)

    @app.timer(interval=interval, name="newsflow.stall.reseek")
    async def reseek_dropped() -> None:
        nonlocal suspects
        consumer = app.consumer
        if not consumer.flow_active or not app.flow_control.is_active():
            suspects = {}  # a rebalance or a stop is under way: Faust seeks by itself
            return
        positions = fetch_positions(app)
        unknown = [tp for tp in {*positions, *consumer._acked}
                   if head(consumer, tp, log_start) is None]  # fmt: skip
        if unknown:
            try:
                log_start.update(await consumer.earliest_offsets(*unknown))
            except Exception as exc:  # the next tick asks again; commits wait meanwhile
                log.warning("cannot read the log start of %d partitions: %r", len(unknown), exc)
        found = {tp: (start, positions.get(tp))
                 for tp, start in dropped_at(consumer, positions, log_start).items()}  # fmt: skip
        for tp, (start, position) in found.items():
            if suspects.get(tp) == (start, position):
                log.warning("%s[%d]: message at offset %d was dropped (fetched up to %s, none "
                            "in flight); seeking back to it", tp.topic, tp.partition, start,
                            position)  # fmt: skip
                # In the consumer's thread, read offset reset too (as Faust's recovery does).
                await consumer.seek_wait({tp: start})
        suspects = found
