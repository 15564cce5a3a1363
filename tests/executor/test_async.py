"""`async def` steps give the same results as their sync versions, in the same order per key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import flowgraph as fg
from tests.executor.harness import EXECUTORS


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


VALUES = list(range(40))


def as_async(fn: Callable[..., Any], delay: Callable[..., float] = lambda *a: 0.0):
    """`fn` as an ``async def`` that sleeps `delay(*args)` seconds first."""

    async def run(*args: Any) -> Any:
        await asyncio.sleep(delay(*args))
        return fn(*args)

    return run


def jitter(v: int, *rest: Any) -> float:
    """A few milliseconds, varying so later records often finish first."""
    value = rest[-1] if rest else v
    return 0.001 * ((value * 7) % 4)


def pipeline(wrap: Callable[..., Any], seen: list[int]) -> Callable[[fg.Stream], None]:
    """The same graph with every user function passed through `wrap`."""

    def build(s: fg.Stream) -> None:
        keyed = (s.map(wrap(lambda v: v * 3), name="triple")
                 .filter(wrap(lambda v: v % 2 == 0), name="even")
                 .flat_map(wrap(lambda v: [v, v + 1]), name="pair")
                 .peek(wrap(seen.append), name="look")
                 .key_by(wrap(lambda v: v % 5), name="mod5"))
        keyed.to("keyed")
        keyed.aggregate(list, wrap(lambda acc, v: [*acc, v]), name="history")
        keyed.sum(wrap(lambda v: v * v), name="squares")
        keyed.reduce(wrap(lambda a, b: a * 2 + b), name="fold")

    return build


def test_async_steps_match_their_sync_versions(execute):
    sync_seen: list[int] = []
    async_seen: list[int] = []
    sync = execute(pipeline(lambda f: f, sync_seen), VALUES)
    done = execute(pipeline(lambda f: as_async(f, jitter), async_seen), VALUES)
    assert done.tables == sync.tables
    assert done.by_key("keyed") == sync.by_key("keyed")
    assert sorted(async_seen) == sorted(sync_seen)
    assert done.dead_letters == sync.dead_letters == []
    expected = [w for v in VALUES if v * 3 % 2 == 0 for w in (v * 3, v * 3 + 1)]
    assert sync_seen == expected
    assert sync.tables["history"] == {
        k: [w for w in expected if w % 5 == k] for k in range(5)
    }


def test_async_map_keeps_order_per_key(execute):
    async def slow(v: int) -> int:
        await asyncio.sleep(0.001 * ((v * 7) % 5))
        return v

    def build(s: fg.Stream) -> None:
        s.map(slow).key_by(lambda v: v % 3, name="mod3").to("out", partitions=3)

    out = execute(build, VALUES)
    assert out.by_key("out") == {k: [v for v in VALUES if v % 3 == k] for k in range(3)}


def test_async_sink_callable(execute):
    calls: list[tuple[object, int]] = []

    async def collect(key: object, value: int) -> None:
        await asyncio.sleep(jitter(value))
        calls.append((key, value))

    execute(lambda s: s.to(collect), VALUES)
    assert sorted(calls) == [(None, v) for v in VALUES]


def test_async_aggregate_keeps_order_per_key(execute):
    async def append(acc: list[int], v: int) -> list[int]:
        await asyncio.sleep(jitter(v))
        return [*acc, v]

    out = execute(
        lambda s: s.key_by(lambda v: v % 4, name="mod4").aggregate(list, append, name="a")
        .changes().to("out"),
        VALUES,
    )
    assert out.tables == {"a": {k: [v for v in VALUES if v % 4 == k] for k in range(4)}}
    assert out.by_key("out") == {
        k: [[v for v in VALUES if v % 4 == k][: i + 1] for i in range(10)] for k in range(4)
    }


def test_async_generator_flat_map(execute):
    async def pairs(v: int) -> AsyncIterator[int]:
        yield v
        await asyncio.sleep(0)
        yield v + 100

    try:
        out = execute(lambda s: s.flat_map(pairs).to("out"), [1, 2])
    except fg.GraphDefinitionError:
        return  # a clear error while building is an acceptable answer too
    assert out.dead_letters == []
    assert out.values("out") == [1, 101, 2, 102]
