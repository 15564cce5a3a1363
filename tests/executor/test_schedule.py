"""Records run in timestamp order across input partitions, so in-order input is never late.

Every input here is written before the worker starts (a catch-up: each partition holds many
batches), which is where running one partition's whole batch after another made stream time
behind a `key_by` jump ahead of the records still to come.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import InjectedCrash
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker, topic_codecs
from planner import plan as make_plan
from tests.window_oracle import AGGREGATIONS, Oracle, window_tuple

KEEP = 1e12
"""Retention: closed windows stay, so the final table holds every window."""


def run_prewritten(
    graph: fg.Graph, topic: str, records: list[tuple[Any, Any, float]], table: str, **settings: Any
) -> tuple[fg.RunStats, dict[Any, Any], MemoryTransport]:
    """Write ``(key, value, timestamp)`` records to `topic` (partitioned by key), then run a
    worker until idle; its stats, the windows of `table` and the transport."""
    return run_sources(graph, [(topic, *r) for r in records], table, **settings)


def run_sources(
    graph: fg.Graph,
    records: list[tuple[str, Any, Any, float]],
    table: str,
    *,
    encoded: bool = False,
    **settings: Any,
) -> tuple[fg.RunStats, dict[Any, Any], MemoryTransport]:
    """`run_prewritten` for ``(topic, key, value, timestamp)`` records of several topics;
    `encoded`: repartition topics hold bytes and are read through their logs."""
    plan = make_plan(graph)
    transport = MemoryTransport(encoded=encoded)

    async def main() -> tuple[fg.RunStats, dict[Any, Any]]:
        worker = Worker(plan, transport, open_backend("memory://"), **settings)
        await transport.create_topics(plan.topics)
        for topic, k, v, ts in records:
            kc, vc = worker.codecs[topic]
            assert kc is not None and vc is not None
            kb = kc.encode(k)
            part = partition_for(kb, plan.topic(topic).partitions)
            transport.broker.append(topic, [(part, kb, vc.encode(v), ts, None)])
        await worker.start()
        try:
            stats = await worker.run(until_idle=True, idle_wait=0.0)
            windows = {window_tuple(wk): v for wk, v in worker.table(table).windows().items()}
        finally:
            await worker.stop()
        return stats, windows

    stats, windows = asyncio.run(main())
    return stats, windows, transport


def keyed_count(partitions: int, spec: Any, key_fn: Any) -> fg.Graph:
    g = fg.Graph("sched")
    src = g.source("events", key_type=str, value_type=int, partitions=partitions)
    src.key_by(key_fn, name="rekey").window(spec).count(name="counts")
    return g


def by_seven(v: int) -> str:
    return f"k{v % 7}"


def brute_force(records: list[tuple[Any, Any, float]], key_fn: Any, size: float) -> dict[Any, int]:
    counts = Counter(
        (key_fn(v), math.floor(t / size) * size, math.floor(t / size) * size + size)
        for _, v, t in records
    )
    return dict(counts)


IN_ORDER = [(f"user-{i % 101}", i, i * 0.75) for i in range(20_000)]
"""20,000 records, timestamps in order (15,000 s, 50 windows of 300 s), over 4 partitions."""


def test_in_order_records_after_a_key_by_are_never_late() -> None:
    spec = fg.Tumbling(300, grace=30, retention=KEEP)
    stats, windows, _ = run_prewritten(keyed_count(4, spec, by_seven), "events", IN_ORDER, "counts")
    assert stats.events == 20_000
    assert stats.late == 0
    assert windows == brute_force(IN_ORDER, by_seven, 300)


def test_a_skew_longer_than_the_grace_can_make_records_late() -> None:
    """The trade-off of `max_skew`: a run may then pass a window's end plus grace."""
    spec = fg.Tumbling(300, grace=30, retention=KEEP)
    graph = keyed_count(4, spec, by_seven)
    stats, *_ = run_prewritten(graph, "events", IN_ORDER, "counts", max_skew=math.inf)
    assert stats.late > 0


