"""Benchmark: a click counter written as a Faust-style agent against the same count as a
builder graph (records pre-written to a 4-partition topic, not timed).

On memory:// by default; with ``--kafka`` on the test broker (tansu, started here, or
FLOWGRAPH_TEST_BROKER), each timed from its first record to its last commit.

    python bench/bench_agent_clicks.py [--records N] [--case agent|builder] [--profile]
    python bench/bench_agent_clicks.py --kafka [--records N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import flowgraph as fg
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker

PARTITIONS = 4


def make_records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"/page/{i * 7919 % 2000}".encode(), b"%d" % (i % 5 + 1)) for i in range(n)]


def builder(graph_id: str = "bench", topic: str = "clicks") -> Any:
    g = fg.Graph(graph_id)
    g.source(topic, key_type=str, value_type=int, partitions=PARTITIONS).sum(name="counts")
    return g


def agent_app(app_id: str = "bench", topic: str = "clicks") -> Any:
    app = fg.App(app_id, topic_partitions=PARTITIONS)
    clicks = app.topic(topic, key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(clicks)
    async def count(stream: Any) -> None:
        async for url, n in stream.items():
            counts[url] += n

    return app


def run(graph: Any, records: list[tuple[bytes, bytes]]) -> tuple[float, dict[str, int]]:
    plan = graph.plan()
    transport = MemoryTransport()
    transport.broker.ensure("clicks", PARTITIONS)
    transport.broker.append(
        "clicks", [(zlib.crc32(k) % PARTITIONS, k, v, 0.0, None) for k, v in records]
    )

    async def main() -> tuple[float, dict[str, int]]:
        worker = Worker(plan, transport, open_backend("memory://"))
        await worker.start()
        start = time.perf_counter()
        await worker.run(until_idle=True, idle_wait=0.0)
        elapsed = time.perf_counter() - start
        table = worker.table("counts")
        await worker.stop()
        return elapsed, table

    return asyncio.run(main())


def run_case(case: str, n: int, profile: bool) -> dict[str, float]:
    records = make_records(n)
    graph = agent_app() if case == "agent" else builder()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        elapsed, counts = run(graph, records)
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    else:
        elapsed, counts = run(graph, records)
    return {"rate": n / elapsed, "total": float(sum(counts.values())), "keys": len(counts)}


async def kafka_case(url: str, graph: Any, n: int) -> tuple[float, dict[str, int]]:
    from flowgraph.runtime import open_transport

    worker = Worker(graph.plan(), open_transport(url), open_backend("memory://"))
    await worker.start()
    first = 0.0
    while worker.stats.events < n:
        await worker.step(timeout=0.2)
        if worker.stats.events and not first:
            first = time.perf_counter()
    async with worker._lock:
        await worker.commit()
    elapsed = time.perf_counter() - first
    table = worker.table("counts")
    await worker.stop()
    return elapsed, table


def kafka(n: int, rounds: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.bench_kafka import produce
    from tests.kafka_broker import open_broker

    broker = open_broker()
    try:
        topic = f"clicks-{uuid.uuid4().hex[:8]}"
        records = [(zlib.crc32(k) % PARTITIONS, k, v) for k, v in make_records(n)]
        asyncio.run(produce(broker.bootstrap, topic, records))
        best: dict[str, float] = {}
        for _ in range(rounds):
            for case in ("builder", "agent"):
                gid = f"bench-{case}-{uuid.uuid4().hex[:8]}"
                graph = agent_app(gid, topic) if case == "agent" else builder(gid, topic)
                elapsed, counts = asyncio.run(kafka_case(broker.url, graph, n))
                assert sum(counts.values()) == sum(i % 5 + 1 for i in range(n)), case
                best[case] = max(best.get(case, 0.0), n / elapsed)
    finally:
        broker.stop()
    print(f"click counts, {n:,} records, {PARTITIONS} partitions, kafka (tansu), best of {rounds}")
    for case, rate in best.items():
        print(f"{case:<10}{rate:>12,.0f} records/s")
    print(f"agent / builder: {best['agent'] / best['builder']:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--case", choices=["agent", "builder"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--kafka", action="store_true")
    args = parser.parse_args()
    if args.kafka:
        kafka(args.records, args.rounds)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.records, args.profile)))
        return
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for case in ("builder", "agent"):
            out = subprocess.run(
                [sys.executable, __file__, "--case", case, "--records", str(args.records)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout)
            if case not in best or r["rate"] > best[case]["rate"]:
                best[case] = r
    assert best["agent"]["total"] == best["builder"]["total"], best
    print(f"click counts, {args.records:,} records, {PARTITIONS} partitions, memory://")
    for case, r in best.items():
        print(f"{case:<10}{r['rate']:>12,.0f} records/s")
    print(f"agent / builder: {best['agent']['rate'] / best['builder']['rate']:.0%}")


if __name__ == "__main__":
    main()
