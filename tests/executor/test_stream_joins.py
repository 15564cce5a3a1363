"""Stream-stream windowed joins through `TestDriver` against a brute-force oracle.

The oracle (tests/join_oracle.py) follows the rules of docs/concepts/joins.md one record at a
time. `TestDriver.send` processes each record before the next, so the join sees the records
in the order they are sent, across both inputs, and the oracle can follow them exactly.
The left side is a keyed topic; the right side is re-keyed with `key_by`, so it reaches the
join through a repartition topic.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker, topic_codecs
from flowgraph.testing import TestDriver
from planner.describe import describe
from tests.join_oracle import Event, Output, join_oracle, pair

KEYS = ("k0", "k1", "k2", "k3")


def build(within: float, grace: float, how: str, partitions: int, right_parts: int) -> fg.Graph:
    g = fg.Graph("sj")
    left = g.source("left", key_type=str, value_type=str, partitions=partitions)
    right = g.source("right", key_type=str, value_type=str, partitions=right_parts)
    rekeyed = right.key_by(lambda v: v.split(":")[0], name="by_key")
    left.join(rekeyed, pair, within=within, grace=grace, how=how, name="paired").to(
        "out", value_type=str
    )
    return g


def outputs(driver: TestDriver) -> Counter[Output]:
    """Every record the join wrote to ``out``: key, value and timestamp."""
    kc, vc = driver._worker.codecs["out"]
    assert kc is not None and vc is not None
    log = driver._transport.broker.logs["out"]
    return Counter((kc.decode(k), vc.decode(v), ts) for part in log for k, v, ts, _o, _h in part)


def send_all(driver: TestDriver, events: list[Event]) -> None:
    for i, (side, key, t, value) in enumerate(events):
        if side == 0:
            driver.send("left", key, value, timestamp=t)
        else:  # keyed by something else: the join reads it re-keyed, from a repartition
            driver.send("right", f"r{i}", f"{key}:{value}", timestamp=t)


def oracle_events(events: list[Event]) -> list[Event]:
    """The right side's values as the join sees them (``key:value``, as sent)."""
    return [(s, k, t, v if s == 0 else f"{k}:{v}") for s, k, t, v in events]


def _to_events(steps: list[tuple[int, str, float, float]]) -> list[Event]:
    clock, out = 0.0, []
    for i, (side, key, advance, lag) in enumerate(steps):
        clock += advance
        out.append((side, key, max(0.0, clock - lag), f"{'ab'[side]}{i}"))
    return out


# A clock moving 0..3 s per record; records lag it by 0..8 s now and then (out of order).
event_lists = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from(KEYS),
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]),
        st.one_of(st.just(0.0), st.integers(0, 16).map(lambda n: n / 2)),
    ),
    min_size=8,
    max_size=40,
).map(_to_events)


@settings(max_examples=100, deadline=None)
@given(
    events=event_lists,
    within=st.sampled_from([0.0, 1.0, 2.5, 5.0]),
    grace=st.sampled_from([0.0, 1.0, 3.0]),
    how=st.sampled_from(["inner", "left", "outer"]),
    partitions=st.sampled_from([2, 3]),
    right_parts=st.sampled_from([1, 2]),
)
def test_a_join_matches_the_oracle(
    events: list[Event], within: float, grace: float, how: str, partitions: int, right_parts: int
) -> None:
    def partition_of(key: str) -> int:
        return partition_for(key.encode(), partitions)

    g = build(within, grace, how, partitions, right_parts)
    seen = oracle_events(events)
    with TestDriver(g) as driver:
        send_all(driver, events)
        expected, late = join_oracle(
            seen, within=within, grace=grace, how=how, partition_of=partition_of
        )
        assert outputs(driver) == expected
        assert driver._worker.stats.late == late
        driver.end_of_input()
        final, _ = join_oracle(
            seen,
            within=within,
            grace=grace,
            how=how,
            partition_of=partition_of,
            end_of_input=True,
        )
        assert outputs(driver) == final


def test_each_pair_once_in_either_order_and_unmatched_records_at_their_close() -> None:
    g = build(5.0, 1.0, "outer", 1, 1)
    with TestDriver(g) as driver:
        driver.send("left", "k", "a0", timestamp=10.0)
        driver.send("right", "x", "k:b0", timestamp=14.0)  # joins a0 (4 s apart)
        driver.send("right", "x", "k:b1", timestamp=9.5)  # joins a0 (out of order)
        driver.send("left", "k", "a1", timestamp=12.0)  # joins b0 and b1
        driver.send("left", "other", "a2", timestamp=12.0)
        assert sorted(outputs(driver)) == [
            ("k", "a0|k:b0", 14.0),
            ("k", "a0|k:b1", 10.0),
            ("k", "a1|k:b0", 14.0),
            ("k", "a1|k:b1", 12.0),
        ]
        driver.send("left", "k", "late", timestamp=1.0)  # 1 + 5 + 1 < 14: late, dropped
        assert driver._worker.stats.late == 1
        driver.send("right", "x", "k:b2", timestamp=30.0)  # closes all but b2: a2 unmatched
        assert outputs(driver)[("other", "a2|None", 12.0)] == 1
        driver.end_of_input()  # b2's window closes at the end of the input
        assert outputs(driver)[("k", "None|k:b2", 30.0)] == 1
        assert sum(outputs(driver).values()) == 6


