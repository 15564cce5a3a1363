"""On Kafka, a ``context=True`` step sees the record as the broker holds it: topic, partition,
offset, timestamp and headers of the source record, and past a repartition those of the
record in the repartition topic (whose ``fg.o`` origin header is hidden from the step)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from flowgraph.runtime.task import ORIGIN, ORIGIN_HEADER
from flowgraph.runtime.worker import topic_codecs
from tests.integration.test_kafka import create_topic, read_topic, run_async
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration


def test_context_values_match_what_the_broker_holds(kafka: Broker, tmp_path: Path) -> None:
    gid = f"kt-context-{uuid.uuid4().hex[:8]}"
    topic = f"{gid}-in"
    users = ["ann", "bob", "cy", "ann", "dee", "bob", "ann", "eve"]

    async def write() -> list[tuple[int, int, float]]:
        await create_topic(kafka, topic, 2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            sent = []
            for i, user in enumerate(users):
                meta = await producer.send_and_wait(
                    topic,
                    key=f"k{i}".encode(),
                    value=user.encode(),
                    partition=i % 2,
                    timestamp_ms=1_700_000_000_000 + i * 1500,
                    headers=[("trace", f"t{i}".encode()), ("n", b"1"), ("n", b"2")],
                )
                sent.append((meta.partition, meta.offset, meta.timestamp / 1000))
            return sent
        finally:
            await producer.stop()

    sent = run_async(write())
    read: list[tuple[Any, ...]] = []
    after: list[tuple[Any, ...]] = []

    def at_source(v: str, ctx: fg.RecordContext) -> str:
        read.append((v, ctx.key, ctx.topic, ctx.partition, ctx.offset, ctx.timestamp))
        assert ctx.headers[0] == ("trace", ctx.header("trace"))
        assert ctx.header("n") == b"2"
        return v

    def by_user(v: str) -> str:
        return v

    def past_repartition(v: str, ctx: fg.RecordContext) -> None:
        names = [n for n, _ in ctx.headers]
        after.append((v, ctx.key, ctx.topic, ctx.partition, ctx.offset, ctx.timestamp, names))

    g = fg.Graph(gid)
    src = g.source(topic, key_type=str, value_type=str, partitions=2)
    src.map(at_source, context=True).key_by(by_user).peek(past_repartition, context=True).count(
        name="per_user"
    )
    result = fg.run(g, broker=kafka.url, store=f"rocksdb://{tmp_path / 'state'}", until_idle=True)
    assert result.table("per_user") == {"ann": 3, "bob": 2, "cy": 1, "dee": 1, "eve": 1}

    pairs = enumerate(zip(users, sent, strict=True))
    expected = {(user, f"k{i}", topic, p, o, ts) for i, (user, (p, o, ts)) in pairs}
    assert set(read) == expected
    assert len(read) == len(users)

    rep_topic = f"{gid}-by_user-repartition"
    held = run_async(read_topic(kafka, rep_topic))
    kc, vc = topic_codecs(g.plan(), in_process=False)[rep_topic]
    assert kc is not None and vc is not None
    in_log = {
        (vc.decode(r.value), kc.decode(r.key), rep_topic, p, r.offset, r.timestamp / 1000)
        for p, records in held.items()
        for r in records
    }
    assert {a[:6] for a in after} == in_log
    assert len(after) == len(users)
    # the repartition records carry the origin header on the broker; the step does not see it
    assert all(any(n == ORIGIN_HEADER for n, _ in r.headers) for rs in held.values() for r in rs)
    assert all(a[6] == ["trace", "n", "n"] for a in after)
    # as docs/reference/api.md documents it: >IIHqI = sub-topology, task partition, entry,
    # input offset, sequence; here one record out per input, from entry 0 of sub-topology 0
    origins = [ORIGIN.unpack(dict(r.headers)[ORIGIN_HEADER]) for rs in held.values() for r in rs]
    assert sorted((part, off) for _, part, _, off, _ in origins) == sorted(
        (p, o) for p, o, _ in sent
    )
    assert {(sub, entry, seq) for sub, _, entry, _, seq in origins} == {(0, 0, 0)}
