"""Steps with ``context=True`` see each record's key, timestamp, headers, topic, partition and
offset, through `TestDriver` with encoded topics (as on Kafka) and with Python objects (where
repartition records are handed straight to their reader)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.task import ORIGIN_HEADER
from flowgraph.testing import TestDriver


@pytest.fixture(params=[True, False], ids=["encoded", "objects"])
def encode(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def seen(ctx: fg.RecordContext) -> tuple[Any, ...]:
    return (ctx.key, ctx.timestamp, ctx.headers, ctx.topic, ctx.partition, ctx.offset)


def test_every_stateless_step_gets_the_record_context(encode: bool) -> None:
    got: dict[str, list[tuple[Any, ...]]] = {}

    def note(step: str, ctx: fg.RecordContext) -> None:
        got.setdefault(step, []).append(seen(ctx))

    def double(v: int, ctx: fg.RecordContext) -> int:
        note("map", ctx)
        return v * 2

    def keep(v: int, ctx: fg.RecordContext) -> bool:
        note("filter", ctx)
        return v != 4

    def twice(v: int, ctx: fg.RecordContext) -> list[int]:
        note("flat_map", ctx)
        return [v, v + 1]

    def look(v: int, ctx: fg.RecordContext) -> None:
        note("peek", ctx)

    def sink(k: str, v: int, ctx: fg.RecordContext) -> None:
        note("to", ctx)

    g = fg.Graph("g")
    src = g.source("in", key_type=str, value_type=int, partitions=2)
    src.map(double, context=True).filter(keep, context=True).flat_map(twice, context=True).peek(
        look, context=True
    ).to(sink, context=True)
    with TestDriver(g, encode=encode) as driver:
        driver.send("in", "a", 1, timestamp=10.0, headers={"trace": b"t1"})
        driver.send("in", "b", 2, timestamp=11.5)
        driver.send("in", "a", 3, timestamp=12.0, headers={"trace": b"t3"})
    pa = partition_for(b"a", 2)
    pb = partition_for(b"b", 2)
    a1 = ("a", 10.0, (("trace", b"t1"),), "in", pa, 0)
    b2 = ("b", 11.5, (), "in", pb, 0 if pb != pa else 1)
    a3 = ("a", 12.0, (("trace", b"t3"),), "in", pa, 1 if pb != pa else 2)
    assert got["map"] == [a1, b2, a3]
    assert got["filter"] == [a1, b2, a3]
    assert got["flat_map"] == [a1, a3]  # 2 * 2 == 4 was filtered out
    # the records a flat_map makes carry the context of the input they came from
    assert got["peek"] == [a1, a1, a3, a3]
    assert got["to"] == got["peek"]


def test_context_after_a_repartition_is_the_repartition_topics(encode: bool) -> None:
    """Past a key_by's repartition, topic/partition/offset are those of the record as read
    from the repartition topic; the key is the new key; flowgraph's own headers are hidden."""
    contexts: list[fg.RecordContext] = []

    def by_user(v: dict[str, Any]) -> str:
        return str(v["user"])

    def first_seen(v: dict[str, Any], ctx: fg.RecordContext) -> dict[str, Any]:
        contexts.append(ctx)
        return v

    g = fg.Graph("g")
    src = g.source("clicks", key_type=str, value_type="json", partitions=1)
    src.key_by(by_user).map(first_seen, context=True).count(name="per_user")
    users = ["u1", "u2", "u1", "u3", "u2", "u1"]
    with TestDriver(g, encode=encode) as driver:
        for i, u in enumerate(users):
            driver.send("clicks", f"k{i}", {"user": u}, timestamp=100.0 + i, headers={"h": b"x"})
        topic = driver.plan.topic("g-by_user-repartition")
        raw = driver._transport.broker.logs["g-by_user-repartition"]
        # with Python objects the repartition records skip the log: handed straight over
        assert bool(driver._worker._direct) is not encode
        assert driver.table("per_user") == {"u1": 3, "u2": 2, "u3": 1}
    assert [c.key for c in contexts] == users
    assert {c.topic for c in contexts} == {"g-by_user-repartition"}
    assert [c.partition for c in contexts] == [
        partition_for(u.encode(), topic.partitions) for u in users
    ]
    assert [c.timestamp for c in contexts] == [100.0 + i for i in range(len(users))]
    # offsets count per partition of the repartition topic, in the order records were read
    per_partition: dict[int, list[int]] = {}
    for c in contexts:
        per_partition.setdefault(c.partition, []).append(c.offset)
    assert all(offs == list(range(len(offs))) for offs in per_partition.values())
    assert all(c.headers == (("h", b"x"),) and c.header("h") == b"x" for c in contexts)
    assert all(c.header(ORIGIN_HEADER) is None for c in contexts)
    if encode:  # the origin header is there in the log, only hidden from steps
        assert all(any(n == ORIGIN_HEADER for n, _ in m[4]) for p in raw for m in p)


