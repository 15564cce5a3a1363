"""A Faust-style app on Kafka under kill -9: its table stays exact, its sends are written once.

The app (``kafka_app_jobs.py``) sums clicks per URL in an agent table and sends every click on
to an output topic (``counts[url] += count``; ``await out.send(key=url, value=count)``). Real
`flowgraph run` workers run it in subprocesses against the session's broker (helpers shared
with test_kafka.py) and kill themselves with SIGKILL at each point of the commit
(`flowgraph.runtime.faults`), or a test kills one of two workers mid-run. After a clean
restart, the table, read from its changelog, from a restore into a fresh store and from the
worker's RocksDB directory, equals the sum of the input per URL, and the output topic holds
each URL's counts exactly once, in input order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from flowgraph.runtime.worker import topic_codecs
from tests.integration import kafka_app_jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    POSITION_HEADER,
    ROOT,
    Done,
    assert_same,
    committed,
    create_topic,
    flowgraph_run,
    owned,
    partition_of,
    read_topic,
    run_async,
    stop_all,
    stored_table,
    wait_for,
    worker_cmd,
    worker_env,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

JOBS = Path(kafka_app_jobs.__file__).resolve()
TABLE = kafka_app_jobs.TABLE
PARTITIONS = 4
RECORDS = 4_000
SMALL_COMMITS = ("--commit-every", "500", "--max-batch", "200")
"""About 1,000 records per partition, fetched 200 at a time and committed every 500 records:
a run of the input passes each commit point several times, so a crash falls mid-run."""


# -- the app and its input --------------------------------------------------------------------

Click = tuple[str, int]
"""(url, count): a record of the clicks topic."""


def make_clicks(n: int, seed: int) -> list[Click]:
    """`n` seeded clicks over 200 URLs of Zipf-like popularity, counts 1 to 5."""
    rng = random.Random(seed)
    urls = [f"/page/{i}" for i in range(200)]
    picks = rng.choices(urls, weights=[1 / (r + 1) for r in range(len(urls))], k=n)
    return [(url, rng.randint(1, 5)) for url in picks]


def sums(*inputs: list[Click]) -> dict[str, int]:
    """What the table must end with: the counts per URL, summed in plain Python."""
    total: collections.Counter[str] = collections.Counter()
    for part in inputs:
        for url, count in part:
            total[url] += count
    return dict(total)


def per_url(*inputs: list[Click]) -> dict[str, list[int]]:
    """What the output topic must hold: each URL's counts, once each, in input order."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for part in inputs:
        for url, count in part:
            out[url].append(count)
    return dict(out)


@dataclass(frozen=True)
class AppJob:
    """The app of kafka_app_jobs.py under an app id and topics of its own."""

    app_id: str
    clicks: str
    out: str
    take: int = 0

    @classmethod
    def new(cls, name: str, take: int = 0) -> AppJob:
        app_id = f"ka-{name}-{uuid.uuid4().hex[:8]}"
        return cls(app_id, f"{app_id}-clicks", f"{app_id}-out", take)

    @property
    def target(self) -> str:
        args = f"{self.app_id!r}, {self.clicks!r}, {self.out!r}, {PARTITIONS}, {self.take}"
        return f"{JOBS}:make_app({args})"

    def app(self) -> fg.App:
        return kafka_app_jobs.make_app(self.app_id, self.clicks, self.out, PARTITIONS, self.take)

    @property
    def store(self) -> str:
        return f"{self.app_id}-{TABLE}"


