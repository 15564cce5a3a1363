"""`process(..., wake=, on_wake=)`: event-time timers per key.

The proof of the point: the stream-stream LEFT join written as a processor with a timer (the
key's state holds both sides' open records; its deadline is the close of its earliest
unmatched left record) gives what the built-in ``join(..., how="left")`` gives, on random
out-of-order input over several partitions with one side re-keyed through a repartition
topic. `TestDriver.send` processes each record before the next, so both joins see the same
arrival order. Then: firing order, the at-most-once-per-record guard, end of input, builder
errors, and exactness after a crash at every commit point (`crash_run`).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import POINTS
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs
from flowgraph.testing import TestDriver
from tests.executor.harness import crash_run
from tests.join_oracle import pair

KEYS = ("k0", "k1", "k2", "k3")
Event = tuple[int, str, float, str]


# -- the left join as a processor --------------------------------------------------------------


def left_join(within: float, grace: float) -> tuple[Any, Any, Any]:
    """``(fn, wake, on_wake)`` of a stream-stream left join.

    State: the key's open records ``[t, side, value, matched]`` in arrival order. A record's
    window closes once stream time passes ``t + within + grace``; the function closes, before
    pairing, what the record's own timestamp already closed (stream time is at least that),
    and the timer closes the rest. It does not see stream time, so unlike the built-in it
    cannot drop a late record: the inputs below are out of order by less than `grace`.
    """
    horizon = within + grace

    def close(records: list[list[Any]], now: float) -> tuple[list[list[Any]], list[str]]:
        closed = sorted((r for r in records if r[0] + horizon < now), key=lambda r: r[0])
        kept = [r for r in records if r[0] + horizon >= now]
        return kept, [pair(r[2], None) for r in closed if r[1] == 0 and not r[3]]

    def fn(records: list[list[Any]], tagged: list[Any], ctx: fg.RecordContext) -> Any:
        side, value = tagged
        t = ctx.timestamp
        kept, out = close(records, t)
        matched = False
        for r in kept:
            if r[1] != side and abs(r[0] - t) <= within:
                matched = r[3] = True
                out.append(pair(value, r[2]) if side == 0 else pair(r[2], value))
        kept.append([t, side, value, matched])
        return kept, out

    def wake(records: list[list[Any]]) -> float | None:
        # the first close of any open record (not only unmatched left ones), so that the
        # state empties as windows close; fired once stream time passes the close (not when
        # it reaches it), as the built-in join closes
        return math.nextafter(min(r[0] for r in records) + horizon, math.inf) if records else None

    def on_wake(records: list[list[Any]], stream_time: float) -> Any:
        kept, out = close(records, stream_time)
        return kept or None, out

    return fn, wake, on_wake


def process_graph(within: float, grace: float, partitions: int, right_parts: int) -> fg.Graph:
    g = fg.Graph("pj")
    left = g.source("left", key_type=str, value_type=str, partitions=partitions)
    right = g.source("right", key_type=str, value_type=str, partitions=right_parts)
    # key_type=str: the step's input is partitioned by the keys' str bytes, as the built-in's
    rekeyed = right.key_by(lambda v: v.split(":")[0], name="by_key", key_type=str)
    fn, wake, on_wake = left_join(within, grace)
    tagged_left = left.map(lambda v: [0, v], name="tag-left")
    tagged_right = rekeyed.map(lambda v: [1, v], name="tag-right")
    tagged_left.merge(tagged_right).process(
        fn, list, name="joined", context=True, wake=wake, on_wake=on_wake, value_type=str
    ).to("out", value_type=str)
    return g


def builtin_graph(within: float, grace: float, partitions: int, right_parts: int) -> fg.Graph:
    g = fg.Graph("sj")
    left = g.source("left", key_type=str, value_type=str, partitions=partitions)
    right = g.source("right", key_type=str, value_type=str, partitions=right_parts)
    rekeyed = right.key_by(lambda v: v.split(":")[0], name="by_key")
    left.join(rekeyed, pair, within=within, grace=grace, how="left", name="paired").to(
        "out", value_type=str
    )
    return g


def send_all(driver: TestDriver, events: list[Event]) -> None:
    for i, (side, key, t, value) in enumerate(events):
        if side == 0:
            driver.send("left", key, value, timestamp=t)
        else:  # keyed by something else: both joins read it re-keyed, from a repartition
            driver.send("right", f"r{i}", f"{key}:{value}", timestamp=t)


def per_key(driver: TestDriver) -> dict[str, list[str]]:
    """Per key, the values written to ``out`` in order (the order across keys differs: the
    built-in closes records across keys by close time, a timer a key's records at once)."""
    result: dict[str, list[str]] = {}
    for k, v in driver.output("out"):
        result.setdefault(k, []).append(v)
    return result


def to_events(steps: list[tuple[int, str, float, int]], grace: float) -> list[Event]:
    """A clock moving 0..3 s per record; records lag it by less than `grace` (never late)."""
    clock, out = 0.0, []
    for i, (side, key, advance, lag) in enumerate(steps):
        clock += advance
        late_by = min(lag / 2, grace - 0.5) if grace > 0 else 0.0
        out.append((side, key, max(0.0, clock - late_by), f"{'ab'[side]}{i}"))
    return out


steps_lists = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from(KEYS),
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]),
        st.one_of(st.just(0), st.integers(0, 6)),
    ),
    min_size=8,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(
    steps=steps_lists,
    within=st.sampled_from([0.0, 1.0, 2.5, 5.0]),
    grace=st.sampled_from([0.0, 1.0, 3.0]),
    partitions=st.sampled_from([2, 3]),
    right_parts=st.sampled_from([1, 2]),
)
def test_a_left_join_with_a_timer_equals_the_builtin_left_join(
    steps: list[tuple[int, str, float, int]],
    within: float,
    grace: float,
    partitions: int,
    right_parts: int,
) -> None:
    events = to_events(steps, grace)
    builtin = builtin_graph(within, grace, partitions, right_parts)
    mine = process_graph(within, grace, partitions, right_parts)
    with TestDriver(builtin) as want, TestDriver(mine) as got:
        send_all(want, events)
        send_all(got, events)
        assert want._worker.stats.late == 0  # the processor cannot drop late records
        assert per_key(got) == per_key(want)
        want.end_of_input()
        got.end_of_input()
        assert per_key(got) == per_key(want)
        assert got.table("joined") == {}  # every unmatched record emitted, every key gone