def test_fg_run_orders_a_bounded_source_by_its_extracted_timestamps() -> None:
    g = fg.Graph("sched_run")
    items = g.source_from(range(20_000), name="items", partitions=4, timestamp=lambda i: i * 0.75)
    spec = fg.Tumbling(300, grace=30, retention=KEEP)
    items.key_by(by_seven, name="rekey").window(spec).count(name="counts")
    result = fg.run(g, max_batch=500)
    assert result.stats.late == 0
    windows = {window_tuple(wk): v for wk, v in result.table("counts").windows().items()}
    assert windows == brute_force([(None, i, i * 0.75) for i in range(20_000)], by_seven, 300)


KEY_FNS = {
    "mod3": lambda v: f"k{v % 3}",
    "mod7": by_seven,
    "one": lambda v: "only",
    "value": str,
}


@st.composite
def in_order_inputs(draw: Any) -> list[tuple[str, int, float]]:
    """Records with non-decreasing timestamps (ties included), keys spread over partitions."""
    steps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 3.0]), max_size=300))
    t, out = 0.0, []
    for i, step in enumerate(steps):
        t += step
        out.append((f"s{draw(st.integers(0, 30))}", i, t))
    return out


@settings(max_examples=40, deadline=None)
@given(
    records=in_order_inputs(),
    partitions=st.integers(1, 6),
    key=st.sampled_from(sorted(KEY_FNS)),
    size=st.sampled_from([1.0, 2.5, 10.0]),
    max_batch=st.integers(1, 40),
)
def test_in_order_input_with_no_grace_is_never_late(
    records: list[tuple[str, int, float]], partitions: int, key: str, size: float, max_batch: int
) -> None:
    key_fn = KEY_FNS[key]
    spec = fg.Tumbling(size, retention=KEEP)
    graph = keyed_count(partitions, spec, key_fn)
    stats, windows, _ = run_prewritten(graph, "events", records, "counts", max_batch=max_batch)
    oracle = Oracle(spec, AGGREGATIONS["count"])
    for _, v, t in records:
        oracle.send(key_fn(v), t, v)
    assert stats.late == 0
    assert windows == oracle.held


# -- async steps before a key_by ----------------------------------------------------------


async def plus_one(v: int) -> int:
    return v + 1


async def mod_five(v: int) -> int:
    return v % 5


async def slow_mod_five(v: int) -> int:
    await asyncio.sleep(0.001)  # a real await: the call outlives the run that started it
    return v % 5


@pytest.mark.parametrize("max_batch", [1, 3, 1000])
def test_async_steps_before_a_key_by_write_in_timestamp_order(max_batch: int) -> None:
    """Two chained async steps on two partitions, then a key_by into 1-second windows: the
    record at 2 s (partition 0) must reach the window before the one at 3 s (partition 1),
    though partition 1's calls finish while partition 0's are still in flight."""
    g = fg.Graph("eq")
    src = g.source("src0", key_type=int, value_type=int, partitions=2)
    rekeyed = src.peek(plus_one, name="peek1").key_by(mod_five, name="key_by2")
    rekeyed.window(fg.Hopping(1, 1, retention=KEEP)).count(name="agg5")
    records = [(0, 0, 1.0), (4, 0, 2.0), (0, 0, 3.0)]
    assert partition_for(b"0", 2) != partition_for(b"4", 2)  # keys 0 and 4 on both partitions
    stats, windows, _ = run_prewritten(g, "src0", records, "agg5", max_batch=max_batch)
    assert stats.late == 0
    assert windows == {(0, 1.0, 2.0): 1, (0, 2.0, 3.0): 1, (0, 3.0, 4.0): 1}


@pytest.mark.parametrize("max_batch", [1, 7, 1000])
def test_slow_async_key_by_over_partitions_is_never_late(max_batch: int) -> None:
    """Calls that wait on I/O finish after their run has ended, on every partition."""
    g = fg.Graph("eq")
    src = g.source("src0", key_type=int, value_type=int, partitions=3)
    src.key_by(slow_mod_five, name="rekey").window(fg.Tumbling(2, retention=KEEP)).count(
        name="counts"
    )
    records = [(i % 11, i, float(i)) for i in range(60)]
    stats, windows, _ = run_prewritten(g, "src0", records, "counts", max_batch=max_batch)
    assert stats.late == 0
    assert windows == brute_force(records, lambda v: v % 5, 2)


async def uneven_plus_one(v: int) -> int:
    await asyncio.sleep((v * 7 % 5) * 0.001)  # calls finish out of their order
    return v + 1


