"""Agents under crashes: tables exact and every send, yield and dead letter written once.

Workers run on a `MemoryBroker` in bytes mode (as on Kafka: encoded topics, origin headers).
A crash is a `raise_at` hook at a commit step; the worker is abandoned without `stop()`, as
after ``kill -9``, and the next one starts on the same broker with the same store or a fresh
one (rebuilt from the changelogs). A last clean run then processes what is left.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import POINTS, InjectedCrash, raise_at
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.memory import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs

P = 4
BAD = 7


class Order(fg.Record):
    account: str
    amount: int


def counting_app() -> fg.App:
    """``counts[k] += v`` and ``await out.send(...)`` per record; multiples of 7 raise."""
    app = fg.App("x", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(clicks, sink=[app.topic("echo", key_type=str, value_type=int)])
    async def count(stream: Any) -> Any:
        async for k, v in stream.items():
            if v % BAD == 0:
                raise ValueError(f"bad {v}")
            counts[k] += v
            await out.send(key=k, value=v)
            yield v

    return app


def grouped_app() -> fg.App:
    """The same through a group_by: the table is after a repartition."""
    app = fg.App("x", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    def parity(v: int) -> str:
        return f"p{v % 3}"

    @app.agent(clicks)
    async def count(stream: Any) -> None:
        async for v in stream.group_by(parity, name="parity"):
            if v % BAD == 0:
                raise ValueError(f"bad {v}")
            counts[parity(v)] += v
            await out.send(key=parity(v), value=v)

    return app


def concurrent_app() -> fg.App:
    """Three coroutines per partition finishing out of order; sends only (no table)."""
    app = fg.App("x", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(clicks, concurrency=3)
    async def slow(stream: Any) -> None:
        async for k, v in stream.items():
            for _ in range(v * 5 % 4):
                await asyncio.sleep(0)
            if v % BAD == 0:
                raise ValueError(f"bad {v}")
            await out.send(key=k, value=v)

    return app


def batching_app() -> fg.App:
    """``take(3)`` batches: a table and sends per value; a batch holding a bad value is
    dead-lettered whole (so which values are dead depends on the batches)."""
    app = fg.App("x", topic_partitions=P)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(clicks)
    async def batches(stream: Any) -> None:
        async for batch in stream.events().take(3, within=3600):
            if any(e.value % BAD == 0 for e in batch):
                raise ValueError(f"bad {batch}")
            for e in batch:
                counts[e.key] += e.value
                await out.send(key=e.key, value=e.value)

    return app


APPS = {
    "table and sends": counting_app,
    "group_by": grouped_app,
    "concurrency": concurrent_app,
    "take": batching_app,
}


async def one_run(plan: Any, broker: MemoryBroker, backend: Any, crash: Any, batch: int) -> Any:
    worker = Worker(
        plan,
        MemoryTransport(broker, encoded=True),
        backend,
        max_batch=batch,
        commit_every=batch + 1,
        commit_interval=3600.0,
        crash_point=raise_at(*crash) if crash else None,
    )
    try:
        await worker.start()
        await worker.run(until_idle=True, idle_wait=0.0)
    except InjectedCrash:
        return None  # abandoned, as after kill -9
    tables = {s.step: worker.table(s.step) for s in plan.stores}
    await worker.stop()
    return tables


def check(name: str, crashes: list[tuple[str, int] | None], fresh: bool) -> None:
    app = APPS[name]()
    plan = app.plan()
    codecs = topic_codecs(plan, in_process=False)
    broker = MemoryBroker()
    backend = MemoryBackend()
    kc, vc = codecs["clicks"]
    sent: list[tuple[str, int]] = []
    value = 0
    tables = None
    for i, crash in enumerate([*crashes, None]):
        rows = []
        for _ in range(15 if crash else 3):
            value += 1
            key = f"k{value % 5}"
            kb = kc.encode(key)
            rows.append((partition_for(kb, P), kb, vc.encode(value), 0.0, None))
            sent.append((key, value))
        broker.ensure("clicks", P)
        broker.append("clicks", rows)
        if fresh and i % 2:
            backend = MemoryBackend()
        tables = asyncio.run(one_run(plan, broker, backend, crash, 2 + i % 3))
    assert tables is not None
    vo = codecs["out"][1]
    out = Counter(vo.decode(v) for _, v, *_ in broker.records("out"))
    dead = Counter(int(v) for _, v, *_ in broker.records(plan.dlq))
    if name == "take":
        assert out + dead == Counter(v for _, v in sent), "a value lost or handled twice"
        assert not set(out) & set(dead)
        expected: Counter[str] = Counter()
        for k, v in sent:
            if v in out:
                expected[k] += v
        assert tables["counts"] == dict(expected)
        return
    good = [(k, v) for k, v in sent if v % BAD]
    assert out == Counter(v for _, v in good), "a send lost or written twice"
    assert dead == Counter(v for _, v in sent if v % BAD == 0), "a dead letter lost or twice"
    if name == "table and sends":
        echo = Counter(codecs["echo"][1].decode(v) for _, v, *_ in broker.records("echo"))
        assert echo == out, "a yield lost or written twice"
        expected = Counter()
        for k, v in good:
            expected[k] += v
        assert tables["counts"] == dict(expected)
    if name == "group_by":
        expected = Counter()
        for _, v in good:
            expected[f"p{v % 3}"] += v
        assert tables["counts"] == dict(expected)


def cases() -> list[Any]:
    out: list[Any] = []
    for name in sorted(APPS):
        for point in POINTS:
            out.append(pytest.param(name, point))
    return out


@pytest.mark.parametrize(("name", "point"), cases())
def test_a_crash_at_each_commit_step_then_a_rerun_is_exact(name: str, point: str) -> None:
    check(name, [(point, 1), (point, 2), (point, 3)], fresh=False)
    check(name, [(point, 2), (point, 1)], fresh=True)