# -- the rules, one by one ---------------------------------------------------------------------


def remember(state: dict, value: str, ctx: fg.RecordContext) -> tuple[dict, list[str]]:
    """The key's last record and its time; nothing emitted per record."""
    return {"last": value, "at": ctx.timestamp}, []


def quiet_for_ten(state: dict) -> float:
    return float(state["at"]) + 10.0


def idle(state: dict, stream_time: float) -> tuple[None, list[str]]:
    """The key went quiet: say so, with the stream time, and forget it."""
    return None, [f"{state['last']} idle at {stream_time}"]


def idle_graph() -> fg.Graph:
    g = fg.Graph("idle")
    src = g.source("in", key_type=str, value_type=str)
    src.process(remember, dict, context=True, wake=quiet_for_ten, on_wake=idle, value_type=str).to(
        "out", value_type=str
    )
    return g


def outputs(driver: TestDriver) -> list[tuple[str, str, float, Any]]:
    """Key, value, timestamp and headers (but the origin mark) of every record written to
    ``out``, in order."""
    kc, vc = driver._worker.codecs["out"]
    assert kc is not None and vc is not None
    return [
        (kc.decode(k), vc.decode(v), ts, tuple(x for x in h or () if x[0] != "fg.o") or None)
        for part in driver._transport.broker.logs["out"]
        for k, v, ts, _o, h in part
    ]


def test_keys_fire_when_stream_time_reaches_their_deadline_in_deadline_order() -> None:
    with TestDriver(idle_graph()) as driver:
        driver.send("in", "b", "b1", timestamp=100.0)  # deadline 110
        driver.send("in", "a", "a1", timestamp=95.0)  # deadline 105 (out of order)
        driver.send("in", "c", "c1", timestamp=104.0)  # deadline 114
        assert outputs(driver) == []
        driver.send("in", "c", "c2", timestamp=105.0, headers={"h": b"1"})  # a fires
        driver.send("in", "b", "b2", timestamp=103.0)  # stream time stays 105: b moves on
        assert [v for _, v, _, _ in outputs(driver)] == ["a1 idle at 105.0"]
        driver.send("in", "d", "d1", timestamp=200.0)  # c (115) and b (113): b first
        assert outputs(driver) == [
            ("a", "a1 idle at 105.0", 105.0, None),  # at the deadline; no record's headers
            ("b", "b2 idle at 200.0", 113.0, None),
            ("c", "c2 idle at 200.0", 115.0, None),
        ]
        assert driver.table("remember") == {"d": {"last": "d1", "at": 200.0}}


