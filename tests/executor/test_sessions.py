"""Session windows through `TestDriver` and `Worker`, against sorting each key's records.

With a grace longer than any disorder no record is late, so whatever the arrival order the
sessions held at the end are those that sorting each key's record times and splitting where
neighbours are `gap` or more apart gives (`flowgraph.windows.sessions_of`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.errors import GraphDefinitionError
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.task import ORIGIN, ORIGIN_HEADER
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver
from flowgraph.windows import sessions_of

KEYS = ("a", "b", "c")
GAP = 5.0
Event = tuple[str, float, int]
Held = dict[tuple[Any, float, float], Any]

events = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 60).map(lambda n: n / 2), st.integers(1, 9)),
    min_size=4,
    max_size=40,
)
"""Records in [0, 30] seconds in any order: with a 5 s gap, late records often bridge sessions."""


def brute(evs: list[Event], gap: float, agg: str) -> Held:
    """Sessions of each key by sorting, with the record count or the sum of values."""
    out: Held = {}
    for key in {k for k, _, _ in evs}:
        mine = [(t, v) for k, t, v in evs if k == key]
        for (s, e), _ in sessions_of([t for t, _ in mine], gap):
            inside = [v for t, v in mine if s <= t < e]
            out[(key, s, e)] = len(inside) if agg == "count" else sum(inside)
    return out


def make(src: Any, spec: fg.Session, agg: str, name: str = "agg") -> Any:
    windowed = src.window(spec)
    if agg == "count":
        return windowed.count(name=name)
    if agg == "sum":
        return windowed.sum(name=name)
    if agg == "reduce":
        return windowed.reduce(lambda a, b: a + b, name=name)
    return windowed.aggregate(0, lambda acc, v: acc + v, merge=lambda a, b: a + b, name=name)


def as_held(view: Any) -> Held:
    return {(w.key, w.start, w.end): v for w, v in view.windows().items()}


def replay(changes: list[tuple[Any, Any]]) -> Held:
    """The table the changes() stream describes: a None value is a tombstone."""
    table: Held = {}
    for w, v in changes:
        if v is None:
            del table[(w.key, w.start, w.end)]
        else:
            table[(w.key, w.start, w.end)] = v
    return table


@pytest.mark.parametrize("agg", ["count", "sum", "reduce", "aggregate"])
@settings(max_examples=60, deadline=None)
@given(evs=events)
def test_out_of_order_sessions_match_sorting(agg: str, evs: list[Event]) -> None:
    spec = fg.Session(GAP, grace=1000)
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    table = make(src, spec, agg)
    changes: list[Any] = []
    table.changes().to(lambda k, v: changes.append((k, v)), name="out")
    with TestDriver(g) as driver:
        for key, t, v in evs:
            driver.send("events", key, v, timestamp=t)
        view: Any = driver.table("agg")
        expected = brute(evs, GAP, "count" if agg == "count" else "sum")
        assert as_held(view) == expected
        assert replay(changes) == expected  # merged-away sessions were tombstoned downstream
        for key in KEYS:
            assert [(w.start, w.end) for w, _ in view.sessions(key)] == sorted(
                (s, e) for k, s, e in expected if k == key
            )
        assert view.late == 0


def test_a_bridging_record_retracts_both_sessions_then_emits_the_merge() -> None:
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    table = src.window(fg.Session(10, grace=100)).count(name="n")
    changes: list[Any] = []
    table.changes().to(lambda k, v: changes.append(((k.start, k.end), v)), name="out")
    with TestDriver(g) as driver:
        driver.send("events", "a", 1, timestamp=0.0)
        driver.send("events", "a", 1, timestamp=15.0)
        driver.send("events", "a", 1, timestamp=8.0)
        assert changes == [
            ((0.0, 10.0), 1),
            ((15.0, 25.0), 1),
            ((0.0, 10.0), None),
            ((15.0, 25.0), None),
            ((0.0, 25.0), 3),
        ]
        view: Any = driver.table("n")
        assert view["a"].current() == 3  # stream time 15 is in [0, 25)


def test_emit_close_gives_each_final_session_once_and_late_records_are_counted() -> None:
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    table = src.window(fg.Session(10, grace=2, emit="close")).count(name="n")
    changes: list[Any] = []
    late: list[Any] = []
    table.changes().to(lambda k, v: changes.append(((k.key, k.start, k.end), v)), name="out")
    table.late().to(lambda k, v: late.append((k, v)), name="late-out")
    with TestDriver(g) as driver:
        for t in (0.0, 5.0, 30.0, 3.0, 100.0):
            driver.send("events", "a", int(t), timestamp=t)
        # 3.0 came at stream time 30: its session [0, 15) had closed at 17
        assert late == [("a", 3)]
        assert changes == [(("a", 0.0, 15.0), 2), (("a", 30.0, 40.0), 1)]
        assert driver.table("n").late == 1


def test_aggregate_over_sessions_needs_merge() -> None:
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    with pytest.raises(GraphDefinitionError, match="has no merge="):
        src.window(fg.Session(10)).aggregate(0, lambda a, v: a + v, name="x")
    with pytest.raises(GraphDefinitionError, match="only for session windows"):
        src.window(fg.Tumbling(10)).aggregate(0, lambda a, v: a + v, merge=max, name="y")


def test_sessions_over_a_repartition_on_several_partitions() -> None:
    """Keys move to their sessions' partitions through a repartition; each partition has its
    own stream time, and the sessions still match sorting with nothing late."""
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=str, partitions=2)
    by_user = src.key_by(lambda v: v.split(":")[0], key_type=str, partitions=3, name="by-user")
    by_user.map(lambda v: int(v.split(":")[1]), name="amount").window(
        fg.Session(GAP, grace=1000)
    ).sum(name="agg")
    stamps = [0.0, 20.0, 3.0, 9.0, 6.5, 40.0, 14.0, 33.0, 37.5, 1.0, 18.0, 11.0]
    users = ["ann", "bob", "cid", "dee", "eve"]
    evs: list[Event] = []
    with TestDriver(g) as driver:
        for i, t in enumerate(stamps * 2):
            user = users[(i * 3) % len(users)]
            driver.send("events", f"src{i % 4}", f"{user}:{i}", timestamp=t)
            evs.append((user, t, i))
        view: Any = driver.table("agg")
        assert as_held(view) == brute(evs, GAP, "sum")
        assert len({k for k, _, _ in evs}) == len(users)


# -- exact across a restart ---------------------------------------------------------------------


async def _run_once(
    g: fg.Graph, broker: MemoryBroker, store: str, evs: list[Event], max_batch: int
) -> Held:
    worker = Worker(g.plan(), MemoryTransport(broker), open_backend(store), max_batch=max_batch)
    await worker.start()
    try:
        broker.append("events", [(0, k.encode(), b"%d" % v, t, None) for k, t, v in evs])
        await worker.run(until_idle=True, idle_wait=0.0)
        return as_held(worker.table("agg"))
    finally:
        await worker.stop()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_restart_anywhere_ends_where_sorting_says(data: st.DataObject, tmp_path: Path) -> None:
    agg = data.draw(st.sampled_from(["count", "sum"]), label="agg")
    evs = data.draw(events, label="events")
    cut = data.draw(st.integers(0, len(evs)), label="cut")
    how = data.draw(st.sampled_from(["same store", "store lost"]), label="restart")
    max_batch = data.draw(st.sampled_from([1, 3, 1000]), label="max_batch")
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    changes: list[Any] = []
    make(src, fg.Session(GAP, grace=1000), agg).changes().to(
        lambda k, v: changes.append((k, v)), name="out"
    )
    broker = MemoryBroker()
    state = tmp_path / f"state-{data.draw(st.integers(0, 10**9))}"
    store = f"rocksdb://{state}"
    asyncio.run(_run_once(g, broker, store, evs[:cut], max_batch))
    if how == "store lost":
        shutil.rmtree(state, ignore_errors=True)
    held = asyncio.run(_run_once(g, broker, store, evs[cut:], max_batch))
    expected = brute(evs, GAP, agg)

    assert held == expected
    assert replay(changes) == expected
    # What the store holds: no session replaced by a longer or merged one comes back.
    assert asyncio.run(_run_once(g, broker, store, [], max_batch)) == expected


async def _add(a: int, b: int) -> int:
    return a + b


def test_async_reduce_and_aggregate_over_sessions() -> None:
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    src.window(fg.Session(10, grace=100)).reduce(_add, name="r")
    src.window(fg.Session(10, grace=100)).aggregate(0, _add, merge=lambda a, b: a + b, name="a")
    with TestDriver(g) as driver:
        for t, v in [(0.0, 1), (15.0, 2), (8.0, 4), (40.0, 8)]:
            driver.send("events", "k", v, timestamp=t)
        expected = {("k", 0.0, 25.0): 7, ("k", 40.0, 50.0): 8}
        assert as_held(driver.table("r")) == expected
        assert as_held(driver.table("a")) == expected


def test_explain_names_the_session_gap() -> None:
    g = fg.Graph("sess")
    src = g.source("events", key_type=str, value_type=int)
    src.window(fg.Session(30, grace=5)).count(name="visits")
    assert "session gap 30s grace 5s" in g.explain()


def test_sessions_over_two_merged_inputs() -> None:
    """One step fed by two topics keeps one position per input; sessions span both."""
    g = fg.Graph("sess")
    a = g.source("a", key_type=str, value_type=int)
    b = g.source("b", key_type=str, value_type=int)
    a.merge(b, name="both").window(fg.Session(GAP, grace=1000)).count(name="agg")
    evs: list[Event] = []
    with TestDriver(g) as driver:
        for i, t in enumerate([0.0, 12.0, 3.0, 8.0, 30.0, 16.0]):
            driver.send("ab"[i % 2], "k", 1, timestamp=t)
            evs.append(("k", t, 1))
        assert as_held(driver.table("agg")) == brute(evs, GAP, "count")


class _Opaque:
    """A value no codec can store."""


def test_a_session_value_that_cannot_be_stored_is_dead_lettered_and_reverts() -> None:
    def add(acc: Any, v: int) -> Any:
        return _Opaque() if v < 0 else acc + v

    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10, grace=100)).aggregate(0, add, merge=lambda a, b: a + b, name="w")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=1.0)
        d.send("in", "b", -1, timestamp=2.0)  # a new session whose value cannot be stored
        d.send("in", "b", 3, timestamp=4.0)
        d.send("in", "a", 5, timestamp=6.0)
        assert as_held(d.table("w")) == {("a", 1.0, 16.0): 6, ("b", 4.0, 14.0): 3}
        (letter,) = d.dead_letters()
        assert letter.headers["error.step"] == "w"


def _changelog(d: TestDriver, topic: str) -> dict[bytes, bytes | None]:
    """The changelog as compaction keeps it: the latest value of each store key."""
    return {m[0]: m[1] for part in d._transport.broker.logs[topic] for m in part}


def test_an_expired_stored_session_leaves_a_tombstone_and_only_that() -> None:
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10)).count(name="n")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=0.0)  # stored at the commit after it
        (a_session,) = [k for k, v in _changelog(d, "s-n-changelog").items() if v == b"\x01"]
        d.send("in", "b", 1, timestamp=15.0)  # closes [0, 10); it goes at stream time 20
        assert _changelog(d, "s-n-changelog")[a_session] == b"\x01"
        d.send("in", "b", 1, timestamp=25.0)
        log = _changelog(d, "s-n-changelog")
        assert log[a_session] is None
        assert [k for k, v in log.items() if v is None] == [a_session]
        assert {(w.key, w.start, w.end) for w in d.table("n").windows()} == {
            ("b", 15.0, 25.0),
            ("b", 25.0, 35.0),
        }


def test_a_session_that_expires_before_any_commit_writes_no_tombstone() -> None:
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10)).count(name="n")
    with TestDriver(g) as d:
        kc, vc = d._worker.codecs["in"]
        # one batch, one commit: [0, 10) of "a" opens, closes and expires inside it
        d._transport.broker.append(
            "in",
            [
                (0, kc.encode(k), vc.encode(1), t, None)
                for k, t in (("a", 0.0), ("b", 15.0), ("b", 25.0))
            ],
        )
        d.run()
        log = _changelog(d, "s-n-changelog")
        assert None not in log.values()
        assert len(log) == 3  # two "b" sessions and the stream time
        assert {(w.key, w.start, w.end) for w in d.table("n").windows()} == {
            ("b", 15.0, 25.0),
            ("b", 25.0, 35.0),
        }


def test_emit_close_records_carry_the_closing_record_time_offset_and_headers() -> None:
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10, emit="close")).count(name="n").changes().to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=0.0)
        d.send("in", "b", 1, timestamp=15.0, headers={"x": b"1"})  # closes a's [0, 10)
        d.send("in", "b", 1, timestamp=35.0)  # closes b's [15, 25)
        out = [m for part in d._transport.broker.logs["out"] for m in part]
    assert [ts for _k, _v, ts, _o, _h in out] == [15.0, 35.0]
    origins = [dict(h)[ORIGIN_HEADER] for *_, h in out]
    assert [ORIGIN.unpack(x)[3] for x in origins] == [1, 2]  # the closing records' offsets
    assert dict(out[0][4])["x"] == b"1"
    assert "x" not in dict(out[1][4])


def test_a_window_emptied_by_a_growing_session_is_forgotten_when_it_closes() -> None:
    # white-box: nothing reads an emptied window, so only the op's own dict shows it leaking
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10, retention=100)).count(name="n")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=0.0)
        d.send("in", "a", 1, timestamp=5.0)  # [0, 10) grows to [0, 15): [0, 10) is emptied
        (op,) = d.table("n")._ops
        assert op.windows[(0.0, 10.0)] == {}
        d.send("in", "b", 1, timestamp=50.0)  # both close; [0, 15) is kept for retention
        assert set(op.windows) == {(0.0, 15.0), (50.0, 60.0)}


def test_a_closed_session_reverted_at_commit_does_not_hold_back_later_expiries() -> None:
    def add(acc: Any, v: int) -> Any:
        return _Opaque() if v < 0 else acc + v

    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    spec = fg.Session(10, retention=100)
    src.window(spec).aggregate(0, add, merge=lambda a, b: a + b, name="w")
    with TestDriver(g) as d:
        kc, vc = d._worker.codecs["in"]
        # one batch: "b"'s session cannot be stored, and has closed by the commit that reverts
        # it, so an emptied window waits in the expiry queue after "a"'s (and before "c"'s)
        d._transport.broker.append(
            "in",
            [
                (0, kc.encode(k), vc.encode(v), t, None)
                for k, v, t in (("a", 1, 0.0), ("b", -1, 1.0), ("c", 1, 30.0))
            ],
        )
        d.run()
        assert len(d.dead_letters()) == 1
        assert set(as_held(d.table("w"))) == {("a", 0.0, 10.0), ("c", 30.0, 40.0)}
        d.send("in", "d", 1, timestamp=50.0)  # closes "c"'s session: it expires at 140
        d.send("in", "e", 1, timestamp=145.0)  # past all three expiries (110, 111, 140)
        assert as_held(d.table("w")) == {("d", 50.0, 60.0): 1, ("e", 145.0, 155.0): 1}


def at(v: int) -> float | int | dt.datetime:
    """The value is its own event time: an int, a datetime for 50 (both converted), or inf
    for 99 (refused)."""
    if v == 50:
        return dt.datetime.fromtimestamp(50, tz=dt.UTC)
    return math.inf if v == 99 else v


def test_sessions_place_records_by_their_timestamp_function() -> None:
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10, grace=100), timestamp=at).count(name="n")
    with TestDriver(g) as d:
        for v in (3, 99, 8, 30, 50):
            d.send("in", "a", v, timestamp=1000.0)  # the record time is not the event time
        held = as_held(d.table("n"))
        assert held == {("a", 3.0, 18.0): 2, ("a", 30.0, 40.0): 1, ("a", 50.0, 60.0): 1}
        assert {(type(s), type(e)) for _, s, e in held} == {(float, float)}
        (letter,) = d.dead_letters()
    assert letter.headers["error.type"] == "ValueError"
    assert letter.headers["error.message"] == "the window timestamp inf is not a finite time"
    assert letter.value == b"99"


def test_a_crash_after_the_store_write_replays_no_session_record_twice(monkeypatch) -> None:
    from tests.executor.harness import Cluster
    from tests.executor.test_deletes import Crash, crashing_at

    g = fg.Graph("s")
    g.source("in", key_type=str, value_type=int).window(fg.Session(10, grace=100)).count(name="n")
    cluster = Cluster(g)
    cluster.run({"in": [(0, b"a", b"1")]})
    crashing_at(monkeypatch, "after-store")
    with pytest.raises(Crash):
        cluster.run({"in": [(0, b"a", b"1"), (0, b"b", b"1")]})
    monkeypatch.undo()
    worker = cluster.run()
    assert worker.stats.skipped == 2  # both applied before the crash: neither again
    assert as_held(cluster.last_tables["n"]) == {("a", 0.0, 10.0): 2, ("b", 0.0, 10.0): 1}


def test_a_bridging_record_s_updates_carry_its_time_and_headers() -> None:
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Session(10, grace=100)).count(name="n").changes().to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=0.0)
        d.send("in", "a", 1, timestamp=15.0)
        d.send("in", "a", 1, timestamp=8.0, headers={"h": b"x"})  # out of order: it bridges
        out = [m for part in d._transport.broker.logs["out"] for m in part][2:]
    # two retractions and the merged session, each with the bridging record's time and headers
    assert [(v, ts, dict(h)["h"]) for _k, v, ts, _o, h in out] == [
        (None, 8.0, b"x"),
        (None, 8.0, b"x"),
        (b"3", 8.0, b"x"),
    ]


def test_a_record_inside_a_closed_session_is_late_even_if_it_would_extend_it() -> None:
    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    table = src.window(fg.Session(10)).count(name="n")
    table.late().to("late-out")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=0.0)
        d.send("in", "b", 2, timestamp=10.0)  # stream time 10: a's [0, 10) has just closed
        d.send("in", "a", 3, timestamp=5.0, headers={"h": b"x"})  # [0, 15) would reopen it
        assert as_held(d.table("n")) == {("a", 0.0, 10.0): 1, ("b", 10.0, 20.0): 1}
        assert d.table("n").late == 1
        assert d.output("late-out") == [("a", 3)]
        ((*_, ts, _o, h),) = [m for part in d._transport.broker.logs["late-out"] for m in part]
    assert ts == 5.0
    assert dict(h)["h"] == b"x"
    assert ORIGIN.unpack(dict(h)[ORIGIN_HEADER])[3] == 2  # the late record's own offset


def test_session_updates_in_place_grown_and_late_by_the_record_s_own_end() -> None:
    def add(acc: int, v: int) -> int:
        if v < 0:
            raise ValueError("no negative values")
        return acc + v

    g = fg.Graph("s")
    src = g.source("in", key_type=str, value_type=int)
    table = src.window(fg.Session(10)).aggregate(0, add, merge=lambda a, b: a + b, name="n")
    table.changes().to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 1, timestamp=0.0)
        d.send("in", "a", 2, timestamp=0.0)  # the same end: in place, nothing retracted
        d.send("in", "a", -1, timestamp=1.0)  # the fold fails: dead-lettered, no change
        d.send("in", "a", 4, timestamp=9.0, headers={"h": b"x"})  # grows [0, 10) to [0, 19)
        d.send("in", "b", 8, timestamp=12.0)
        d.send("in", "a", 16, timestamp=1.0)  # inside [0, 19), but its own [1, 11) has closed
        assert as_held(d.table("n")) == {("a", 0.0, 19.0): 7, ("b", 12.0, 22.0): 8}
        assert d.table("n").late == 1
        (letter,) = d.dead_letters()
        out = [m for part in d._transport.broker.logs["out"] for m in part]
    assert (letter.value, letter.headers["error.message"]) == (b"-1", "no negative values")
    assert [(v, ts) for _k, v, ts, _o, _h in out] == [
        (b"1", 0.0),
        (b"3", 0.0),
        (None, 9.0),  # the retraction of [0, 10), with the growing record's time
        (b"7", 9.0),
        (b"8", 12.0),
    ]
    assert dict(out[2][4])["h"] == dict(out[3][4])["h"] == b"x"
