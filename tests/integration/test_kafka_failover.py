"""Fail-over with real processes: three workers, one killed with SIGKILL, the table exact.

Three `flowgraph run --until-idle` workers (RocksDB stores, a directory each) share a group on
an 8-partition topic and count records per key (``kafka_failover_jobs.py``). The test keeps
producing while one worker is killed; once the session timeout expels it, the other two take
its partitions over (restoring their tables from the changelog, or from a standby where the
worker keeps one) and finish the input. The table, read from its changelog and from a restore
into a fresh store, equals a plain count of what was produced, and the stamps the graph writes
show the survivors going on with every partition the killed worker was processing.
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from flowgraph.runtime import open_transport
from flowgraph.runtime.codecs import topic_codecs
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from tests.integration import kafka_failover_jobs as jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    POSITION_HEADER,
    ROOT,
    assert_same,
    committed,
    create_topic,
    owned,
    partition_of,
    read_topic,
    run_async,
    stop_all,
    stored_table,
    worker_cmd,
    worker_env,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

JOBS = Path(jobs.__file__).resolve()
PARTITIONS = 8
WORKERS = 3
KEYS = 2_000
DELAY = 0.001
"""Seconds each record waits in the workers: at most ~1,000 records/s per worker, so they
stay behind the producer until it stops (an --until-idle worker stops when the group has
nothing left, which must not happen before the kill)."""
FIRST = 12_000
"""Records written before the workers start: more than they can count while all three join."""
AFTER = 4
ROUND = 1_000
"""Rounds of records written after the workers joined; the kill comes after the first."""
COMMITS = ("--commit-every", "500", "--max-batch", "200")


# -- the job and its input --------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverJob:
    """The graph of kafka_failover_jobs.py under a graph id and topics of its own."""

    graph_id: str
    topic: str

    @classmethod
    def new(cls, name: str) -> FailoverJob:
        graph_id = f"kf-{name}-{uuid.uuid4().hex[:8]}"
        return cls(graph_id, f"{graph_id}-ticks")

    @property
    def target(self) -> str:
        args = f"{self.graph_id!r}, {self.topic!r}, {PARTITIONS}, {DELAY}"
        return f"{JOBS}:make_graph({args})"

    def graph(self) -> fg.Graph:
        return jobs.make_graph(self.graph_id, self.topic, PARTITIONS, DELAY)

    @property
    def store(self) -> str:
        return f"{self.graph_id}-{jobs.TABLE}"

    @property
    def stamps(self) -> str:
        return jobs.stamps_topic(self.graph_id)


def broker_url(kafka: Broker, standbys: int) -> str:
    """The workers' broker URL: a short session, and `standbys` standby replicas."""
    return f"{kafka.url}?{FAST_GROUP}&standby_replicas={standbys}"


def keys_of(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"k{rng.randrange(KEYS)}" for _ in range(n)]


