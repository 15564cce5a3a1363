"""A join's bounded wait for its table at task start (``catch_up=``): a table topic filled
after the stream's records were stamped (a backfill) is read before the stream is joined, for
at most the bound; without it the join sees the table as of processing."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs

ITEMS = 12
ORDERS = 40


def priced(order: dict[str, Any], price: int | None) -> str:
    return f"{order['order']}={price}"


def graph(how: str, catch_up: float, *, fold: Any = None, rekey: bool = True) -> fg.Graph:
    """Prices (3 partitions) as a table; orders (2 partitions, or 3 keyed by item) joined."""
    g = fg.Graph("cu")
    prices = g.source("prices", key_type=str, value_type=int, partitions=3)
    table = (
        prices.to_table(name="price")
        if fold is None
        else prices.aggregate(lambda: 0, fold, name="price", value_type=int)
    )
    orders = g.source("orders", key_type=str, value_type="json", partitions=2 if rekey else 3)
    stream = orders.key_by(lambda o: o["item"], name="by_item") if rekey else orders
    stream.join(table, priced, how=how, catch_up=catch_up, value_type=str).to("out")
    return g


def fill(
    g: fg.Graph, broker: MemoryBroker, *, prices: int = ITEMS, encoded: bool, by_item: bool = False
) -> None:
    """Orders stamped last week, prices loaded today: every price is newer than every order.

    Orders are keyed by order id, or by item (`by_item`: a topic keyed like the table).
    """
    plan = g.plan()
    codecs = topic_codecs(plan, in_process=not encoded)
    for topic, records, base in (
        (
            "orders",
            [
                (
                    f"i{n % ITEMS}" if by_item else f"o{n}",
                    {"order": f"o{n}", "item": f"i{n % ITEMS}"},
                )
                for n in range(ORDERS)
            ],
            1000.0,
        ),
        ("prices", [(f"i{n % ITEMS}", n) for n in range(prices)], 2000.0),
    ):
        spec = plan.topic(topic)
        kc, vc = codecs[topic]
        assert kc is not None and vc is not None
        broker.ensure(topic, spec.partitions)
        broker.append(
            topic,
            [
                (
                    partition_for(kc.encode(k), spec.partitions),
                    kc.encode(k),
                    vc.encode(v),
                    base + i,
                    None,
                )
                for i, (k, v) in enumerate(records)
            ],
        )


async def run(g: fg.Graph, broker: MemoryBroker, *, encoded: bool, max_batch: int = 1000) -> Worker:
    worker = Worker(
        g.plan(), MemoryTransport(broker, encoded=encoded), MemoryBackend(), max_batch=max_batch
    )
    await worker.start()
    try:
        await worker.run(until_idle=True, idle_wait=0.0)
    finally:
        await worker.stop()
    return worker


def joined(g: fg.Graph, broker: MemoryBroker, encoded: bool) -> dict[str, str]:
    _, vc = topic_codecs(g.plan(), in_process=not encoded)["out"]
    values = [vc.decode(v) if vc else v for _, v, *_ in broker.records("out")]
    return dict(v.split("=") for v in values)


def last_price(n: int) -> str:
    """The last price loaded for order `n`'s item (prices 0..ITEMS-1: one per item)."""
    return str(n % ITEMS)


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize("how", ["inner", "left"])
def test_with_catch_up_every_order_finds_the_backfilled_price(
    how: str, encoded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    g = graph(how, 5)
    broker = MemoryBroker()
    fill(g, broker, encoded=encoded)
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        asyncio.run(run(g, broker, encoded=encoded))
    assert time.monotonic() - began < 5  # it caught up: it did not wait the bound
    assert joined(g, broker, encoded) == {f"o{n}": last_price(n) for n in range(ORDERS)}
    ends = [r.getMessage() for r in caplog.records if "join 'priced' on" in r.getMessage()]
    assert len(ends) == 3, ends  # one per task of the join
    assert all("caught up after" in m for m in ends), ends


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize("how", ["inner", "left"])
def test_without_catch_up_the_stream_sees_the_table_as_of_processing(
    how: str, encoded: bool
) -> None:
    g = graph(how, 0)
    broker = MemoryBroker()
    fill(g, broker, encoded=encoded)
    asyncio.run(run(g, broker, encoded=encoded))
    got = joined(g, broker, encoded)
    # older than every price: each order runs first and finds no price
    if how == "left":
        assert got == {f"o{n}": "None" for n in range(ORDERS)}
    else:
        assert got == {}


def test_a_stream_keyed_like_the_table_is_held_on_its_own_task() -> None:
    g = graph("left", 5, rekey=False)
    assert [t for t in g.plan().topics if t.role == "repartition"] == []
    broker = MemoryBroker()
    fill(g, broker, encoded=True, by_item=True)
    asyncio.run(run(g, broker, encoded=True))
    assert joined(g, broker, True) == {f"o{n}": last_price(n) for n in range(ORDERS)}


def slow_sum(total: int, price: int) -> int:
    time.sleep(0.003)  # a table whose input takes longer to read than the bound
    return total + price


@pytest.mark.slow
def test_the_stream_goes_on_after_the_bound_when_the_table_cannot_catch_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bound = 0.5
    g = graph("left", bound, fold=slow_sum, rekey=False)
    broker = MemoryBroker()
    fill(g, broker, prices=600, encoded=True, by_item=True)  # ~1.8 s of folding
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        asyncio.run(run(g, broker, encoded=True, max_batch=10))
    ends = [r for r in caplog.records if "join 'priced' on" in r.getMessage()]
    assert len(ends) == 3, [r.getMessage() for r in caplog.records]
    unread: list[int] = []
    for r in ends:
        assert r.levelno == logging.WARNING
        msg = r.getMessage()
        assert "gave up waiting for table 'price'" in msg, msg
        waited = float(msg.split(" after ")[1].split(" s ")[0])
        assert bound <= waited < bound + 2.5, msg  # generous: the machine is loaded
        unread.append(int(msg.split(" with ")[1].split(" records")[0]))
    assert 0 < sum(unread) < 600, unread  # some of the table was read meanwhile
    got = joined(g, broker, True)
    assert set(got) == {f"o{n}" for n in range(ORDERS)}  # none dropped (a left join)
    # orders joined before the table was read whole: some without their price, or a partial sum
    full = {
        f"o{n}": str(sum(p for p in range(600) if p % ITEMS == n % ITEMS)) for n in range(ORDERS)
    }
    assert got != full
