"""Windowed aggregations through `TestDriver` against a brute-force oracle.

The oracle (tests/window_oracle.py) follows the "Rules" section of docs/concepts/windows.md
literally. Inputs are one partition of records ``(key, time, value)`` with times on a
half-second grid in [0, 200], some out of order within grace and some beyond it; values are the
arrival index + 1, so an order-sensitive aggregate shows the folding order.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver
from planner import plan as make_plan
from tests.window_oracle import AGGREGATIONS, Oracle, Win, append, reduce_fn, window_tuple

KEYS = ("a", "b", "c")
KINDS = ("tumbling", "hopping", "sliding")
FAR_FUTURE = 10_000.0

Event = tuple[str, float, int]

# -- strategies --------------------------------------------------------------------------------

durations = st.sampled_from([0.5, 1.0, 2.0, 2.5, 5.0, 10.0])
graces = st.sampled_from([0.0, 0.5, 2.0, 5.0])
retentions = st.sampled_from([0.0, 1.0, 5.0, 50.0])


@st.composite
def window_specs(draw: Any, kind: str, emit: str) -> Any:
    """A spec of `kind`; hopping sizes are a multiple of the step about half the time."""
    common = {"grace": draw(graces), "retention": draw(retentions), "emit": emit}
    if kind == "tumbling":
        return fg.Tumbling(draw(durations), **common)
    if kind == "hopping":
        step = draw(st.sampled_from([0.5, 1.0, 1.5, 2.5]))
        extra = draw(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0]))
        return fg.Hopping(draw(st.integers(1, 4)) * step + extra, step, **common)
    return fg.Sliding(draw(durations), **common)


def _to_events(steps: list[tuple[str, float, float]]) -> list[Event]:
    clock, out = 0.0, []
    for i, (key, advance, lag) in enumerate(steps):
        clock = min(200.0, clock + advance)
        out.append((key, max(0.0, clock - lag), i + 1))
    return out


# A clock that moves forward by 0..5 s per record; a record lags it by 0..15 s now and then.
events = st.lists(
    st.tuples(
        st.sampled_from(KEYS),
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 5.0]),
        st.one_of(st.just(0.0), st.integers(0, 30).map(lambda n: n / 2)),
    ),
    max_size=40,
).map(_to_events)


# -- building ----------------------------------------------------------------------------------


def make_table(windowed: Any, agg: str, name: str = "agg", *, session: bool = False) -> Any:
    if agg == "count":
        return windowed.count(name=name)
    if agg == "sum":
        return windowed.sum(name=name)
    if agg == "reduce":
        return windowed.reduce(reduce_fn, name=name)
    if session:  # two sessions' tuples merge in start order, as the oracle's `merge` does
        return windowed.aggregate((), append, merge=lambda a, b: a + b, name=name)
    return windowed.aggregate((), append, name=name)


def build(spec: Any, agg: str) -> tuple[fg.Graph, list[Any], list[Any]]:
    """A graph windowing source ``events``; its changes() and late() go to the lists returned."""
    g = fg.Graph("win")
    src = g.source("events", key_type=str, value_type=int)
    table = make_table(src.window(spec), agg, session=isinstance(spec, fg.Session))
    changes: list[Any] = []
    late: list[Any] = []
    table.changes().to(lambda k, v: changes.append((k, v)), name="changes-out")
    table.late().to(lambda k, v: late.append((k, v)), name="late-out")
    return g, changes, late


def held(driver: TestDriver, name: str = "agg") -> dict[Win, Any]:
    view: Any = driver.table(name)
    return {window_tuple(w): v for w, v in view.windows().items()}


def by_window(pairs: list[tuple[Win, Any]]) -> list[tuple[Win, Any]]:
    return sorted(pairs, key=lambda p: (p[0][1], p[0][2], p[0][0]))


@attrs.define
class Run:
    """What `run_against_oracle` leaves: the oracle, the open driver, and its two outputs."""

    oracle: Oracle
    driver: TestDriver
    changes: list[tuple[Win, Any]]
    late: list[tuple[Any, Any]]


def run_against_oracle(spec: Any, agg: str, evs: list[Event]) -> Run:
    """Send `evs` one by one; after each, changes() and the held windows must match the oracle.

    At the end late() and the late counter must match too. The driver is left open.
    """
    oracle = Oracle(spec, AGGREGATIONS[agg])
    g, changes, late = build(spec, agg)
    driver = TestDriver(g)
    try:
        for i, (key, t, v) in enumerate(evs):
            seen = len(changes)
            driver.send("events", key, v, timestamp=t)
            expected = oracle.send(key, t, v)
            got = [(window_tuple(w), value) for w, value in changes[seen:]]
            if spec.emit == "close":  # the contract orders no windows closed by one record
                got = by_window(got)
            assert got == expected, f"changes() after send #{i} {(key, t, v)}"
            assert held(driver) == oracle.held, f"windows() after send #{i} {(key, t, v)}"
        assert late == oracle.late
        assert driver._worker.stats.late == len(oracle.late)
        view: Any = driver.table("agg")
        assert view.late == len(oracle.late)
        if evs:
            assert view.stream_time == oracle.stream_time
    except BaseException:
        driver.close()
        raise
    return Run(oracle, driver, [(window_tuple(w), v) for w, v in changes], late)


# -- 2. every kind, every aggregation, against the oracle -----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_matches_oracle(kind: str, data: st.DataObject) -> None:
    spec = data.draw(window_specs(kind, data.draw(st.sampled_from(["update", "close"]))))
    agg = data.draw(st.sampled_from(sorted(AGGREGATIONS)))
    evs = data.draw(events)
    run = run_against_oracle(spec, agg, evs)
    with run.driver as driver:
        if kind == "sliding" or not evs:
            return
        # Queries: range() is held windows by start; current() is the window at stream time.
        view: Any = driver.table("agg")
        initial = AGGREGATIONS[agg].initial
        step = getattr(spec, "step", spec.size)
        start = math.floor(run.oracle.stream_time / step) * step
        for key in KEYS:
            mine = sorted((w, v) for w, v in run.oracle.held.items() if w[0] == key)
            lo, hi = 10.0, 60.0
            got = [(window_tuple(w), v) for w, v in view.range(key, lo, hi)]
            assert got == [(w, v) for w, v in mine if lo <= w[1] <= hi]
            latest = (key, start, start + spec.size)
            assert view[key].current() == run.oracle.held.get(latest, initial)
            assert view[key].value() == view[key].current()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_sessions_match_oracle(data: st.DataObject) -> None:
    """Out of order, late and bridging records, record by record: both session paths (a record
    in or after its key's latest session, and one before it, which may merge) and what the
    key's sessions are at the end."""
    spec = fg.Session(
        data.draw(durations),
        grace=data.draw(st.sampled_from([0.0, 0.5, 2.0, 5.0, 20.0])),
        retention=data.draw(retentions),
        emit=data.draw(st.sampled_from(["update", "close"])),
    )
    agg = data.draw(st.sampled_from(sorted(AGGREGATIONS)))
    run = run_against_oracle(spec, agg, data.draw(events))
    with run.driver as driver:
        view: Any = driver.table("agg")
        for key in KEYS:
            want = sorted((w for w in run.oracle.held if w[0] == key), key=lambda w: w[1])
            assert [window_tuple(w) for w, _ in view.sessions(key)] == want


def test_session_oracle_sees_both_paths_and_merges() -> None:
    """A fixed run through both paths: extend, in place, a new session, a bridge, late."""
    spec = fg.Session(5.0, grace=10.0, emit="update")
    evs = [("a", 0.0, 1), ("a", 3.0, 2), ("a", 2.0, 3), ("a", 20.0, 4), ("a", 12.0, 5)]
    evs += [("a", 16.0, 6), ("a", 1.0, 7)]  # 16 bridges [12, 17) and [20, 25); 1 is late
    run = run_against_oracle(spec, "append", evs)
    with run.driver:
        assert run.changes[-3:] == [
            (("a", 12.0, 17.0), None),
            (("a", 20.0, 25.0), None),
            (("a", 12.0, 25.0), (5, 4, 6)),
        ]
        assert run.late == [("a", 7)]
        assert run.oracle.held == {("a", 0.0, 8.0): (1, 2, 3), ("a", 12.0, 25.0): (5, 4, 6)}


# -- 3. emit="close": once per window, final value, only once closed -----------------------------


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_close_emits_each_window_once_with_its_final_value(kind: str, data: st.DataObject) -> None:
    """Checked against an emit="update" twin of the same window, without the oracle."""
    upd_spec = data.draw(window_specs(kind, "update"))
    close_spec = type(upd_spec)(**{**_fields(upd_spec), "emit": "close"})
    evs = [*data.draw(events), ("z", FAR_FUTURE, 0)]
    g = fg.Graph("win")
    src = g.source("events", key_type=str, value_type=int)
    upd: list[tuple[int, Win, Any]] = []
    closed: list[tuple[int, Win, Any]] = []
    i = 0
    make_table(src.window(upd_spec), "append", "upd").changes().to(
        lambda k, v: upd.append((i, window_tuple(k), v)), name="upd-out"
    )
    make_table(src.window(close_spec), "append", "cls").changes().to(
        lambda k, v: closed.append((i, window_tuple(k), v)), name="cls-out"
    )
    stream_times: list[float] = []
    with TestDriver(g) as driver:
        for i, (key, t, v) in enumerate(evs):  # noqa: B007 - the sinks read i
            driver.send("events", key, v, timestamp=t)
            stream_times.append(max([t, *stream_times[-1:]]))
            assert held(driver, "cls") == held(driver, "upd")
        # Emit mode changes nothing about lateness; RunStats.late sums over the two tables.
        upd_view: Any = driver.table("upd")
        cls_view: Any = driver.table("cls")
        assert cls_view.late == upd_view.late
        assert driver._worker.stats.late == upd_view.late + cls_view.late
    grace: float = upd_spec.grace
    emitted = [w for _, w, _ in closed]
    assert len(emitted) == len(set(emitted)), "a window was emitted twice"
    final = {w: v for _, w, v in upd}

    def is_closed(stream_time: float, w: Win) -> bool:  # sliding windows include their end
        if kind == "sliding":
            return stream_time > w[2] + grace
        return stream_time >= w[2] + grace

    for at, w, value in closed:
        assert is_closed(stream_times[at], w), f"{w} emitted before it closed"
        assert at == 0 or not is_closed(stream_times[at - 1], w), f"{w} emitted late"
        assert value == final[w]
    assert set(emitted) == {w for w in final if is_closed(stream_times[-1], w)}
    # Before the far-future record nothing of its key existed; every earlier window is out now.
    assert {w for w in final if w[0] != "z"} <= set(emitted)
    assert all(w[0] != "z" for w in emitted)


def _fields(spec: Any) -> dict[str, Any]:
    names = ["size", "step", "grace", "retention", "emit", "idle_timeout"]
    return {n: getattr(spec, n) for n in names if hasattr(spec, n)}


# -- 5. sliding edge cases -------------------------------------------------------------------------


def _sliding_run(spec: Any, evs: list[Event]) -> Run:
    """Run `evs` through a sliding count, checked against the oracle on every step."""
    run = run_against_oracle(spec, "count", evs)
    run.driver.close()
    return run


def test_sliding_window_includes_both_ends() -> None:
    spec = fg.Sliding(5, grace=10, retention=100)
    run = _sliding_run(spec, [("a", 9.5, 1), ("a", 10.0, 2), ("a", 15.0, 3)])
    assert run.oracle.held == {("a", 4.5, 9.5): 1, ("a", 5.0, 10.0): 2, ("a", 10.0, 15.0): 2}


def test_sliding_equal_times_share_one_window() -> None:
    spec = fg.Sliding(5, grace=1)
    run = _sliding_run(spec, [("a", 10.0, 1), ("a", 10.0, 2), ("b", 10.0, 3)])
    assert run.oracle.held == {("a", 5.0, 10.0): 2, ("b", 5.0, 10.0): 1}
    assert run.changes == [(("a", 5.0, 10.0), 1), (("a", 5.0, 10.0), 2), (("b", 5.0, 10.0), 1)]


def test_sliding_late_record_counts_in_an_open_later_window() -> None:
    spec = fg.Sliding(10, grace=2)
    # 9.5's own window closed (stream time 12 > 9.5 + 2); [2, 12] is open and holds it.
    evs = [("a", 5.0, 1), ("a", 12.0, 2), ("a", 9.5, 3)]
    g, changes, late = build(spec, "append")
    with TestDriver(g) as driver:
        for key, t, v in evs:
            driver.send("events", key, v, timestamp=t)
        assert held(driver) == {("a", 2.0, 12.0): (1, 2, 3)}
        assert late == [("a", 3)]
        assert driver._worker.stats.late == 1
    assert [(window_tuple(w), v) for w, v in changes][-1] == (("a", 2.0, 12.0), (1, 2, 3))


def test_sliding_window_made_later_covers_late_records() -> None:
    """A window made after a late record arrived still covers it (if in range)."""
    spec = fg.Sliding(10, grace=2)
    evs = [("a", 12.0, 1), ("a", 8.0, 2), ("a", 11.0, 3)]  # 8 is late; 11's window [1, 11]
    run = _sliding_run(spec, evs)
    assert run.oracle.held == {("a", 1.0, 11.0): 2, ("a", 2.0, 12.0): 3}
    assert run.late == [("a", 2)]


# -- plain checks of the contract's wiring ------------------------------------------------------


def test_changes_to_a_topic_are_keyed_by_window_key() -> None:
    g = fg.Graph("win")
    src = g.source("events", key_type=str, value_type=int)
    table = src.window(fg.Tumbling(10, grace=5)).count(name="per_10s")
    table.changes().to("per-10s")
    table.late().to("late")
    with TestDriver(g) as driver:
        for t, v in [(1.0, 1), (12.0, 2), (3.0, 3), (19.0, 4), (4.0, 5)]:
            driver.send("events", "k", v, timestamp=t)
        out = driver.output("per-10s")
        assert all(isinstance(k, fg.WindowKey) for k, _ in out)
        first = fg.WindowKey(key="k", start=0.0, end=10.0)
        second = fg.WindowKey(key="k", start=10.0, end=20.0)
        assert out == [(first, 1), (second, 1), (first, 2), (second, 2)]
        assert driver.output("late") == [("k", 5)]  # 19 >= 10 + 5: window [0, 10) closed


def test_bad_timestamps_go_to_dead_letters() -> None:
    g = fg.Graph("win")
    src = g.source("events", key_type=str, value_type=int)

    def ts(v: int) -> Any:
        if v == 2:
            raise ValueError("no time")
        return {3: -1.0, 4: "soon"}.get(v, float(v))

    src.window(fg.Tumbling(10), timestamp=ts).count(name="agg")
    with TestDriver(g) as driver:
        for v in [1, 2, 3, 4, 5]:
            driver.send("events", "k", v)
        assert held(driver) == {("k", 0.0, 10.0): 2}
        assert len(driver.dead_letters()) == 3


# -- 4. the store stays bounded (slow) -----------------------------------------------------------

N_EVENTS = 1_000_000
N_KEYS = 100
SIZE, GRACE, RETENTION = 10.0, 5.0, 20.0


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_window_store_stays_bounded(store: str, tmp_path: Any) -> None:
    """1M in-order events over 10,000 tumbling windows x 100 keys: old windows are deleted.

    Without deletion the store would end with 1M windows; with it, each key holds only the
    windows whose end + grace + retention is still ahead of stream time.
    """
    g = fg.Graph("bounded")
    # i / 10 is exact at every multiple of 10, so each key has one event per window.
    src = g.source_from(((i % N_KEYS, i / 10) for i in range(N_EVENTS)), name="events")
    spec = fg.Tumbling(SIZE, grace=GRACE, retention=RETENTION)
    table = (
        src.key_by(lambda e: e[0], name="by_key")
        .window(spec, timestamp=lambda e: e[1])
        .count(name="per_10s")
    )
    backend = open_backend("memory://" if store == "memory" else f"rocksdb://{tmp_path}")
    # Live windows end in (stream time - grace - retention, stream time + size]: at most this
    # many per key.
    alive = math.ceil((GRACE + RETENTION) / SIZE) + 1
    bound = N_KEYS * alive + 16  # a few per-partition bookkeeping keys allowed

    async def main() -> tuple[Worker, list[int], list[int]]:
        worker = Worker(make_plan(g), MemoryTransport(), backend, commit_every=20_000)
        await worker.start()
        store_keys, windows = [], []
        steps = 0
        try:
            while await worker.step():
                steps += 1
                if steps % 25 == 0:
                    await worker.commit()
                    store_keys.append(
                        sum(len(s) for (name, _), s in worker.stores.items() if name == table.store)
                    )
                    windows.append(len(worker.table("per_10s").windows()))
            await worker.commit()
            final: Any = worker.table("per_10s")
            assert set(final.windows().values()) == {1}
            windows.append(len(final.windows()))
        finally:
            await worker.stop()
        return worker, store_keys, windows

    worker, store_keys, windows = asyncio.run(main())
    assert worker.stats.events == N_EVENTS
    assert worker.stats.late == 0
    assert len(store_keys) >= 10, "too few samples to say anything"
    assert max(store_keys) <= bound, store_keys
    assert max(windows) <= N_KEYS * alive, windows
    assert min(windows[len(windows) // 2 :]) >= N_KEYS  # windows are really being kept