async def uneven_mod_five(v: int) -> int:
    await asyncio.sleep((v * 3 % 4) * 0.001)
    return v % 5


def test_async_calls_overlap_across_partitions_and_leave_in_timestamp_order() -> None:
    """Partitions run in timestamp order, one record per run, yet the calls of all of them
    overlap: their results leave in the order the partitions ran, not when they finish."""
    g = fg.Graph("eq")
    src = g.source("src0", key_type=int, value_type=int, partitions=4)
    rekeyed = src.map(uneven_plus_one, name="plus").key_by(uneven_mod_five, name="rekey")
    rekeyed.window(fg.Tumbling(1, retention=KEEP)).count(name="counts")
    records = [(i % 13, i, i * 0.5) for i in range(200)]
    serial = sum((v * 7 % 5 + (v + 1) * 3 % 4) * 0.001 for _, v, _ in records)
    started = time.monotonic()
    stats, windows, _ = run_prewritten(g, "src0", records, "counts")
    elapsed = time.monotonic() - started
    assert stats.late == 0
    assert windows == brute_force([(k, v + 1, t) for k, v, t in records], lambda v: v % 5, 1)
    assert elapsed < serial / 2, (elapsed, serial)  # one call at a time would take `serial`


def test_a_crash_with_calls_in_flight_across_partitions_replays_exactly() -> None:
    """Killed mid-run (some commits done, calls of several partitions in flight), then run
    again: the replay writes nothing twice to the repartition topic, so every window counts
    each record once, and none is late."""
    g = fg.Graph("eq")
    src = g.source("src0", key_type=int, value_type=int, partitions=3)
    rekeyed = src.map(uneven_plus_one, name="plus").key_by(uneven_mod_five, name="rekey")
    rekeyed.window(fg.Tumbling(1, retention=KEEP)).count(name="counts")
    plan = make_plan(g)
    broker = MemoryBroker()
    broker.ensure("src0", 3)
    records = [(i % 13, i, i * 0.5) for i in range(120)]
    kc, vc = topic_codecs(plan, in_process=False)["src0"]
    assert kc is not None and vc is not None
    for k, v, t in records:
        kb = kc.encode(k)
        broker.append("src0", [(partition_for(kb, 3), kb, vc.encode(v), t, None)])
    runs = [0]

    def crash(point: str) -> None:
        if point == "in-batch":
            runs[0] += 1
            if runs[0] == 60:
                raise InjectedCrash("killed with calls in flight")

    async def one(hook: Any) -> tuple[dict[Any, Any], int]:
        worker = Worker(
            plan,
            MemoryTransport(broker, encoded=True),
            open_backend("memory://"),
            max_batch=7,
            commit_every=20,
            crash_point=hook,
        )
        await worker.start()
        await worker.run(until_idle=True, idle_wait=0.0)
        table = worker.table("counts").windows()
        late = worker.stats.late
        await worker.stop()
        return {window_tuple(wk): v for wk, v in table.items()}, late

    with pytest.raises(InjectedCrash):
        asyncio.run(one(crash))
    assert broker.committed.get("eq", {})  # some commits before the crash
    windows, late = asyncio.run(one(None))
    assert late == 0
    assert windows == brute_force([(k, v + 1, t) for k, v, t in records], lambda v: v % 5, 1)


def test_a_rekeyed_stream_merged_with_a_source_meets_it_in_timestamp_order() -> None:
    """`src0` re-keyed (its own sub-topology) merged with `src1` before a window: the record
    at 1 s from `src0` must reach the window before the one at 2 s from `src1`, so the two
    sub-topologies run their sources in timestamp order together."""
    for encoded in (False, True):  # handed straight to the reader, or through the log
        for max_batch in (1, 3, 1000):
            g = fg.Graph("eq")
            src0 = g.source("src0", key_type=int, value_type=int, partitions=1)
            src1 = g.source("src1", key_type=int, value_type=int, partitions=1)
            rekeyed = src0.key_by(lambda v: v % 5, name="rekey")
            rekeyed.window(fg.Tumbling(1, retention=KEEP)).count(name="per_key")
            both = src1.merge(rekeyed, name="both")
            both.window(fg.Tumbling(1, retention=KEEP)).count(name="merged")
            records = [("src0", 0, 0, 1.0), ("src1", 0, 0, 2.0)]
            stats, windows, _ = run_sources(
                g, records, "merged", encoded=encoded, max_batch=max_batch
            )
            assert stats.late == 0, (encoded, max_batch)
            assert windows == {(0, 1.0, 2.0): 1, (0, 2.0, 3.0): 1}, (encoded, max_batch)


