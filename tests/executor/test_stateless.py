"""Stateless operators, each body run through TestDriver and through fg.run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

import flowgraph as fg
from flowgraph.testing import TestDriver
from tests.executor.harness import EXECUTORS


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


VALUES = [3, 1, 4, 1, 5, 9, 2, 6]


def test_map(execute):
    out = execute(lambda s: s.map(lambda v: v * 10).to("out"), VALUES)
    assert out.outputs == {"out": [(None, v * 10) for v in VALUES]}
    assert out.dead_letters == []


def test_map_values_is_map(execute):
    out = execute(lambda s: s.map_values(lambda v: -v).to("out"), VALUES)
    assert out.values("out") == [-v for v in VALUES]


def test_map_to_another_type(execute):
    def describe(v: int) -> str:
        return f"n{v}"

    out = execute(lambda s: s.map(describe).to("out"), VALUES)
    assert out.values("out") == [f"n{v}" for v in VALUES]


def test_filter(execute):
    out = execute(lambda s: s.filter(lambda v: v % 2 == 1).to("out"), VALUES)
    assert out.values("out") == [3, 1, 1, 5, 9]


def test_flat_map(execute):
    out = execute(lambda s: s.flat_map(lambda v: [v] * (v % 3)).to("out"), VALUES)
    assert out.values("out") == [v for v in VALUES for _ in range(v % 3)]


def test_flat_map_generator(execute):
    def digits(v: int) -> Iterator[int]:
        for i in range(v % 4):
            yield v * 10 + i

    out = execute(lambda s: s.flat_map(digits).to("out"), VALUES)
    assert out.values("out") == [v * 10 + i for v in VALUES for i in range(v % 4)]


def test_peek(execute):
    seen: list[int] = []
    out = execute(lambda s: s.peek(seen.append).map(lambda v: v + 1).to("out"), VALUES)
    assert seen == VALUES
    assert out.values("out") == [v + 1 for v in VALUES]


def test_peek_without_consumer(execute):
    seen: list[int] = []
    execute(lambda s: s.peek(seen.append), VALUES)
    assert seen == VALUES


def test_key_by(execute):
    out = execute(lambda s: s.key_by(lambda v: v % 3, name="mod3").to("out"), VALUES)
    assert out.outputs["out"] == [(v % 3, v) for v in VALUES]


def test_key_by_to_a_wider_topic_keeps_order_per_key(execute):
    out = execute(
        lambda s: s.key_by(lambda v: v % 3, name="mod3").to("out", partitions=3), range(30)
    )
    assert out.by_key("out") == {k: list(range(k, 30, 3)) for k in range(3)}


def test_merge_of_two_branches(execute):
    def build(s: fg.Stream) -> None:
        small = s.filter(lambda v: v < 4).map(lambda v: ("small", v))
        big = s.filter(lambda v: v >= 4).map(lambda v: ("big", v))
        small.merge(big, name="both").to("out")

    out = execute(build, VALUES, value_type=int)
    pairs = [tuple(p) for p in out.values("out")]
    assert Counter(pairs) == Counter(("small" if v < 4 else "big", v) for v in VALUES)
    # each input keeps its own order
    assert [v for tag, v in pairs if tag == "small"] == [v for v in VALUES if v < 4]
    assert [v for tag, v in pairs if tag == "big"] == [v for v in VALUES if v >= 4]


def test_merge_of_two_sources():
    g = fg.Graph("t")
    a = g.source("a", key_type=str, value_type=int, partitions=2)
    b = g.source("b", key_type=str, value_type=int, partitions=2)
    a.merge(b).map(lambda v: v * 2).to("out")
    with TestDriver(g) as driver:
        driver.send("a", "x", 1)
        driver.send("b", "x", 2)
        driver.send("a", "y", 3)
        driver.send("b", "x", 4)
        out = driver.output("out")
    assert sorted(out) == [("x", 2), ("x", 4), ("x", 8), ("y", 6)]
    assert [v for k, v in out if k == "x"] == [2, 4, 8]


def test_to_topic_and_callable(execute):
    calls: list[tuple[object, int]] = []

    def collect(key: object, value: int) -> None:
        calls.append((key, value))

    def build(s: fg.Stream) -> None:
        keyed = s.key_by(lambda v: v % 2, name="parity")
        keyed.to("out")
        keyed.to(collect)

    out = execute(build, VALUES)
    assert out.outputs == {"out": [(v % 2, v) for v in VALUES]}
    assert calls == [(v % 2, v) for v in VALUES]


def test_two_sinks_branch_from_one_stream(execute):
    def build(s: fg.Stream) -> None:
        s.map(lambda v: v + 1).to("plus")
        s.map(lambda v: v - 1).to("minus")

    out = execute(build, VALUES)
    assert out.values("plus") == [v + 1 for v in VALUES]
    assert out.values("minus") == [v - 1 for v in VALUES]


def test_records_as_json(execute):
    rows = [{"user": "a", "n": 1}, {"user": "b", "n": 2}, {"user": "a", "n": 3}]
    out = execute(
        lambda s: s.key_by(lambda r: r["user"], name="user").map(lambda r: r["n"]).to("out"),
        rows,
        value_type="json",
    )
    assert out.outputs["out"] == [("a", 1), ("b", 2), ("a", 3)]
