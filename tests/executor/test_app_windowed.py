"""Windowed agent tables, Faust style: ``app.Table(...).tumbling/hopping/sliding(...)``.

Each test builds a small app, feeds it through `TestDriver` (or a `Worker` on a memory
broker that outlives it, for crashes), and checks the windows against sums computed here
from the records sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from typing import Any

import pytest

import flowgraph as faust
from flowgraph.errors import ConfigurationError, GraphDefinitionError
from flowgraph.partitioner import partition_for
from flowgraph.runtime.agent import WORKER
from flowgraph.runtime.faults import InjectedCrash, raise_at
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.base import open_backend
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver
from flowgraph.windows import WindowKey

KEYS = [f"k{i}" for i in range(8)]


@pytest.fixture
def drive() -> Any:
    """Makes `TestDriver`s, closed when the test ends."""
    made: list[TestDriver] = []

    def make(app: Any) -> TestDriver:
        made.append(TestDriver(app))
        return made[-1]

    yield make
    for driver in made:
        driver.close()


def tumbling_app(size: float = 10.0, expires: Any = None, app_id: str = "wt") -> Any:
    """An app counting values per key in tumbling windows, noting what it reads."""
    app = faust.App(app_id, topic_partitions=4)
    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("counts", default=int).tumbling(size, expires=expires)
    app.reads = []  # type: ignore[attr-defined]

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for key, n in stream.items():
            table[key] += n
            app.reads.append((key, table[key].current()))  # type: ignore[attr-defined]

    return app


def test_tumbling_windows_over_partitions_and_keys(drive: Any) -> None:
    app = tumbling_app()
    d = drive(app)
    rng = random.Random(7)
    sent = [(rng.choice(KEYS), rng.randint(1, 5), float(rng.randint(0, 59))) for _ in range(200)]
    sent.sort(key=lambda r: r[2])  # in order: nothing late, no expiry (expires=None)
    expected: dict[WindowKey, int] = defaultdict(int)
    running = []
    for key, n, t in sent:
        d.send("events", key, n, timestamp=t)
        start = t // 10 * 10
        expected[WindowKey(key, start, start + 10)] += n
        running.append((key, expected[WindowKey(key, start, start + 10)]))
    view = d.table("counts")
    assert view.windows() == dict(expected)
    assert app.reads == running  # current() inside the agent: this record's window so far
    assert view.late == 0
    assert len({partition_for(k.encode(), 4) for k in KEYS}) > 1  # the keys span partitions
    # outside the agent, current() reads the window of the key's partition's stream time
    for key in KEYS:
        p = partition_for(key.encode(), 4)
        st = max(t for k, _, t in sent if partition_for(k.encode(), 4) == p)
        start = st // 10 * 10
        assert view[key].current() == expected.get(WindowKey(key, start, start + 10), 0)


def test_out_of_order_within_expiry_applies_and_later_is_late(drive: Any) -> None:
    app = tumbling_app(size=10, expires=dt.timedelta(seconds=20))
    d = drive(app)
    d.send("events", "a", 1, timestamp=25.0)  # stream time 25: window [0, 10) open until 30
    d.send("events", "a", 2, timestamp=3.0)  # out of order, within expires: applied
    d.send("events", "a", 4, timestamp=31.0)  # stream time 31: [0, 10) expires (10 + 20 <= 31)
    d.send("events", "a", 8, timestamp=9.0)  # too late: skipped and counted
    d.send("events", "a", 16, timestamp=12.0)  # [10, 20) open until 40: applied
    view = d.table("counts")
    assert view.windows() == {
        WindowKey("a", 10.0, 20.0): 16,
        WindowKey("a", 20.0, 30.0): 1,
        WindowKey("a", 30.0, 40.0): 4,
    }
    assert view.late == 1
    assert app.reads[1] == ("a", 2)  # the out-of-order write read its own window
    assert app.reads[3] == ("a", 0)  # the late one: its window is gone, the default reads
    d.send("events", "a", 1, timestamp=100.0)  # everything before [60, 100) expires
    assert view.windows() == {WindowKey("a", 100.0, 110.0): 1}
    assert view.stream_time == 100.0


def test_hopping_writes_every_window_of_the_time(drive: Any) -> None:
    app = faust.App("hop", topic_partitions=4)
    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("sums", default=int).hopping(10, 5, expires=100)
    reads = []

    @app.agent(topic)
    async def add(stream: Any) -> None:
        async for key, n in stream.items():
            table[key] += n
            ws = table[key]
            reads.append((ws.current(), ws.value(), ws.now(), ws.delta(5)))

    d = drive(app)
    d.advance_time(7.0)
    d.send("events", "a", 1, timestamp=7.0)  # in [0, 10) and [5, 15)
    d.send("events", "a", 10, timestamp=12.0)  # in [5, 15) and [10, 20)
    view = d.table("sums")
    assert view.windows() == {
        WindowKey("a", 0.0, 10.0): 1,
        WindowKey("a", 5.0, 15.0): 11,
        WindowKey("a", 10.0, 20.0): 10,
    }
    # current()/value(): the latest window holding the time; now(): the earliest holding
    # the clock (7: [0, 10)); delta(5): the latest window holding time - 5
    assert reads == [(1, 1, 1, 1), (10, 10, 1, 11)]
    assert view["a"][(5.0, 15.0)] == 11
    assert view.range("a", 0, 5) == [
        (WindowKey("a", 0.0, 10.0), 1),
        (WindowKey("a", 5.0, 15.0), 11),
    ]


def test_sliding_sums_the_deltas_of_the_last_size_seconds(drive: Any) -> None:
    app = faust.App("slide", topic_partitions=4)
    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("sums", default=int).sliding(10, expires=5)
    reads = []

    @app.agent(topic)
    async def add(stream: Any) -> None:
        async for key, n in stream.items():
            if n < 0:
                table[key] -= -n
            else:
                table[key] += n
            reads.append((key, table[key].current()))

    d = drive(app)
    rng = random.Random(3)
    applied: list[tuple[str, int, float]] = []
    st: dict[int, float] = {}
    expected_reads = []
    late = 0
    t = 0.0
    for _ in range(150):
        key = rng.choice(KEYS[:4])
        t += rng.uniform(0, 2)
        ts = round(t - rng.uniform(0, 8), 1)  # out of order: some beyond grace (late)
        n = rng.choice([1, 2, 3, -1])
        d.send("events", key, n, timestamp=ts)
        p = partition_for(key.encode(), 4)
        st[p] = max(st.get(p, ts), ts)
        if ts + 5 < st[p]:
            late += 1  # not applied; it reads what is left of its window
        else:
            applied.append((key, n, ts))
        kept = [(k, v, u) for k, v, u in applied if u + 15 >= st[p]]  # size + grace
        expected_reads.append((key, sum(v for k, v, u in kept if k == key and ts - 10 <= u <= ts)))
    assert reads == expected_reads
    view = d.table("sums")
    assert view.late == late > 0
    for key in KEYS[:4]:
        p = partition_for(key.encode(), 4)
        now = st[p]
        want = sum(v for k, v, u in applied if k == key and now - 10 <= u <= now)
        assert view[key].current() == want
    # what is held: one window per write time still within size + grace of stream time
    held = {(wk.key, wk.end) for wk in view.windows()}
    assert held == {(k, u) for k, _, u in applied if u + 15 >= st[partition_for(k.encode(), 4)]}
    assert len(held) < len({(k, u) for k, _, u in applied})  # some expired


class Order(faust.Record):
    customer: str
    amount: int
    ts: float
    at: dt.datetime | None = None


def test_relative_to_field_places_writes_by_the_value(drive: Any) -> None:
    app = faust.App("orders", topic_partitions=4)
    topic = app.topic("orders", key_type=str, value_type=Order)
    by_ts = app.Table("by_ts", default=int).tumbling(60).relative_to_field(Order.ts)
    by_at = app.Table("by_at", default=int).tumbling(60).relative_to_field(Order.at)
    values = []

    @app.agent(topic)
    async def total(orders: Any) -> None:
        async for order in orders:
            by_ts[order.customer] += order.amount
            by_at[order.customer] += order.amount
            values.append((by_ts[order.customer].value(), by_ts[order.customer].current()))

    d = drive(app)
    at = dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.UTC)
    d.send("orders", "c1", Order("c1", 5, 125.0, at), timestamp=1000.0)
    d.send("orders", "c1", Order("c1", 7, 170.0, at + dt.timedelta(minutes=1)), timestamp=1.0)
    assert d.table("by_ts").windows() == {
        WindowKey("c1", 120.0, 180.0): 12,
    }
    base = at.timestamp() - 30
    assert d.table("by_at").windows() == {
        WindowKey("c1", base, base + 60): 5,
        WindowKey("c1", base + 60, base + 120): 7,
    }
    # value(): the field's window; current(): the record timestamp's window (empty)
    assert values == [(5, 0), (12, 0)]
    d.send("orders", "c1", Order("c1", 1, 130.0), timestamp=2.0)  # no `at`: no time
    [letter] = d.dead_letters()
    assert "field 'at'" in letter.headers["error.message"]
    assert "not a time" in letter.headers["error.message"]


def test_relative_to_a_field_name_of_a_json_value(drive: Any) -> None:
    app = faust.App("named", topic_partitions=4)
    topic = app.topic("events", key_type=str)  # json values: dicts
    table = app.Table("sums", default=int).hopping(10, 5).relative_to_field("ts")
    assert table.relative_to == "field:ts"

    @app.agent(topic)
    async def add(stream: Any) -> None:
        async for key, value in stream.items():
            table[key] += value["n"]

    d = drive(app)
    d.send("events", "a", {"n": 3, "ts": "1970-01-01T00:00:12+00:00"}, timestamp=99.0)
    d.send("events", "a", {"n": 4, "ts": 3}, timestamp=98.0)
    assert d.table("sums").windows() == {
        WindowKey("a", 0.0, 10.0): 4,
        WindowKey("a", 5.0, 15.0): 3,
        WindowKey("a", 10.0, 20.0): 3,
    }


def test_reads_of_a_given_event(drive: Any) -> None:
    """Faust's ``current(event)``, ``value(event)`` and ``delta(d, event)``."""
    app = faust.App("events", topic_partitions=2)
    topic = app.topic("orders", key_type=str, value_type=Order)
    table = app.Table("by_ts", default=int).tumbling(10).relative_to_field(Order.ts)
    reads = []
    previous: list[Any] = []

    @app.agent(topic)
    async def total(stream: Any) -> None:
        async for event in stream.events():
            table[event.key] += event.value.amount
            ws = table[event.key]
            if previous:
                old = previous[0]
                reads.append((ws.value(old), ws.current(old), ws.delta(10, old)))
            previous.append(event)

    d = drive(app)
    d.send("orders", "c", Order("c", 1, 5.0), timestamp=12.0)
    d.send("orders", "c", Order("c", 2, 15.0), timestamp=25.0)
    # the first event: its field time 5 -> [0, 10); its timestamp 12 -> [10, 20); 12 - 10 -> [0, 10)
    assert reads == [(1, 2, 1)]