def test_timers_that_keep_moving_do_not_pile_up() -> None:
    with TestDriver(idle_graph()) as driver:
        for i in range(1500):  # each record moves its key's deadline: a stale heap entry
            driver.send("in", f"k{i % 3}", f"v{i}", timestamp=100.0 + i)
        (task,) = driver._worker._all_tasks
        op = task.aggregates["remember"]
        assert len(op.timers) <= 1024 + 4 * 3  # rebuilt from the live timers
        assert outputs(driver) == []  # every key pinged within ten seconds
        driver.send("in", "k9", "late", timestamp=1700.0)
        assert sorted(v for _, v, _, _ in outputs(driver)) == [
            "v1497 idle at 1700.0",
            "v1498 idle at 1700.0",
            "v1499 idle at 1700.0",
        ]


def test_end_of_input_fires_every_pending_timer_with_stream_time_infinity() -> None:
    with TestDriver(idle_graph()) as driver:
        driver.send("in", "a", "a1", timestamp=100.0)
        driver.send("in", "b", "b1", timestamp=95.0)
        driver.end_of_input()
        assert outputs(driver) == [
            ("b", "b1 idle at inf", 105.0, None),
            ("a", "a1 idle at inf", 110.0, None),
        ]
        assert driver.table("remember") == {}
        driver.send("in", "a", "a2", timestamp=120.0)  # the stream goes on afterwards
        assert driver.table("remember") == {"a": {"last": "a2", "at": 120.0}}


def count_and_stay_due(n: int, _value: str) -> tuple[int, list[str]]:
    return n + 1, []


def always_due(n: int) -> float:
    return 0.0  # never moves past stream time


def tick(n: int, stream_time: float) -> tuple[int, list[str]]:
    return n, [f"tick {n}"]


def test_a_deadline_that_does_not_move_fires_once_per_record_and_once_at_the_end() -> None:
    g = fg.Graph("due")
    g.source("in", key_type=str, value_type=str).process(
        count_and_stay_due, 0, wake=always_due, on_wake=tick, value_type=str
    ).to("out", value_type=str)
    with TestDriver(g) as driver:
        driver.send("in", "k", "x", timestamp=1.0)
        driver.send("in", "other", "x", timestamp=1.0)
        driver.send("in", "k", "x", timestamp=1.0)
        assert driver.output("out") == [
            ("k", "tick 1"),
            ("k", "tick 1"),  # due again: fired at the next record, not in a loop
            ("other", "tick 1"),  # same deadline, a later record: after k
            ("other", "tick 1"),
            ("k", "tick 2"),  # k's record set its timer again, at a later position
        ]
        driver.end_of_input()
        assert len(driver.output("out")) == 7  # each key once more, and it ends


def broken_wake(state: dict) -> float:
    return state["missing"]  # type: ignore[no-any-return]


def test_a_failing_wake_dead_letters_the_record_and_keeps_the_state() -> None:
    g = fg.Graph("bad")
    g.source("in", key_type=str, value_type=str).process(
        remember, dict, context=True, wake=broken_wake, on_wake=idle, value_type=str
    ).to("out", value_type=str)
    with TestDriver(g) as driver:
        driver.send("in", "k", "x", timestamp=1.0)
        (dead,) = driver.dead_letters()
        assert "missing" in dead.headers["error.message"]
        assert driver.table("remember") == {}


def remember_or_break(state: dict, value: str, ctx: fg.RecordContext) -> tuple[dict, list]:
    """As `remember`, but "bad" makes a state its changelog cannot hold."""
    new = {"last": value, "at": ctx.timestamp}
    return ({**new, "bad": object()} if value == "bad" else new), []


def test_a_state_that_cannot_be_stored_puts_back_the_stored_states_timer() -> None:
    g = fg.Graph("unstorable")
    g.source("in", key_type=str, value_type=str).process(
        remember_or_break, dict, context=True, wake=quiet_for_ten, on_wake=idle, value_type=str
    ).to("out", value_type=str)
    with TestDriver(g) as driver:
        driver.send("in", "k", "k1", timestamp=100.0)  # deadline 110, committed
        driver.send("in", "k", "bad", timestamp=105.0)  # deadline 115, but not storable
        assert len(driver.dead_letters()) == 1
        assert driver.table("remember_or_break") == {"k": {"last": "k1", "at": 100.0}}
        driver.send("in", "other", "o1", timestamp=111.0)  # past the stored state's deadline
        assert outputs(driver) == [("k", "k1 idle at 111.0", 110.0, None)]


