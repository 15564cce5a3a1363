"""Step counts and dead letters on Kafka, across a rebalance.

Two workers of one group run in one process on the test broker. The first owns every
partition and processes a first input; the second joins, and the rebalance takes the first
worker's tasks away (their step counts must stay with it); a second input is then shared.
Over the two workers, every step's count must add up to what the input holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph.runtime.worker import Worker
from planner import logical as lg
from tests.integration.test_kafka import (
    FAST_GROUP,
    TABLE,
    Job,
    create_topic,
    make_clicks,
    produce,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

FIRST, SECOND = 3_000, 3_000


async def until(what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def test_step_counts_add_up_over_a_rebalance(kafka: Broker, tmp_path: Path) -> None:
    job = Job.new("step-counts", factory="make_dead_letter_graph")
    graph = job.graph()
    source = next(
        s.id for sub in graph.plan().subtopologies for s in sub.steps if isinstance(s, lg.Source)
    )
    first, second = make_clicks(FIRST, seed=21), make_clicks(SECOND, seed=22)
    broker = f"{kafka.url}?{FAST_GROUP}"

    async def main() -> tuple[fg.RunResult, fg.RunResult, set[int]]:
        await create_topic(kafka, job.topic, job.partitions)
        await produce(kafka, job.topic, first, job.partitions, "user")
        workers: list[Worker] = []
        stops = [asyncio.Event(), asyncio.Event()]

        def start(i: int) -> Awaitable[fg.RunResult]:
            return asyncio.ensure_future(
                fg.run_async(
                    graph,
                    broker=broker,
                    store="memory://",
                    stop=stops[i],
                    on_start=workers.append,
                    dead_letters_file=tmp_path / f"w{i}.jsonl" if i else None,
                )
            )

        a = start(0)
        await until(
            "the first worker has processed the first input",
            lambda: bool(workers) and workers[0].stats.events == FIRST,
        )
        assert len(workers[0].tasks) == job.partitions
        b = start(1)
        await until(
            "the second worker owns partitions",
            lambda: len(workers) == 2 and bool(workers[1].tasks) and workers[0]._joined,
        )
        moved = {p for _, p in workers[1].tasks}
        await produce(kafka, job.topic, second, job.partitions, "user")
        await until(
            "both inputs are processed",
            lambda: sum(w.stats.events for w in workers) == FIRST + SECOND,
        )
        for stop in stops:
            stop.set()
        result_a, result_b = await asyncio.wait_for(asyncio.gather(a, b), 60)
        return result_a, result_b, moved

    result_a, result_b, moved = asyncio.run(asyncio.wait_for(main(), 150))
    assert moved and len(moved) < 4  # the rebalance moved some partitions, not all
    clicks = first + second
    bots = sum(1 for c in clicks if c.bot)
    assert bots > 0
    total = {
        step: result_a.step_counts.get(step, 0) + result_b.step_counts.get(step, 0)
        for step in (source, "reject_bots", TABLE)
    }
    assert total == {
        source: len(clicks),
        "reject_bots": len(clicks) - bots,
        TABLE: len(clicks) - bots,
    }
    # the first worker counted the first input before the rebalance took its tasks away
    assert result_a.step_counts[source] >= FIRST
    kinds = result_a.dead_letters_by_step + result_b.dead_letters_by_step
    assert {(k.step, k.error_type) for k in kinds} == {("reject_bots", "ValueError")}
    assert sum(k.count for k in kinds) == result_a.dead_letters + result_b.dead_letters == bots
    assert result_a.dead_letter_file is None  # on Kafka the dead-letter topic keeps them
    assert result_b.dead_letter_file == str(tmp_path / "w1.jsonl")  # unless a file is named
    lines = (tmp_path / "w1.jsonl").read_text().splitlines()
    assert len(lines) == result_b.dead_letters > 0
    assert all(json.loads(line)["step"] == "reject_bots" for line in lines)
    assert list(tmp_path.iterdir()) == [tmp_path / "w1.jsonl"]
