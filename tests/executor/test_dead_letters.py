"""Dead letters: a record that fails goes to `<graph>-dlq` with its error; nothing else is lost."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import flowgraph as fg
from flowgraph.testing import TestDriver
from tests.executor.harness import DLQ, EXECUTORS

VALUES = [1, 2, 3, 4, 5]
BAD = 3
"""The value every failing step chokes on; it is at offset 2 of partition 0."""


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


def choke(v: int) -> int:
    if v == BAD:
        raise ValueError(f"bad {v}")
    return v


def headers(
    out,
    step: str,
    *,
    error: str = "ValueError",
    message: str = f"bad {BAD}",
    topic: str | None = None,
    offset: int = 2,
) -> dict[str, str]:
    return {
        "error.type": error,
        "error.message": message,
        "error.step": step,
        "source.topic": out.source_topic if topic is None else topic,
        "source.partition": "0",
        "source.offset": str(offset),
    }


GOOD = [v for v in VALUES if v != BAD]

# (build, expected sink outputs or tables) per failing step; the failing step is named "x".
CASES: dict[str, tuple[Callable[[fg.Stream], object], dict[str, object]]] = {
    "map": (
        lambda s: s.map(lambda v: choke(v) * 10, name="x").to("out"),
        {"out": [(None, v * 10) for v in GOOD]},
    ),
    "filter": (
        lambda s: s.filter(lambda v: choke(v) > 0, name="x").to("out"),
        {"out": [(None, v) for v in GOOD]},
    ),
    "flat_map": (
        lambda s: s.flat_map(lambda v: [choke(v)] * 2, name="x").to("out"),
        {"out": [(None, v) for v in GOOD for _ in range(2)]},
    ),
    "key_by": (
        lambda s: s.key_by(lambda v: choke(v) % 2, name="x").to("out"),
        {"out": [(v % 2, v) for v in GOOD]},
    ),
    "peek": (lambda s: s.peek(choke, name="x").to("out"), {"out": [(None, v) for v in GOOD]}),
    "sum": (lambda s: s.sum(choke, name="x"), {"x": {None: sum(GOOD)}}),
    "reduce": (lambda s: s.reduce(lambda a, b: a + choke(b), name="x"), {"x": {None: sum(GOOD)}}),
    "aggregate": (
        lambda s: s.aggregate(0, lambda acc, v: acc + choke(v), name="x"),
        {"x": {None: sum(GOOD)}},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_step_that_raises_sends_that_record_to_the_dlq(execute, case):
    build, expected = CASES[case]
    # A table keyed by None (these inputs have no key) exists only with objects in internal
    # topics; encoded, as on Kafka, its records are dead-lettered (test_encode_failures.py).
    out = execute(build, VALUES, encode=case not in ("sum", "reduce", "aggregate"))
    got = out.tables if case in ("sum", "reduce", "aggregate") else out.outputs
    assert got == expected
    (letter,) = out.dead_letters
    assert letter.headers == headers(out, "x")
    assert (letter.key, letter.value) == (None, b"3")


@pytest.mark.parametrize("case", ["map", "filter", "flat_map", "key_by", "peek", "aggregate"])
def test_an_async_step_that_raises_sends_that_record_to_the_dlq(execute, case):
    async def achoke(v: int) -> int:
        return choke(v)

    async def afold(acc: int, v: int) -> int:
        return acc + choke(v)

    async def aflat(v: int) -> list[int]:
        return [choke(v)] * 2

    async def akeep(v: int) -> bool:
        return choke(v) > 0

    builds = {
        "map": lambda s: s.map(achoke, name="x").to("out"),
        "filter": lambda s: s.filter(akeep, name="x").to("out"),
        "flat_map": lambda s: s.flat_map(aflat, name="x").to("out"),
        "key_by": lambda s: s.key_by(lambda v: v % 2, name="k").map(achoke, name="x").to("out"),
        "peek": lambda s: s.peek(achoke, name="x").to("out"),
        "aggregate": lambda s: s.aggregate(0, afold, name="x"),
    }
    out = execute(builds[case], VALUES, encode=case != "aggregate")  # as above: a None key
    (letter,) = out.dead_letters
    assert letter.headers["error.step"] == "x"
    assert letter.headers["error.type"] == "ValueError"
    assert letter.headers["error.message"] == f"bad {BAD}"
    if case == "aggregate":
        assert out.tables == {"x": {None: sum(GOOD)}}
    elif case == "key_by":
        assert sorted(out.outputs["out"]) == sorted((v % 2, v) for v in GOOD)
    elif case == "map":
        assert out.outputs == {"out": [(None, v) for v in GOOD]}
    else:
        assert out.outputs == CASES[case][1]


def test_a_failing_sink_callable(execute):
    seen: list[int] = []

    def collect(key: object, value: int) -> None:
        seen.append(choke(value))

    out = execute(lambda s: s.to(collect), VALUES)
    assert seen == GOOD
    (letter,) = out.dead_letters
    assert letter.headers == headers(out, "collect")


def test_a_value_the_sink_cannot_encode(execute):
    out = execute(
        lambda s: s.map(lambda v: "x" if v == BAD else v).to("out", value_type=int), VALUES
    )
    assert out.outputs == {"out": [(None, v) for v in GOOD]}
    (letter,) = out.dead_letters
    assert letter.headers["error.type"] == "SerializationError"
    assert letter.headers["error.step"] == "to-out"
    assert letter.headers["source.offset"] == "2"


def test_an_aggregate_failing_after_a_repartition(execute):
    def build(s: fg.Stream) -> None:
        s.key_by(lambda v: v % 2, name="k").aggregate(0, lambda a, v: a + choke(v), name="x")

    out = execute(build, VALUES)
    assert out.tables == {"x": {1: 1 + 5, 0: 2 + 4}}
    (letter,) = out.dead_letters
    assert letter.headers["error.step"] == "x"
    assert letter.headers["source.topic"] == "t-k-repartition"
    assert (letter.key, letter.value) == (b"1", b"3")


def test_a_flat_map_generator_that_raises_halfway_emits_nothing_for_that_record(execute):
    def explode(v: int) -> Iterator[int]:
        yield v * 10
        yield v * 10 + 1
        choke(v)
        yield v * 10 + 2

    out = execute(lambda s: s.flat_map(explode).to("out"), VALUES)
    assert out.values("out") == [v * 10 + i for v in GOOD for i in range(3)]
    (letter,) = out.dead_letters
    assert letter.headers == headers(out, "explode")


def test_several_failures_in_one_batch(execute):
    out = execute(lambda s: s.map(lambda v: 100 // (v % 3), name="x").to("out"), range(9))
    assert out.values("out") == [100 // (v % 3) for v in range(9) if v % 3]
    assert [d.headers["source.offset"] for d in out.dead_letters] == ["0", "3", "6"]
    assert {d.headers["error.type"] for d in out.dead_letters} == {"ZeroDivisionError"}


def test_values_that_do_not_decode():
    g = fg.Graph("t")
    src = g.source("in", key_type=int, value_type=int)
    src.map(lambda v: v * 10).to("out")
    src.count(name="c")
    with TestDriver(g) as driver:
        driver.send("in", 1, 1)
        driver.send("in", 1, b"not a number")
        driver.send("in", b"no key", 2)
        driver.send("in", 2, 3)
        assert driver.output("out") == [(1, 10), (2, 30)]
        assert driver.table("c") == {1: 1, 2: 1}
        value_letter, key_letter = driver.dead_letters()
        assert driver.output(DLQ) == [
            (value_letter.key, value_letter.value),
            (key_letter.key, key_letter.value),
        ]
    assert (value_letter.key, value_letter.value) == (b"1", b"not a number")
    assert value_letter.headers == {
        "error.type": "SerializationError",
        "error.message": "cannot decode value of topic 'in': not a decimal integer: "
        "b'not a number'",
        "error.step": "in",
        "source.topic": "in",
        "source.partition": "0",
        "source.offset": "1",
    }
    assert key_letter.key == b"no key"
    assert key_letter.headers["error.message"].startswith("cannot decode key of topic 'in'")
    assert key_letter.headers["source.offset"] == "2"