def test_relative_to_now_uses_the_clock(drive: Any) -> None:
    app = faust.App("clock", topic_partitions=4)
    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("hits", default=int).tumbling(10, expires=30).relative_to_now()
    assert table.relative_to == "now"

    @app.agent(topic)
    async def hit(stream: Any) -> None:
        async for key, _ in stream.items():
            table[key] += 1

    d = drive(app)
    d.advance_time(3.0)
    d.send("events", "a", 0, timestamp=500.0)  # the record's timestamp does not matter
    d.send("events", "a", 0, timestamp=1.0)
    d.advance_time(14.0)
    d.send("events", "a", 0, timestamp=2.0)
    view = d.table("hits")
    assert view.windows() == {WindowKey("a", 0.0, 10.0): 2, WindowKey("a", 10.0, 20.0): 1}
    assert view["a"].now() == 1  # the clock's window: [10, 20)
    d.advance_time(5.0)
    assert view["a"].now() == 2


def test_set_and_delete_a_window(drive: Any) -> None:
    app = faust.App("set", topic_partitions=2)
    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("last", default=int).tumbling(10)

    seen = []

    @app.agent(topic)
    async def keep(stream: Any) -> None:
        async for key, n in stream.items():
            if n < 0:
                del table[key]
            else:
                table[key] = n
            seen.append((key in table, sorted(table.items()), len(table)))

    d = drive(app)
    d.send("events", "a", 5, timestamp=1.0)
    d.send("events", "a", 6, timestamp=2.0)
    d.send("events", "a", 7, timestamp=11.0)
    d.send("events", "a", -1, timestamp=12.0)
    assert d.table("last").windows() == {WindowKey("a", 0.0, 10.0): 6}
    assert d.table("last")["a"][(10.0, 20.0)] == 0  # deleted: the default
    # in the agent: the windows of the record's time (a deleted window's key stays held)
    assert seen == [
        (True, [("a", 5)], 1),
        (True, [("a", 6)], 1),
        (True, [("a", 7)], 1),
        (False, [], 1),
    ]

    # a timer or task reads through the worker it runs in (WORKER), as a timer would
    token = WORKER.set(d._worker)
    try:
        assert table["a"].current() == 0  # stream time 12: [10, 20), deleted
        assert table["a"].delta(10) == 6
        assert "a" in table
        assert list(table.items()) == []  # no value at stream time
        with pytest.raises(ConfigurationError, match="only be changed by an agent"):
            table["a"] = 1
    finally:
        WORKER.reset(token)


