"""Joins after crashes at every commit point: each stream record joined and written once, and
a table-table join ends as the two tables say, on a restored store."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import POINTS
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs
from tests.executor.harness import crash_run


def graph() -> fg.Graph:
    g = fg.Graph("jc")
    prices = g.source("p", key_type=str, value_type=int, partitions=2).to_table(name="price")
    stock = g.source("s", key_type=str, value_type=int, partitions=2).to_table(name="stock")
    orders = g.source("o", key_type=str, value_type=str, partitions=2)
    orders.join(prices, lambda o, p: f"{o}={p}", how="left", name="priced", value_type=str).to(
        "out"
    )
    prices.join(stock, lambda p, s: p * s, how="inner", name="worth", value_type=int)
    return g


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("nth", [1, 3])
def test_joins_are_exact_after_a_crash(point: str, nth: int) -> None:
    g = graph()
    plan = g.plan()
    codecs = topic_codecs(plan, in_process=False)
    broker = MemoryBroker()
    backend = MemoryBackend()
    prices: dict[str, int] = {}
    stock: dict[str, int] = {}
    orders: list[str] = []
    crashed = False
    for round_ in range(3):
        for topic, n in (("p", 5), ("s", 4), ("o", 6)):
            kc, vc = codecs[topic]
            records = []
            for i in range(n):
                key = f"k{(i + round_) % 4}"
                value: object = round_ * 10 + i + 1
                if topic == "o":
                    value = f"o{len(orders)}"
                    orders.append(str(value))
                elif topic == "p":
                    prices[key] = int(str(value))
                else:
                    stock[key] = int(str(value))
                kb = kc.encode(key)
                records.append((partition_for(kb, 2), kb, vc.encode(value), 0.0, None))
            broker.ensure(topic, 2)
            broker.append(topic, records)
        crash = (point, nth) if round_ == 1 else None
        if crash and point == "in-restore":
            backend = MemoryBackend()  # so that the run restores, and crashes in it
        if asyncio.run(crash_run(plan, broker, backend, crash)):
            crashed = True
            if round_ == 1:
                backend = MemoryBackend()  # and the store is lost too: restored from changelogs
    asyncio.run(crash_run(plan, broker, backend, None))
    if nth == 1:
        assert crashed  # the second run did crash (a third commit may not come)
    kc, vc = codecs["out"]
    written = Counter(vc.decode(v).split("=")[0] for _, v, *_ in broker.records("out"))
    assert written == Counter(orders), "a joined record lost or written twice"
    restored = Worker(plan, MemoryTransport(broker, encoded=True), MemoryBackend())
    asyncio.run(restored.start())
    try:
        assert restored.table("worth") == {
            k: prices[k] * stock[k] for k in prices.keys() & stock.keys()
        }
    finally:
        asyncio.run(restored.stop())
