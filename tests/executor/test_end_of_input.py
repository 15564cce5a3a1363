"""End of input: a bounded run closes every open window, and each is emitted once, final.

Checked against the brute-force oracle (tests/window_oracle.py), which, given a retention
longer than any input, holds every window a run makes with its final value: through
`TestDriver.end_of_input` on one partition, with records out of order and late, and through
`fg.run` over `source_from` on several partitions. Closing is exactly-once like any emit: a
crash at any point of the commit that follows it neither loses nor repeats a window.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import POINTS, InjectedCrash
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.memory import MemoryBackend
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver
from tests.executor.test_windows_oracle import (
    KINDS,
    build,
    events,
    held,
    make_table,
    window_specs,
)
from tests.window_oracle import AGGREGATIONS, Oracle, Win, window_tuple

FOREVER = 1e9
"""A retention no test input outlives: the oracle then keeps every window it made."""


def every_window(spec: Any, agg: str, evs: list[tuple[str, float, int]]) -> dict[Win, Any]:
    """Every window `evs` make, with its final value (the oracle, retention forever)."""
    fields = {n: getattr(spec, n) for n in ("size", "step", "grace") if hasattr(spec, n)}
    oracle = Oracle(type(spec)(**fields, retention=FOREVER), AGGREGATIONS[agg])
    for key, t, v in evs:
        oracle.send(key, t, v)
    return oracle.held


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("emit", ["update", "close"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_end_of_input_emits_every_window_final_once(
    kind: str, emit: str, data: st.DataObject
) -> None:
    spec = data.draw(window_specs(kind, emit))
    agg = data.draw(st.sampled_from(sorted(AGGREGATIONS)))
    evs = data.draw(events)
    oracle = Oracle(spec, AGGREGATIONS[agg])
    g, changes, late = build(spec, agg)
    with TestDriver(g) as driver:
        for key, t, v in evs:
            driver.send("events", key, v, timestamp=t)
            oracle.send(key, t, v)
        before = len(changes)
        driver.end_of_input()
        final = every_window(spec, agg, evs)
        out = [(window_tuple(w), v) for w, v in changes]
        if emit == "close":
            windows = [w for w, _ in out]
            assert len(windows) == len(set(windows)), "a window was emitted twice"
            assert dict(out) == final
        else:  # every change was emitted already; the last one is the final value
            assert len(changes) == before
            assert dict(out) == final
        # Closing deletes nothing: the table holds what it held, for queries.
        assert held(driver) == oracle.held
        assert late == oracle.late
        driver.end_of_input()  # nothing is open any more
        assert len(changes) == len(out)
        if evs:  # a record for a closed window is late, in every emit mode
            key, t, v = evs[-1]
            driver.send("events", key, v, timestamp=t)
            assert len(late) == len(oracle.late) + 1
            assert len(changes) == len(out)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("emit", ["update", "close"])
def test_fg_run_over_source_from_closes_every_window(kind: str, emit: str) -> None:
    """Several partitions behind a key_by; the default for source_from closes at the end."""
    spec = {
        "tumbling": fg.Tumbling(10, grace=2, emit=emit),
        "hopping": fg.Hopping(10, 4, grace=1, emit=emit),
        "sliding": fg.Sliding(6, grace=1, emit=emit),
    }[kind]
    # distinct, increasing times: every key sees its records in time order, none is late
    evs = [(f"k{i % 5}", i * 0.7 + (i % 3) * 0.01, i + 1) for i in range(300)]
    expected = {agg: every_window(spec, agg, evs) for agg in ("count", "append")}

    def run(end_of_input: bool | None) -> dict[str, list[tuple[Win, Any]]]:
        g = fg.Graph(f"eoi-{kind}-{emit}")
        src = g.source_from(evs, name="events", partitions=3, timestamp=lambda e: e[1])
        keyed = src.key_by(lambda e: e[0], name="by_key").map(lambda e: e[2], name="value")
        out: dict[str, list[tuple[Win, Any]]] = {"count": [], "append": []}
        for agg, got in out.items():
            table = make_table(keyed.window(spec), agg, name=agg)
            table.changes().to(
                lambda k, v, got=got: got.append((window_tuple(k), v)), name=f"{agg}-out"
            )
        result = fg.run(g, end_of_input=end_of_input, max_batch=37)
        assert result.stats.late == 0
        return out

    closed = run(None)
    for agg, out in closed.items():
        assert dict(out) == expected[agg], agg
        if emit == "close":
            assert len(out) == len(expected[agg]), "a window was emitted twice"
    # Off: today's run, where only windows that stream time closed are emitted.
    left_open = run(False)
    for agg, out in left_open.items():
        if emit == "update":
            assert out == closed[agg]
        else:
            assert set(out) < set(closed[agg])
            assert all(expected[agg][w] == v for w, v in out)


def test_end_of_input_needs_an_until_idle_run() -> None:
    g = fg.Graph("eoi")
    g.source("events", value_type=int).window(fg.Tumbling(10)).count(name="c")
    with pytest.raises(fg.ConfigurationError, match="until_idle"):
        fg.run(g, until_idle=False, end_of_input=True, max_events=1)


def test_a_topic_source_keeps_its_windows_open_by_default() -> None:
    g = fg.Graph("eoi_topic")
    spec = fg.Tumbling(10, emit="close")
    closed: list[Any] = []
    src = g.source("more", key_type=str, value_type=int)
    src.window(spec).count(name="c").changes().to(lambda k, v: closed.append(k), name="out")

    def feed(worker: Worker) -> None:
        broker = worker.transport.broker  # type: ignore[attr-defined]
        broker.append("more", [(0, b"a", b"1", 3.0, None)])

    fg.run(g, on_start=feed)
    assert closed == []
    fg.run(g, on_start=feed, end_of_input=True)
    assert [window_tuple(w) for w in closed] == [("a", 0.0, 10.0)]


# -- exactly once ---------------------------------------------------------------------------


def _graph() -> fg.Graph:
    g = fg.Graph("eoi_crash")
    src = g.source("events", key_type=str, value_type=int, partitions=2)
    table = src.window(fg.Hopping(10, 5, emit="close")).sum(name="sums")
    table.changes().to("sums-out")
    return g


class _Armed:
    """A crash hook that raises at `point` once armed (after the input is processed)."""

    def __init__(self, point: str) -> None:
        self.point = "after-produce" if point == "changelog-lost" else point
        self.armed = False

    def __call__(self, name: str) -> None:
        if self.armed and name == self.point:
            self.armed = False
            msg = f"injected crash at {name}"
            raise InjectedCrash(msg)


@pytest.mark.parametrize(
    "point", [*(p for p in POINTS if p not in ("in-batch", "in-restore")), "changelog-lost"]
)
def test_a_crash_while_closing_neither_loses_nor_repeats_a_window(point: str) -> None:
    """``changelog-lost``: the close's outputs were written but its changelog records were
    not (a crash between the two on Kafka), so the restart closes again and must find, by
    their origins, the windows already written."""
    plan = _graph().plan()
    changelog = plan.store_for("sums").changelog
    broker = MemoryBroker()
    backend = MemoryBackend()
    records = [(f"k{i % 4}", i % 7 + 1, i * 1.5) for i in range(40)]

    async def crashing() -> None:
        hook = _Armed(point)
        worker = Worker(plan, MemoryTransport(broker, encoded=True), backend, crash_point=hook)
        await worker.start()
        kc, vc = worker.codecs["events"]
        assert kc is not None and vc is not None
        broker.append(
            "events",
            [
                (partition_for(kc.encode(k), 2), kc.encode(k), vc.encode(v), t, None)
                for k, v, t in records
            ],
        )
        await worker.run(until_idle=True, idle_wait=0.0)
        logs: Any = broker.logs[changelog]
        kept = [dict(log.latest) for log in logs]
        hook.armed = True
        with pytest.raises(InjectedCrash):
            await worker.run(until_idle=True, idle_wait=0.0, end_of_input=True)
        if point == "changelog-lost":
            for log, latest in zip(logs, kept, strict=True):
                log.latest = latest
        # abandoned: no stop(), no commit, as after kill -9

    async def again() -> Worker:
        worker = Worker(plan, MemoryTransport(broker, encoded=True), backend)
        await worker.start()
        try:
            await worker.run(until_idle=True, idle_wait=0.0, end_of_input=True)
        finally:
            await worker.stop()
        return worker

    asyncio.run(crashing())
    worker = asyncio.run(again())
    kc, vc = worker.codecs["sums-out"]
    assert kc is not None and vc is not None
    out = [(window_tuple(kc.decode(k)), vc.decode(v)) for k, v, *_ in broker.records("sums-out")]
    counts = Counter(w for w, _ in out)
    assert max(counts.values()) == 1, f"emitted twice: {[w for w, n in counts.items() if n > 1]}"
    expected: dict[Win, int] = {}
    for key, v, t in records:
        for s in (t // 5 * 5 - 5, t // 5 * 5):
            if s >= 0 and s <= t < s + 10:
                w = (key, float(s), float(s + 10))
                expected[w] = expected.get(w, 0) + v
    assert dict(out) == expected


def test_what_the_close_emits_reaches_a_table_downstream() -> None:
    """The closed windows feed a plain table behind a repartition (delivered in process):
    it is stored with the close, so the run's result holds it."""
    g = fg.Graph("eoi_downstream")
    src = g.source_from([(f"k{i % 3}", float(i)) for i in range(50)], name="events")
    windows = src.key_by(lambda e: e[0], name="by_key").window(
        fg.Tumbling(10, emit="close"), timestamp=lambda e: e[1]
    )
    closed = windows.count(name="counts").changes().key_by(lambda n: "all", name="everything")
    closed.count(name="windows_closed")
    result = fg.run(g)
    assert result.table("windows_closed") == {"all": 15}  # 5 windows of 3 keys
