"""A join with ``catch_up=`` on Kafka: orders stamped last week and prices loaded today, in
topics of three partitions keyed alike, read by a real worker; each order finds its price
because the table is read to its end offsets of task start first, again after a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from tests.integration.test_kafka import (
    FAST_GROUP,
    create_topic,
    partition_of,
    read_topic,
    run_async,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

PARTS = 3
ITEMS = [f"i{i}" for i in range(12)]
WEEK = 7 * 24 * 3600 * 1000


async def _send(kafka: Broker, topic: str, records: Sequence[tuple[str, str, int]]) -> None:
    """``(key, value, timestamp ms)`` records, each to its key's partition."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                key=key.encode(),
                value=value.encode(),
                partition=partition_of(key, PARTS),
                timestamp_ms=ts,
            )
            for key, value, ts in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def join_graph(graph_id: str, prices: str, orders: str, out: str) -> fg.Graph:
    g = fg.Graph(graph_id)
    table = g.source(prices, key_type=str, value_type=int, partitions=PARTS).to_table(name="price")

    def priced(order: str, price: int | None) -> str:
        return json.dumps([order, price])

    stream = g.source(orders, key_type=str, value_type=str, partitions=PARTS)
    stream.join(table, priced, how="left", catch_up=30, value_type=str).to(out)
    return g


def backfill(kafka: Broker, prices: str, orders: str, round_: int) -> list[str]:
    """Orders of last week, then today's prices (round_ * 100 + item number): the orders are
    older than every price, so only a catch-up gives them today's prices."""
    now = int(time.time() * 1000)
    names = [f"r{round_}-o{n}" for n in range(24)]
    run_async(_send(kafka, orders, [(ITEMS[n % 12], names[n], now - WEEK + n) for n in range(24)]))
    run_async(
        _send(
            kafka, prices, [(item, str(round_ * 100 + i), now + i) for i, item in enumerate(ITEMS)]
        )
    )
    return names


@pytest.mark.slow
def test_orders_older_than_the_backfilled_prices_find_them_again_after_a_restart(
    kafka: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id = f"kt-catchup-{suffix}"
    prices, orders, out = f"{graph_id}-prices", f"{graph_id}-orders", f"{graph_id}-out"
    run_async(create_topic(kafka, prices, PARTS))
    run_async(create_topic(kafka, orders, PARTS))
    g = join_graph(graph_id, prices, orders, out)
    assert [t for t in g.plan().topics if t.role == "repartition"] == []
    wanted: dict[str, int] = {}
    for round_ in (1, 2):  # the second run restarts the worker on the state of the first
        names = backfill(kafka, prices, orders, round_)
        wanted.update((name, round_ * 100 + n % 12) for n, name in enumerate(names))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="flowgraph"):
            fg.run(
                g,
                broker=f"{kafka.url}?{FAST_GROUP}",
                store=f"rocksdb://{tmp_path / 'state'}",
                until_idle=True,
            )
        ends = [r.getMessage() for r in caplog.records if "join 'priced' on" in r.getMessage()]
        assert len(ends) == PARTS, ends  # one wait per task, on each start
        assert all("caught up after" in m for m in ends), ends
    got = {}
    for records in run_async(read_topic(kafka, out)).values():
        for r in records:
            order, price = json.loads(r.value)
            got[order] = price
    # round 2's orders would see round 1's prices (already in the restored table) without it
    assert got == wanted
