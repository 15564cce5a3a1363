"""Benchmark: the Faust-style click counter (an agent and its table) against the same count
as a builder graph, on a Kafka-protocol broker, in one run.

N click records (str URL keys, int counts as JSON/decimal text, which both read the same)
are produced to a 4-partition topic on the test broker (tansu, started here, or
FLOWGRAPH_TEST_BROKER) before anything is timed. Then, on one worker each with a RocksDB store
and changelog, alternating for ``--rounds`` rounds (the best round of each counts):

- builder: ``g.source('clicks', key_type=str, value_type=int).sum()``;
- agent: ``app.Table('click_counts', default=int)`` filled by
  ``async for url, count in clicks.items(): counts[url] += count``.

Each is timed from its first record to its last, committed (steady state: joining the group
and the first fetch are left out, as in bench_kafka.py), and from start to the end (end to
end). A bare aiokafka fetch of the same records shows what the broker and client allow at all:
the builder runs close to it, so on Kafka the fetch hides part of the agent's extra cost. The
same two counts in process (memory:// transport and store) show that cost alone. Every table
must equal a plain-Python sum of the input.

    python bench/bench_faust.py [--records N] [--rounds R]
    python bench/bench_faust.py --profile 30   # the agent in process under cProfile: its 30
                                               # costliest functions, per record
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flowgraph as fg
from bench.bench_kafka import bare_fetch, produce
from flowgraph.partitioner import partition_for
from flowgraph.runtime import open_transport
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from planner.physical import PhysicalPlan
from tests.kafka_broker import open_broker

PARTITIONS = 4
TABLE = "click_counts"
FAST_JOIN = "?session_timeout_ms=3000&heartbeat_interval_ms=500"
"""tansu holds each group join for half the session timeout: keep it short here."""


def make_records(n: int) -> list[tuple[str, int]]:
    """`n` clicks (url, count) over 2,000 URLs of Zipf-like popularity, counts 1 to 5."""
    rng = random.Random(7)
    urls = [f"/page/{i}" for i in range(2_000)]
    weights = [1 / (i + 1) for i in range(len(urls))]
    return [(url, rng.randint(1, 5)) for url in rng.choices(urls, weights, k=n)]


def expected_sums(clicks: list[tuple[str, int]]) -> dict[str, int]:
    """The table both must end with, summed in plain Python."""
    sums: dict[str, int] = {}
    for url, count in clicks:
        sums[url] = sums.get(url, 0) + count
    return sums


def builder(topic: str) -> PhysicalPlan:
    g = fg.Graph(f"bench-builder-{uuid.uuid4().hex[:8]}")
    g.source(topic, key_type=str, value_type=int, partitions=PARTITIONS).sum(name=TABLE)
    return g.plan()


def agent_app(topic: str, app_id: str | None = None) -> fg.App:
    """The seed's click counter, written the Faust way."""
    app = fg.App(app_id or f"bench-agent-{uuid.uuid4().hex[:8]}", topic_partitions=PARTITIONS)
    clicks = app.topic(topic, key_type=str, value_type=int)
    counts = app.Table(TABLE, default=int)

    @app.agent(clicks)
    async def count_clicks(stream: Any) -> None:
        async for url, count in stream.items():
            counts[url] += count

    return app


def agent(topic: str) -> PhysicalPlan:
    return agent_app(topic).plan()


async def timed_run(url: str, plan: PhysicalPlan, n: int) -> tuple[float, float, dict[str, int]]:
    """Seconds from the first record to the last committed, from start to the end; the table."""
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(plan, open_transport(url), open_backend(f"rocksdb://{tmp}"))
        start = time.perf_counter()
        await worker.start()
        first = 0.0
        while worker.stats.events < n:
            await worker.step(timeout=0.2)
            if worker.stats.events and not first:
                first = time.perf_counter()
        async with worker._lock:
            await worker.commit()
        end = time.perf_counter()
        table = worker.table(TABLE)
        await worker.stop()
    return end - first, end - start, table


async def in_process(
    make: Callable[[str], PhysicalPlan], clicks: list[tuple[str, int]], profiler: Any = None
) -> float:
    """Seconds for the same count on memory:// (transport and store): the CPU cost alone,
    with no broker to wait for."""
    topic = "clicks"
    plan = make(topic)
    transport = MemoryTransport()
    transport.broker.ensure(topic, PARTITIONS)
    transport.broker.append(
        topic,
        [
            (partition_for(u.encode(), PARTITIONS), u.encode(), b"%d" % c, 0.0, None)
            for u, c in clicks
        ],
    )

    worker = Worker(plan, transport, open_backend("memory://"))
    await worker.start()
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    await worker.run(until_idle=True, idle_wait=0.0)
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    assert worker.stats.events == len(clicks)
    assert worker.table(TABLE) == expected_sums(clicks)
    await worker.stop()
    return elapsed


