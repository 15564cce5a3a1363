"""A Faust-style windowed table on the real test broker: 4 partitions, record timestamps
from Kafka, a second run on a fresh store that restores the windows from the changelog, and
a worker process killed with SIGKILL mid-run, then run again."""

from __future__ import annotations

import importlib.util
import random
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as faust
from flowgraph.windows import WindowKey
from tests.integration.test_kafka import (
    FAST_GROUP,
    ROOT,
    Done,
    create_topic,
    partition_of,
    run_async,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

BASE = 1_700_000_000.0
KEYS = [f"page-{i}" for i in range(6)]


def make_app(app_id: str, topic_name: str) -> Any:
    app = faust.App(app_id, topic_partitions=4)
    topic = app.topic(topic_name, key_type=str, value_type=int)
    views = app.Table("views", default=int).hopping(60, 30, expires=600)

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for page, n in stream.items():
            views[page] += n

    return app


async def produce(kafka: Broker, topic: str, records: list[tuple[str, int, float]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, n, ts in records:
            await producer.send_and_wait(
                topic,
                key=key.encode(),
                value=str(n).encode(),
                partition=partition_of(key, 4),
                timestamp_ms=int(ts * 1000),
            )
    finally:
        await producer.stop()


def expected(records: list[tuple[str, int, float]]) -> dict[WindowKey, int]:
    """Hopping 60 s every 30 s: each time is in the two windows starting within 60 s before."""
    out: dict[WindowKey, int] = defaultdict(int)
    for key, n, ts in records:
        first = (ts // 30) * 30
        for start in (first - 30, first):
            out[WindowKey(key, start, start + 60)] += n
    return dict(out)


def test_windowed_table_on_kafka_restores_from_its_changelog(kafka: Broker) -> None:
    tag = uuid.uuid4().hex[:8]
    app_id, topic = f"wt-{tag}", f"wt-views-{tag}"
    run_async(create_topic(kafka, topic, 4))
    rng = random.Random(5)
    records = [
        (rng.choice(KEYS), rng.randint(1, 4), BASE + i * 7 + rng.uniform(0, 20)) for i in range(60)
    ]
    first, second = records[:35], records[35:]
    broker = f"{kafka.url}?{FAST_GROUP}"

    run_async(produce(kafka, topic, first))
    result = faust.run(make_app(app_id, topic), broker=broker, until_idle=True, create_topics=True)
    view = result.table("views")
    assert view.windows() == expected(first)
    assert view.late == 0

    # a fresh memory:// store: the windows come back from the changelog, then grow
    run_async(produce(kafka, topic, second))
    result = faust.run(make_app(app_id, topic), broker=broker, until_idle=True)
    view = result.table("views")
    assert view.windows() == expected(records)
    assert result.events == len(second)
    assert len({partition_of(k, 4) for k in KEYS}) >= 3  # the windows span partitions


JOB = """
import flowgraph as faust

app = faust.App({app_id!r}, topic_partitions=4)
topic = app.topic({topic!r}, key_type=str, value_type=int)
hits = app.Table("hits", default=int).tumbling(10, expires=30)
totals = app.Table("totals", default=int).tumbling(1000)  # kept: a double count would show


@app.agent(topic)
async def count(stream):
    async for page, n in stream.items():
        hits[page] += n
        totals[page] += n
"""


def oracle(records: list[tuple[str, int, float]]) -> tuple[dict[WindowKey, int], int]:
    """Tumbling 10 s, expires 30 s, per partition in offset order: the windows left and the
    late writes."""
    windows: dict[WindowKey, int] = {}
    st: dict[int, float] = {}
    late = 0
    for key, n, ts in records:
        p = partition_of(key, 4)
        st[p] = max(st.get(p, ts), ts)
        start = ts // 10 * 10
        if start + 10 + 30 <= st[p]:
            late += 1
            continue
        wk = WindowKey(key, start, start + 10)
        windows[wk] = windows.get(wk, 0) + n
    left = {wk: v for wk, v in windows.items() if wk.end + 30 > st[partition_of(wk.key, 4)]}
    return left, late


RUNNER = """
import sys

import flowgraph as fg
from flowgraph.runtime.faults import kill_at

sys.path.insert(0, {folder!r})
from job import app

point = sys.argv[1] if len(sys.argv) > 1 else None
crash = kill_at(point.split(":")[0], int(point.split(":")[1])) if point else None
result = fg.run(
    app,
    broker={broker!r},
    store={store!r},
    until_idle=True,
    commit_every=100,
    max_batch=50,
    crash_point=crash,
)
print("skipped:", result.stats.skipped)
"""


def run_worker(runner: Path, crash_at: str | None) -> Done:
    """The app run by `fg.run` in a process of its own, killed with SIGKILL at `crash_at`."""
    cmd = [sys.executable, str(runner), *([crash_at] if crash_at else [])]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    return Done(proc.returncode, proc.stdout, proc.stderr, 0.0)


@pytest.mark.slow
def test_kill_9_mid_run_keeps_the_windows_exact(kafka: Broker, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    app_id, topic = f"wtk-{tag}", f"wtk-hits-{tag}"
    job = tmp_path / "job.py"
    job.write_text(JOB.format(app_id=app_id, topic=topic))
    run_async(create_topic(kafka, topic, 4))
    rng = random.Random(9)
    records = [
        (rng.choice(KEYS), rng.randint(1, 9), BASE + i * 0.5 - rng.uniform(0, 45))
        for i in range(1200)
    ]
    run_async(produce(kafka, topic, records))
    broker = f"{kafka.url}?{FAST_GROUP}"
    state = tmp_path / "state"

    runner = tmp_path / "runner.py"
    runner.write_text(
        RUNNER.format(folder=str(tmp_path), broker=broker, store=f"rocksdb://{state}")
    )

    crashed = run_worker(runner, "after-store:3")
    assert crashed.returncode == -signal.SIGKILL, crashed.why()
    done = run_worker(runner, None)
    assert done.returncode == 0, done.why()
    assert done.summary_number("skipped") > 0, done.why()  # the replay skipped stored writes

    # what the changelog holds, restored into a fresh store by an in-process run
    spec = importlib.util.spec_from_file_location(f"wtk_{tag}", job)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = faust.run(module.app, broker=broker, until_idle=True)
    assert result.events == 0
    windows, late = oracle(records)
    assert late > 0
    assert result.table("hits").windows() == windows
    totals: dict[WindowKey, int] = defaultdict(int)
    for key, n, ts in records:
        start = ts // 1000 * 1000
        totals[WindowKey(key, start, start + 1000)] += n
    assert result.table("totals").windows() == dict(totals)
