"""An agent's table and sends after a crash, in process: what the Kafka kill -9 tests
(tests/integration/test_kafka_app_crash.py) check, reduced to a few records.

Workers run on a `MemoryBroker` in bytes mode (like Kafka: encoded records, origin headers);
a crash is a hook raising at a commit point, after which the worker is abandoned without
`stop()` (as after ``kill -9``) and the next starts on the same broker and store.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime.faults import InjectedCrash, raise_at
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.memory import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs

TAKE = 3


def counting_app(take: int) -> fg.App:
    """Counts per key in a table and sends each count on; in ``take()`` batches if `take`."""
    app = fg.App("agent-crash", topic_partitions=1)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    if take:

        @app.agent(clicks)
        async def count_batches(stream: Any) -> None:
            async for batch in stream.items().take(take):
                for key, n in batch:
                    counts[key] += n
                    await out.send(key=key, value=n)

    else:

        @app.agent(clicks)
        async def count_each(stream: Any) -> None:
            async for key, n in stream.items():
                counts[key] += n
                await out.send(key=key, value=n)

    return app


async def one_run(
    app: fg.App, broker: MemoryBroker, backend: MemoryBackend, commit_every: int, crash: str | None
) -> dict[str, int] | None:
    """A worker run to idle; its table, or None if it crashed at `crash` (``point:n``)."""
    point, _, n = (crash or "").partition(":")
    worker = Worker(
        app.plan(),
        MemoryTransport(broker, encoded=True),
        backend,
        max_batch=commit_every,
        commit_every=commit_every,
        commit_interval=3600.0,
        crash_point=raise_at(point, int(n)) if crash else None,
    )
    try:
        await worker.start()
        await worker.run(until_idle=True, idle_wait=0.0)
    except InjectedCrash:
        return None  # abandoned: no stop(), no commit
    table: dict[str, int] = worker.table("counts") if worker.plan.stores else {}
    await worker.stop()
    return table


def crash_then_finish(take: int, records: int, crash: str) -> tuple[dict[str, int], Counter[Any]]:
    """Commit every 5 records and crash at `crash`; then run to the end committing every 100
    (so commits, and with them any ``take()`` batch cut short by a commit, fall elsewhere).
    The final table and what ``out`` holds, (key, value) counted."""
    app = counting_app(take)
    plan = app.plan()
    codecs = topic_codecs(plan, in_process=False)
    kc, vc = codecs["clicks"]
    broker = MemoryBroker()
    broker.ensure("clicks", 1)
    broker.append(
        "clicks", [(0, kc.encode("a"), vc.encode(i + 1), 0.0, None) for i in range(records)]
    )
    backend = MemoryBackend()
    assert asyncio.run(one_run(app, broker, backend, 5, crash)) is None, "no crash"
    table = asyncio.run(one_run(app, broker, backend, 100, None))
    assert table is not None
    ok, ov = codecs["out"]
    out = Counter((ok.decode(k), ov.decode(v)) for k, v, *_ in broker.records("out"))
    return table, out


@pytest.mark.parametrize("crash", ["after-produce:1", "after-store:1", "after-commit:1"])
def test_an_agent_counting_each_record_is_exact_after_a_crash(crash: str) -> None:
    table, out = crash_then_finish(0, 10, crash)
    assert table == {"a": sum(range(1, 11))}
    assert out == Counter(("a", i) for i in range(1, 11))


@pytest.mark.parametrize("crash", ["after-produce:1", "after-store:1"])
def test_an_agent_counting_take_batches_is_exact_after_a_crash(crash: str) -> None:
    # Before the crash: batches [1, 2, 3] and [4, 5] (cut short by the commit at 5 records),
    # so the stored count of "a" (15) reflects offset 4. The replay from offset 0 takes
    # [1, 2, 3] (skipped: offset 2 <= 4), then [4, 5, 6]: offset 5 > 4, so all of it applies,
    # 4 and 5 a second time.
    table, out = crash_then_finish(TAKE, 10, crash)
    assert table == {"a": sum(range(1, 11))}
    assert out == Counter(("a", i) for i in range(1, 11))


def forwarding_app() -> fg.App:
    """Three coroutines forward each value twice, finishing out of order; 7s raise."""
    app = fg.App("agent-forward", topic_partitions=1)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    out = app.topic("out", key_type=str, value_type=int)

    @app.agent(clicks, concurrency=3)
    async def forward(stream: Any) -> None:
        async for key, n in stream.items():
            await asyncio.sleep((n % 3) / 1000)  # later values often finish first
            await out.send(key=key, value=n)
            if n % 7 == 0:
                raise ValueError(n)
            await out.send(key=key, value=-n)

    return app


@pytest.mark.parametrize(
    "crash", ["in-batch:2", "after-produce:1", "after-store:2", "after-commit:1"]
)
def test_concurrent_coroutines_send_each_value_once_in_order_after_a_crash(crash: str) -> None:
    app = forwarding_app()
    plan = app.plan()
    codecs = topic_codecs(plan, in_process=False)
    kc, vc = codecs["clicks"]
    broker = MemoryBroker()
    broker.ensure("clicks", 1)
    broker.append("clicks", [(0, kc.encode("a"), vc.encode(n), 0.0, None) for n in range(1, 31)])
    backend = MemoryBackend()
    assert asyncio.run(one_run(app, broker, backend, 5, crash)) is None, "no crash"
    asyncio.run(one_run(app, broker, backend, 7, None))
    ov = codecs["out"][1]
    sent = [ov.decode(v) for _k, v, *_ in broker.records("out")]
    assert sent == [x for n in range(1, 31) for x in ((n,) if n % 7 == 0 else (n, -n))]
    letters = [dict(h)["source.offset"] for *_, h in broker.records(plan.dlq)]
    assert sorted(letters, key=int) == [str(n - 1).encode() for n in (7, 14, 21, 28)]
