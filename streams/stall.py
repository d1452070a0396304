"""Un-stick a partition whose committed offset cannot move because Faust dropped a message.

faust-streaming 0.15.3 lets a restarted worker fetch stream partitions while it restores its
tables, then seeks them back to their committed offsets. A message fetched around that seek
can be dropped: never handed to the agent, never acked, and its refetched copy discarded as
"already read". Faust commits only up to the first unacked offset, so the partition's
committed offset stays there for good, and whatever waits on the message (a dedup claim or
verdict, hence a page's outcome) waits until the worker restarts. Seen after SIGTERM restarts
in tests/test_reliability.py (4 of 32 runs before this watchdog): a claims partition handled
56-60 and 64-98 but never 61-63, committed stuck at 61.

The signature is exact: within a partition one stream takes messages in order and tracks
each until it is acked, so an acked offset beyond the committed one while no earlier message
of that partition is in flight means the message at the committed offset was dropped. When
the dropped messages are the last ones a partition holds, nothing after them is acked: then
the sign is the fetch position past the committed offset with nothing in flight or acked.
`install` checks for it on a timer and, when the same partition shows it twice in a row,
seeks it back to its committed offset: the dropped message is fetched and handled, the ones
after it are replayed (harmless: every agent is idempotent, see README "Reliability").

That only works if the commit waits at the dropped message, and for a gap of exactly one
message Faust's `Consumer._new_offset` does not: it treats `min(acked) - committed == 1` as
a gap to skip (faust-streaming issue #606, open) and commits past the message, which is then
lost for good (seen: a bad input whose dead letter never came, its offset committed).
`guard_head_gap` makes the commit wait at any gap at the head of the acked offsets; a real
hole in the log (compaction, transaction markers) goes through Faust's own gap bookkeeping,
so the guard stands aside for partitions with known gaps and under exactly-once.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def dropped_at(consumer: Any) -> dict[Any, int]:
    """Partitions with a dropped message: topic partition -> its committed offset (the
    offset of the dropped message). Reads the Faust consumer's own ack bookkeeping."""
    in_flight: dict[Any, int] = {}
    for message in list(consumer._unacked_messages):
        low = in_flight.get(message.tp)
        in_flight[message.tp] = message.offset if low is None else min(low, message.offset)
    found = {}
    for tp, acked in list(consumer._acked.items()):
        committed = consumer._committed_offset.get(tp)
        beyond = [offset for offset in acked if committed is not None and offset > committed]
        if not beyond:
            continue
        earliest = in_flight.get(tp)
        if earliest is None or earliest > min(beyond):
            found[tp] = committed
    # The same drop at the end of what a partition holds: nothing after it is ever acked, so
    # the sign is a read offset (the last offset fetched) past the committed one with nothing
    # of the partition in flight or acked. (Fetched messages still queued for a busy agent
    # look the same for a moment; `install` wants the same reading twice, 5 s apart, and a
    # wrong guess only replays messages, which every agent takes twice harmlessly.)
    for tp, read in list(consumer._read_offset.items()):
        committed = consumer._committed_offset.get(tp)
        if tp in found or tp in in_flight or committed is None or read is None:
            continue
        if read > committed and not consumer._acked.get(tp):
            found[tp] = committed
    return found


def guard_head_gap(consumer: Any) -> None:
    """Wrap the consumer's `_new_offset` so it never commits over an offset nobody acked."""
    faust_new_offset = consumer._new_offset

    def new_offset(tp: Any) -> int | None:
        acked, committed = consumer._acked[tp], consumer._committed_offset[tp]
        if acked and committed is not None and not consumer._gap[tp] and min(acked) > committed:
            return None  # the message at `committed` is in flight or was dropped: wait
        return faust_new_offset(tp)

    consumer._new_offset = new_offset


def install(app: Any, interval: float = 5.0) -> None:
    """Guard the commits (at least once only) and start a timer on `app` that seeks a
    partition back to its committed offset once it has shown a dropped message on two
    checks in a row (`interval` seconds apart)."""
    from faust.types.enums import ProcessingGuarantee

    suspects: dict[Any, int] = {}

    if app.conf.processing_guarantee != ProcessingGuarantee.EXACTLY_ONCE:

        @app.task
        async def guard_commits() -> None:
            guard_head_gap(app.consumer)

    @app.timer(interval=interval, name="newsflow.stall.reseek")
    async def reseek_dropped() -> None:
        nonlocal suspects
        consumer = app.consumer
        if not consumer.flow_active or not app.flow_control.is_active():
            suspects = {}  # a rebalance or a stop is under way: Faust seeks by itself
            return
        found = dropped_at(consumer)
        for tp, committed in found.items():
            if suspects.get(tp) == committed:
                log.warning("%s[%d]: message at offset %d was dropped (acked offsets beyond it, "
                            "none in flight); seeking back to it", tp.topic, tp.partition,
                            committed)  # fmt: skip
                # In the consumer's thread, read offset reset too (as Faust's recovery does).
                await consumer.seek_wait({tp: committed})
        suspects = found