def test_buffers_stay_bounded_by_the_window() -> None:
    """A long stream keeps only what its windows still need, in memory and in the store."""
    g = build(2.0, 1.0, "inner", 1, 1)
    with TestDriver(g) as driver:
        for i in range(200):
            driver.send("left", f"k{i % 7}", f"a{i}", timestamp=float(i))
        (task,) = [t for t in driver._worker._all_tasks if t.stream_joins]
        (op,) = task.stream_joins
        assert sum(len(b[2]) for b in op.buffers.values()) <= 4  # t in [196, 199]
        (store,) = [s for (name, _), s in driver._worker.stores.items() if name == "sj-paired"]
        assert len(list(store.entries())) <= 5  # those keys and the stream time


class Restarts:
    """A left join (`within` 5 s, grace 0) of `left_parts` left partitions over one RocksDB
    store, run until idle again and again by fresh workers, as restarts would."""

    def __init__(self, tmp_path: Path, left_parts: int) -> None:
        self.plan = build(5.0, 0.0, "left", left_parts, 1).plan()
        self.parts = {"left": left_parts, "right": 1}
        self.broker = MemoryBroker()
        self.store = f"rocksdb://{tmp_path / 'state'}"
        self.codecs = topic_codecs(self.plan, in_process=False)

    def append(self, topic: str, key: str, value: str, t: float) -> None:
        kc, vc = self.codecs[topic]
        assert kc is not None and vc is not None
        kb = kc.encode(key)
        parts = self.parts[topic]
        self.broker.ensure(topic, parts)
        self.broker.append(topic, [(partition_for(kb, parts), kb, vc.encode(value), t, None)])

    def run(self, *, end_of_input: bool = False) -> int:
        """One worker's run; the records it counted late."""

        async def body() -> int:
            transport = MemoryTransport(self.broker, encoded=True)
            worker = Worker(self.plan, transport, open_backend(self.store))
            await worker.start()
            try:
                await worker.run(until_idle=True, idle_wait=0.0, end_of_input=end_of_input)
                return worker.stats.late
            finally:
                await worker.stop()

        return asyncio.run(body())

    def written(self) -> Counter[Output]:
        kc, vc = self.codecs["out"]
        assert kc is not None and vc is not None
        records = self.broker.records("out")
        return Counter((kc.decode(m[0]), vc.decode(m[1]), m[2]) for m in records)


def test_a_join_on_rocksdb_restarts_where_it_stopped(tmp_path: Path) -> None:
    """Buffers and stream time are stored: a record sent after a restart still joins one
    sent before, and a record late before the restart is late after it."""
    rig = Restarts(tmp_path, 2)
    rig.append("left", "k1", "a0", 10.0)
    rig.append("left", "k1", "a1", 20.0)  # a0 (10 + 5 < 20) closes unmatched
    assert rig.run() == 0
    assert rig.written() == Counter({("k1", "a0|None", 10.0): 1})
    rig.append("right", "x", "k1:b0", 22.0)
    rig.append("right", "y", "k1:b1", 9.0)  # late on k1's partition, whose stream time is 22
    assert rig.run() == 1
    assert rig.written() == Counter({("k1", "a0|None", 10.0): 1, ("k1", "a1|k1:b0", 22.0): 1})


def test_end_of_input_closes_the_windows_and_stores_the_stream_time(tmp_path: Path) -> None:
    """`--close-windows`: an open window is closed at the end of input (its unmatched record
    emitted) and stream time moves to that close, stored, so a restart neither reopens the
    window nor takes a record older than it for on time."""
    rig = Restarts(tmp_path, 1)
    rig.append("left", "k1", "a0", 10.0)
    assert rig.run() == 0
    assert rig.written() == Counter()  # its window (10 + 5) is still open
    assert rig.run(end_of_input=True) == 0
    assert rig.written() == Counter({("k1", "a0|None", 10.0): 1})
    rig.append("right", "x", "k1:b0", 12.0)  # on time (stream time 15), but a0 is gone
    rig.append("right", "y", "k1:b1", 7.0)  # late: before 15 - 5
    assert rig.run() == 1
    assert rig.written() == Counter({("k1", "a0|None", 10.0): 1})


