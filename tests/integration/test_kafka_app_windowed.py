"""A Faust-style windowed table on the real test broker: 4 partitions, record timestamps
from Kafka, and a second run on a fresh store that restores the windows from the changelog."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as faust
from flowgraph.windows import WindowKey
from tests.integration.test_kafka import FAST_GROUP, create_topic, partition_of, run_async
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

BASE = 1_700_000_000.0
KEYS = [f"page-{i}" for i in range(6)]


def make_app(app_id: str, topic_name: str) -> Any:
    app = faust.App(app_id, topic_partitions=4)
    topic = app.topic(topic_name, key_type=str, value_type=int)
    views = app.Table("views", default=int).hopping(60, 30, expires=600)

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for page, n in stream.items():
            views[page] += n

    return app


async def produce(kafka: Broker, topic: str, records: list[tuple[str, int, float]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, n, ts in records:
            await producer.send_and_wait(
                topic,
                key=key.encode(),
                value=str(n).encode(),
                partition=partition_of(key, 4),
                timestamp_ms=int(ts * 1000),
            )
    finally:
        await producer.stop()


def expected(records: list[tuple[str, int, float]]) -> dict[WindowKey, int]:
    """Hopping 60 s every 30 s: each time is in the two windows starting within 60 s before."""
    out: dict[WindowKey, int] = defaultdict(int)
    for key, n, ts in records:
        first = (ts // 30) * 30
        for start in (first - 30, first):
            out[WindowKey(key, start, start + 60)] += n
    return dict(out)


def test_windowed_table_on_kafka_restores_from_its_changelog(kafka: Broker) -> None:
    tag = uuid.uuid4().hex[:8]
    app_id, topic = f"wt-{tag}", f"wt-views-{tag}"
    run_async(create_topic(kafka, topic, 4))
    rng = random.Random(5)
    records = [
        (rng.choice(KEYS), rng.randint(1, 4), BASE + i * 7 + rng.uniform(0, 20)) for i in range(60)
    ]
    first, second = records[:35], records[35:]
    broker = f"{kafka.url}?{FAST_GROUP}"

    run_async(produce(kafka, topic, first))
    result = faust.run(make_app(app_id, topic), broker=broker, until_idle=True, create_topics=True)
    view = result.table("views")
    assert view.windows() == expected(first)
    assert view.late == 0

    # a fresh memory:// store: the windows come back from the changelog, then grow
    run_async(produce(kafka, topic, second))
    result = faust.run(make_app(app_id, topic), broker=broker, until_idle=True)
    view = result.table("views")
    assert view.windows() == expected(records)
    assert result.events == len(second)
    assert len({partition_of(k, 4) for k in KEYS}) >= 3  # the windows span partitions
