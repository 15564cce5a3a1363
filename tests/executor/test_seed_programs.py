"""The three programs of Faust's README, as the files in examples/, on the embedded broker.

Each runs unchanged but for ``import flowgraph as faust``: under `TestDriver(app)` and under
``fg.run(app, broker="memory://")`` with its input written to the source topic before the
run starts, as a producer would have written it (keys raw, values JSON). What each program
does is checked against plain Python over the same input: the lines the printer prints, the
click counts (a `Counter`), the emails the order agent asks for.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PARTITIONS = 8
"""Faust's default ``topic_partitions``, which the programs keep."""

Raw = tuple[bytes | None, bytes]


def load(name: str) -> ModuleType:
    """A fresh copy of ``examples/<name>.py`` (its own App, so runs do not share state)."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def feed(topic: str, records: Sequence[Raw]) -> Callable[[Worker], None]:
    """An ``on_start`` that appends `records` to `topic` of the run's embedded broker: a
    keyed record to the partition of its key (Kafka's murmur2, as flowgraph writes), the others
    round-robin."""

    def append(worker: Worker) -> None:
        out = []
        for i, (key, value) in enumerate(records):
            p = i % PARTITIONS if key is None else partition_for(key, PARTITIONS)
            out.append((p, key, value, 1_700_000_000.0 + i, None))
        worker.transport.broker.append(topic, out)  # type: ignore[attr-defined]

    return append


def printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


# Faust's README, as quoted in the examples: the programs must stay exactly this text.
FAUST_README = {
    "faust_orders": """\
app = faust.App('myapp', broker='kafka://localhost')

# Models describe how messages are serialized:
# {"account_id": "3fae-...", amount": 3}
class Order(faust.Record):
    account_id: str
    amount: int

@app.agent(value_type=Order)
async def order(orders):
    async for order in orders:
        # process infinite stream of orders.
        print(f'Order for {order.account_id}: {order.amount}')
""",
    "faust_clicks": """\
# data sent to 'clicks' topic sharded by URL key.
# e.g. key="http://example.com" value="1"
click_topic = app.topic('clicks', key_type=str, value_type=int)

# default value for missing URL will be 0 with `default=int`
counts = app.Table('click_counts', default=int)

@app.agent(click_topic)
async def count_click(clicks):
    async for url, count in clicks.items():
        counts[url] += count
""",
    "faust_order_agent": """\
class Order(faust.Record):
    account_id: str
    product_id: str
    price: float
    amount: float = 1.0

orders_topic = app.topic('orders', key_type=str, value_type=Order)

@app.agent(orders_topic)
async def process_order(orders):
    async for order in orders:
        total_price = order.price * order.amount
        await send_order_received_email(order.account_id, order)
""",
}


@pytest.mark.parametrize("name", sorted(FAUST_README))
def test_examples_hold_faust_readme_programs_verbatim(name: str) -> None:
    """Besides ``import flowgraph as faust``, only the names a snippet uses without defining
    them are added, each right after a comment saying it is not part of the original."""
    code = (EXAMPLES / f"{name}.py").read_text().split('"""')[-1]  # after the docstring
    assert FAUST_README[name] in code
    added = code.replace(FAUST_README[name], "").splitlines()
    assert "import flowgraph as faust" in added
    assert not any(ln.startswith("import faust") for ln in added)
    for i, line in enumerate(added):
        if line.startswith(("app = ", "async def ", "def ", "class ")):
            assert added[i - 1].startswith("# Not part of the original"), line


# -- (1) the order printer ------------------------------------------------------------------


def order_json(account_id: str, amount: int, **extra: Any) -> bytes:
    return json.dumps({"account_id": account_id, "amount": amount, **extra}).encode()


def test_printer_topic_is_the_agents_own() -> None:
    app = load("faust_orders").app
    assert app.broker == "kafka://localhost:9092"  # Faust's kafka://localhost
    (source,) = [t for t in app.plan().topics if t.role == "source"]
    assert (source.name, source.partitions) == ("myapp-order", PARTITIONS)


def test_printer_prints_each_order_with_the_driver(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("faust_orders")
    orders = [example.Order(account_id=f"acct-{i}", amount=i * 7 % 11) for i in range(40)]
    with TestDriver(example.app) as driver:
        for i, order in enumerate(orders):
            driver.send("myapp-order", None if i % 2 else order.account_id, order)
        assert driver.dead_letters() == []
    assert printed(capsys) == [f"Order for acct-{i}: {i * 7 % 11}" for i in range(40)]


def test_printer_prints_each_order_in_partition_order_with_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("faust_orders")
    n = 2_000
    records: list[Raw] = [(None, order_json(f"p{i % PARTITIONS}-{i}", i)) for i in range(n)]
    result = fg.run(example.app, broker="memory://", on_start=feed("myapp-order", records))
    assert result.events == n
    assert result.dead_letters == 0
    lines = printed(capsys)
    assert Counter(lines) == Counter(f"Order for p{i % PARTITIONS}-{i}: {i}" for i in range(n))
    # each partition's orders are handled in offset order, as in Faust
    for p in range(PARTITIONS):
        mine = re.compile(rf"^Order for p{p}-(\d+):")
        seen = [int(m.group(1)) for m in map(mine.match, lines) if m]
        assert seen == sorted(seen) and len(seen) == n // PARTITIONS


def test_printer_reads_records_written_by_faust(capsys: pytest.CaptureFixture[str]) -> None:
    """Faust's JSON serializer adds a ``__faust`` field naming the model; the printer reads
    those records as any other, and a record that is no Order is a dead letter."""
    example = load("faust_orders")
    records: list[Raw] = [
        (b"a", order_json("a", 3, __faust={"ns": "examples.Order"})),
        (None, order_json("b", 4, __faust={"ns": "faust_orders.Order"})),
        (None, order_json("c", 5)),
        (None, b'{"account_id": "d", "amount": "many"}'),
        (b"e", order_json("e", 6, __faust={"ns": "examples.Order"})),
    ]
    result = fg.run(example.app, broker="memory://", on_start=feed("myapp-order", records))
    assert result.events == len(records)
    assert result.dead_letters == 1
    assert sorted(printed(capsys)) == [
        "Order for a: 3",
        "Order for b: 4",
        "Order for c: 5",
        "Order for e: 6",
    ]


# -- (2) the click counter ------------------------------------------------------------------


def clicks(n: int, seed: int, urls: int = 500) -> list[tuple[str, int]]:
    """`n` seeded (url, count) clicks over `urls` URLs, popular ones more often."""
    rng = random.Random(seed)
    names = [f"http://example.com/{i}" for i in range(urls)]
    picks = rng.choices(names, weights=[1 / (r + 1) for r in range(urls)], k=n)
    return [(url, rng.randint(1, 5)) for url in picks]


def click_records(pairs: Sequence[tuple[str, int]]) -> list[Raw]:
    return [(url.encode(), str(count).encode()) for url, count in pairs]


def expected_counts(*inputs: Sequence[tuple[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for pairs in inputs:
        for url, count in pairs:
            total[url] += count
    return dict(total)


def test_click_counter_with_the_driver() -> None:
    example = load("faust_clicks")
    pairs = clicks(1_500, seed=1, urls=200)
    with TestDriver(example.app) as driver:
        for url, count in pairs:
            driver.send("clicks", url, count)
        assert driver.table("click_counts") == expected_counts(pairs)
        assert driver.dead_letters() == []


def test_click_counter_is_exact_over_eight_partitions_with_run() -> None:
    example = load("faust_clicks")
    pairs = clicks(20_000, seed=2)
    records = click_records(pairs)
    assert {partition_for(k or b"", PARTITIONS) for k, _ in records} == set(range(PARTITIONS))
    result = fg.run(example.app, broker="memory://", on_start=feed("clicks", records))
    assert result.events == len(pairs)
    assert result.dead_letters == 0
    expected = expected_counts(pairs)
    assert len(expected) > 400
    assert result.table("click_counts") == expected


def test_a_click_that_is_not_an_int_is_a_dead_letter() -> None:
    example = load("faust_clicks")
    with TestDriver(example.app) as driver:
        driver.send("clicks", "http://a", 2)
        driver.send("clicks", "http://a", b'"two"')
        driver.send("clicks", "http://b", 1)
        driver.send("clicks", "http://a", 3)
        assert driver.table("click_counts") == {"http://a": 5, "http://b": 1}
        (dead,) = driver.dead_letters()
    assert (dead.key, dead.value) == (b"http://a", b'"two"')


# -- (3) the order agent --------------------------------------------------------------------


Email = tuple[str, str, str, float, float]


def record_emails(example: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[Email]:
    """Replace the program's stand-in `send_order_received_email` (not part of Faust's
    snippet) by one that notes each call."""
    sent: list[Email] = []

    async def send_order_received_email(account_id: str, order: Any) -> None:
        assert isinstance(order, example.Order)
        sent.append((account_id, order.account_id, order.product_id, order.price, order.amount))

    monkeypatch.setattr(example, "send_order_received_email", send_order_received_email)
    return sent


def test_order_agent_emails_once_per_order_with_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load("faust_order_agent")
    sent = record_emails(example, monkeypatch)
    orders = [
        example.Order(account_id="a", product_id="p1", price=2.5),
        example.Order(account_id="b", product_id="p2", price=10.0, amount=3.0),
        example.Order(account_id="a", product_id="p3", price=1.0, amount=0.5),
    ]
    with TestDriver(example.app) as driver:
        for order in orders:
            driver.send("orders", order.account_id, order)
        assert driver.dead_letters() == []
    assert sent == [
        ("a", "a", "p1", 2.5, 1.0),  # amount: the Record's default
        ("b", "b", "p2", 10.0, 3.0),
        ("a", "a", "p3", 1.0, 0.5),
    ]


def test_order_agent_stand_in_prints_each_email(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("faust_order_agent")
    with TestDriver(example.app) as driver:
        driver.send("orders", "a", b'{"account_id": "a", "product_id": "p1", "price": 2.0}')
    assert printed(capsys) == ["email to a: order of 1.0 x p1 received"]


def test_order_agent_emails_once_per_order_with_run(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load("faust_order_agent")
    sent = record_emails(example, monkeypatch)
    rng = random.Random(5)
    orders = []
    for i in range(3_000):
        order: dict[str, Any] = {
            "account_id": f"acct-{rng.randrange(300)}",
            "product_id": f"prod-{i}",
            "price": rng.randrange(1, 10_000) / 100,
        }
        if i % 3:
            order["amount"] = float(rng.randint(1, 4))
        orders.append(order)
    records: list[Raw] = [(o["account_id"].encode(), json.dumps(o).encode()) for o in orders]
    result = fg.run(example.app, broker="memory://", on_start=feed("orders", records))
    assert result.events == len(orders)
    assert result.dead_letters == 0
    expected = Counter(
        (o["account_id"], o["account_id"], o["product_id"], o["price"], o.get("amount", 1.0))
        for o in orders
    )
    assert Counter(sent) == expected
    assert len(sent) == len(orders)