def test_two_topics_of_different_partitions_are_joined_on_the_lefts() -> None:
    g = fg.Graph("sj")
    left = g.source("left", key_type=str, value_type=str, partitions=3)
    right = g.source("right", key_type=str, value_type=str, partitions=2)
    left.join(right, pair, within=1.0, name="paired").to("out", value_type=str)
    plan = g.plan()
    (rep,) = [t for t in plan.topics if t.role == "repartition"]
    assert (rep.name, rep.partitions) == ("sj-paired-right-repartition", 3)
    with TestDriver(g) as driver:
        for i in range(6):
            driver.send("left", f"k{i}", f"a{i}", timestamp=float(i))
            driver.send("right", f"k{i}", f"b{i}", timestamp=float(i) + 0.5)
        assert sorted(outputs(driver)) == [(f"k{i}", f"a{i}|b{i}", i + 0.5) for i in range(6)]


def test_a_self_join_pairs_a_stream_with_itself() -> None:
    g = fg.Graph("sj")
    src = g.source("left", key_type=str, value_type=str)
    src.join(src, pair, within=1.0, name="paired").to("out", value_type=str)
    with TestDriver(g) as driver:
        driver.send("left", "k", "a", timestamp=1.0)
        driver.send("left", "k", "b", timestamp=1.5)
        # each record meets itself and the other, once per order of the two sides
        assert outputs(driver) == Counter(
            {("k", "a|a", 1.0): 1, ("k", "b|b", 1.5): 1, ("k", "a|b", 1.5): 1, ("k", "b|a", 1.5): 1}
        )


def test_a_failing_join_function_dead_letters_the_record_and_keeps_the_others() -> None:
    def picky(left: Any, right: Any) -> str:
        if right == "bad":
            raise ValueError("no")
        return f"{left}|{right}"

    g = fg.Graph("sj")
    left = g.source("left", key_type=str, value_type=str)
    right = g.source("right", key_type=str, value_type=str)
    left.join(right, picky, within=1.0, name="paired").to("out", value_type=str)
    with TestDriver(g) as driver:
        driver.send("right", "k", "bad", timestamp=1.0)
        driver.send("right", "k", "good", timestamp=1.0)
        driver.send("left", "k", "a", timestamp=1.0)
        assert outputs(driver) == Counter({("k", "a|good", 1.0): 1})
        (dead,) = driver.dead_letters()
        assert dead.headers["error.step"] == "paired"


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
def test_explain_shows_the_join_its_store_and_changelog(how: str) -> None:
    g = build(5.0, 1.0, how, 2, 1)
    text = g.explain()
    assert f"within 5s, grace 1s, {how} join with by_key" in text
    assert "store sj-paired" in text
    assert "sj-paired-changelog" in text
    step = describe(g.plan()).step("paired")
    assert step.kind == "join"
    assert step.store == "sj-paired"


def test_a_join_is_no_table() -> None:
    driver = TestDriver(build(1.0, 0.0, "inner", 1, 1))
    with driver, pytest.raises(KeyError, match="'paired' is a stream join"):
        driver.table("paired")


def test_a_run_behind_its_input_closes_windows_as_it_goes_and_joins_exactly() -> None:
    """`fg.run` over input written first (three left partitions, two right ones re-keyed
    through a repartition topic), in batches: windows close mid-run, yet with a grace
    longer than the input's disorder nothing is late and the result is the oracle's,
    whatever order the partitions' batches ran in."""
    within, grace, disorder, parts = 3.0, 15.0, 10, 3
    rng = random.Random(7)
    events: list[Event] = []
    for i in range(1_500):  # over 1,000 s, each at most `disorder` below the newest before
        t = i * 1_000 // 1_500 - (rng.randint(0, disorder) if rng.random() < 0.3 else 0)
        side, key = rng.randrange(2), rng.choice((*KEYS, "k4", "k5", "k6", "k7"))
        events.append((side, key, float(t), f"{'ab'[side]}{i}"))
    g = build(within, grace, "left", parts, 2)
    seen: list[Worker] = []

    def feed(worker: Worker) -> None:
        seen.append(worker)
        broker = worker.transport.broker  # type: ignore[attr-defined]
        for i, (side, key, t, value) in enumerate(events):
            topic, k, v = (
                ("left", key, value) if side == 0 else ("right", f"r{i}", f"{key}:{value}")
            )
            kc, vc = worker.codecs[topic]
            assert kc is not None and vc is not None
            kb = kc.encode(k)
            n = parts if side == 0 else 2
            broker.append(topic, [(partition_for(kb, n), kb, vc.encode(v), t, None)])

    result = fg.run(g, on_start=feed, max_batch=40)
    (worker,) = seen
    kc, vc = worker.codecs["out"]
    assert kc is not None and vc is not None
    broker = worker.transport.broker  # type: ignore[attr-defined]
    got = Counter((kc.decode(m[0]), vc.decode(m[1]), m[2]) for m in broker.records("out"))
    want, late = join_oracle(
        oracle_events(events),
        within=within,
        grace=grace,
        how="left",
        partition_of=lambda k: partition_for(k.encode(), parts),
    )
    assert late == 0
    assert result.stats.late == 0
    unmatched = [t for (_, v, t) in want if v.endswith("|None")]
    assert len(unmatched) > 100 and min(unmatched) < 100  # closed long before the end
    assert got == want