def test_mistakes_are_one_sentence(drive: Any) -> None:
    app = faust.App("bad", topic_partitions=2)
    with pytest.raises(GraphDefinitionError, match="windowed already"):
        app.Table("t", default=int).tumbling(10).hopping(10, 5)
    with pytest.raises(GraphDefinitionError, match="step"):
        app.Table("u", default=int).hopping(10, 20)
    with pytest.raises(GraphDefinitionError, match="grace"):
        app.Table("v", default=int).tumbling(10, expires=-1)
    with pytest.raises(ConfigurationError, match="record field"):
        app.Table("w", default=int).tumbling(10).relative_to_field(3)

    with pytest.raises(ConfigurationError, match="only be changed by an agent"):
        app.Table("x", default=int).tumbling(10)["k"] = 1
    with pytest.raises(ConfigurationError, match="outside a running worker"):
        app.Table("y", default=int).tumbling(10)["k"].now()

    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("s", default=int).sliding(10)

    @app.agent(topic)
    async def scale(stream: Any) -> None:
        async for key, n in stream.items():
            table[key] *= n

    d = drive(app)
    with pytest.raises(ConfigurationError, match=r"sliding table 's' takes only \+= and -="):
        d.send("events", "a", 2, timestamp=1.0)


# -- crashes ------------------------------------------------------------------------------------


