"""On Kafka, topics shared with Faust: records Faust wrote (with its `__faust` metadata) are
read, records are written byte for byte as Faust writes them, and Decimal totals survive the
RocksDB store and its changelog."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from flowgraph.runtime.worker import topic_codecs
from tests.integration.test_kafka import create_topic, read_topic, run_async
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration


class Line(fg.Record, include_metadata=True, namespace="shop.Line"):
    sku: str
    price: Decimal


class Payment(fg.Record, include_metadata=True, namespace="shop.Payment"):
    account_id: str
    lines: list[Line]
    at: dt.datetime


class Order(fg.Record, include_metadata=True, namespace="shop.Order"):
    account_id: str
    amount: float = 1.0


# As Faust writes them (see tests/unit/flowgraph/test_records_faust.py for the derivation).
FROM_FAUST = [
    b'{"account_id":"a","lines":[{"sku":"s1","price":"1.10","__faust":{"ns":"shop.Line"}},'
    b'{"sku":"s2","price":"2.25","__faust":{"ns":"shop.Line"}}],'
    b'"at":"2024-01-02T03:04:05Z","__faust":{"ns":"shop.Payment"}}',
    b'{"account_id":"b","lines":[{"sku":"s1","price":"0.10","__faust":{"ns":"shop.Line"}}],'
    b'"at":"2024-01-02T03:04:06.500000Z","__faust":{"ns":"shop.Payment"}}',
    b'{"account_id":"a","lines":[],"at":"2024-01-02T03:04:07Z","__faust":{"ns":"shop.Payment"}}',
]


def to_order(p: Payment) -> Order:
    return Order(account_id=p.account_id, amount=len(p.lines))


def add(total: Decimal, p: Payment) -> Decimal:
    return total + sum((line.price for line in p.lines), Decimal(0))


def account(p: Payment) -> str:
    return p.account_id


def test_faust_records_in_and_out_over_kafka(kafka: Broker, tmp_path: Path) -> None:
    gid = f"kt-faust-{uuid.uuid4().hex[:8]}"
    topic = f"{gid}-payments"

    async def write() -> None:
        await create_topic(kafka, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for value in FROM_FAUST:
                await producer.send_and_wait(topic, value=value, partition=0)
        finally:
            await producer.stop()

    run_async(write())
    g = fg.Graph(gid)
    payments = g.source(topic, value_type=Payment)
    payments.map(to_order).to(f"{gid}-orders")
    payments.key_by(account).aggregate(Decimal(0), add, name="spent")
    result = fg.run(g, broker=kafka.url, store=f"rocksdb://{tmp_path / 'state'}", until_idle=True)

    written = run_async(read_topic(kafka, f"{gid}-orders"))
    assert [r.value for rs in written.values() for r in rs] == [
        b'{"account_id":"a","amount":2,"__faust":{"ns":"shop.Order"}}',
        b'{"account_id":"b","amount":1,"__faust":{"ns":"shop.Order"}}',
        b'{"account_id":"a","amount":0,"__faust":{"ns":"shop.Order"}}',
    ]
    assert result.table("spent") == {"a": Decimal("3.35"), "b": Decimal("0.10")}
    # the changelog (auto codec: MessagePack) holds the totals exactly
    plan = g.plan()
    changelog = next(s.changelog for s in plan.stores if s.step == "spent")
    kc, vc = topic_codecs(plan, in_process=False)[changelog]
    assert kc is not None and vc is not None
    logged = run_async(read_topic(kafka, changelog))
    last = {kc.decode(r.key): vc.decode(r.value) for rs in logged.values() for r in rs}
    assert last == {"a": Decimal("3.35"), "b": Decimal("0.10")}
    assert str(last["a"]) == "3.35"
