"""Stream-stream joins on Kafka: a keyed topic of two partitions joined with a topic of three
re-keyed through a repartition topic, by real workers, results read back and compared with
the oracle (tests/join_oracle.py); and a `flowgraph run` killed with SIGKILL mid-stream,
whose restart writes each result once."""

from __future__ import annotations

import random
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from tests.integration import kafka_join_jobs as jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    committed,
    create_topic,
    flowgraph_run,
    partition_of,
    read_topic,
    run_async,
)
from tests.join_oracle import Event, Output, join_oracle
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
KEYS = [f"k{i}" for i in range(20)]


def make_events(n: int, seed: int) -> list[Event]:
    """`n` records, two thirds left, one a second, some up to a minute out of order."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(n):
        t = T0 + i - (rng.randrange(60) if rng.random() < 0.2 else 0)
        key = rng.choice(KEYS)
        side = 0 if rng.random() < 2 / 3 else 1
        events.append((side, key, t, f"l{i}" if side == 0 else f"{key}:r{i}"))
    return events


def write(kafka: Broker, left: str, right: str, events: list[Event]) -> None:
    """Left records keyed by the join key; right ones by their own name, so the join reads
    them re-keyed. Each with its event time as the Kafka timestamp."""

    async def body() -> None:
        await create_topic(kafka, left, jobs.LEFT_PARTITIONS)
        await create_topic(kafka, right, jobs.RIGHT_PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = []
            for side, key, t, value in events:
                topic, k = (left, key) if side == 0 else (right, value.split(":")[1])
                parts = jobs.LEFT_PARTITIONS if side == 0 else jobs.RIGHT_PARTITIONS
                futures.append(
                    await producer.send(
                        topic,
                        value.encode(),
                        key=k.encode(),
                        partition=partition_of(k, parts),
                        timestamp_ms=int(t * 1000),
                    )
                )
            for f in futures:
                await f
        finally:
            await producer.stop()

    run_async(body())


def results(kafka: Broker, topic: str) -> Counter[Output]:
    out: Counter[Output] = Counter()
    for p, records in run_async(read_topic(kafka, topic)).items():
        for r in records:
            key = r.key.decode()
            assert partition_of(key, jobs.LEFT_PARTITIONS) == p  # written where its key is
            out[(key, r.value.decode(), r.timestamp / 1000)] += 1
    return out


def expected(events: list[Event]) -> Counter[Output]:
    got, late = join_oracle(
        events,
        within=jobs.WITHIN,
        grace=jobs.GRACE,
        how="outer",
        partition_of=lambda k: partition_of(k, jobs.LEFT_PARTITIONS),
        end_of_input=True,
    )
    assert late == 0
    return got


def names(name: str) -> tuple[str, str, str]:
    graph_id = f"kt-sjoin-{name}-{uuid.uuid4().hex[:8]}"
    return graph_id, f"{graph_id}-left", f"{graph_id}-right"


def test_a_stream_joins_a_rekeyed_stream_of_other_partitions_on_kafka(
    kafka: Broker, tmp_path: Path
) -> None:
    graph_id, left, right = names("run")
    events = make_events(600, seed=1)
    write(kafka, left, right, events)
    g = jobs.make_graph(graph_id, left, right)
    assert [t.partitions for t in g.plan().topics if t.role == "repartition"] == [2]
    fg.run(
        g,
        broker=f"{kafka.url}?{FAST_GROUP}",
        store=f"rocksdb://{tmp_path / 'state'}",
        until_idle=True,
        end_of_input=True,
    )
    want = expected(events)
    assert sum(1 for _, v, _ in want if "None" not in v) > 50  # many pairs, not only misses
    assert results(kafka, f"{graph_id}-out") == want


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-produce", "after-store"])
def test_kill_9_mid_stream_writes_each_result_once(
    kafka: Broker, tmp_path: Path, point: str
) -> None:
    graph_id, left, right = names(point.split("-")[1])
    events = make_events(3000, seed=2)
    write(kafka, left, right, events)
    # by module name, not path: the graph's function comes from tests/join_oracle.py
    target = f"tests.integration.kafka_join_jobs:make_graph({graph_id!r}, {left!r}, {right!r})"
    broker = f"{kafka.url}?{FAST_GROUP}"  # the restart must not wait long for the dead member
    state = tmp_path / "state"
    small = ("--commit-every", "200", "--max-batch", "100")
    crashed = flowgraph_run(target, broker, state, "--until-idle", *small, crash_at=f"{point}:3")
    assert crashed.returncode == -signal.SIGKILL, crashed.why()
    done_before = sum(committed(kafka, graph_id, left, jobs.LEFT_PARTITIONS).values())
    assert done_before < sum(1 for e in events if e[0] == 0), "not killed mid-stream"
    # pairs of records whose offsets were not committed are written already: the restart
    # reads those records again and must not write their pairs again
    assert sum(results(kafka, f"{graph_id}-out").values()) > 0
    done = flowgraph_run(target, broker, state, "--until-idle", "--close-windows", *small)
    assert done.returncode == 0, done.why()
    got = results(kafka, f"{graph_id}-out")
    want = expected(events)
    twice = {k: n for k, n in got.items() if n > want.get(k, 0)}
    assert got == want, f"{len(twice)} written too often, {sum((want - got).values())} missing"
