"""Faust-style agents (`fg.App`): stream methods, yields and sends, errors, concurrency.

Every app here has 4 partitions per topic and several keys, so records of one agent run on
several tasks. Most tests use `TestDriver` (encoded transport, as on Kafka); some run the app
with `fg.run` on memory:// over records written to its topic before the run starts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.errors import ConfigurationError, GraphDefinitionError, GraphValidationError
from flowgraph.partitioner import partition_for
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver

P = 4
KEYS = [f"k{i}" for i in range(7)]


class Order(fg.Record):
    account: str
    amount: int


def keyed(n: int) -> list[tuple[str, int]]:
    """``n`` records over the 7 keys: value i for the i-th."""
    return [(KEYS[i % len(KEYS)], i) for i in range(n)]


def by_key(pairs: list[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def run_app(app: fg.App, topic: str, records: list[tuple[Any, Any]], **kw: Any) -> Any:
    """`fg.run(app)` on memory:// with `records` written to `topic` before it runs; the
    run's result and its worker (to read the broker)."""
    started: list[Worker] = []

    def feed(worker: Worker) -> None:
        started.append(worker)
        kc, vc = worker.codecs[topic]
        width = next(t.partitions for t in worker.plan.topics if t.name == topic)
        rows = []
        for k, v in records:
            kb = kc.encode(k) if kc is not None else k
            rows.append((partition_for(kb, width), kb, vc.encode(v), 0.0, None))
        worker.transport.broker.append(topic, rows)  # type: ignore[attr-defined]

    result = fg.run(app, on_start=feed, **kw)
    return result, started[0]


def outputs(worker: Worker, topic: str) -> list[tuple[Any, Any]]:
    kc, vc = worker.codecs[topic]
    broker = worker.transport.broker  # type: ignore[attr-defined]
    return [
        (k if kc is None or k is None else kc.decode(k), v if vc is None else vc.decode(v))
        for k, v, *_ in broker.records(topic)
    ]


# -- stream methods --------------------------------------------------------------------------


def test_items_and_values_count_per_key_over_four_partitions() -> None:
    app = fg.App("a", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    sums = app.Table("sums", default=int)
    seen = app.Table("seen", default=int)

    @app.agent(clicks)
    async def add(stream: Any) -> None:
        async for k, v in stream.items():
            sums[k] += v

    other = app.topic("other", key_type=str, value_type=int)

    @app.agent(other)
    async def values(stream: Any) -> None:
        async for v in stream:
            seen[fg.current_event().key] += v * 10

    records = keyed(60)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
            d.send("other", k, v)
        expected = {k: sum(vs) for k, vs in by_key(records).items()}
        assert d.table("sums") == expected
        assert d.table("seen") == {k: 10 * v for k, v in expected.items()}
    result, _ = run_app(app, "clicks", records)
    assert result.table("sums") == expected


def test_events_carry_key_value_timestamp_headers_partition_offset() -> None:
    app = fg.App("ev", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=list)

    @app.agent(clicks)
    async def look(stream: Any) -> None:
        async for event in stream.events():
            assert event.message.offset == event.offset
            await out.send(
                key=event.key,
                value=[
                    event.value,
                    event.timestamp,
                    event.headers.get("h", b"").decode(),
                    event.partition,
                    event.offset,
                    event.topic,
                ],
            )

    records = keyed(30)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v, timestamp=1000.0 + v, headers={"h": f"x{v}".encode()})
        got = d.output("out")
    assert len(got) == len(records)
    offsets: dict[int, int] = {}
    for k, (v, ts, h, partition, offset, topic) in got:
        assert (ts, h, topic) == (1000.0 + v, f"x{v}", "clicks")
        assert partition == partition_for(k.encode(), P)
        assert offset == offsets.get(partition, 0)  # consecutive offsets per partition
        offsets[partition] = offset + 1
    assert sorted(v[0] for _, v in got) == [v for _, v in records]
    assert len(offsets) > 1