def idle_unless_k(state: dict, stream_time: float) -> tuple[None, list[str]]:
    if state["last"].startswith("k"):
        raise ValueError("k keys cannot go idle")
    return idle(state, stream_time)


def test_a_failing_on_wake_dead_letters_the_state_and_leaves_the_key_unwoken() -> None:
    g = fg.Graph("bad-wake")
    g.source("in", key_type=str, value_type=str).process(
        remember, dict, context=True, wake=quiet_for_ten, on_wake=idle_unless_k, value_type=str
    ).to("out", value_type=str)
    with TestDriver(g) as driver:
        driver.send("in", "k", "k1", timestamp=100.0)
        driver.send("in", "a", "a1", timestamp=101.0)
        driver.send("in", "b", "b1", timestamp=120.0)  # both due: k fails, a fires
        driver.send("in", "b", "b2", timestamp=121.0)  # k is not woken again
        (dead,) = driver.dead_letters()
        assert "k keys cannot go idle" in dead.headers["error.message"]
        assert dead.key == b"k" and b"k1" in dead.value  # the key's state
        assert [v for _, v, _, _ in outputs(driver)] == ["a1 idle at 120.0"]
        assert driver.table("remember") == {
            "k": {"last": "k1", "at": 100.0},
            "b": {"last": "b2", "at": 121.0},
        }


def test_graphs_without_timers_keep_the_plain_store() -> None:
    g = fg.Graph("plain")
    src = g.source("in", key_type=str, value_type=int)
    src.process(count_and_stay_due, 0, name="plain", value_type=str).to("out", value_type=str)
    src.process(count_and_stay_due, 0, name="timed", wake=always_due, on_wake=tick).to("t")
    stores = {s.step: s for s in g.plan().stores}
    assert stores["plain"].key_type is str  # no stream time entry: the key's own codec
    assert stores["timed"].key_type is None  # keys and stream time: self-describing
    assert "timers wake=tests.executor.test_process_timers.always_due" in g.explain()


# -- builder errors ----------------------------------------------------------------------------


async def async_wake(state: int) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"wake": always_due}, "has wake= but no on_wake="),
        ({"on_wake": tick}, "has on_wake= but no wake="),
        ({"wake": tick, "on_wake": tick}, "process wake=(tick) calls tick(state)"),
        ({"wake": always_due, "on_wake": always_due}, "calls always_due(state, stream_time)"),
        ({"wake": async_wake, "on_wake": tick}, "has timers and an async wake="),
        ({"wake": 3, "on_wake": tick}, "process wake= needs a function"),
    ],
)
def test_timers_of_the_wrong_shape_are_refused(kwargs: dict[str, Any], says: str) -> None:
    g = fg.Graph("refused")
    src = g.source("in", key_type=str, value_type=str)
    with pytest.raises(fg.GraphDefinitionError, match=None) as info:
        src.process(count_and_stay_due, 0, **kwargs)
    assert says in str(info.value)


# -- exact across crashes ----------------------------------------------------------------------

CRASH_WITHIN, CRASH_GRACE = 2.0, 8.0
"""Timestamps grow by 1.5 per record and the runs of the two inputs interleave differently
after a crash: the grace covers that, so the outputs do not depend on the interleaving."""


def merged_graph() -> fg.Graph:
    """The join of both sides keyed alike: one task reads both, one position per input."""
    g = fg.Graph("pjc")
    left = g.source("left", key_type=str, value_type=str, partitions=2)
    right = g.source("right", key_type=str, value_type=str, partitions=2)
    fn, wake, on_wake = left_join(CRASH_WITHIN, CRASH_GRACE)
    tagged_left = left.map(lambda v: [0, v], name="tag-left")
    tagged_right = right.map(lambda v: [1, v], name="tag-right")
    tagged_left.merge(tagged_right).process(
        fn, list, name="joined", context=True, wake=wake, on_wake=on_wake, value_type=str
    ).to("out", value_type=str)
    return g