def test_two_rekeyed_sources_merged_before_a_window_are_never_late() -> None:
    """Two sources re-keyed apart and merged: their records meet in one repartition reader."""
    g = fg.Graph("eq")
    a = g.source("a", key_type=int, value_type=int, partitions=3)
    b = g.source("b", key_type=int, value_type=int, partitions=2)
    ka = a.key_by(lambda v: v % 4, name="ka")
    kb = b.key_by(lambda v: v % 4, name="kb")
    ka.window(fg.Tumbling(2, retention=KEEP)).count(name="per_a")
    kb.window(fg.Tumbling(2, retention=KEEP)).count(name="per_b")
    ka.merge(kb, name="both").window(fg.Tumbling(2, retention=KEEP)).count(name="merged")
    records = [("a" if i % 3 else "b", i % 7, i, float(i)) for i in range(60)]
    stats, windows, _ = run_sources(g, records, "merged", max_batch=4)
    assert stats.late == 0
    assert windows == brute_force([(k, v, t) for _, k, v, t in records], lambda v: v % 4, 2)


# -- the source timestamp= extractor -------------------------------------------------------


def event_time(reading: dict[str, Any]) -> Any:
    return reading["ts"]


def stamped_graph() -> fg.Graph:
    g = fg.Graph("stamped")
    src = g.source("readings", key_type=str, value_type="auto", timestamp=event_time)
    src.to("copies")
    src.key_by(lambda r: r["zone"], name="rekey").window(fg.Tumbling(10, retention=KEEP)).count(
        name="counts"
    )
    return g


def test_the_extracted_timestamp_places_windows_and_stamps_written_records() -> None:
    base = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    records = [
        ("a", {"zone": "z1", "ts": 5.0}, 999_999.0),
        ("b", {"zone": "z1", "ts": 12}, 0.0),
        ("c", {"zone": "z2", "ts": base}, 0.0),
    ]
    stats, windows, transport = run_prewritten(stamped_graph(), "readings", records, "counts")
    start = base.timestamp()
    assert windows == {("z1", 0.0, 10.0): 1, ("z1", 10.0, 20.0): 1, ("z2", start, start + 10): 1}
    assert sorted(m[2] for m in transport.broker.records("copies")) == [5.0, 12.0, start]
    assert stats.dead_letters == 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"zone": "z1"}, "raised KeyError('ts')"),
        ({"zone": "z1", "ts": "noon"}, "returned 'noon' (str)"),
        ({"zone": "z1", "ts": math.nan}, "returned nan (float)"),
        ({"zone": "z1", "ts": -1}, "returned -1 (int)"),
        ({"zone": "z1", "ts": True}, "returned True (bool)"),
    ],
)
def test_a_record_with_no_usable_timestamp_goes_to_the_dead_letter_topic(
    value: dict[str, Any], why: str
) -> None:
    records = [("a", {"zone": "z1", "ts": 1.0}, 0.0), ("b", value, 0.0), ("c", value, 0.0)]
    records.append(("d", {"zone": "z1", "ts": 2.0}, 0.0))
    graph = stamped_graph()
    stats, windows, transport = run_prewritten(graph, "readings", records, "counts")
    assert windows == {("z1", 0.0, 10.0): 2}
    assert stats.dead_letters == 2
    letters = transport.broker.records(make_plan(graph).dlq)
    assert len(letters) == 2
    headers = dict(letters[0][4])
    message = headers["error.message"].decode()
    where = f"{__name__}.event_time line {event_time.__code__.co_firstlineno}"
    assert message == (
        f"source 'readings' timestamp= {where} "
        f"{why}; an event time must be seconds since the epoch (a finite int or float, not "
        "negative) or a datetime; fix the function or the record"
    )
    assert headers["error.step"] == b"readings"
    assert letters[0][1] is not None  # the value as it was read, not re-encoded


