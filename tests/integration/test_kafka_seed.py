"""Faust's README programs (examples/faust_*.py) on the real test broker.

Input is produced as a Faust app's producer writes it: keys raw, values JSON, partitioned by
aiokafka's default partitioner (not flowgraph's), to source topics this test creates with
the app's 8 partitions. Each program then runs with ``fg.run(app, broker=..., until_idle=True)``
in this process, so what it prints and the emails it asks for can be checked exactly.

The programs fix their topic names and app id (``myapp``), so these tests need a broker
without those topics: the session's own tansu broker, or a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from tests.executor.test_seed_programs import clicks, expected_counts, load, record_emails
from tests.integration.test_kafka import FAST_GROUP, admin, create_topic, run_async
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

PARTITIONS = 8
Raw = tuple[bytes | None, bytes]


def source_topic(kafka: Broker, topic: str) -> None:
    """Create `topic` with the app's partitions (a Faust source topic is not auto-created)."""

    async def body() -> None:
        async with admin(kafka) as client:
            if topic in await client.list_topics():
                pytest.fail(
                    f"the broker already has topic {topic!r}; the Faust examples fix their "
                    "topic names, so run these tests on a fresh broker"
                )
        await create_topic(kafka, topic, PARTITIONS)

    run_async(body())


def produce(kafka: Broker, topic: str, records: Sequence[Raw]) -> None:
    """Write `records` as a Faust producer does: the client's partitioner picks partitions."""

    async def body() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(topic, key=k, value=v) for k, v in records]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    run_async(body())


def run(app: Any, kafka: Broker, store: str = "memory://") -> fg.RunResult:
    return fg.run(
        app, broker=f"{kafka.url}?{FAST_GROUP}", store=store, until_idle=True, stall_timeout=60
    )


def test_click_counter_on_kafka_goes_on_from_its_changelog(kafka: Broker) -> None:
    """Two runs, each on a fresh memory:// store: the second restores the table from the
    changelog and adds only the new clicks (the first input stays committed)."""
    source_topic(kafka, "clicks")
    first, second = clicks(4_000, seed=11, urls=300), clicks(2_500, seed=12, urls=300)
    produce(kafka, "clicks", [(url.encode(), str(n).encode()) for url, n in first])
    one = run(load("faust_clicks").app, kafka)
    assert one.events == len(first)
    assert one.dead_letters == 0
    assert one.table("click_counts") == expected_counts(first)

    produce(kafka, "clicks", [(url.encode(), str(n).encode()) for url, n in second])
    two = run(load("faust_clicks").app, kafka)
    assert two.events == len(second)
    assert two.stats.restored >= len(expected_counts(first))  # the table came back
    assert two.table("click_counts") == expected_counts(first, second)


def test_order_printer_on_kafka(kafka: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    source_topic(kafka, "myapp-order")
    orders: list[dict[str, Any]] = [{"account_id": f"acct-{i}", "amount": i} for i in range(600)]
    for order in orders[::3]:
        order["__faust"] = {"ns": "examples.Order"}  # as Faust's json serializer writes it
    records: list[Raw] = [
        (None if i % 2 else f"acct-{i}".encode(), json.dumps(o).encode())
        for i, o in enumerate(orders)
    ]
    produce(kafka, "myapp-order", records)
    result = run(load("faust_orders").app, kafka)
    assert result.events == len(orders)
    assert result.dead_letters == 0
    lines = capsys.readouterr().out.splitlines()
    assert Counter(lines) == Counter(f"Order for acct-{i}: {i}" for i in range(len(orders)))


def test_order_agent_on_kafka(kafka: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    source_topic(kafka, "orders")
    example = load("faust_order_agent")
    sent = record_emails(example, monkeypatch)
    rng = random.Random(13)
    orders: list[dict[str, Any]] = []
    for i in range(800):
        order: dict[str, Any] = {
            "account_id": f"acct-{rng.randrange(50)}",
            "product_id": f"prod-{i}",
            "price": rng.randrange(1, 10_000) / 100,
        }
        if i % 2:
            order["amount"] = float(rng.randint(1, 4))
        orders.append(order)
    produce(kafka, "orders", [(o["account_id"].encode(), json.dumps(o).encode()) for o in orders])
    result = run(example.app, kafka)
    assert result.events == len(orders)
    assert result.dead_letters == 0
    expected = Counter(
        (o["account_id"], o["account_id"], o["product_id"], o["price"], o.get("amount", 1.0))
        for o in orders
    )
    assert Counter(sent) == expected
    assert len(sent) == len(orders)
