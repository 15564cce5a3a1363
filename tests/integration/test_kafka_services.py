"""On Kafka: what an app's timer sends reaches the topic (and the agent reading it), and an
``on_leader`` timer runs on one member of a two-worker group only: the one assigned
partition 0 of the first source topic."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import flowgraph as fg
from flowgraph._run import run_async as fg_run_async
from flowgraph.runtime.agent import WORKER
from flowgraph.runtime.worker import Worker
from tests.integration.test_kafka import FAST_GROUP, read_topic, run_async
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration


def ticker(gid: str, **timer: Any) -> tuple[fg.App, list[Any]]:
    app = fg.App(gid, topic_partitions=2)
    ticks = app.topic(f"{gid}-ticks", key_type=str, value_type=int)
    counts = app.Table("tick_counts", default=int)
    ran: list[Any] = []

    @app.agent(ticks)
    async def count(stream):
        async for key, n in stream.items():
            counts[key] += n

    @app.timer(0.1, **timer)
    async def tick():
        ran.append(WORKER.get())
        await ticks.send(key="tick", value=1)

    return app, ran


def test_timer_sends_reach_the_topic_and_the_agent(kafka: Broker, tmp_path: Path) -> None:
    gid = f"kt-timer-{uuid.uuid4().hex[:8]}"
    app, ran = ticker(gid, on_leader=True)
    workers: list[Worker] = []
    result = fg.run(
        app,
        broker=kafka.url,
        store=f"rocksdb://{tmp_path / 'state'}",
        max_events=5,
        create_topics=True,
        on_start=workers.append,
    )
    assert result.table("tick_counts") == {"tick": 5}
    [s] = workers[0].services.stats
    assert s.runs == len(ran) >= 5  # the one worker leads its group
    assert s.errors == 0
    held = run_async(read_topic(kafka, f"{gid}-ticks"))
    records = [r for part in held.values() for r in part]
    assert len(records) == len(ran)  # every run's send is in the topic, once
    assert {(r.key, json.loads(r.value)) for r in records} == {(b"tick", 1)}


@pytest.mark.slow
def test_on_leader_timer_runs_on_one_member_only(kafka: Broker, tmp_path: Path) -> None:
    gid = f"kt-leader-{uuid.uuid4().hex[:8]}"
    app, ran = ticker(gid, on_leader=True)
    topic = f"{gid}-ticks"
    broker = f"{kafka.url}?{FAST_GROUP}"

    async def body() -> tuple[list[Worker], list[Any]]:
        stops = [asyncio.Event(), asyncio.Event()]
        workers: list[Worker] = []
        runs = [
            asyncio.ensure_future(
                fg_run_async(
                    app,
                    broker=broker,
                    store=f"rocksdb://{tmp_path / f'state{i}'}",
                    until_idle=False,
                    stop=stops[i],
                    create_topics=True,
                    on_start=workers.append,
                )
            )
            for i in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # both members hold one partition each
                if len(workers) == 2 and all(len(w._consumer.assignment()) == 1 for w in workers):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the two workers did not share the partitions in 60 s")
            ran.clear()
            before = [s.skipped for w in workers for s in w.services.stats]
            await asyncio.sleep(1.5)
            window = list(ran)
            after = [s.skipped for w in workers for s in w.services.stats]
            leaders = [i for i, w in enumerate(workers) if (topic, 0) in w._consumer.assignment()]
            return workers, [window, before, after, leaders]
        finally:
            for stop in stops:
                stop.set()
            await asyncio.gather(*runs, return_exceptions=True)

    workers, (window, before, after, leaders) = run_async(body(), timeout=120)
    [leader] = leaders
    follower = 1 - leader
    assert window, "the leader's timer did not run"
    assert {id(w) for w in window} == {id(workers[leader])}
    assert after[follower] > before[follower]  # the other member's runs were skipped


def test_app_of_timers_only_writes_its_topic(kafka: Broker, tmp_path: Path) -> None:
    """No topic to read: the worker joins no partitions and leads itself."""
    gid = f"kt-only-{uuid.uuid4().hex[:8]}"
    app = fg.App(gid)
    out = app.topic(f"{gid}-out", key_type=str, value_type=int, partitions=1)
    sent: list[int] = []

    @app.timer(0.1, on_leader=True)
    async def tick():
        sent.append(len(sent))
        await out.send(key="n", value=sent[-1])

    async def body() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        await fg_run_async(app, broker=kafka.url, store="memory://", stop=stop)

    run_async(body(), timeout=60)
    assert len(sent) >= 3
    held = run_async(read_topic(kafka, f"{gid}-out"))
    assert [json.loads(r.value) for r in held[0]] == sent