def idle_records(round_: int, codecs: Any) -> dict[str, list[Any]]:
    """Records of the idle-key processor: the first of each round is older than the stream
    time the previous round left, so a run that lost its stored stream time fires later and
    says so in its outputs (they carry the stream time)."""
    kc, vc = codecs["in"]
    records = []
    for i in range(12):
        key = KEYS[(i * 7 + round_) % 4]
        t = round_ * 40.0 + i * 3.0 - (20.0 if i == 0 else 0.0)
        kb = kc.encode(key)
        records.append((partition_for(kb, 2), kb, vc.encode(f"{key}-{round_}-{i}"), t, None))
    return {"in": records}


def crash_rounds(
    crash: tuple[str, int] | None, variant: str = "join"
) -> tuple[Counter[tuple[str, str]], dict, bool]:
    """Three rounds of input, each run until idle (the last to its end); `crash` strikes in
    the second. `variant`: the left join over two merged inputs, or the idle-key processor."""
    if variant == "idle":
        g = fg.Graph("idle")
        g.source("in", key_type=str, value_type=str, partitions=2).process(
            remember, dict, context=True, wake=quiet_for_ten, on_wake=idle, value_type=str
        ).to("out", value_type=str)
        plan = g.plan()
        table = "remember"
    else:
        plan = merged_graph().plan()
        table = "joined"
    codecs = topic_codecs(plan, in_process=False)
    broker = MemoryBroker()
    backend = MemoryBackend()
    crashed = False
    for round_ in range(3):
        batches = (
            idle_records(round_, codecs) if variant == "idle" else join_records(round_, codecs)
        )
        for topic, batch in batches.items():
            broker.ensure(topic, 2)
            broker.append(topic, batch)
        now = crash if round_ == 1 else None
        if now and now[0] == "in-restore":
            backend = MemoryBackend()  # so that the run restores, and crashes in it
        if asyncio.run(crash_run(plan, broker, backend, now)):
            crashed = True
            backend = MemoryBackend()  # the store is lost too: restored from changelogs
    asyncio.run(crash_run(plan, broker, backend, None, end_of_input=True))
    kc, vc = codecs["out"]
    written = Counter((kc.decode(k), vc.decode(v)) for k, v, *_ in broker.records("out"))
    restored = Worker(plan, MemoryTransport(broker, encoded=True), MemoryBackend())
    asyncio.run(restored.start())
    try:
        state = restored.table(table)
    finally:
        asyncio.run(restored.stop())
    return written, state, crashed


def join_records(round_: int, codecs: Any) -> dict[str, list[Any]]:
    """Records of the left join, both sides keyed by the join key."""
    kc, vc = codecs["left"]
    rkc, rvc = codecs["right"]
    left, right = [], []
    for i in range(12):
        n = round_ * 12 + i
        # a key per three records, a right one in every other three: some left records
        # pair, others close unmatched; every fourth record is a second late
        key, t = KEYS[(n // 3) % 4], n * 1.5 - (1.0 if n % 4 == 1 else 0.0)
        if n % 6 == 1:
            kb = rkc.encode(key)
            right.append((partition_for(kb, 2), kb, rvc.encode(f"b{n}"), t, None))
        else:
            kb = kc.encode(key)
            left.append((partition_for(kb, 2), kb, vc.encode(f"a{n}"), t, None))
    return {"left": left, "right": right}


@pytest.fixture(scope="module", params=["join", "idle"])
def uncrashed(request: pytest.FixtureRequest) -> tuple[str, Counter[tuple[str, str]], dict]:
    written, state, crashed = crash_rounds(None, request.param)
    assert not crashed
    if request.param == "join":
        unmatched = [v for (_, v) in written if v.endswith("|None")]
        assert unmatched and len(unmatched) < len(written)  # timers fired, pairs were made
    else:
        fired = [v for (_, v) in written if not v.endswith("inf")]
        assert fired and len(fired) < len(written)  # fired by records and at the end
    assert state == {}  # the end of the input emptied every key
    return request.param, written, state


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("nth", [1, 3])
def test_timers_are_exact_after_a_crash(point: str, nth: int, uncrashed: Any) -> None:
    variant, want_written, want_state = uncrashed
    written, state, crashed = crash_rounds((point, nth), variant)
    if nth == 1:
        assert crashed
    assert written == want_written, "a firing's output lost or written twice"
    assert state == want_state
