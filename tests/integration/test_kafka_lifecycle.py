"""Task lifecycle across rebalances, with two workers in one process on the test broker.

A rebalance suspends the tasks it takes away after committing them; the tasks that come
back to the same worker run on as they were (the same objects, no restore), and only the
partitions that move are restored elsewhere. Standby tasks follow the changelogs of tasks
another worker runs and, promoted, restore only what they had not applied.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from flowgraph.runtime import open_transport
from flowgraph.runtime.state.rocksdb import RocksDBBackend
from flowgraph.runtime.worker import Worker
from planner.pipeline import plan as compile_plan
from tests.integration import kafka_jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    changelog_table,
    counts,
    make_clicks,
    produce,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _worker(graph: Any, url: str, state: Path) -> Worker:
    return Worker(compile_plan(graph), open_transport(url), RocksDBBackend(state))


async def _until(what: str, predicate: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


def test_a_rebalance_keeps_the_tasks_that_stay_and_moves_only_the_others(
    kafka: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id, topic = f"kt-life-{suffix}", f"kt-life-{suffix}-clicks"
    graph = kafka_jobs.make_graph(graph_id, topic, PARTITIONS)
    url = f"{kafka.url}?{FAST_GROUP}"
    first, second = make_clicks(2_000, seed=1), make_clicks(2_000, seed=2)

    async def main() -> None:
        from tests.integration.test_kafka import create_topic

        await create_topic(kafka, topic, PARTITIONS)
        await produce(kafka, topic, first, PARTITIONS)
        a = _worker(graph, url, tmp_path / "a")
        b = _worker(graph, url, tmp_path / "b")
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        await a.start()
        run_a = asyncio.create_task(a.run(stop=stop_a))
        await _until("a owns every partition", lambda: len(a.tasks) == PARTITIONS, 30)
        await _until("a counted the first input", lambda: a.stats.events >= len(first), 30)
        before = dict(a.tasks)
        restored = a.stats.restored
        await b.start()
        run_b = asyncio.create_task(b.run(stop=stop_b))
        await _until(
            "both own partitions",
            lambda: bool(a.tasks) and bool(b.tasks) and not a._pending and not b._pending,
            30,
        )
        kept = set(a.tasks)
        assert 0 < len(kept) < PARTITIONS
        assert all(a.tasks[tp] is before[tp] for tp in kept), "a task that stayed was rebuilt"
        assert a.stats.restored == restored, "a task that stayed was restored again"
        running = {t for t, s in a.task_states().items() if s == "running"}
        standby = {t for t, s in a.task_states().items() if s == "standby"}
        assert len(running) == len(kept)
        assert standby == {t for t, s in b.task_states().items() if s == "running"}
        assert f"Tasks on this worker: {len(kept)} running, {len(standby)} standby" in a.explain()
        await produce(kafka, topic, second, PARTITIONS)
        await _until(
            "everything is counted",
            lambda: a.stats.events + b.stats.events >= len(first) + len(second),
            60,
        )
        await _until("b committed it all", lambda: not b._touched, 30)
        await _until(
            "a's standbys applied b's changelog",
            lambda: set(a.standby_lag().values()) == {0},
            30,
        )
        restored = a.stats.restored
        stop_b.set()
        await run_b
        await b.stop()  # leaves the group: a takes b's tasks over from its standbys
        await _until("a runs every task", lambda: len(a.tasks) == PARTITIONS and not a._pending, 30)
        assert a.stats.restored == restored, "a promoted standby restored more than its tail"
        assert a.table(kafka_jobs.TABLE) == counts(first, second)
        stop_a.set()
        await run_a
        await a.stop()

    asyncio.run(asyncio.wait_for(main(), 150))
    assert changelog_table(kafka, graph) == counts(first, second)


@pytest.mark.slow
def test_a_static_worker_restarted_gets_its_tasks_back_without_a_rebalance(
    kafka: Broker, tmp_path: Path
) -> None:
    """A worker with ``group_instance_id`` that stops and comes back within the session
    timeout gets its tasks back, and the other worker's tasks run on without a restore. The
    restarted worker sends the join state its store directory kept from its last join."""
    suffix = uuid.uuid4().hex[:8]
    graph_id, topic = f"kt-static-{suffix}", f"kt-static-{suffix}-clicks"
    graph = kafka_jobs.make_graph(graph_id, topic, PARTITIONS)
    url = f"{kafka.url}?session_timeout_ms=12000&heartbeat_interval_ms=500&standby_replicas=0"
    first, second = make_clicks(2_000, seed=3), make_clicks(2_000, seed=4)

    async def main() -> None:
        from tests.integration.test_kafka import create_topic

        await create_topic(kafka, topic, PARTITIONS)
        await produce(kafka, topic, first, PARTITIONS)
        a = _worker(graph, f"{url}&group_instance_id=a-{suffix}", tmp_path / "a")
        b = _worker(graph, f"{url}&group_instance_id=b-{suffix}", tmp_path / "b")
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        await b.start()  # alone first: its join after a's comes with the tasks it holds
        run_b = asyncio.create_task(b.run(stop=stop_b))
        await _until("b runs every task", lambda: len(b.tasks) == PARTITIONS, 40)
        await a.start()
        run_a = asyncio.create_task(a.run(stop=stop_a))
        await _until(
            "both run tasks",
            lambda: (
                bool(a.tasks)
                and len(a.tasks) + len(b.tasks) == PARTITIONS
                and not a._pending
                and not b._pending
            ),
            60,
        )
        await _until("the first input is counted", lambda: not a._touched and not b._touched, 30)
        tasks_a, tasks_b = dict(a.tasks), set(b.tasks)
        rebalances, restored_a = a.rebalancer.rebalances, a.stats.restored
        stop_b.set()
        await run_b
        await b.stop()  # a static member sends no LeaveGroup: its tasks wait for it
        b2 = _worker(graph, f"{url}&group_instance_id=b-{suffix}", tmp_path / "b")
        await b2.start()
        stop_b2 = asyncio.Event()
        run_b2 = asyncio.create_task(b2.run(stop=stop_b2))
        await _until("b is back with its tasks", lambda: set(b2.tasks) == tasks_b, 40)
        await produce(kafka, topic, second, PARTITIONS)
        expected = counts(first, second)
        await _until(
            "everything is counted",
            lambda: {**a.table(kafka_jobs.TABLE), **b2.table(kafka_jobs.TABLE)} == expected,
            60,
        )
        # On Apache Kafka the other worker sees no rebalance at all; tansu rebalances a
        # static member that comes back with other join data than its last (see
        # docs/contributing.md), and then the other worker's tasks run on, not rebuilt.
        assert a.rebalancer.rebalances >= rebalances
        assert all(a.tasks[tp] is task for tp, task in tasks_a.items()), "a task was rebuilt"
        assert a.stats.restored == restored_a, "a task of the other worker was restored"
        stop_a.set()
        stop_b2.set()
        await asyncio.gather(run_a, run_b2)
        await asyncio.gather(a.stop(), b2.stop())

    asyncio.run(asyncio.wait_for(main(), 170))
    assert changelog_table(kafka, graph) == counts(first, second)
