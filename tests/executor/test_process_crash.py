"""`process` after crashes at every commit point: a record applied before the crash is not
applied again, and its outputs are neither lost nor written twice (one record, several
outputs, keys deleted and started again; after a repartition, over two merged inputs, and
with an `async def` function)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import POINTS
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs
from tests.executor.harness import crash_run

RESET = 5


def tally(n: int, v: int) -> tuple[int | None, list[int]]:
    """Counts the key's records; the fifth deletes the state and says so with a 0."""
    n += 1
    if n == RESET:
        return None, [v, -v, 0]
    return n, [v, -v]


def by_mod(v: int) -> str:
    return f"k{v % 4}"


async def async_tally(n: int, v: int) -> tuple[int | None, list[int]]:
    return tally(n, v)


VARIANTS = ("repartition", "merged", "async")
"""Where the records come from: a `key_by` and its repartition topic; two source topics
merged straight into the step (one position per input); the repartition, with `async def`."""


def graph(variant: str) -> fg.Graph:
    g = fg.Graph("pc")
    src = g.source("in", key_type=str, value_type=int, partitions=2)
    if variant == "merged":
        other = g.source("in2", key_type=str, value_type=int, partitions=2)
        src.merge(other).process(tally, 0, value_type=int).to("out")
        return g
    fn = async_tally if variant == "async" else tally
    src.key_by(by_mod, key_type=str).process(fn, 0, name="tally", value_type=int).to("out")
    return g


def run_rounds(
    variant: str, crash: tuple[str, int] | None
) -> tuple[Counter[tuple[str, int]], dict, bool]:
    """Three rounds of input, each run until idle; `crash` strikes in the second."""
    plan = graph(variant).plan()
    codecs = topic_codecs(plan, in_process=False)
    broker = MemoryBroker()
    backend = MemoryBackend()
    crashed = False
    kc, vc = codecs["in"]
    for round_ in range(3):
        records: dict[str, list[Any]] = {"in": [], "in2": []}
        for i in range(14):
            value = round_ * 100 + i + 1
            # merged: the sources are keyed as the step needs, half of them on each topic
            topic = "in2" if variant == "merged" and i % 2 else "in"
            kb = kc.encode(by_mod(value) if variant == "merged" else f"s{i}")
            records[topic].append((partition_for(kb, 2), kb, vc.encode(value), 0.0, None))
        for topic, batch in records.items():
            broker.ensure(topic, 2)
            broker.append(topic, batch)
        now = crash if round_ == 1 else None
        if now and now[0] == "in-restore":
            backend = MemoryBackend()  # so that the run restores, and crashes in it
        if asyncio.run(crash_run(plan, broker, backend, now)):
            crashed = True
            backend = MemoryBackend()  # the store is lost too: restored from changelogs
    asyncio.run(crash_run(plan, broker, backend, None))
    kc, vc = codecs["out"]
    written = Counter((kc.decode(k), vc.decode(v)) for k, v, *_ in broker.records("out"))
    restored = Worker(plan, MemoryTransport(broker, encoded=True), MemoryBackend())
    asyncio.run(restored.start())
    try:
        state = restored.table("tally")
    finally:
        asyncio.run(restored.stop())
    return written, state, crashed


EXPECTED_VALUES = [r * 100 + i + 1 for r in range(3) for i in range(14)]


@pytest.fixture(scope="module", params=VARIANTS)
def uncrashed(request: pytest.FixtureRequest) -> tuple[str, Counter[tuple[str, int]], dict]:
    written, state, crashed = run_rounds(request.param, None)
    assert not crashed
    per_key = Counter(by_mod(v) for v in EXPECTED_VALUES)
    # what tally must leave, whatever order each key's records came in
    assert written == Counter(
        [(by_mod(v), v) for v in EXPECTED_VALUES]
        + [(by_mod(v), -v) for v in EXPECTED_VALUES]
        + [(k, 0) for k, n in per_key.items() for _ in range(n // RESET)]
    )
    assert state == {k: n % RESET for k, n in per_key.items() if n % RESET}
    assert any(n >= RESET for n in per_key.values())
    return request.param, written, state


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("nth", [1, 3])
def test_process_is_exact_after_a_crash(point: str, nth: int, uncrashed: Any) -> None:
    variant, want_written, want_state = uncrashed
    written, state, crashed = run_rounds(variant, (point, nth))
    if nth == 1:
        assert crashed  # the second run did crash (a third commit may not come)
    assert written == want_written, "an output lost or written twice"
    assert state == want_state, "a record applied twice or not at all"