def test_filter_with_a_sync_and_an_async_predicate() -> None:
    app = fg.App("f", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    async def small(v: int) -> bool:
        await asyncio.sleep(0)
        return v < 40

    @app.agent(clicks)
    async def keep(stream: Any) -> None:
        async for k, v in stream.filter(lambda v: v % 2 == 0).filter(small).items():
            await out.send(key=k, value=v)

    records = keyed(60)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        kept = [v for v in range(60) if v % 2 == 0 and v < 40]
        assert sorted(v for _, v in d.output("out")) == kept


def test_enumerate_counts_per_partition_from_start() -> None:
    app = fg.App("en", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=list)

    @app.agent(clicks)
    async def number(stream: Any) -> None:
        async for n, v in stream.enumerate(start=10):
            await out.send(key=fg.current_event().key, value=[n, v])

    records = keyed(40)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        got = d.output("out")
    per_partition: dict[int, list[int]] = {}
    for k, (n, _v) in got:
        per_partition.setdefault(partition_for(k.encode(), P), []).append(n)
    for ns in per_partition.values():
        assert ns == list(range(10, 10 + len(ns)))
    assert sorted(v for _, (_, v) in got) == list(range(40))


def test_group_by_a_record_field_makes_an_exact_table_over_four_partitions() -> None:
    app = fg.App("shop", topic_partitions=P)
    orders = app.topic("orders", key_type=str, value_type=Order)
    totals = app.Table("totals", default=int)

    @app.agent(orders)
    async def by_account(stream: Any) -> None:
        async for order in stream.group_by(Order.account):
            totals[order.account] += order.amount

    plan = app.plan()
    names = {t.name: t for t in plan.topics}
    assert names["shop-by_account-account-repartition"].role == "repartition"
    assert names["shop-by_account-account-repartition"].partitions == P
    assert "shop-by_account-account-repartition" in app.explain()
    records = [(f"o{i}", Order(account=f"acct{i % 5}", amount=i)) for i in range(80)]
    expected = Counter[str]()
    for _, o in records:
        expected[o.account] += o.amount
    with TestDriver(app) as d:
        for k, o in records:
            d.send("orders", k, o)  # keyed by order id: each account on every partition
        assert d.table("totals") == dict(expected)
    result, _ = run_app(app, "orders", records)
    assert result.table("totals") == dict(expected)


def test_group_by_a_function_needs_a_name() -> None:
    app = fg.App("g", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(clicks)
    async def parity(stream: Any) -> None:
        async for _ in stream.group_by(lambda v: str(v % 2), name="parity"):
            counts[fg.current_event().key] += 1

    assert "g-parity-parity-repartition" in {t.name for t in app.plan().topics}
    with TestDriver(app) as d:
        for k, v in keyed(21):
            d.send("clicks", k, v)
        assert d.table("counts") == {"0": 11, "1": 10}

    bad = fg.App("g2", topic_partitions=P)
    src = bad.topic("clicks", key_type=str, value_type=int)
    table = bad.Table("t", default=int)

    @bad.agent(src)
    async def anonymous(stream: Any) -> None:
        async for v in stream.group_by(lambda v: v % 2):
            table[v] += 1

    with pytest.raises(GraphDefinitionError, match=r"group_by\(\) with a function needs name="):
        bad.plan()


def test_take_hands_over_full_batches_then_the_partial_one_at_the_end() -> None:
    app = fg.App("tk", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=list)

    @app.agent(clicks)
    async def batches(stream: Any) -> None:
        async for batch in stream.take(5, within=60):
            await out.send(key=fg.current_event().key, value=batch)

    records = keyed(203)
    _, worker = run_app(app, "clicks", records, commit_every=1000)
    got = [v for _, v in outputs(worker, "out")]
    flat = [v for batch in got for v in batch]
    assert sorted(flat) == list(range(203))  # nothing lost, nothing twice
    sizes = Counter(len(b) for b in got)
    assert sizes[5] >= 203 // 5 - P  # full batches, and at most one partial per partition
    assert sum(n for size, n in sizes.items() if size != 5) <= P
    # TestDriver commits after every send: each send hands over what the batch holds
    with TestDriver(app) as d:
        for k, v in records[:12]:
            d.send("clicks", k, v)
        assert sorted(v for _, b in d.output("out") for v in b) == list(range(12))


def test_through_copies_the_stream_through_a_topic() -> None:
    app = fg.App("th", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    middle = app.topic("middle", key_type=str, value_type=int, partitions=2)
    sums = app.Table("sums", default=int, partitions=2)

    @app.agent(clicks)
    async def via(stream: Any) -> None:
        async for k, v in stream.through(middle).items():
            assert fg.current_event().topic == "middle"
            sums[k] += v

    records = keyed(50)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        assert d.table("sums") == {k: sum(vs) for k, vs in by_key(records).items()}
        assert sorted(d.output("middle")) == sorted(records)


# -- yields, sends and agents feeding agents --------------------------------------------------


def test_yields_go_to_a_topic_an_agent_and_a_callable() -> None:
    app = fg.App("y", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    doubled = app.topic("doubled", value_type=int)
    got: list[int] = []
    received: list[int] = []

    @app.agent(value_type=int)
    async def total(stream: Any) -> None:
        async for v in stream:
            received.append(v)

    @app.agent(clicks, sink=[doubled, total, got.append])
    async def double(stream: Any) -> Any:
        async for v in stream:
            yield v * 2

    records = keyed(30)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        assert sorted(v for _, v in d.output("doubled")) == [2 * v for v in range(30)]
    assert sorted(got) == [2 * v for v in range(30)]
    assert sorted(received) == [2 * v for v in range(30)]


def test_agent_send_cast_and_topic_send_with_key_and_headers() -> None:
    app = fg.App("s", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(key_type=str, value_type=int)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            counts[event.key] += event.value
            await out.send(key=event.key, value=event.value, headers={"via": b"count"})

    @app.agent(clicks)
    async def fan(stream: Any) -> None:
        async for k, v in stream.items():
            if v % 2:
                await count.send(key=k, value=v)
            else:
                await count.cast(v, key=k)

    records = keyed(42)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        assert d.table("counts") == {k: sum(vs) for k, vs in by_key(records).items()}
        log = d._transport.broker.logs["out"]
        for partition, part in enumerate(log):
            for k, _v, _ts, _o, h in part:
                assert partition_for(k, P) == partition  # partitioned by key
                assert dict(h)["via"] == b"count"
        assert sorted(d.output("out")) == sorted(records)


# -- errors ---------------------------------------------------------------------------------


def test_a_raising_agent_dead_letters_its_record_and_goes_on() -> None:
    app = fg.App("e", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    sums = app.Table("sums", default=int)

    @app.agent(clicks)
    async def picky(stream: Any) -> None:
        async for k, v in stream.items():
            if v % 7 == 3:
                raise ValueError(f"bad {v}")
            sums[k] += v

    records = keyed(50)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        good = [(k, v) for k, v in records if v % 7 != 3]
        assert d.table("sums") == {k: sum(vs) for k, vs in by_key(good).items()}
        letters = d.dead_letters()
        assert sorted(int(dl.value) for dl in letters) == [v for v in range(50) if v % 7 == 3]
        for dl in letters:
            assert dl.headers["error.step"] == "picky"
            assert dl.headers["error.type"] == "ValueError"
            assert dl.headers["error.message"] == f"bad {int(dl.value)}"
            assert dl.headers["source.topic"] == "clicks"
    result, _ = run_app(app, "clicks", records)
    assert result.table("sums") == {k: sum(vs) for k, vs in by_key(good).items()}
    assert result.dead_letters == len(letters)


def test_a_take_batch_that_raises_is_dead_lettered_whole() -> None:
    app = fg.App("te", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=list)

    @app.agent(clicks)
    async def batches(stream: Any) -> None:
        async for batch in stream.take(4, within=60):
            if 13 in batch:
                raise ValueError("13 in batch")
            await out.send(key="b", value=batch)

    _, worker = run_app(app, "clicks", keyed(100), commit_every=1000)
    written = [v for _, b in outputs(worker, "out") for v in b]
    broker = worker.transport.broker  # type: ignore[attr-defined]
    dead = [int(v) for _, v, *_ in broker.records("te-dlq")]
    assert 13 in dead and 13 not in written
    assert 1 < len(dead) <= 4
    assert sorted(written + dead) == list(range(100))


def test_an_agent_that_does_not_read_its_stream_is_one_sentence() -> None:
    app = fg.App("r", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)

    @app.agent(clicks)
    async def lazy(stream: Any) -> None:
        return None

    with (
        pytest.raises(ConfigurationError, match="returned without reading its stream"),
        TestDriver(app) as d,
    ):
        d.send("clicks", "k", 1)

    with pytest.raises(GraphDefinitionError, match="needs an async def function"):

        @app.agent(clicks)
        def plain(stream: Any) -> None:
            pass


def test_concurrency_writes_in_input_order() -> None:
    app = fg.App("c", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    finished: list[int] = []

    @app.agent(clicks, concurrency=3, sink=[app.topic("yields", key_type=str, value_type=int)])
    async def slow(stream: Any) -> Any:
        async for k, v in stream.items():
            for _ in range((v * 7) % 5):  # later records often finish first
                await asyncio.sleep(0)
            finished.append(v)
            await out.send(key=k, value=v)
            yield v

    records = keyed(60)
    _, worker = run_app(app, "clicks", records)
    per_partition: dict[int, list[int]] = {}
    for k, v in records:
        per_partition.setdefault(partition_for(k.encode(), P), []).append(v)
    assert sorted(finished) == list(range(60))
    assert any(  # the coroutines did finish out of order...
        [v for v in finished if v in vs] != vs for vs in per_partition.values()
    )
    # ...and what they made is written in input order: sends per key, yields (no key,
    # written to the partition of their input) per partition
    assert by_key(outputs(worker, "out")) == by_key(records)
    broker = worker.transport.broker  # type: ignore[attr-defined]
    vc = worker.codecs["yields"][1]
    for p, vs in per_partition.items():
        assert [vc.decode(v) for _, v, *_ in broker.logs["yields"][p]] == vs


def test_build_time_errors_for_tables() -> None:
    app = fg.App("bt", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(clicks, concurrency=2)
    async def busy(stream: Any) -> None:
        async for k, _ in stream.items():
            counts[k] += 1

    with pytest.raises(GraphDefinitionError, match="concurrency=2"):
        app.plan()

    app = fg.App("bt2", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    shared = app.Table("shared", default=int)

    @app.agent(clicks)
    async def one(stream: Any) -> None:
        async for k, _ in stream.items():
            shared[k] += 1

    @app.agent(app.topic("more", key_type=str, value_type=int))
    async def two(stream: Any) -> None:
        async for k, _ in stream.items():
            shared[k] += 1

    with pytest.raises(GraphDefinitionError, match="used by agents 'one' and 'two'"):
        app.plan()

    app = fg.App("bt3", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    wide = app.Table("wide", default=int, partitions=8)

    @app.agent(clicks)
    async def narrow(stream: Any) -> None:
        async for k, _ in stream.items():
            wide[k] += 1

    with pytest.raises((GraphDefinitionError, GraphValidationError), match="group_by"):
        app.plan()


def test_an_agent_that_raises_before_reading_stops_the_run() -> None:
    app = fg.App("rb", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    state: dict[str, int] = {}

    @app.agent(clicks)
    async def broken(stream: Any) -> None:
        state["x"] += 1  # a KeyError at start, before any record
        async for _ in stream:
            pass

    with (
        pytest.raises(fg.RuntimeFailure, match=r"'broken' raised KeyError: 'x' before reading"),
        TestDriver(app) as d,
    ):
        d.send("clicks", "k", 1)


def test_an_agent_on_a_channel_keeps_a_one_partition_table() -> None:
    """A channel is a one-partition topic of the app: an agent reading it may own a table,
    exact like any other (Faust's channels are in memory; here they are durable)."""
    app = fg.App("ch", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    channel = app.channel(key_type=str, value_type=int)
    totals = app.Table("totals", default=int)

    @app.agent(channel)
    async def tally(stream: Any) -> None:
        async for k, v in stream.items():
            totals[k] += v

    @app.agent(clicks)
    async def forward(stream: Any) -> None:
        async for k, v in stream.items():
            await channel.send(key=k, value=v)

    assert {t.name: t.partitions for t in app.plan().topics}["ch-channel-0"] == 1
    records = keyed(40)
    with TestDriver(app) as d:
        for k, v in records:
            d.send("clicks", k, v)
        assert d.table("totals") == {k: sum(vs) for k, vs in by_key(records).items()}


def test_a_filter_that_raises_dead_letters_its_record() -> None:
    app = fg.App("fr", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    def odd(v: int) -> bool:
        if v == 5:
            raise ValueError("five")
        return v % 2 == 1

    @app.agent(clicks)
    async def keep(stream: Any) -> None:
        async for k, v in stream.filter(odd).items():
            await out.send(key=k, value=v)

    with TestDriver(app) as d:
        for k, v in keyed(12):
            d.send("clicks", k, v)
        assert sorted(v for _, v in d.output("out")) == [1, 3, 7, 9, 11]
        assert [(dl.value, dl.headers["error.step"]) for dl in d.dead_letters()] == [(b"5", "keep")]


def test_explain_shows_an_agents_sends_and_sinks() -> None:
    app = fg.App("xp", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(value_type=int)
    async def tail(stream: Any) -> None:
        async for _ in stream:
            pass

    @app.agent(clicks, sink=[tail])
    async def head(stream: Any) -> Any:
        async for k, v in stream.items():
            await out.send(key=k, value=v)
            yield v

    text = app.explain()
    assert "head->out" in text
    assert "head->sink-xp-tail" in text
    roles = {t.name: t.role for t in app.plan().topics}
    assert roles["xp-tail"] == "source" and roles["out"] == "sink"


def test_take_within_hands_over_what_a_run_brought_once_the_time_is_up() -> None:
    """`within` is checked when the queue runs dry: with a tiny one, each run of records
    (at most `max_batch`) becomes a list; with a long one, lists fill up to `n`."""

    def lists(within: float) -> list[list[int]]:
        app = fg.App("tw", topic_partitions=P)
        clicks = app.topic("clicks", key_type=str, value_type=int)
        out = app.topic("out", key_type=str, value_type=list)

        @app.agent(clicks)
        async def batches(stream: Any) -> None:
            async for batch in stream.take(100, within=within):
                await out.send(key="b", value=batch)

        _, worker = run_app(app, "clicks", keyed(400), max_batch=10, commit_every=10_000)
        got = [v for _, v in outputs(worker, "out")]
        assert sorted(v for b in got for v in b) == list(range(400))
        return got

    assert max(len(b) for b in lists(1e-9)) <= 10
    assert max(len(b) for b in lists(3600)) > 10
