"""On Kafka: a flowgraph repartition topic is co-partitioned with a topic a plain aiokafka
producer wrote by key (its default partitioner), given the same key and partition count."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from tests.integration.test_kafka import FAST_GROUP, create_topic, read_topic, run_async
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

PARTITIONS = 5
USERS = [f"user-{i}" for i in range(60)]


def test_repartition_topic_is_co_partitioned_with_a_default_partitioned_topic(
    kafka: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    gid, visits, profiles = f"cp-{suffix}", f"cp-{suffix}-visits", f"cp-{suffix}-profiles"

    async def setup() -> None:
        await create_topic(kafka, visits, PARTITIONS)
        await create_topic(kafka, profiles, PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for i, user in enumerate(USERS):
                # no partition given: aiokafka's DefaultPartitioner (murmur2) places it
                await producer.send(profiles, key=user.encode(), value=b"{}")
                # visits are keyless, spread over partitions by hand
                value = json.dumps({"user": user}).encode()
                await producer.send(visits, value=value, partition=i % PARTITIONS)
            await producer.flush()
        finally:
            await producer.stop()

    run_async(setup())
    g = fg.Graph(gid)
    by_user = g.source(visits, value_type="json", partitions=PARTITIONS).key_by(
        lambda v: v["user"], key_type=str, name="by_user"
    )
    by_user.count(name="per_user")
    (repartition,) = [t.name for t in g.plan().topics if t.role == "repartition"]
    result = fg.run(
        g, broker=f"{kafka.url}?{FAST_GROUP}", store=f"rocksdb://{tmp_path}", until_idle=True
    )
    assert result.tables["per_user"] == dict.fromkeys(USERS, 1)

    def placement(topic: str) -> dict[str, int]:
        parts = run_async(read_topic(kafka, topic))
        return {r.key.decode(): p for p, records in parts.items() for r in records}

    theirs, ours = placement(profiles), placement(repartition)
    assert set(ours) == set(USERS)
    assert len(set(ours.values())) > 1  # the keys span partitions: the check means something
    assert ours == theirs