def crash_app() -> Any:
    app = faust.App("crash", topic_partitions=4)
    topic = app.topic("events", key_type=str, value_type=int)
    tumbling = app.Table("tum", default=int).tumbling(10, expires=30)
    hopping = app.Table("hop", default=list).hopping(10, 5, expires=30)
    sliding = app.Table("sli", default=int).sliding(10, expires=5)

    @app.agent(topic)
    async def update(stream: Any) -> None:
        async for key, n in stream.items():
            tumbling[key] += n
            hopping[key] += [n]  # order-sensitive: a replayed write would show
            sliding[key] += n

    return app


def crash_records() -> list[tuple[str, int, float]]:
    rng = random.Random(11)
    return [(rng.choice(KEYS), i, i * 0.7 - rng.uniform(0, 45)) for i in range(120)]


async def _feed(worker: Worker, records: list[tuple[str, int, float]]) -> None:
    for key, n, ts in records:
        await worker.send("events", key, n, timestamp=max(ts, 0.0))


def _snapshot(worker: Worker) -> dict[str, Any]:
    return {
        name: (view.windows(), view.stream_time)
        for name in ("tum", "hop", "sli")
        for view in [worker.table(name)]
    }


def _late(worker: Worker) -> int:
    return sum(worker.table(name).late for name in ("tum", "hop", "sli"))


def run_with_crash(store: str, point: str | None, n: int = 2) -> tuple[dict[str, Any], int]:
    """Run the records with a crash at the n-th `point`, then restart on the same broker
    and store; the tables and the writes the restart skipped. Without a point: the tables
    of one run and its late writes."""
    app = crash_app()
    plan = app.plan()
    broker = MemoryBroker()
    backend = open_backend(store)
    records = crash_records()

    async def first() -> tuple[dict[str, Any], int]:
        hook = raise_at(point, n) if point else None
        worker = Worker(
            plan,
            MemoryTransport(broker, encoded=True),
            backend,
            max_batch=7,
            commit_every=7,
            crash_point=hook,
        )
        await worker.start()
        await _feed(worker, records)
        if point is None:
            await worker.run(until_idle=True, idle_wait=0.0)
            await worker.stop()
            return _snapshot(worker), _late(worker)
        with pytest.raises(InjectedCrash):
            await worker.run(until_idle=True, idle_wait=0.0)
        return {}, 0  # abandoned, as after kill -9

    async def again() -> tuple[dict[str, Any], int]:
        b = backend if store == "memory://" else open_backend(store)
        worker = Worker(plan, MemoryTransport(broker, encoded=True), b)
        await worker.start()
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            return _snapshot(worker), worker.stats.skipped
        finally:
            await worker.stop()

    once = asyncio.run(first())
    if point is None:
        return once
    if store != "memory://":
        backend.close()
    return asyncio.run(again())


