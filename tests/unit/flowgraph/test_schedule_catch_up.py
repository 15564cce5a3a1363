"""`Schedule.hold`: a join's catch-up keeps its stream partitions back until its table
partitions are handed out to their end offsets of task start, or its bound has passed."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flowgraph.runtime.catch_up import CatchUpWait
from flowgraph.runtime.schedule import Schedule
from tests.unit.flowgraph.test_schedule import order, recs

STREAM, TABLE = ("orders", 0), ("prices", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def held(clock: Clock, *, end: int, seconds: float = 5.0) -> Schedule:
    s = Schedule(capacity=10, clock=clock)
    s.assign(STREAM, 0)
    s.assign(TABLE, 0)
    s.hold(
        CatchUpWait(
            join="priced",
            table="price",
            partition=0,
            seconds=seconds,
            held=[STREAM],
            ends={TABLE: end},
            starts={TABLE: 0},
            began=clock(),
        )
    )
    return s


def behind_below(ends: dict[Any, int], fetched: dict[Any, int]) -> Any:
    return lambda tp: fetched.get(tp, 0) < ends.get(tp, 0)


def test_the_stream_waits_until_the_table_reaches_its_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    s = held(clock, end=4)
    s.add(STREAM, recs(1, 2))  # older than every table record
    s.add(TABLE, recs(10, 11))
    behind = behind_below({TABLE: 4}, {TABLE: 2})
    assert order(s, behind) == [("prices", [10, 11])]  # the stream stays back
    assert s.pending()
    s.add(TABLE, recs(12, 13, start=2))
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        assert order(s, behind) == [("prices", [12, 13])]
        # the next call finds the table at its end: the stream runs, in timestamp order again
        assert order(s, behind) == [("orders", [1, 2])]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "table 'price' caught up after 0.00 s" in line


def test_the_stream_goes_on_after_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    s = held(clock, end=10, seconds=5)
    s.add(STREAM, recs(1, 2))
    s.add(TABLE, recs(10, 11, 12))
    behind = behind_below({TABLE: 10}, {TABLE: 3})
    assert order(s, behind) == [("prices", [10, 11, 12])]
    clock.now += 4.9
    assert order(s, behind) == []
    clock.now += 0.2
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        assert order(s, behind) == [("orders", [1, 2])]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "gave up waiting for table 'price' after 5.10 s (catch_up=5)" in record.getMessage()
    assert "with 7 records of it still unread" in record.getMessage()


def test_a_table_read_to_the_end_of_its_log_ends_the_wait_below_its_end_offset() -> None:
    # its last offsets hold no record (compacted away): read to the log's end is caught up
    s = held(Clock(), end=4)
    s.add(STREAM, recs(1))
    s.add(TABLE, recs(10))
    assert order(s, lambda tp: False) == [("prices", [10])]
    assert order(s, lambda tp: False) == [("orders", [1])]


def test_dropping_the_held_partitions_ends_the_wait_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = held(Clock(), end=4)
    s.add(STREAM, recs(1))
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        s.drop([STREAM, TABLE])
        assert order(s) == []
    assert caplog.records == []
    s.assign(STREAM, 0)  # assigned again: not held any more
    s.add(STREAM, recs(3))
    assert order(s) == [("orders", [3])]


def test_unread_counts_the_table_records_below_their_start_ends() -> None:
    wait = CatchUpWait(
        join="priced",
        table="price",
        partition=0,
        seconds=5.0,
        held=[STREAM],
        ends={("prices", 0): 5, ("prices", 1): 3},
        starts={("prices", 0): 2},
        began=0.0,
    )
    assert wait.unread() == 3 + 3  # partition 1 has no committed offset: from 0
    wait.reached[("prices", 1)] = 3
    assert wait.unread() == 3  # a partition at its end adds nothing
    wait.reached[("prices", 0)] = 6  # past its start end (written to since)
    assert wait.unread() == 0
    assert wait.finished(1.0, lambda tp: False)


def _wait(seconds: float = 5.0) -> CatchUpWait:
    return CatchUpWait(
        join="priced",
        table="price",
        partition=3,
        seconds=seconds,
        held=[STREAM],
        ends={TABLE: 4},
        starts={TABLE: 1},
        began=10.0,
    )


def test_the_bound_ends_the_wait_at_exactly_its_seconds(caplog: pytest.LogCaptureFixture) -> None:
    wait = _wait(seconds=5.0)
    assert not wait.finished(14.75, lambda tp: False)
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        assert wait.finished(15.0, lambda tp: False)
    (record,) = caplog.records
    assert record.getMessage() == (
        "join 'priced' on partition 3: gave up waiting for table 'price' after 5.00 s "
        "(catch_up=5) with 3 records of it still unread; the stream goes on"
    )


def test_caught_up_says_which_join_partition_and_table_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wait = _wait()
    wait.reached[TABLE] = 4
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        assert wait.finished(11.5, lambda tp: False)
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "join 'priced' on partition 3: table 'price' caught up after 1.50 s; the stream goes on"
    )
