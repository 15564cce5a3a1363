"""Agents on Kafka: a worker killed with SIGKILL at a commit step, then run again, leaves the
agent's table exact and each of its sends and dead letters written once.

Workers run in subprocesses (``kafka_agent_jobs.py``, through `fg.run`) against the session's
broker, with a real ``kill -9`` placed at a crash point.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.worker import topic_codecs
from tests.integration import kafka_agent_jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    ROOT,
    committed,
    create_topic,
    read_topic,
    run_async,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

JOBS = Path(kafka_agent_jobs.__file__).resolve()
N = 30_000
KEYS = 40


def worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(JOBS), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def produce(kafka: Broker, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(1, N + 1):
            key = f"k{i % KEYS}".encode()
            await producer.send(topic, key=key, value=b"%d" % i, partition=partition_for(key, 4))
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-store"])  # every point: test_kafka_app_crash.py
def test_kill_9_at_a_commit_step_keeps_an_agent_exact(
    kafka: Broker, tmp_path: Path, point: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    app_id, topic, out = f"ka-{suffix}", f"ka-{suffix}-clicks", f"ka-{suffix}-out"
    app = kafka_agent_jobs.make_app(app_id, topic, out)
    broker = f"{kafka.url}?{FAST_GROUP}"

    async def setup() -> None:
        await create_topic(kafka, topic, 4)
        await produce(kafka, topic)

    run_async(setup())
    store = f"rocksdb://{tmp_path / 'state'}"
    crashed = worker(app_id, topic, out, broker, store, f"{point}:3")  # the third commit
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    done_before = sum(committed(kafka, app_id, topic, 4).values())
    assert 0 < done_before < N, "the crash did not fall mid-run"
    done = worker(app_id, topic, out, broker, store)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"events: {N - done_before}" in done.stdout

    codecs = topic_codecs(app.plan(), in_process=False)
    vc = codecs[out][1]
    sent = collections.Counter(
        vc.decode(r.value) for rs in run_async(read_topic(kafka, out)).values() for r in rs
    )
    good = [i for i in range(1, N + 1) if i % 97]
    assert sent == collections.Counter(good), "a send lost or written twice"
    dead = collections.Counter(
        int(r.value) for rs in run_async(read_topic(kafka, f"{app_id}-dlq")).values() for r in rs
    )
    assert dead == collections.Counter(i for i in range(1, N + 1) if i % 97 == 0)
    expected: collections.Counter[str] = collections.Counter()
    for i in good:
        expected[f"k{i % KEYS}"] += i
    restored = fg.run(app, broker=broker, store=f"rocksdb://{tmp_path / 'reader'}", until_idle=True)
    assert restored.events == 0
    assert restored.table("counts") == dict(expected)