@pytest.mark.parametrize("point", ["after-produce", "after-store", "after-commit"])
def test_a_crash_neither_loses_nor_repeats_a_write(point: str) -> None:
    clean, late = run_with_crash("memory://", None)
    tables, skipped = run_with_crash("memory://", point)
    assert tables == clean
    assert late > 0  # some writes were late, and stay so on replay
    if point == "after-store":
        assert skipped > 0  # the stored writes were replayed and skipped


def test_rocksdb_store_survives_a_crash(tmp_path: Any) -> None:
    clean, _ = run_with_crash("memory://", None)
    tables, skipped = run_with_crash(f"rocksdb://{tmp_path}", "after-store")
    assert tables == clean
    assert skipped > 0
    assert any(tmp_path.rglob("CURRENT"))  # real RocksDB files


def test_a_replay_of_a_clock_table_writes_nothing_twice() -> None:
    """Relative to the clock, a replayed write would land in the window of the restart's
    time, so only the stored position of the last write can tell it was made."""
    app = faust.App("clocked", topic_partitions=2)
    topic = app.topic("events", key_type=str, value_type=int)
    table = app.Table("hits", default=int).tumbling(10).relative_to_now()

    @app.agent(topic)
    async def hit(stream: Any) -> None:
        async for key, n in stream.items():
            table[key] += n

    plan = app.plan()
    broker = MemoryBroker()
    backend = open_backend("memory://")
    sent = [(KEYS[i % 4], i + 1) for i in range(40)]

    async def first() -> None:
        worker = Worker(
            plan,
            MemoryTransport(broker, encoded=True),
            backend,
            max_batch=5,
            commit_every=5,
            crash_point=raise_at("after-store", 2),
        )
        worker.clock = lambda: 5.0
        await worker.start()
        for key, n in sent:
            await worker.send("events", key, n, timestamp=1.0)
        with pytest.raises(InjectedCrash):
            await worker.run(until_idle=True, idle_wait=0.0)

    async def again() -> tuple[dict[WindowKey, int], int]:
        worker = Worker(plan, MemoryTransport(broker, encoded=True), backend)
        worker.clock = lambda: 25.0
        await worker.start()
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            return worker.table("hits").windows(), worker.stats.skipped
        finally:
            await worker.stop()

    asyncio.run(first())
    windows, skipped = asyncio.run(again())
    assert sum(windows.values()) == sum(n for _, n in sent)
    assert {(wk.start, wk.end) for wk in windows} == {(0.0, 10.0), (20.0, 30.0)}
    assert skipped > 0


def test_keys_that_do_not_order_expire(drive: Any) -> None:
    """Records as keys: equal expiry times must not compare the keys themselves."""
    app = faust.App("records", topic_partitions=1)
    topic = app.topic("orders", key_type=str, value_type=Order)
    table = app.Table("per_order", default=int).tumbling(10, expires=5)

    @app.agent(topic)
    async def count(orders: Any) -> None:
        async for order in orders:
            table[order] += order.amount

    d = drive(app)
    first, second = Order("c1", 1, 0.0), Order("c2", 2, 0.0)
    d.send("orders", "c1", first, timestamp=1.0)
    d.send("orders", "c2", second, timestamp=2.0)
    assert d.table("per_order").windows() == {
        WindowKey(first, 0.0, 10.0): 1,
        WindowKey(second, 0.0, 10.0): 2,
    }
    d.send("orders", "c1", first, timestamp=40.0)  # both expire at stream time 15
    assert d.table("per_order").windows() == {WindowKey(first, 40.0, 50.0): 1}
    assert d.dead_letters() == []
