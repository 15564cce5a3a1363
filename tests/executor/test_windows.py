"""Windowed aggregations end to end: queries, idle timeouts, bad timestamps, stores, restarts.

The hypothesis oracle for the window semantics is in test_windows_oracle.py; these are the
cases around it, each on the real worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import shutil

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.testing import TestDriver
from tests.executor.harness import Cluster

W = fg.WindowKey


class Sale(fg.Record):
    shop: str
    amount: int
    ts: float


def sales_graph(spec: object, **window: object) -> fg.Graph:
    g = fg.Graph("w")
    s = g.source("sales", key_type=str, value_type=Sale)
    table = s.window(spec, timestamp=lambda sale: sale.ts, **window).sum(  # type: ignore[arg-type]
        lambda sale: sale.amount, name="amounts"
    )
    table.changes().to("amounts-out")
    table.late().to("late-sales")
    return g


def send(driver: TestDriver, shop: str, amount: int, ts: float) -> None:
    driver.send("sales", shop, Sale(shop=shop, amount=amount, ts=ts))


# -- queries ---------------------------------------------------------------------------------


def test_queries_pick_windows_by_stream_time_clock_and_delta():
    with TestDriver(sales_graph(fg.Tumbling(10, retention=100))) as d:
        for amount, ts in [(1, 1.0), (2, 5.0), (4, 12.0), (8, 25.0)]:
            send(d, "a", amount, ts)
        view = d.table("amounts")
        assert isinstance(view, fg.WindowedTableView)
        assert view.stream_time == 25.0
        assert view["a"].current() == 8  # [20, 30)
        assert view["a"].value() == 8
        assert view["a"].delta(13) == 4  # 25 - 13 = 12: [10, 20)
        assert view["a"].delta(dt.timedelta(seconds=20)) == 3  # 5: [0, 10)
        assert view["a"].now() == 3  # the driver's clock is 0: [0, 10)
        d.advance_time(12.5)
        assert view["a"].now() == 4
        assert view["b"].current() == 0  # no records: the sum's initial value
        assert view.range("a", 0, 10) == [(W("a", 0.0, 10.0), 3), (W("a", 10.0, 20.0), 4)]
        assert view.range("a", 11, 100) == [(W("a", 20.0, 30.0), 8)]
        assert view.windows() == {
            W("a", 0.0, 10.0): 3,
            W("a", 10.0, 20.0): 4,
            W("a", 20.0, 30.0): 8,
        }


def test_hopping_queries_pick_the_window_with_the_latest_start():
    with TestDriver(sales_graph(fg.Hopping(10, 5, retention=100))) as d:
        send(d, "a", 1, 3.0)  # [0, 10)
        send(d, "a", 10, 7.0)  # [0, 10) and [5, 15)
        view = d.table("amounts")
        assert view["a"].current() == 10  # 7 is in [0, 10) and [5, 15): the later start
        assert view.range("a", 0, 5) == [(W("a", 0.0, 10.0), 11), (W("a", 5.0, 15.0), 10)]


def test_sliding_queries_compute_the_window_ending_at_the_time():
    with TestDriver(sales_graph(fg.Sliding(10, grace=100, retention=100))) as d:
        for amount, ts in [(1, 0.0), (2, 5.0), (4, 10.0), (8, 21.0)]:
            send(d, "a", amount, ts)
        view = d.table("amounts")
        assert view["a"].current() == 8  # [11, 21]
        assert view["a"].delta(11) == 7  # [0, 10]: both ends included
        assert view.windows()[W("a", 0.0, 10.0)] == 7
        assert view.windows()[W("a", -5.0, 5.0)] == 3


def test_a_plain_table_is_still_a_dict():
    g = fg.Graph("p")
    g.source("in", key_type=str, value_type=int).count(name="n")
    with TestDriver(g) as d:
        d.send("in", "a", 1)
        assert d.table("n") == {"a": 1}


# -- late records, emit modes, idle timeout ----------------------------------------------------


def test_late_records_are_counted_output_and_not_applied():
    with TestDriver(sales_graph(fg.Tumbling(10, grace=2, retention=100))) as d:
        send(d, "a", 1, 5.0)
        send(d, "a", 2, 11.0)  # stream time 11: [0, 10) is open until 12
        send(d, "a", 4, 9.0)  # on time: 11 < 10 + 2
        send(d, "a", 8, 12.0)  # stream time 12 closes [0, 10)
        send(d, "a", 16, 9.5)  # late
        view = d.table("amounts")
        assert view.windows() == {W("a", 0.0, 10.0): 5, W("a", 10.0, 20.0): 10}
        assert view.late == 1
        assert d.output("late-sales") == [("a", Sale(shop="a", amount=16, ts=9.5))]


def test_emit_close_emits_each_window_once_when_stream_time_passes_it():
    with TestDriver(sales_graph(fg.Tumbling(10, grace=1, emit="close"))) as d:
        for amount, ts in [(1, 1.0), (2, 9.0), (4, 10.5), (8, 10.9)]:
            send(d, "a", amount, ts)
        assert d.output("amounts-out") == []  # stream time 10.9 < 10 + 1
        send(d, "b", 16, 11.0)
        assert d.output("amounts-out") == [(W("a", 0.0, 10.0), 3)]
        send(d, "a", 32, 35.0)
        assert d.output("amounts-out")[1:] == [
            (W("a", 10.0, 20.0), 12),
            (W("b", 10.0, 20.0), 16),
        ]
        # retention 0: closed windows are gone; only the open one is held
        assert d.table("amounts").windows() == {W("a", 30.0, 40.0): 32}


def test_idle_timeout_closes_the_last_windows_by_the_clock():
    spec = fg.Tumbling(10, emit="close", idle_timeout=30)
    with TestDriver(sales_graph(spec)) as d:
        d.advance_time(1000.0)
        send(d, "a", 5, 3.0)
        d.advance_time(1020.0)  # quiet for 20 s: not yet
        assert d.output("amounts-out") == []
        d.advance_time(1031.0)  # quiet for 31 s: stream time 3 + 31 = 34 closes [0, 10)
        assert d.output("amounts-out") == [(W("a", 0.0, 10.0), 5)]
        assert d.table("amounts").stream_time == 34.0
        send(d, "a", 7, 20.0)  # late now: stream time moved on
        assert d.table("amounts").late == 1


def test_without_idle_timeout_the_clock_closes_nothing():
    with TestDriver(sales_graph(fg.Tumbling(10, emit="close"))) as d:
        send(d, "a", 5, 3.0)
        d.advance_time(10_000.0)
        assert d.output("amounts-out") == []


# -- timestamps ------------------------------------------------------------------------------


def test_record_timestamps_and_datetimes_place_records():
    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=str)
    s.window(fg.Tumbling(60, retention=1e9)).count(name="by_record")
    s.window(
        fg.Tumbling(dt.timedelta(days=1), retention=1e9),
        timestamp=dt.datetime.fromisoformat,
    ).count(name="by_day")
    with TestDriver(g) as d:
        d.send("in", "k", "2026-11-28T10:00:00+00:00", timestamp=61.0)
        d.send("in", "k", "2026-11-28T23:59:59+00:00", timestamp=119.0)
        d.send("in", "k", "2026-11-29T00:00:00+00:00", timestamp=120.0)
        assert d.table("by_record").windows() == {W("k", 60.0, 120.0): 2, W("k", 120.0, 180.0): 1}
        day = dt.datetime(2026, 11, 28, tzinfo=dt.UTC).timestamp()
        assert d.table("by_day").windows() == {
            W("k", day, day + 86400): 2,
            W("k", day + 86400, day + 2 * 86400): 1,
        }


@pytest.mark.parametrize(
    ("ts", "error"),
    [
        (-5.0, "before the epoch"),
        (float("nan"), "not finite"),
        ("soon", "a timestamp must be seconds"),
    ],
)
def test_bad_timestamps_go_to_the_dead_letter_topic(ts, error):
    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=str)
    stamps = {"good": 5.0, "bad": ts}
    s.window(fg.Tumbling(10), timestamp=lambda v: stamps[v]).count(name="n")
    with TestDriver(g) as d:
        d.send("in", "k", "bad")
        d.send("in", "k", "good")
        (dead,) = d.dead_letters()
        assert error in dead.headers["error.message"]
        assert dead.headers["error.step"] == "n"
        assert d.table("n").windows() == {W("k", 0.0, 10.0): 1}


def test_a_raising_timestamp_function_dead_letters_the_record():
    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=str)
    s.window(fg.Sliding(10), timestamp=float).count(name="n")
    with TestDriver(g) as d:
        d.send("in", "k", "x")
        d.send("in", "k", "3")
        (dead,) = d.dead_letters()
        assert dead.headers["error.type"] == "ValueError"
        assert d.table("n").windows() == {W("k", -7.0, 3.0): 1}


# -- building ------------------------------------------------------------------------------


def test_window_needs_a_spec_and_aggregations_need_names():
    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=int)
    with pytest.raises(fg.GraphDefinitionError, match=r"fg\.Sliding or fg\.Session"):
        s.window(60)  # type: ignore[arg-type]
    with pytest.raises(fg.GraphDefinitionError, match="name="):
        s.window(fg.Tumbling(60)).sum(lambda v: v)
    with pytest.raises(fg.GraphDefinitionError, match="not async def"):

        async def when(v: int) -> float:
            return float(v)

        s.window(fg.Tumbling(60), timestamp=when)


def test_changes_of_a_windowed_table_are_repartitioned_before_another_table():
    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=int, partitions=2)
    per_window = s.window(fg.Tumbling(10, emit="close")).count(name="n")
    per_window.changes().count(name="windows_per_key_and_window")
    plan = g.plan()
    assert any(t.role == "repartition" for t in plan.topics)
    assert "n-changes" in plan.explain()
    assert "tumbling 10s emit close, store t-n" in plan.explain()


# -- other aggregations, async, merged inputs ---------------------------------------------------


def test_reduce_and_aggregate_fold_in_arrival_order():
    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=int)
    w = s.window(fg.Hopping(10, 5, retention=100))
    w.reduce(lambda a, b: a * 10 + b, name="digits")
    w.aggregate((), lambda acc, v: (*acc, v), name="seen")
    with TestDriver(g) as d:
        for v, ts in [(1, 6.0), (2, 4.0), (3, 9.0)]:
            d.send("in", "k", v, timestamp=ts)
        assert d.table("digits").windows() == {W("k", 0.0, 10.0): 123, W("k", 5.0, 15.0): 13}
        assert d.table("seen").windows() == {
            W("k", 0.0, 10.0): (1, 2, 3),
            W("k", 5.0, 15.0): (1, 3),
        }
        assert d.table("digits")["nobody"].current() is None


def test_async_folds_and_merged_inputs():
    async def add(acc: int, v: int) -> int:
        await asyncio.sleep(0)
        return acc + v

    g = fg.Graph("t")
    a = g.source("a", key_type=str, value_type=int)
    b = g.source("b", key_type=str, value_type=int)
    merged = a.merge(b)
    merged.window(fg.Tumbling(10, retention=100)).aggregate(0, add, name="total")
    merged.window(fg.Tumbling(10, retention=100)).count(name="n")
    with TestDriver(g) as d:
        d.send("a", "k", 1, timestamp=1.0)
        d.send("b", "k", 2, timestamp=2.0)
        d.send("a", "k", 4, timestamp=11.0)
        assert d.table("total").windows() == {W("k", 0.0, 10.0): 3, W("k", 10.0, 20.0): 4}
        assert d.table("n").windows() == {W("k", 0.0, 10.0): 2, W("k", 10.0, 20.0): 1}


# -- stores and restarts -----------------------------------------------------------------------


def windowed_counts() -> fg.Graph:
    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=float, partitions=2)
    src.window(fg.Tumbling(10, grace=5, retention=20), timestamp=lambda v: v).count(name="n")
    src.window(fg.Sliding(10, retention=20), timestamp=lambda v: v).count(name="s")
    return g


def stamps(values: list[float]) -> list[tuple[int, bytes, bytes]]:
    return [(i % 2, b"k%d" % (i % 2), b"%r" % v) for i, v in enumerate(values)]


def test_windowed_state_continues_after_a_restart_on_rocksdb(tmp_path):
    store = "rocksdb://" + str(tmp_path / "a")
    cluster = Cluster(windowed_counts(), store=store)
    cluster.run({"in": stamps([1.0, 2.0, 3.0, 4.0, 12.0, 16.0])})
    assert cluster.last_tables["n"].windows() == {
        W("k0", 0.0, 10.0): 2,
        W("k0", 10.0, 20.0): 1,
        W("k1", 0.0, 10.0): 2,
        W("k1", 10.0, 20.0): 1,
    }
    # After the restart stream time is restored per partition: k0's is 12, so 5.0 is on
    # time (12 < 10 + 5); k1's is 16, so 7.0 is late there (a fresh stream time would take it).
    cluster.run({"in": stamps([5.0, 7.0])})
    n = cluster.last_tables["n"]
    assert n.windows()[W("k0", 0.0, 10.0)] == 3
    assert n.windows()[W("k1", 0.0, 10.0)] == 2
    assert n.late == 1
    before = {name: t.windows() for name, t in cluster.last_tables.items()}
    shutil.rmtree(tmp_path / "a")  # lost disk: rebuilt from the changelog, tombstones included
    worker = cluster.run()
    assert worker.stats.restored > 0
    assert {name: t.windows() for name, t in cluster.last_tables.items()} == before


def test_expired_windows_leave_the_store_and_the_changelog(tmp_path):
    cluster = Cluster(windowed_counts(), store="rocksdb://" + str(tmp_path))
    cluster.run({"in": stamps([float(t) for t in range(0, 200)])})
    n = cluster.last_tables["n"]
    # stream time 198/199: windows ending at or before 199 - 5 - 20 are gone
    assert {wk.start for wk in n.windows()} == {170.0, 180.0, 190.0}
    changelog = cluster.broker.logs["t-n-changelog"]
    live = {k for part in changelog for k, v, *_ in part if v is not None}
    assert len(live) <= 2 * 4 + 2  # two keys, a few windows each, and the stream times


def test_a_running_worker_answers_queries_from_live_state():
    from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
    from flowgraph.runtime.state import open_backend
    from flowgraph.runtime.worker import Worker

    g = fg.Graph("live")
    g.source("in", key_type=str, value_type=float).window(
        fg.Hopping(10, 5, retention=100), timestamp=lambda v: v
    ).count(name="n")
    broker = MemoryBroker()

    async def main() -> list[object]:
        worker = Worker(g.plan(), MemoryTransport(broker), open_backend("memory://"))
        await worker.start()
        seen: list[object] = []
        try:
            view = worker.table("n")
            for stamp in (1.0, 6.0, 7.0):
                broker.append("in", [(0, b"k", b"%r" % stamp, 0.0, None)])
                while await worker.step():
                    pass
                seen.append((view["k"].current(), len(view)))
            seen.append(view.range("k", 0, 5))
        finally:
            await worker.stop()
        return seen

    assert asyncio.run(main()) == [
        (1, 1),  # [0, 10)
        (1, 2),  # 6: [5, 15) has the latest start
        (2, 2),
        [(W("k", 0.0, 10.0), 3), (W("k", 5.0, 15.0), 2)],
    ]


def test_a_running_worker_closes_idle_windows_by_the_wall_clock():
    import time

    from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
    from flowgraph.runtime.state import open_backend
    from flowgraph.runtime.worker import Worker

    g = fg.Graph("idle")
    g.source("in", key_type=str, value_type=float).window(
        fg.Tumbling(1, emit="close", idle_timeout=0.2), timestamp=lambda v: v
    ).count(name="n").changes().to("closed")
    broker = MemoryBroker()

    async def main() -> tuple[int, int]:
        worker = Worker(g.plan(), MemoryTransport(broker), open_backend("memory://"))
        await worker.start()
        try:
            broker.append("in", [(0, b"k", b"0.25", 0.0, None)])
            while await worker.step():
                pass
            before = sum(len(p) for p in broker.logs["closed"])
            time.sleep(0.1)
            await worker.step()  # quiet for 0.1 s of wall clock: not yet
            assert sum(len(p) for p in broker.logs["closed"]) == before
            time.sleep(0.9)  # quiet for ~1 s: stream time 0.25 + ~1 passes the end, 1
            await worker.step()
            after = sum(len(p) for p in broker.logs["closed"])
        finally:
            await worker.stop()
        return before, after

    assert asyncio.run(main()) == (0, 1)


def test_an_idle_tick_closes_hopping_windows_the_next_record_would_have_used():
    spec = fg.Hopping(10, 5, retention=100, idle_timeout=1)
    with TestDriver(sales_graph(spec)) as d:
        send(d, "a", 1, 6.0)  # [0, 10) and [5, 15)
        d.advance_time(5.0)  # quiet for 5 s: stream time 11 closes [0, 10)
        send(d, "a", 2, 7.0)  # late for [0, 10), still on time for [5, 15)
        view = d.table("amounts")
        assert view.windows() == {W("a", 0.0, 10.0): 1, W("a", 5.0, 15.0): 3}
        assert view.late == 1


@pytest.mark.parametrize(
    "spec",
    [fg.Tumbling(10, emit="close"), fg.Hopping(10, 5, emit="close"), fg.Sliding(10, emit="close")],
    ids=["tumbling", "hopping", "sliding"],
)
def test_a_failing_fold_leaves_no_window_behind(spec):
    def add(acc: int, v: int) -> int:
        if v < 0:
            raise ValueError("negative")
        return acc + v

    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=int)
    table = s.window(spec).aggregate(0, add, name="total")
    table.changes().to("closed")
    with TestDriver(g) as d:
        d.send("in", "bad", -1, timestamp=1.0)
        d.send("in", "good", 5, timestamp=1.0)
        assert [dl.headers["error.step"] for dl in d.dead_letters()] == ["total"]
        assert {wk.key for wk in d.table("total").windows()} == {"good"}
        d.send("in", "good", 1, timestamp=100.0)  # closes the windows of time 1
        assert {wk.key for wk, _ in d.output("closed")} == {"good"}


def test_stream_time_is_per_partition_after_a_repartition():
    """Each partition of the aggregation's input keeps its own stream time: a record late in
    one partition's time is on time in another's (checked against one oracle per partition)."""

    from tests.window_oracle import AGGREGATIONS, Oracle, window_tuple

    class Move(fg.Record):
        who: str
        ts: float

    def who(m: Move) -> str:
        return m.who

    spec = fg.Tumbling(10, grace=1, retention=1000)
    g = fg.Graph("parts")
    moves = g.source("moves", key_type=str, value_type=Move)
    # The key type is declared, so the repartition topic's keys are UTF-8 (`who` is local
    # here: its annotations cannot be resolved) and `part` below is where each key goes.
    by_who = moves.key_by(who, key_type=str, partitions=3)
    by_who.window(spec, timestamp=lambda m: m.ts).count(name="n")
    people = ["ann", "bob", "cid", "dee", "eve", "fay"]
    part = {p: partition_for(p.encode(), 3) for p in people}
    assert len(set(part.values())) > 1
    oracles = {p: Oracle(spec, AGGREGATIONS["count"]) for p in range(3)}
    one_time = Oracle(spec, AGGREGATIONS["count"])  # what a single stream time would give
    stamps = [5.0, 25.0, 3.0, 14.0, 9.5, 31.0, 12.0, 2.0, 40.0, 11.0, 39.0, 1.0]
    with TestDriver(g) as d:
        for i, t in enumerate(stamps * 2):
            person = people[(i * 7) % len(people)]
            d.send("moves", "any", Move(who=person, ts=t))
            oracles[part[person]].send(person, t, 1)
            one_time.send(person, t, 1)
        expected = {w: v for o in oracles.values() for w, v in o.held.items()}
        assert expected != one_time.held  # so the test tells the two apart
        view = d.table("n")
        assert {window_tuple(w): v for w, v in view.windows().items()} == expected
        assert view.late == sum(len(o.late) for o in oracles.values()) > 0


def _add(acc: int, v: int) -> int:
    return acc + v


async def _add_async(acc: int, v: int) -> int:
    return _add(acc, v)


@pytest.mark.parametrize("fold", ["sync", "async"])
@pytest.mark.parametrize(
    ("now", "late"), [(12.0, True), (math.nextafter(12.0, 0.0), False)], ids=["at", "before"]
)
def test_grace_ends_exactly_at_end_plus_grace(fold, now, late):
    """Window [0, 10) with grace 2: once stream time is 12 a record for it is late; just
    before 12 it is not. An async fold takes the general path, a sync one the fast path."""

    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=int)
    table = s.window(fg.Tumbling(10, grace=2, retention=100)).aggregate(
        0, _add if fold == "sync" else _add_async, name="total"
    )
    table.late().to("late")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=1.0)
        d.send("in", "b", 10, timestamp=now)  # moves stream time to `now`
        d.send("in", "a", 5, timestamp=9.0)  # in [0, 10)
        view = d.table("total")
        assert view.late == int(late)
        assert d.output("late") == ([("a", 5)] if late else [])
        assert view.windows()[W("a", 0.0, 10.0)] == (1 if late else 6)


@pytest.mark.parametrize("fold", ["sync", "async"])
@pytest.mark.parametrize(
    ("now", "closed"), [(12.0, True), (math.nextafter(12.0, 0.0), False)], ids=["at", "before"]
)
def test_a_window_closes_exactly_at_end_plus_grace(fold, now, closed):
    """emit="close": window [0, 10) with grace 2 is emitted once stream time is 12, not
    before; with no retention it then leaves the table."""

    g = fg.Graph("t")
    s = g.source("in", key_type=str, value_type=int)
    table = s.window(fg.Tumbling(10, grace=2, emit="close")).aggregate(
        0, _add if fold == "sync" else _add_async, name="total"
    )
    table.changes().to("closed")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=1.0)
        d.send("in", "a", 2, timestamp=9.5)
        d.send("in", "b", 10, timestamp=now)  # moves stream time to `now`
        assert d.output("closed") == ([(W("a", 0.0, 10.0), 3)] if closed else [])
        assert (W("a", 0.0, 10.0) in d.table("total").windows()) is not closed
