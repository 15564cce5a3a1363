"""What a worker says it waits for: `Worker.phase`, `Worker.restoring`, `waiting_for()` and
the report it logs, on `memory://` (the Kafka cases are in test_kafka_rebalance.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

import flowgraph as fg
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from planner.physical import PhysicalPlan

PARTS = 4


def by_url(value: str) -> str:
    return value


def make_plan() -> PhysicalPlan:
    g = fg.Graph("ph")
    g.source("ph-clicks", key_type=str, value_type=str, partitions=PARTS).key_by(by_url).count(
        name="per_url"
    )
    return g.plan()


def write(broker: MemoryBroker, n: int) -> None:
    broker.ensure("ph-clicks", PARTS)
    broker.append(
        "ph-clicks",
        [(i % PARTS, f"u{i}".encode(), f"/p/{i % 7}".encode(), 0.0, None) for i in range(n)],
    )


async def run_once(broker: MemoryBroker) -> Worker:
    worker = Worker(make_plan(), MemoryTransport(broker, encoded=True), open_backend("memory://"))
    assert worker.phase == "connecting"
    assert worker.waiting_for() == "connecting to memory://"
    await worker.start()
    try:
        await worker.run(until_idle=True)
    finally:
        await worker.stop()
    return worker


def test_a_started_worker_runs_and_says_how_much_it_restored() -> None:
    broker = MemoryBroker()
    write(broker, 700)
    first = asyncio.run(run_once(broker))
    assert first.phase == "running"
    assert first.restoring.records == 0
    assert first.restoring.done == first.restoring.total == 2 * PARTS  # two sub-topologies
    second = asyncio.run(run_once(broker))  # a fresh store: restored from the changelog
    assert second.restoring.records == second.stats.restored == 7
    assert second.waiting_for() is None


def test_a_quiet_worker_logs_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    write(broker, 10)

    async def main() -> Worker:
        worker = Worker(
            make_plan(),
            MemoryTransport(broker, encoded=True),
            open_backend("memory://"),
            waiting_report=0.2,
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.7, stop.set)
        await worker.start()
        try:
            await worker.run(stop=stop)
        finally:
            await worker.stop()
        return worker

    with caplog.at_level(logging.WARNING, logger="flowgraph"):
        worker = asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if r.name == "flowgraph"]
    assert said, "nothing logged"
    assert all("no records for" in line and "'ph-clicks'" in line for line in said), said
    assert 1 <= len(said) <= 4, said  # once per waiting_report, not per step
    assert (worker.waiting_for() or "").startswith("no records for")


def test_waiting_report_must_be_positive() -> None:
    with pytest.raises(fg.ConfigurationError, match="waiting_report"):
        Worker(make_plan(), MemoryTransport(), open_backend("memory://"), waiting_report=0)
