"""A stream-table join on Kafka: orders of two partitions re-keyed by item and joined with a
table of prices of three, read from real topics by a real worker, results read back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import flowgraph as fg
from tests.integration.test_kafka import (
    FAST_GROUP,
    create_topic,
    partition_of,
    read_topic,
    run_async,
)
from tests.integration.test_kafka_global_tables import send
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

ITEMS = {f"i{i}": i * 10 for i in range(12)}


def join_graph(graph_id: str, prices: str, orders: str, out: str) -> fg.Graph:
    g = fg.Graph(graph_id)
    table = g.source(prices, key_type=str, value_type=int, partitions=3).to_table(name="price")

    def item(order: str) -> str:
        return order.split("@")[1]

    def priced(order: str, price: int | None) -> str:
        return json.dumps([order, price])

    stream = g.source(orders, key_type=str, value_type=str, partitions=2)
    stream.key_by(item).join(table, priced, how="left").to(out, value_type=str)
    return g


def test_a_rekeyed_stream_joins_a_table_of_other_partitions_on_kafka(
    kafka: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id = f"kt-join-{suffix}"
    prices, orders, out = f"{graph_id}-prices", f"{graph_id}-orders", f"{graph_id}-out"
    run_async(create_topic(kafka, prices, 3))
    run_async(create_topic(kafka, orders, 2))
    send(kafka, prices, [(partition_of(k, 3), k, str(v)) for k, v in ITEMS.items()])
    # orders written after the prices: later timestamps, so each sees its item's price
    wanted = [(f"o{n}", f"o{n}@i{n % 14}") for n in range(40)]  # i12, i13 have no price
    send(kafka, orders, [(partition_of(k, 2), k, v) for k, v in wanted])
    g = join_graph(graph_id, prices, orders, out)
    assert [t.partitions for t in g.plan().topics if t.role == "repartition"] == [3]
    fg.run(
        g,
        broker=f"{kafka.url}?{FAST_GROUP}",
        store=f"rocksdb://{tmp_path / 'state'}",
        until_idle=True,
    )
    got = {}
    for p, records in run_async(read_topic(kafka, out)).items():
        for r in records:
            order, price = json.loads(r.value)
            item = r.key.decode()
            assert partition_of(item, 3) == p  # written where the item's table shard is
            got[order] = (item, price)
    assert got == {v: (v.split("@")[1], ITEMS.get(v.split("@")[1])) for _, v in wanted}


def test_two_tables_join_into_one_on_kafka(kafka: Broker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id = f"kt-tjoin-{suffix}"
    users, payments = f"{graph_id}-users", f"{graph_id}-payments"
    run_async(create_topic(kafka, users, 2))
    run_async(create_topic(kafka, payments, 2))
    g = fg.Graph(graph_id)
    names = g.source(users, key_type=str, value_type=str, partitions=2).to_table(name="user")
    paid = g.source(payments, key_type=str, value_type=str, partitions=2).to_table(name="paid")
    names.join(paid, lambda n, p: f"{n}/{p}", how="outer", name="profile", value_type=str)
    send(kafka, users, [(partition_of(f"u{i}", 2), f"u{i}", f"n{i}") for i in range(10)])
    send(kafka, payments, [(partition_of(f"u{i}", 2), f"u{i}", f"p{i}") for i in range(5, 15)])
    send(kafka, users, [(partition_of("u6", 2), "u6", None)])  # u6 keeps only its payment
    send(kafka, payments, [(partition_of("u14", 2), "u14", None)])  # u14 is gone from both
    result = fg.run(
        g,
        broker=f"{kafka.url}?{FAST_GROUP}",
        store=f"rocksdb://{tmp_path / 'state'}",
        until_idle=True,
    )
    name = {f"u{i}": f"n{i}" for i in range(10) if i != 6}
    pay = {f"u{i}": f"p{i}" for i in range(5, 14)}
    assert result.table("profile") == {
        k: f"{name.get(k)}/{pay.get(k)}" for k in name.keys() | pay.keys()
    }
