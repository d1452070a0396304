"""`streams.stall.dropped_at`: a partition counts as stuck on a dropped message only when
acked offsets lie beyond its committed offset and no earlier message is still in flight."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from streams.stall import dropped_at, guard_head_gap

P0, P1 = ("claims", 0), ("claims", 1)


def consumer(committed: dict, acked: dict, in_flight: list[tuple],
             read: dict | None = None) -> SimpleNamespace:  # fmt: skip
    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, committed),
        _acked=defaultdict(list, acked),
        _unacked_messages=[SimpleNamespace(tp=tp, offset=o) for tp, o in in_flight],
        _read_offset=defaultdict(lambda: None, read or {}),
    )


def test_a_gap_with_nothing_in_flight_is_a_dropped_message():
    """The case seen after a restart: 56-60 and 64.. handled, 61-63 never; committed 61."""
    c = consumer({P0: 61, P1: 40}, {P0: [64, 65, 66], P1: []}, [(P0, 70)])
    assert dropped_at(c) == {P0: 61}


def test_a_slow_batch_is_not_a_dropped_message():
    """The message at the committed offset is still being worked on (tracked, unacked)."""
    c = consumer({P0: 61}, {P0: [64, 65]}, [(P0, 61), (P0, 62), (P0, 63)])
    assert dropped_at(c) == {}


def test_the_last_messages_dropped_show_as_read_but_never_taken():
    """61-63 fetched (read offset 63) and dropped; nothing after them to ack."""
    assert dropped_at(consumer({P0: 61}, {P0: []}, [], read={P0: 63})) == {P0: 61}
    # still being worked on, or all of it done (committed catches up), or nothing read yet
    assert dropped_at(consumer({P0: 61}, {P0: []}, [(P0, 61)], read={P0: 63})) == {}
    assert dropped_at(consumer({P0: 64}, {P0: []}, [], read={P0: 63})) == {}
    assert dropped_at(consumer({P0: 61}, {P0: []}, [], read={P0: 61})) == {}


def test_nothing_acked_beyond_the_committed_offset_is_not_stuck():
    assert dropped_at(consumer({P0: 61}, {P0: [58, 59, 60]}, [])) == {}
    assert dropped_at(consumer({P0: None}, {P0: [3]}, [])) == {}


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
    guard_head_gap(c)
    assert c._new_offset(P0) is None
    c._acked[P0].append(61)
    c._acked_index[P0].add(61)
    assert c._new_offset(P0) == 64


def test_the_guard_stands_aside_for_known_gaps_and_before_a_first_commit():
    c = offsets(None, [0, 1])
    c._new_offset = faust_new_offset(c)
    guard_head_gap(c)
    assert c._new_offset(P0) == 2
    c = offsets(10, [12, 13])
    c._gap[P0].addi(10, 12)  # compacted away: Faust fills the gap itself
    c._new_offset = faust_new_offset(c)
    guard_head_gap(c)
    assert c._new_offset(P0) == 14
