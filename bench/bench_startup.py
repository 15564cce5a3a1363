"""Benchmark: time from a worker's start to its first processed record, by partition count.

For a source topic of 4, 16 and 64 partitions on the test broker (tansu, started here, or
FLOWGRAPH_TEST_BROKER), a graph re-keys clicks (`key_by`, so a repartition topic) and counts
them (a store, so a changelog). A first worker processes the first half of the input and
stops, leaving changelogs, repartition records and checkpoints; the other half is written
after it. Then a second worker with a fresh store directory starts, as a new machine would:
it joins the group, restores every store from its changelog, scans its output topics for
what the first run wrote (`recover_writes`), and processes. Printed per partition count: the
join (start until the group assigned partitions), and the time to the first record
processed, from start.

    python bench/bench_startup.py [--partitions 4 16 64] [--records-per-partition N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flowgraph as fg
from bench.bench_kafka import Click, make_records, produce
from flowgraph.partitioner import partition_for
from flowgraph.runtime import open_transport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from planner.physical import PhysicalPlan
from tests.kafka_broker import open_broker

GROUP = "?session_timeout_ms=6000&heartbeat_interval_ms=500"
"""tansu holds a join for part of the session timeout: keep it short, but above a restore."""


def by_url(click: Click) -> str:
    return click.url


def graph(graph_id: str, topic: str, partitions: int) -> fg.Graph:
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.key_by(by_url).count(name="per_url")
    return g


async def first_run(url: str, plan: PhysicalPlan) -> None:
    """The earlier run whose changelogs, repartition records and checkpoints are recovered:
    it processes all the input there is so far."""
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(plan, open_transport(url + GROUP), open_backend(f"rocksdb://{tmp}"))
        await worker.start()
        try:
            await worker.run(until_idle=True, stall_timeout=900)  # slow on an old build
        finally:
            await worker.stop()


async def timed_start(url: str, plan: PhysicalPlan, timeout: float) -> tuple[float, float, int]:
    """Seconds from start to the group's assignment, and to the first record processed;
    changelog records restored."""
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(plan, open_transport(url + GROUP), open_backend(f"rocksdb://{tmp}"))
        started = time.perf_counter()
        joined = 0.0

        async def watch_join() -> None:
            nonlocal joined
            while True:
                consumer = worker._consumer
                if consumer is not None and consumer.assignment():
                    joined = time.perf_counter() - started
                    return
                await asyncio.sleep(0.01)

        watcher = asyncio.get_running_loop().create_task(watch_join())
        try:
            await worker.start()
            while worker.stats.events == 0:
                if time.perf_counter() - started > timeout:
                    return joined, float("inf"), worker.stats.restored
                await worker.step(1, 0.05)
            return joined, time.perf_counter() - started, worker.stats.restored
        finally:
            watcher.cancel()
            await worker.stop()


async def case(
    url: str, bootstrap: str, partitions: int, per_partition: int, timeout: float
) -> str:
    suffix = uuid.uuid4().hex[:8]
    topic = f"startup-{partitions}-{suffix}"
    plan = graph(f"startup-{partitions}-{suffix}", topic, partitions).plan()
    transport = open_transport(url, create_topics=True)
    await transport.start()
    await transport.create_topics(plan.topics[:1])
    await transport.stop()
    n = per_partition * partitions
    records = [(partition_for(k, partitions), k, v) for k, v in make_records(n)]
    await produce(bootstrap, topic, records[: n // 2])
    await first_run(url, plan)
    await produce(bootstrap, topic, records[n // 2 :])
    joined, first, restored = await timed_start(url, plan, timeout)
    shown = f"{first:8.1f} s" if first != float("inf") else f" > {timeout:.0f} s"
    return f"{partitions:>10}{n:>10,}{restored:>10,}{joined:>10.1f} s{shown:>16}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--records-per-partition", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up a case after this")
    args = parser.parse_args()
    broker = open_broker()
    try:
        print("start of a worker with a fresh store after an earlier run (key_by + count)")
        print(f"{'partitions':>10}{'records':>10}{'restored':>10}{'join':>12}{'first record':>16}")
        for partitions in args.partitions:
            line = await case(
                broker.url, broker.bootstrap, partitions, args.records_per_partition, args.timeout
            )
            print(line, flush=True)
    finally:
        broker.stop()
    print("target: first record within 5 s plus the join for 64 partitions")


if __name__ == "__main__":
    asyncio.run(main())