def test_key_by_with_context_reads_the_old_key(encode: bool) -> None:
    g = fg.Graph("g")
    src = g.source("in", key_type=str, value_type=int)

    def with_old_key(v: int, ctx: fg.RecordContext) -> str:
        return f"{ctx.key}/{v}"

    src.key_by(with_old_key, context=True).to("out", key_type=str)
    with TestDriver(g, encode=encode) as driver:
        driver.send("in", "a", 1)
        driver.send("in", "b", 2)
        assert driver.output("out") == [("a/1", 1), ("b/2", 2)]


def test_async_step_with_context(encode: bool) -> None:
    async def tag(v: int, ctx: fg.RecordContext) -> str:
        await asyncio.sleep(0.001 * (3 - v % 3))  # later records often finish first
        return f"{v}@{ctx.topic}:{ctx.partition}:{ctx.offset}:{ctx.timestamp}"

    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).map(tag, context=True).to("out")
    with TestDriver(g, encode=encode) as driver:
        for i in range(6):
            driver.send("in", "k", i, timestamp=float(i))
        assert [v for _, v in driver.output("out")] == [
            f"{i}@in:0:{i}:{float(i)}" for i in range(6)
        ]


def test_changes_carry_the_context_of_the_input_record(encode: bool) -> None:
    offsets: list[tuple[str, int, int]] = []

    def note(v: int, ctx: fg.RecordContext) -> None:
        offsets.append((ctx.key, v, ctx.offset))

    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).count(name="n").changes().peek(note, context=True)
    with TestDriver(g, encode=encode) as driver:
        for k in "aba":
            driver.send("in", k, 0)
    assert offsets == [("a", 1, 0), ("b", 1, 1), ("a", 2, 2)]


def test_a_context_step_that_raises_dead_letters_its_record(encode: bool) -> None:
    def picky(v: int, ctx: fg.RecordContext) -> int:
        if ctx.header("bad") is not None:
            raise ValueError("bad header")
        return v

    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).map(picky, context=True).to("out")
    with TestDriver(g, encode=encode) as driver:
        driver.send("in", "a", 1)
        driver.send("in", "b", 2, headers={"bad": b"1"})
        driver.send("in", "c", 3)
        assert driver.output("out") == [("a", 1), ("c", 3)]
        [dead] = driver.dead_letters()
        assert dead.headers["error.step"] == "picky"
        assert dead.headers["source.offset"] == "1"


def test_steps_without_context_get_no_context_object() -> None:
    """A plain step's push is the one without context: its function gets the value only."""
    calls: list[tuple[Any, ...]] = []

    def plain(*args: Any) -> int:
        calls.append(args)
        return 1

    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).map(plain).to("out")
    with TestDriver(g) as driver:
        driver.send("in", "a", 5)
    assert calls == [(5,)]