def profile(clicks: list[tuple[str, int]], top: int) -> None:
    """cProfile of the agent counting `clicks` in process: where its time per record goes."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    elapsed = asyncio.run(in_process(agent, clicks, profiler))
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    n = len(clicks)
    print(f"agent in process under cProfile: {n / elapsed:,.0f} events/s")
    print(f"{'function':<64}{'calls/rec':>10}{'own us/rec':>11}{'own %':>7}{'cum us/rec':>11}")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    for (path, line, name), (_cc, calls, own, cum, _) in rows[:top]:
        where = f"{Path(path).name}:{line} {name}" if line else name
        print(
            f"{where[:63]:<64}{calls / n:>10.2f}{own / n * 1e6:>11.2f}"
            f"{own / total:>7.1%}{cum / n * 1e6:>11.2f}"
        )


async def compare(n: int, rounds: int, clicks: list[tuple[str, int]]) -> None:
    expected = expected_sums(clicks)
    broker = open_broker()
    best: dict[str, tuple[float, float]] = {}
    try:
        topic = f"clicks-{uuid.uuid4().hex[:8]}"
        transport = open_transport(broker.url, create_topics=True)
        await transport.start()
        await transport.create_topics(builder(topic).topics[:1])
        await transport.stop()
        records = [
            (partition_for(u.encode(), PARTITIONS), u.encode(), b"%d" % c) for u, c in clicks
        ]
        await produce(broker.bootstrap, topic, records)
        bare_time = await bare_fetch(broker.bootstrap, topic, n)
        cases: dict[str, Callable[[str], PhysicalPlan]] = {"builder": builder, "agent": agent}
        for _ in range(rounds):
            for case, make in cases.items():
                steady, total, table = await timed_run(broker.url + FAST_JOIN, make(topic), n)
                if table != expected:
                    wrong = [
                        k for k in expected.keys() | table.keys() if table.get(k) != expected.get(k)
                    ]
                    print(f"{case}: {len(wrong)} keys disagree with the input, e.g. {wrong[:5]}")
                    raise SystemExit(1)
                old = best.get(case)
                if old is None or steady < old[0]:
                    best[case] = (steady, total)
    finally:
        broker.stop()
    local: dict[str, float] = {}
    for _ in range(rounds):
        for case, make in cases.items():
            seconds = await in_process(make, clicks)
            local[case] = min(seconds, local.get(case, seconds))
    bare = n / bare_time
    base = n / best["builder"][0]
    print(
        f"click counter on the test broker, {n:,} records (str keys, int values), "
        f"{PARTITIONS} partitions, RocksDB with changelog, best of {rounds} rounds"
    )
    print(f"{'case':<26}{'events/s':>12}{'vs builder':>12}{'vs bare fetch':>15}")
    print(f"{'bare aiokafka fetch':<26}{bare:>12,.0f}{'':>12}{1:>15.0%}")
    for case in ("builder", "agent"):
        steady, total = best[case]
        for how, seconds in (("steady state", steady), ("end to end", total)):
            rate = n / seconds
            print(f"{f'{case}, {how}':<26}{rate:>12,.0f}{rate / base:>12.0%}{rate / bare:>15.0%}")
    for case in ("builder", "agent"):
        rate = n / local[case]
        label = f"{case}, in process"
        print(f"{label:<26}{rate:>12,.0f}{rate / (n / local['builder']):>12.0%}")
    ratio = best["builder"][0] / best["agent"][0]
    print(f"agent / builder, steady state: {ratio:.0%} (target >= 50%)")
    local_ratio = local["builder"] / local["agent"]
    print(f"agent / builder, in process (memory://, CPU only): {local_ratio:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="best of R, cases alternating")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="TOP",
        default=0,
        help="only profile the agent in process and print its TOP functions by own time",
    )
    args = parser.parse_args()
    n = args.records
    clicks = make_records(n)
    if args.profile:
        profile(clicks, args.profile)
        return
    asyncio.run(compare(args.records, args.rounds, clicks))


if __name__ == "__main__":
    main()