async def produce(kafka: Broker, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    """Write `records` ((partition, key, value)), acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, partition=p) for p, k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def write_clicks(kafka: Broker, topic: str, clicks: list[Click], *, create: bool = True) -> None:
    """Write `clicks` as the app reads them (raw str keys, JSON int values), partitioned by
    URL the way flowgraph partitions (murmur2)."""
    records = [
        (partition_of(url, PARTITIONS), url.encode(), json.dumps(count).encode())
        for url, count in clicks
    ]

    async def body() -> None:
        if create:
            await create_topic(kafka, topic, PARTITIONS)
        await produce(kafka, topic, records)

    run_async(body())


# -- reading what the app wrote ---------------------------------------------------------------


def changelog_table(kafka: Broker, job: AppJob) -> dict[str, int]:
    """The table as its changelog says: the last value per key (each record holds a value
    and, in a header, the source position it reflects)."""
    plan = job.app().plan()
    changelog = next(s.changelog for s in plan.stores if s.step == TABLE)
    kc, vc = topic_codecs(plan, in_process=False)[changelog]
    assert kc is not None and vc is not None
    table: dict[str, int] = {}
    for records in run_async(read_topic(kafka, changelog)).values():
        for r in records:
            key = kc.decode(r.key)
            if r.value is None:
                table.pop(key, None)
                continue
            assert any(name == POSITION_HEADER for name, _ in r.headers), r
            table[key] = vc.decode(r.value)
    return table


def sent(kafka: Broker, job: AppJob) -> dict[str, list[int]]:
    """The output topic: each URL's values in offset order."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for records in run_async(read_topic(kafka, job.out)).values():
        for r in records:
            out[r.key.decode()].append(json.loads(r.value))
    return dict(out)


def assert_sent_once(got: dict[str, list[int]], expected: dict[str, list[int]]) -> None:
    if got == expected:
        return
    wrong = sorted(k for k in got.keys() | expected.keys() if got.get(k) != expected.get(k))
    extra = sum(len(v) for v in got.values()) - sum(len(v) for v in expected.values())
    sample = {k: (len(got.get(k, [])), len(expected.get(k, []))) for k in wrong[:5]}
    raise AssertionError(
        f"output topic: {len(wrong)} of {len(expected)} URLs differ, {extra:+d} records in all "
        f"(records sent, records expected): {sample}"
    )


def restored_table(job: AppJob, kafka: Broker, state: Path) -> dict[str, int]:
    """The table of a bounded run of the same app on a fresh store: restored from Kafka."""
    assert not state.exists()
    broker = f"{kafka.url}?{FAST_GROUP}"
    result = fg.run(job.app(), broker=broker, store=f"rocksdb://{state}", until_idle=True)
    assert result.events == 0, "the workers left input unprocessed"
    table: dict[str, int] = result.table(TABLE)
    return table


def assert_exact(job: AppJob, kafka: Broker, tmp_path: Path, clicks: list[Click]) -> None:
    """The changelog and a restore from it hold the sums; the output topic each click once."""
    expected = sums(clicks)
    assert_same(changelog_table(kafka, job), expected, "changelog")
    assert_sent_once(sent(kafka, job), per_url(clicks))
    assert_same(restored_table(job, kafka, tmp_path / "reader"), expected, "restored table")


def app_run(
    job: AppJob, broker: str, state: Path, *extra: str, crash_at: str | None = None
) -> Done:
    """`flowgraph run` of the app to its end (or its crash), committing often."""
    return flowgraph_run(
        job.target, broker, state, "--until-idle", *SMALL_COMMITS, *extra, crash_at=crash_at
    )


# -- kill -9 at every point of the commit -----------------------------------------------------

CRASHES = {
    # point: n, so that the crash falls in the middle of the run (20 batches of 200 records,
    # 8 commits or so; see SMALL_COMMITS)
    "in-batch": 6,
    "after-produce": 3,
    "after-store": 3,
    "after-commit": 3,
    "in-restore": 2,  # the second store partition restored: half the stores are back
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "take"),
    # the in-process tests (tests/executor/test_app_agents_crash.py) take every point;
    # here the points where a crash leaves writes of uncommitted input, and a restore
    [("after-produce", 0), ("after-store", 0), ("in-restore", 0), ("after-store", 7)],
    ids=lambda v: f"take{v}" if isinstance(v, int) else v,
)
def test_kill_9_at_a_commit_point_keeps_the_app_table_and_sends_exact(
    kafka: Broker, tmp_path: Path, point: str, take: int
) -> None:
    """With `take`, the agent handles lists of up to 7 clicks (cut short by commits and by
    ``within=``); a crash then leaves lists written whose replay must not be cut elsewhere."""
    job = AppJob.new(point, take)
    clicks = make_clicks(RECORDS, seed=21)
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"  # the restart must not wait long for the dead member
    write_clicks(kafka, job.clicks, clicks)

    if point == "in-restore":
        # a clean run of half the input leaves changelogs; without the store, the next start
        # restores them, and dies in the middle of that
        half = app_run(job, broker, state, "--max-events", str(RECORDS // 2))
        assert half.returncode == 0, half.why()
        shutil.rmtree(state)
    crashed = app_run(job, broker, state, crash_at=f"{point}:{CRASHES[point]}")
    assert crashed.returncode == -signal.SIGKILL, crashed.why()
    assert "summary of graph" not in crashed.stdout
    if point == "in-restore":
        assert owned(state, job.store), "not killed mid-restore"
    done_before = sum(committed(kafka, job.app_id, job.clicks, PARTITIONS).values())
    assert done_before < RECORDS, "the crash came after the last commit: not mid-run"
    if point in ("after-produce", "after-store"):
        # the window: output and changelog records written for input not committed
        written = sum(len(v) for v in sent(kafka, job).values())
        assert written > done_before, f"{written} sends for {done_before} committed records"
    if point in ("after-commit", "in-restore"):
        assert done_before > 0
        assert changelog_table(kafka, job), "the committed part is not in the changelog"

    done = app_run(job, broker, state)
    assert done.returncode == 0, done.why()
    assert done.summary_number("events") == RECORDS - done_before
    assert_same(stored_table(state, job.store, PARTITIONS), sums(clicks), "worker's store")
    assert_exact(job, kafka, tmp_path, clicks)
    print(
        f"[kafka] app crash at {point}:{CRASHES[point]} with {done_before} of {RECORDS} "
        f"committed; restart {done.seconds:.1f} s"
    )


# -- two workers, one killed ------------------------------------------------------------------


def start_worker(job: AppJob, broker: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    """A `flowgraph run` of the app without --until-idle: it runs until SIGTERM or kill -9."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            worker_cmd(job.target, broker, state, *SMALL_COMMITS),
            cwd=ROOT,
            env=worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_a_worker_killed_beside_another_leaves_the_app_table_and_sends_exact(
    kafka: Broker, tmp_path: Path
) -> None:
    job = AppJob.new("fail-over")
    broker = f"{kafka.url}?{FAST_GROUP}"
    inputs = [make_clicks(1_000, seed=40 + i) for i in range(6)]
    write_clicks(kafka, job.clicks, inputs[0])
    states = [tmp_path / "w1", tmp_path / "w2"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [start_worker(job, broker, s, log) for s, log in zip(states, logs, strict=True)]
    survivor, victim = procs
    try:
        wait_for(
            "both workers own partitions",
            lambda: all(owned(s, job.store) for s in states),
            30,
            logs,
        )
        wait_for(
            "the first input is counted",
            lambda: changelog_table(kafka, job) == sums(inputs[0]),
            30,
            logs,
        )
        for i, part in enumerate(inputs[1:], 1):
            write_clicks(kafka, job.clicks, part, create=False)
            if i == 2:  # mid-stream: records keep coming before and after the kill
                victim.send_signal(signal.SIGKILL)
            time.sleep(0.2)
        assert victim.wait(10) == -signal.SIGKILL
        clicks = [c for part in inputs for c in part]
        wait_for(
            "the survivor counted everything",
            lambda: changelog_table(kafka, job) == sums(clicks),
            45,
            logs,
        )
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(20) == 0, logs[0].read_text()
    finally:
        stop_all(procs)

    assert "Traceback" not in logs[0].read_text()
    assert owned(states[0], job.store) == set(range(PARTITIONS))
    assert stored_table(states[1], job.store, PARTITIONS), "the victim had counted nothing"
    assert_same(stored_table(states[0], job.store, PARTITIONS), sums(clicks), "survivor's store")
    assert_exact(job, kafka, tmp_path, clicks)