class Producer:
    """Writes records keyed by the given keys, partitioned like flowgraph (murmur2), each a
    `Tick` numbered per partition and timed (so stamped by the graph)."""

    def __init__(self, kafka: Broker, job: FailoverJob) -> None:
        self.kafka = kafka
        self.topic = job.topic
        _, self.codec = topic_codecs(job.graph().plan(), in_process=False)[job.topic]
        self.written: collections.Counter[str] = collections.Counter()
        self._next = [0] * PARTITIONS

    def write(self, keys: Sequence[str]) -> None:
        assert self.codec is not None
        records = []
        for key in keys:
            p = partition_of(key, PARTITIONS)
            value = self.codec.encode(jobs.Tick(n=self._next[p], timed=True))
            records.append((p, key.encode(), value))
            self._next[p] += 1
        run_async(self._send(records))
        self.written.update(keys)

    async def _send(self, records: list[tuple[int, bytes, bytes]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = [
                await producer.send(self.topic, key=k, value=v, partition=p) for p, k, v in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()


def stamps(kafka: Broker, job: FailoverJob) -> list[jobs.Stamp]:
    """Every stamp the graph wrote so far (at least once each: sinks are not transactional)."""
    _, codec = topic_codecs(job.graph().plan(), in_process=False)[job.stamps]
    assert codec is not None
    return [
        codec.decode(r.value)
        for records in run_async(read_topic(kafka, job.stamps)).values()
        for r in records
    ]


def changelog_table(kafka: Broker, job: FailoverJob) -> dict[str, int]:
    """The table as its changelog says: the last value per key (each record holds a value
    and, in a header, the source position it reflects)."""
    plan = job.graph().plan()
    [spec] = plan.stores
    kc, vc = topic_codecs(plan, in_process=False)[spec.changelog]
    assert kc is not None and vc is not None
    table: dict[str, int] = {}
    for records in run_async(read_topic(kafka, spec.changelog)).values():
        for r in records:
            assert any(name == POSITION_HEADER for name, _ in r.headers), r
            table[kc.decode(r.key)] = vc.decode(r.value)
    return table


async def restore(kafka: Broker, job: FailoverJob, state: Path) -> None:
    """Restore every partition of the table from its changelog into a fresh RocksDB store
    at `state`, as a worker does on assignment.

    Without joining the group: on tansu, a member that leaves in the middle of a rebalance
    (two --until-idle workers ending together) can keep a later member from joining.
    """
    plan = job.graph().plan()
    [spec] = plan.stores
    assert not state.exists()
    transport = open_transport(kafka.url)
    worker = Worker(plan, transport, open_backend(f"rocksdb://{state}"))
    await transport.start()
    try:
        stores = [
            (worker.backend.open(spec.name, p), (spec.changelog, p)) for p in range(PARTITIONS)
        ]
        assert await worker.recovery.restore_all(stores)
    finally:
        await transport.stop()
        worker.backend.close()


# -- workers ----------------------------------------------------------------------------------


def start_worker(job: FailoverJob, broker: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    """A `flowgraph run --until-idle` of the job: it ends when the group has consumed and
    committed every input (or at kill -9)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            worker_cmd(job.target, broker, state, "--until-idle", *COMMITS),
            cwd=ROOT,
            env=worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(
    what: str,
    predicate: Any,
    timeout: float,
    procs: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
) -> None:
    """Poll `predicate` until true; fail at once, with the logs, if a worker has exited."""
    started = time.monotonic()
    while not predicate():
        ended = [i for i, p in enumerate(procs) if p.poll() is not None]
        late = time.monotonic() - started > timeout
        if ended or late:
            why = (
                f"worker {ended[0] + 1} exited with {procs[ended[0]].returncode}"
                if ended
                else f"not true after {timeout} s"
            )
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
            raise AssertionError(f"{why}: waiting until {what}\n{tails}")
        time.sleep(0.3)


# -- the test ---------------------------------------------------------------------------------

STANDBYS = [0, 1]
"""Standby replicas per stateful task."""


@pytest.mark.slow
@pytest.mark.parametrize("standbys", STANDBYS, ids=lambda n: f"standbys{n}")
def test_a_worker_killed_among_three_leaves_the_table_exact(
    kafka: Broker, tmp_path: Path, standbys: int
) -> None:
    job = FailoverJob.new(f"s{standbys}")
    broker = broker_url(kafka, standbys)

    async def topics() -> None:
        await create_topic(kafka, job.topic, PARTITIONS)
        await create_topic(kafka, job.stamps, PARTITIONS)

    run_async(topics())
    producer = Producer(kafka, job)
    producer.write(keys_of(FIRST, seed=1))
    states = [tmp_path / f"w{i}" for i in range(1, WORKERS + 1)]
    logs = [tmp_path / f"w{i}.log" for i in range(1, WORKERS + 1)]
    procs = [start_worker(job, broker, s, log) for s, log in zip(states, logs, strict=True)]
    victim = procs[-1]
    survivors = procs[:-1]
    started = time.time()
    try:
        wait_for(
            "all three workers own partitions",
            lambda: all(owned(s, job.store) for s in states),
            60,
            procs,
            logs,
        )
        wait_for(
            "the third worker processes records of two partitions",
            lambda: len({s.partition for s in stamps(kafka, job) if s.pid == victim.pid}) >= 2,
            30,
            procs,
            logs,
        )
        killed_at = 0.0
        for i in range(AFTER):
            producer.write(keys_of(ROUND, seed=10 + i))
            if i == 0:  # mid-stream: records keep coming before and after the kill
                victim.send_signal(signal.SIGKILL)
                killed_at = time.time()
        assert victim.wait(10) == -signal.SIGKILL
        for proc, log in zip(survivors, logs[:-1], strict=True):
            try:
                code = proc.wait(90)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, f"{log.name}: exit {code}\n{log.read_text()[-3000:]}"
        finished = time.time()
    finally:
        stop_all(procs)

    for log in logs[:-1]:
        out = log.read_text()
        assert "Traceback" not in out, out[-3000:]
    # The kill fell mid-stream: the victim was counting, and the survivors went on with
    # every partition it had stamped, past the last record it stamped there.
    by_victim: dict[int, int] = {}
    by_survivors: dict[int, int] = {}
    before = 0
    for s in stamps(kafka, job):
        before += s.at <= killed_at
        mine = by_victim if s.pid == victim.pid else by_survivors
        mine[s.partition] = max(mine.get(s.partition, -1), s.n)
        if s.pid == victim.pid:
            assert s.at <= killed_at, "a stamp of the killed worker after the kill"
    assert by_victim, "the killed worker had processed nothing"
    behind = {p: n for p, n in by_victim.items() if by_survivors.get(p, -1) <= n}
    assert not behind, f"partitions not taken over past the victim's last record: {behind}"

    expected = dict(producer.written)
    done = committed(kafka, job.graph_id, job.topic, PARTITIONS)
    assert sum(done.values()) == sum(expected.values()), f"input left uncommitted: {done}"
    assert_same(changelog_table(kafka, job), expected, "changelog")
    reader = tmp_path / "reader"
    run_async(restore(kafka, job, reader))
    assert_same(stored_table(reader, job.store, PARTITIONS), expected, "restored table")
    print(
        f"[kafka] fail-over, {standbys} standbys: killed {killed_at - started:.1f} s after "
        f"the start, {before} stamps before it, {len(by_victim)} partitions stamped by the "
        f"victim; the survivors ended {finished - killed_at:.1f} s after the kill"
    )