def test_dead_letters_that_end_a_partition_are_committed() -> None:
    """A bad record last in its partition is not read (and dead-lettered) again."""
    graph = stamped_graph()
    records = [("a", {"zone": "z1", "ts": 1.0}, 0.0), ("b", {"zone": "z1"}, 0.0)]
    _, _, transport = run_prewritten(graph, "readings", records, "counts")
    committed = transport.broker.committed["stamped"]
    parts = {tp: o for tp, o in committed.items() if tp[0] == "readings"}
    assert sum(parts.values()) == 2


# -- what is buffered is neither processed nor committed -----------------------------------


def test_max_events_leaves_buffered_records_to_the_next_run() -> None:
    """A run stopped by `max_events` commits only what it processed; the next run reads the
    rest (fetched and buffered by the first, not processed) and the counts come out exact."""
    spec = fg.Tumbling(300, grace=30, retention=KEEP)
    graph = keyed_count(4, spec, by_seven)
    plan = make_plan(graph)
    broker = MemoryBroker()
    records = IN_ORDER[:4_000]

    async def run(max_events: int | None) -> tuple[fg.RunStats, dict[Any, Any]]:
        transport = MemoryTransport(broker)
        worker = Worker(plan, transport, open_backend("memory://"), max_batch=300)
        await transport.create_topics(plan.topics)
        if max_events is not None:  # the first run writes the input
            kc, vc = worker.codecs["events"]
            assert kc is not None and vc is not None
            transport.broker.append(
                "events",
                [
                    (partition_for(kc.encode(k), 4), kc.encode(k), vc.encode(v), t, None)
                    for k, v, t in records
                ],
            )
        await worker.start()
        try:
            stats = await worker.run(until_idle=True, idle_wait=0.0, max_events=max_events)
            windows = {window_tuple(wk): v for wk, v in worker.table("counts").windows().items()}
        finally:
            await worker.stop()
        return stats, windows

    first, _ = asyncio.run(run(1_234))
    assert first.events == 1_234
    committed = broker.committed["sched"]
    assert sum(o for (t, _), o in committed.items() if t == "events") == 1_234
    second, windows = asyncio.run(run(None))
    assert second.events == len(records) - 1_234
    assert first.late == second.late == 0
    # the second run restored the first one's windows from the changelogs: nothing is
    # missing (records buffered by the first run) and nothing counted twice
    assert windows == brute_force(records, by_seven, 300)


def test_revoked_partitions_drop_their_buffers() -> None:
    spec = fg.Tumbling(300, grace=30, retention=KEEP)
    plan = make_plan(keyed_count(4, spec, by_seven))
    transport = MemoryTransport()

    async def main() -> None:
        worker = Worker(plan, transport, open_backend("memory://"), max_batch=100)
        await transport.create_topics(plan.topics)
        kc, vc = worker.codecs["events"]
        assert kc is not None and vc is not None
        transport.broker.append(
            "events",
            [
                (partition_for(kc.encode(k), 4), kc.encode(k), vc.encode(v), t, None)
                for k, v, t in IN_ORDER[:2_000]
            ],
        )
        await worker.start()
        await worker.step(budget=10)  # fetches 100 per partition, runs 10
        held = [tp for tp in worker.tasks if worker.schedule.held(tp)]
        assert held
        await worker._on_revoked(frozenset(held))
        assert not any(worker.schedule.held(tp) for tp in held)
        committed = transport.broker.committed["sched"]
        assert sum(committed.get(tp, 0) for tp in held) <= 10  # what ran, nothing buffered
        await worker.stop()

    asyncio.run(main())


def test_scheduling_settings_out_of_range_are_one_sentence() -> None:
    plan = make_plan(keyed_count(2, fg.Tumbling(10), by_seven))
    with pytest.raises(fg.ConfigurationError, match="max_skew must be a number of seconds >= 0"):
        Worker(plan, MemoryTransport(), open_backend("memory://"), max_skew=-1)
    with pytest.raises(fg.ConfigurationError, match="max_batch must be a positive int"):
        Worker(plan, MemoryTransport(), open_backend("memory://"), max_batch=0)
    with pytest.raises(fg.ConfigurationError, match="max_idle must be"):
        fg.run(keyed_count(2, fg.Tumbling(10), by_seven), max_idle=math.nan)
