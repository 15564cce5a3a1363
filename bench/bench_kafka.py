"""Benchmark: count clicks per URL on a Kafka-protocol broker, against a raw aiokafka loop.

200,000 JSON click records keyed by URL are produced to a 4-partition topic on the test broker
(tansu, started here, or FLOWGRAPH_TEST_BROKER) before anything is timed. Then:

- bare fetch: an aiokafka consumer fetching the same records and doing nothing with them (no
  decode): what the broker and client allow at all;
- ceiling: a raw aiokafka loop (getmany + msgspec decode + the same filter + a dict count, no
  durability), timed from its first record to its last;
- flowgraph: one worker, RocksDB store with changelog, timed from its first record to its last
  (steady state) and from start to the end (end to end: joining the group, restoring, committing);
- restore: rebuilding a RocksDB store from a changelog of 1,000,000 records.

    python bench/bench_kafka.py [--records N] [--restore-records N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime import open_transport
from flowgraph.runtime.recovery import POSITION_HEADER
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from flowgraph.serde import AutoCodec, StrCodec
from tests.kafka_broker import open_broker

PARTITIONS = 4


class Click(fg.Record):
    url: str
    user: str
    ts: float


def drop_bots(c: Click) -> bool:
    return not c.user.startswith("bot")


def make_records(n: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(7)
    urls = [f"/page/{i}" for i in range(2_000)]
    weights = [1 / (i + 1) for i in range(len(urls))]
    out = []
    for i, url in enumerate(rng.choices(urls, weights, k=n)):
        user = f"bot{i % 50}" if rng.random() < 0.05 else f"user{rng.randrange(100_000)}"
        out.append((url.encode(), json.dumps({"url": url, "user": user, "ts": 1.7e9 + i}).encode()))
    return out


async def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20)
    await producer.start()
    try:
        batches: dict[int, object] = {}
        futures = []
        for partition, key, value in records:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # type: ignore[attr-defined]
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A group-less consumer of every partition of `topic`, from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    for p in parts:
        consumer.seek(p, 0)
    return consumer


async def bare_fetch(bootstrap: str, topic: str, n: int) -> float:
    """Seconds for a bare aiokafka fetch of the same records (no decode): the honest ceiling."""
    consumer = await _reader(bootstrap, topic)
    seen = 0
    first = 0.0
    try:
        while seen < n:
            data = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if data and not first:
                first = time.perf_counter()
            seen += sum(len(records) for records in data.values())
        return time.perf_counter() - first
    finally:
        await consumer.stop()


async def ceiling(bootstrap: str, topic: str, n: int) -> tuple[float, dict[str, int]]:
    decode = msgspec.json.Decoder(Click).decode
    consumer = await _reader(bootstrap, topic)
    counts: dict[str, int] = {}
    seen = 0
    first = 0.0
    try:
        while seen < n:
            data = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if data and not first:
                first = time.perf_counter()
            for records in data.values():
                for r in records:
                    c = decode(r.value)
                    if drop_bots(c):
                        counts[c.url] = counts.get(c.url, 0) + 1
                seen += len(records)
        return time.perf_counter() - first, counts
    finally:
        await consumer.stop()


def graph(graph_id: str, topic: str) -> fg.Graph:
    g = fg.Graph(graph_id)
    g.source(topic, key_type=str, value_type=Click, partitions=PARTITIONS).filter(drop_bots).count(
        name="per_url"
    )
    return g


async def flowgraph_run(url: str, topic: str, n: int) -> tuple[float, float, dict[str, int]]:
    plan = graph(f"bench-{uuid.uuid4().hex[:8]}", topic).plan()
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
        table = worker.table("per_url")
        await worker.stop()
    return end - first, end - start, table


async def restore(url: str, n: int) -> float:
    topic = f"restore-src-{uuid.uuid4().hex[:8]}"
    g = fg.Graph(f"restore-{uuid.uuid4().hex[:8]}")
    g.source(topic, key_type=str, value_type=Click, partitions=1).count(name="per_key")
    plan = g.plan()
    spec = plan.stores[0]
    with tempfile.TemporaryDirectory() as tmp:
        transport = open_transport(url, create_topics=True)
        worker = Worker(plan, transport, open_backend(f"rocksdb://{tmp}"))
        await transport.start()
        await transport.create_topics(plan.topics)
        keys, values = StrCodec(), AutoCodec()
        records = [
            (
                0,
                keys.encode(f"key-{i % 100_000}"),
                values.encode(i % 977),
                0.0,
                ((POSITION_HEADER, msgspec.msgpack.encode(i)),),
            )
            for i in range(n)
        ]
        for i in range(0, n, 100_000):
            await transport.produce(spec.changelog, records[i : i + 100_000])
        store = worker.backend.open(spec.name, 0)
        start = time.perf_counter()
        await worker.recovery.restore(store, (spec.changelog, 0))
        elapsed = time.perf_counter() - start
        assert len(store) == min(n, 100_000), len(store)
        await transport.stop()
        worker.backend.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--restore-records", type=int, default=1_000_000)
    args = parser.parse_args()
    broker = open_broker()
    try:
        url = broker.url
        topic = f"clicks-{uuid.uuid4().hex[:8]}"
        transport = open_transport(url, create_topics=True)
        await transport.start()
        await transport.create_topics(graph("setup", topic).plan().topics[:1])
        await transport.stop()
        records = make_records(args.records)
        await produce(
            broker.bootstrap, topic, [(partition_for(k, PARTITIONS), k, v) for k, v in records]
        )
        bare_time = await bare_fetch(broker.bootstrap, topic, args.records)
        base_time, base_counts = await ceiling(broker.bootstrap, topic, args.records)
        # tansu holds each group join for half the session timeout: keep it short here
        steady, total, table = await flowgraph_run(
            url + "?session_timeout_ms=3000&heartbeat_interval_ms=500", topic, args.records
        )
        if table != base_counts:
            diff = {
                k: (table.get(k), base_counts.get(k))
                for k in set(table) | set(base_counts)
                if table.get(k) != base_counts.get(k)
            }
            print(
                "disagree:",
                len(diff),
                list(diff.items())[:5],
                sum(table.values()),
                sum(base_counts.values()),
            )
            raise SystemExit(1)
        restore_rate = await restore(url, args.restore_records)
    finally:
        broker.stop()
    n = args.records
    base = n / base_time
    print(f"clicks per URL on the test broker, {n:,} JSON records, {PARTITIONS} partitions")
    bare = n / bare_time
    print(f"{'case':<26}{'events/s':>12}{'vs ceiling':>12}{'vs bare fetch':>15}")
    print(f"{'bare aiokafka fetch':<26}{bare:>12,.0f}{'':>12}{1:>15.0%}")
    for case, rate in (
        ("raw aiokafka loop", base),
        ("flowgraph, steady state", n / steady),
        ("flowgraph, end to end", n / total),
    ):
        print(f"{case:<26}{rate:>12,.0f}{rate / base:>12.0%}{rate / bare:>15.0%}")
    print(f"restore from a changelog of {args.restore_records:,} records: {restore_rate:,.0f}/s")
    print("targets: steady state >= 50% of the ceiling; restore >= 200,000 records/s")


if __name__ == "__main__":
    asyncio.run(main())
