"""End to end on Kafka: real `flowgraph run` workers in subprocesses, real input, real kill -9.

Every test writes its input with an aiokafka producer, runs workers with the console script
against the session's broker (tansu unless ``FLOWGRAPH_TEST_BROKER`` is set), and compares the
final table with a plain-Python count of exactly the records it produced. The broker is shared
by the whole session and keeps topics in memory, so every test uses its own graph id and input
topic (uuid suffix). The graphs are in ``kafka_jobs.py``.

Final tables are read three ways, which must agree: the changelog topic decoded here, a
bounded ``fg.run`` on a fresh store (which restores it from the changelog), and the worker's
own RocksDB directory where one is left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.state import RocksDBBackend
from flowgraph.runtime.worker import topic_codecs
from tests.integration import kafka_jobs
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOBS = Path(kafka_jobs.__file__).resolve()
EXAMPLE = ROOT / "examples" / "clickstream.py"
_SCRIPT = Path(sys.executable).parent / "flowgraph"
FLOWGRAPH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flowgraph.cli"]
FAST_GROUP = "session_timeout_ms=2000&heartbeat_interval_ms=300"
"""A killed member is noticed after the session timeout, so restarts and fail-overs wait that
long; on tansu a join also takes ~4 s longer with the default 10 s session than with this."""
TABLE = kafka_jobs.TABLE
POSITION_HEADER = "fg.pos"
"""Header of a changelog record that holds the source position of its value."""
RUN_TIMEOUT = 120.0
BIG = 200_000


# -- input ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Click:
    url: str
    user: str
    ts: float

    @property
    def bot(self) -> bool:
        return self.user.startswith("bot-")

    def encode(self) -> bytes:
        return json.dumps({"url": self.url, "user": self.user, "ts": self.ts}).encode()


def make_clicks(n: int, seed: int, *, urls: int = 300, users: int = 3_000) -> list[Click]:
    """`n` seeded clicks: Zipf-like URL popularity, about 5 % bots."""
    rng = random.Random(seed)
    names = [f"/page/{i}" for i in range(urls)]
    picks = rng.choices(names, weights=[1 / (r + 1) for r in range(urls)], k=n)
    out = []
    for i, url in enumerate(picks):
        user = f"bot-{rng.randrange(20)}" if rng.random() < 0.05 else f"user-{rng.randrange(users)}"
        out.append(Click(url, user, 1_700_000_000.0 + i * 0.01))
    return out


def counts(*inputs: Sequence[Click]) -> dict[str, int]:
    """What the graph must end with: clicks of people per URL, counted in plain Python."""
    return dict(collections.Counter(c.url for part in inputs for c in part if not c.bot))


def partition_of(key: str, partitions: int) -> int:
    return partition_for(key.encode(), partitions)


def run_async(coro: Any, timeout: float = 120.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def admin(kafka: Broker) -> Any:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def create_topic(kafka: Broker, topic: str, partitions: int) -> None:
    async with admin(kafka) as client:
        response = await client.create_topics([NewTopic(topic, partitions, 1)])
    [(name, code, message)] = response.topic_errors
    assert (name, code) == (topic, 0), message


async def produce(
    kafka: Broker, topic: str, clicks: Sequence[Click], partitions: int, key: str = "url"
) -> dict[int, list[Click]]:
    """Write `clicks` keyed by `key` ("url" or "user"), partitioned like flowgraph (murmur2).

    Returns the clicks written to each partition, in offset order.
    """
    by_partition: dict[int, list[Click]] = collections.defaultdict(list)
    for click in clicks:
        by_partition[partition_of(getattr(click, key), partitions)].append(click)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )
    await producer.start()
    try:
        futures = []
        for p, part in by_partition.items():
            batch = producer.create_batch()
            for click in part:
                k, v = getattr(click, key).encode(), click.encode()
                if batch.append(key=k, value=v, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=k, value=v, timestamp=None)
            futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return dict(by_partition)


def write_input(
    kafka: Broker,
    topic: str,
    clicks: Sequence[Click],
    partitions: int = 4,
    *,
    create: bool = True,
    key: str = "url",
) -> dict[int, list[Click]]:
    async def body() -> dict[int, list[Click]]:
        if create:
            await create_topic(kafka, topic, partitions)
        return await produce(kafka, topic, clicks, partitions, key)

    result: dict[int, list[Click]] = run_async(body())
    return result


# -- reading results --------------------------------------------------------------------------


async def read_topic(kafka: Broker, topic: str) -> dict[int, list[Any]]:
    """Every record of `topic` per partition, read to the fetch's high watermark."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await reader.start()
    try:
        await reader.topics()
        parts = reader.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        reader.assign(tps)
        out: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        for tp in tps:
            reader.seek(tp, 0)
        pending = set(tps)
        while pending:
            data = await reader.getmany(*pending, timeout_ms=200, max_records=50_000)
            for tp, records in data.items():
                out[tp.partition].extend(records)
            for tp in list(pending):
                high = reader.highwater(tp)
                if high is not None and await reader.position(tp) >= high:
                    pending.discard(tp)
        return out
    finally:
        await reader.stop()


def changelog_table(kafka: Broker, graph: fg.Graph) -> dict[Any, Any]:
    """The table as its changelog says: the last record per key, decoded with the plan's codecs.

    The value is the record's value, the source position it reflects in a header; a record
    without that header is taken to hold the whole ``(position, value)`` entry.
    """
    plan = graph.plan()
    changelog = next(s.changelog for s in plan.stores if s.step == TABLE)
    kc, vc = topic_codecs(plan, in_process=False)[changelog]
    assert kc is not None and vc is not None
    table: dict[Any, Any] = {}
    for records in run_async(read_topic(kafka, changelog)).values():
        for r in records:
            key = kc.decode(r.key)
            if r.value is None:
                table.pop(key, None)
                continue
            value = vc.decode(r.value)
            if not any(name == POSITION_HEADER for name, _ in r.headers):
                _position, value = value
            table[key] = value
    return table


def high_watermarks(kafka: Broker, topic: str) -> dict[int, int]:
    """End offsets of `topic` from a fetch's high watermark (tansu's ListOffsets is short)."""

    async def body() -> dict[int, int]:
        reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            await reader.topics()
            tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic))]
            reader.assign(tps)
            for tp in tps:
                await reader.seek_to_end(tp)  # at or a little before the end
            while any(reader.highwater(tp) is None for tp in tps):
                await reader.getmany(*tps, timeout_ms=200, max_records=1)
            return {tp.partition: int(reader.highwater(tp)) for tp in tps}
        finally:
            await reader.stop()

    result: dict[int, int] = run_async(body())
    return result


def committed(kafka: Broker, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets of `topic` (0 where none)."""

    async def body() -> dict[int, int]:
        client = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
        )
        await client.start()
        try:
            result = {}
            for p in range(partitions):
                offset = await client.committed(TopicPartition(topic, p))
                result[p] = offset or 0
            return result
        finally:
            await client.stop()

    result: dict[int, int] = run_async(body())
    return result


def stored_table(state: Path, store: str, partitions: int = 4) -> dict[Any, Any]:
    """A worker's RocksDB directory read directly (the worker must have exited)."""
    backend = RocksDBBackend(state)
    try:
        table: dict[Any, Any] = {}
        for p in range(partitions):
            if (state / store / str(p)).exists():
                table.update(backend.open(store, p).items())
        return table
    finally:
        backend.close()


# -- jobs and workers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One graph of kafka_jobs.py under a graph id and input topic of its own."""

    graph_id: str
    topic: str
    factory: str = "make_graph"
    partitions: int = 4

    @classmethod
    def new(cls, name: str, factory: str = "make_graph", partitions: int = 4) -> Job:
        suffix = uuid.uuid4().hex[:8]
        return cls(f"kt-{name}-{suffix}", f"kt-{name}-{suffix}-clicks", factory, partitions)

    @property
    def target(self) -> str:
        return f"{JOBS}:{self.factory}({self.graph_id!r}, {self.topic!r}, {self.partitions})"

    def graph(self) -> fg.Graph:
        graph: fg.Graph = getattr(kafka_jobs, self.factory)(
            self.graph_id, self.topic, self.partitions
        )
        return graph

    @property
    def store(self) -> str:
        return f"{self.graph_id}-{TABLE}"


def worker_env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOWGRAPH_CRASH_AT"}
    env["PYTHONUNBUFFERED"] = "1"
    if crash_at is not None:
        env["FLOWGRAPH_CRASH_AT"] = crash_at
    return env


def worker_cmd(target: str, broker: str, state: Path | None, *extra: str) -> list[str]:
    # commits every 20,000 records, so the crash points (counted in commits) fall mid-run
    cmd = [*FLOWGRAPH, "run", target, "--broker", broker, "--commit-every", "20000"]
    if state is not None:
        cmd += ["--store", f"rocksdb://{state}"]
    return [*cmd, *extra]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def why(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f} s\n{self.stdout}\n{self.stderr}"

    def summary_number(self, label: str) -> int:
        """A number from the end-of-run summary ("events:", "restored:", "skipped:")."""
        found = re.search(rf"^\s*{label}:\s+(\d+)", self.stdout, re.MULTILINE)
        return int(found.group(1)) if found else 0


def flowgraph_run(
    target: str,
    broker: str,
    state: Path | None,
    *extra: str,
    crash_at: str | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Done:
    """`flowgraph run` to its end in a subprocess."""
    started = time.monotonic()
    proc = subprocess.run(
        worker_cmd(target, broker, state, *extra),
        cwd=ROOT,
        env=worker_env(crash_at),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def restored_table(job: Job, kafka: Broker, state: Path) -> dict[Any, Any]:
    """The table of a bounded run of the same graph on a fresh store: restored from Kafka."""
    assert not state.exists()
    broker = f"{kafka.url}?{FAST_GROUP}"  # tansu lets a group join sooner with a short session
    result = fg.run(job.graph(), broker=broker, store=f"rocksdb://{state}", until_idle=True)
    assert result.events == 0, "the workers left input unprocessed"
    return result.table(TABLE)


def assert_exact(
    job: Job,
    kafka: Broker,
    tmp_path: Path,
    expected: dict[str, int],
    logs: Sequence[Path] = (),
) -> None:
    """The changelog and a restore from it both hold exactly `expected`; a failure names
    the workers' `logs`, kept for a look at what they did."""
    try:
        from_changelog = changelog_table(kafka, job.graph())
        assert_same(from_changelog, expected, "changelog")
        assert_same(restored_table(job, kafka, tmp_path / "reader"), expected, "restored table")
    except AssertionError as exc:
        if not logs:
            raise
        raise AssertionError(f"{exc}\nworker logs: {', '.join(map(str, logs))}") from None


def assert_same(got: dict[str, int], expected: dict[str, int], what: str) -> None:
    if got == expected:
        return
    wrong = {k: (got.get(k), expected.get(k)) for k in got.keys() | expected.keys()}
    wrong = {k: v for k, v in wrong.items() if v[0] != v[1]}
    over = sum((g or 0) - (e or 0) for g, e in wrong.values())
    sample = dict(sorted(wrong.items())[:5])
    raise AssertionError(
        f"{what}: {len(wrong)} of {len(expected)} keys differ, {over:+d} counts in all "
        f"(got, expected): {sample}"
    )


# -- 1. the example ---------------------------------------------------------------------------


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("clickstream_example_for_kafka_test", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_over_kafka_counts_as_the_embedded_run(kafka: Broker, tmp_path: Path) -> None:
    example = _load_example()
    graph_id = example.graph.id  # fixed by the example: its topics must be new on this broker

    async def leftovers() -> list[str]:
        async with admin(kafka) as client:
            return [t for t in await client.list_topics() if t.startswith(f"{graph_id}-")]

    left = run_async(leftovers())
    if left:
        pytest.fail(f"the broker already has topics of graph {graph_id!r}: {left}")

    embedded = fg.run(example.graph)
    state = tmp_path / "state"
    done = flowgraph_run(f"{EXAMPLE}:graph", kafka.url, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.stderr == ""
    assert done.summary_number("events") == embedded.events
    assert done.summary_number("dead letters") == embedded.dead_letters > 0

    expected = embedded.table("per_url")
    assert sum(expected.values()) > 0.9 * example.CLICKS
    assert_same(stored_table(state, f"{graph_id}-per_url"), expected, "worker's store")
    assert_same(changelog_table(kafka, example.graph), expected, "changelog")
    dlq = run_async(read_topic(kafka, f"{graph_id}-dlq"))
    assert sum(len(rs) for rs in dlq.values()) == embedded.dead_letters
    print(f"[kafka] example: {embedded.events} events over Kafka in {done.seconds:.1f} s")


# -- 2. store deleted between runs ------------------------------------------------------------


@pytest.mark.slow
def test_deleted_store_is_restored_from_the_changelog(kafka: Broker, tmp_path: Path) -> None:
    job = Job.new("rm-store")
    first, second = make_clicks(30_000, seed=1), make_clicks(20_000, seed=2)
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    write_input(kafka, job.topic, first)

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.summary_number("events") == len(first)
    assert stored_table(state, job.store) == counts(first)

    shutil.rmtree(state)
    changelog = f"{job.graph_id}-{TABLE}-changelog"
    logged = sum(map(len, run_async(read_topic(kafka, changelog)).values()))
    write_input(kafka, job.topic, second, create=False)
    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.summary_number("events") == len(second)  # the first input stays committed
    assert done.summary_number("restored") == logged > 0  # the whole changelog, read back
    assert_same(stored_table(state, job.store), counts(first, second), "worker's store")
    assert_exact(job, kafka, tmp_path, counts(first, second))


# -- 3. kill -9 at every crash point ----------------------------------------------------------

CRASHES = {
    # point: n, so that the crash falls in the middle of a 200,000 record run. A commit comes
    # every 20,000 records or second; a batch is up to 2,000 records of one partition.
    "in-batch": 40,
    "after-produce": 4,
    "after-store": 4,
    "after-commit": 4,
    "in-restore": 2,  # the second store partition restored: half the stores are back
}


def crash_run(
    target: str, broker: str, state: Path, crash_at: str, records: int, timings: list[str]
) -> Done:
    """Run `target` until it kills itself with SIGKILL at `crash_at` (``point:n``).

    For ``in-restore``, a clean run of half the `records` first leaves changelogs and the
    state directory is removed, so the crashing start has them to restore.
    """
    if crash_at.startswith("in-restore"):
        done = flowgraph_run(target, broker, state, "--max-events", str(records // 2))
        assert done.returncode == 0, done.why()
        assert done.summary_number("events") == records // 2
        timings.append(f"partial run {done.seconds:.1f} s")
        shutil.rmtree(state)
    crashed = flowgraph_run(target, broker, state, "--until-idle", crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.why()
    assert "summary of graph" not in crashed.stdout
    timings.append(f"crashed run {crashed.seconds:.1f} s")
    return crashed


@pytest.mark.slow
@pytest.mark.parametrize("point", list(CRASHES))
def test_kill_9_at_a_crash_point_keeps_counts_exact(
    kafka: Broker, tmp_path: Path, point: str
) -> None:
    job = Job.new(f"crash-{point}")
    clicks = make_clicks(BIG, seed=3)
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"  # the restart must not wait long for the dead member
    started = time.monotonic()
    write_input(kafka, job.topic, clicks)
    timings = [f"produce {time.monotonic() - started:.1f} s"]

    crash_run(job.target, broker, state, f"{point}:{CRASHES[point]}", BIG, timings)
    if point == "in-restore":
        # The point fires only inside a restore, after a chunk is written; which partition
        # that is depends on how the partial run's batches fell (an empty changelog has none).
        assert owned(state, job.store), "not killed mid-restore"
    done_before = sum(committed(kafka, job.graph_id, job.topic, 4).values())
    assert done_before < BIG, "the crash came after the last commit: not mid-run"
    if point in ("after-commit", "in-restore"):
        assert done_before > 0
    if point == "after-commit":
        assert changelog_table(kafka, job.graph())  # the committed part is in the changelog

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    timings.append(f"restart {done.seconds:.1f} s")
    assert done.summary_number("events") == BIG - done_before
    if point in ("after-produce", "after-store"):
        # (after in-restore, what is left to restore depends on where the chunks fell)
        assert done.summary_number("restored") + done.summary_number("skipped") > 0

    expected = counts(clicks)
    assert_same(stored_table(state, job.store), expected, "worker's store")
    assert_exact(job, kafka, tmp_path, expected)
    print(
        f"[kafka] crash at {point}:{CRASHES[point]} with {done_before} of {BIG} committed: "
        f"{', '.join(timings)}"
    )


# -- 4. scale-out and fail-over ---------------------------------------------------------------


def start_worker(target: str, broker: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    """A `flowgraph run` without --until-idle: it runs until SIGTERM (or kill -9)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            worker_cmd(target, broker, state),
            cwd=ROOT,
            env=worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def owned(state: Path, store: str) -> set[int]:
    """Store partitions a worker has opened (it makes their directories on assignment)."""
    root = state / store
    return {int(p.name) for p in root.iterdir()} if root.exists() else set()


def wait_for(what: str, predicate: Any, timeout: float, logs: Sequence[Path] = ()) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
            raise AssertionError(f"not true after {timeout} s: {what}\n{tails}")
        time.sleep(0.3)
    return time.monotonic() - started


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_survivor_takes_over_the_partitions_of_a_killed_worker(
    kafka: Broker, tmp_path: Path
) -> None:
    job = Job.new("scale-out")
    broker = f"{kafka.url}?{FAST_GROUP}"
    inputs = [make_clicks(20_000, seed=100 + i) for i in range(10)]
    write_input(kafka, job.topic, inputs[0])
    states = [tmp_path / "w1", tmp_path / "w2"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [start_worker(job.target, broker, s, log) for s, log in zip(states, logs, strict=True)]
    survivor, victim = procs
    try:
        joined = wait_for(
            "both workers own partitions",
            lambda: all(owned(s, job.store) for s in states),
            30,
            logs,
        )
        wait_for(
            "the first input is counted",
            lambda: changelog_table(kafka, job.graph()) == counts(inputs[0]),
            30,
            logs,
        )
        victim_owned = owned(states[1], job.store)
        killed_at = 0.0
        for i, part in enumerate(inputs[1:], 1):
            write_input(kafka, job.topic, part, create=False)
            if i == 3:  # mid-stream: records keep coming before and after the kill
                victim.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
            time.sleep(0.2)
        assert victim.wait(10) == -signal.SIGKILL
        expected = counts(*inputs)
        wait_for(
            "the survivor counted everything",
            lambda: changelog_table(kafka, job.graph()) == expected,
            45,
            logs,
        )
        takeover = time.monotonic() - killed_at
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(20) == 0, logs[0].read_text()
    finally:
        stop_all(procs)

    out = logs[0].read_text()
    assert "Traceback" not in out
    # with two workers each holds a standby of the other's tasks (one standby replica by
    # default), so the survivor took over on its standbys' stores: only their tail restored
    assert "2 running, 2 standby" in out, out
    restored = re.search(r"^\s*restored:\s+(\d+)", out, re.MULTILINE)
    changelog_records = sum(high_watermarks(kafka, f"{job.store}-changelog").values())
    assert restored is None or int(restored.group(1)) < changelog_records, out
    assert owned(states[0], job.store) == {0, 1, 2, 3}
    assert stored_table(states[1], job.store), "the victim had counted nothing"
    assert_same(stored_table(states[0], job.store), expected, "survivor's store")
    assert_exact(job, kafka, tmp_path, expected)
    print(
        f"[kafka] scale-out: both joined in {joined:.1f} s, victim owned {sorted(victim_owned)}; "
        f"all {sum(map(len, inputs))} records counted {takeover:.1f} s after the kill"
    )


# -- 5, 6. configuration errors ---------------------------------------------------------------


def one_line_error(done: Done) -> str:
    assert done.returncode not in (0, None), done.why()
    assert "Traceback" not in done.stderr + done.stdout, done.why()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.why()
    return lines[0]


def test_unreachable_broker_fails_at_start_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    job = Job.new("unreachable")
    broker = f"kafka://127.0.0.1:{port}?connect_timeout=2"
    done = flowgraph_run(job.target, broker, tmp_path / "state", "--until-idle", timeout=30)
    print(f"[kafka] unreachable broker: exit {done.returncode} in {done.seconds:.1f} s")
    assert done.returncode not in (0, None), done.why()
    assert done.seconds < 10, done.why()
    assert "Traceback" not in done.stderr + done.stdout, done.why()
    last = done.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in last and "cannot reach Kafka" in last, done.why()
    assert one_line_error(done) == last  # the bug: aiokafka's own log lines come first


def test_topic_with_other_partitions_fails_in_one_sentence(kafka: Broker, tmp_path: Path) -> None:
    job = Job.new("partitions", partitions=4)
    run_async(create_topic(kafka, job.topic, 3))
    done = flowgraph_run(job.target, kafka.url, tmp_path / "state", "--until-idle", timeout=60)
    line = one_line_error(done)
    assert job.topic in line
    assert re.search(r"\b3 partitions\b", line) and re.search(r"\b4\b", line), line
    assert line.count(". ") == 0, line  # one sentence
    print(f"[kafka] partition mismatch: exit {done.returncode} in {done.seconds:.1f} s: {line}")


def test_a_changelog_that_cannot_be_restored_stops_the_run_in_one_line(
    kafka: Broker, tmp_path: Path
) -> None:
    """Restore runs in the consumer's assignment callback, whose errors aiokafka only logs:
    the worker must still stop on them, not run on without the state."""
    job = Job.new("bad-changelog")
    write_input(kafka, job.topic, make_clicks(2_000, seed=3))
    broker = f"{kafka.url}?{FAST_GROUP}"
    done = flowgraph_run(job.target, broker, tmp_path / "a", "--until-idle")
    assert done.returncode == 0, done.why()

    async def foreign_record() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:  # no fg.pos header: not written by flowgraph
            await producer.send_and_wait(
                f"{job.store}-changelog", key=b"x", value=b"1", partition=0
            )
        finally:
            await producer.stop()

    run_async(foreign_record())
    done = flowgraph_run(job.target, broker, tmp_path / "b", "--until-idle")  # a fresh store
    line = one_line_error(done)
    assert "fg.pos" in line and f"{job.store}-changelog" in line, line
    print(f"[kafka] foreign changelog record: exit {done.returncode}: {line}")


# -- 7. a crash between a repartition write and the source commit -----------------------------


@pytest.mark.slow
def test_kill_9_after_repartition_records_are_produced(kafka: Broker, tmp_path: Path) -> None:
    job = Job.new("repartition", factory="make_repartition_graph")
    clicks = make_clicks(BIG, seed=7)
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    by_partition = write_input(kafka, job.topic, clicks, key="user")  # not keyed by URL

    crashed = flowgraph_run(job.target, broker, state, "--until-idle", crash_at="after-produce:4")
    if crashed.returncode != -signal.SIGKILL:
        pytest.fail(f"no crash at after-produce:4: {crashed.why()}")
    # The window: records for the repartition topic were produced for source records whose
    # offsets were not committed, so the restart reads those source records again.
    source_committed = committed(kafka, job.graph_id, job.topic, job.partitions)
    repartition = f"{job.graph_id}-by_url-repartition"
    written = sum(high_watermarks(kafka, repartition).values())
    from_committed = sum(
        1
        for p, upto in source_committed.items()
        for c in by_partition.get(p, [])[:upto]
        if not c.bot
    )
    if not sum(source_committed.values()) < BIG or not written > from_committed:
        pytest.fail(
            f"crash window missed: {written} repartition records, {from_committed} from the "
            f"committed source offsets {source_committed}"
        )

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    expected = counts(clicks)
    print(
        f"[kafka] repartition crash: {written - from_committed} repartition records beyond the "
        f"source commit; restart {done.seconds:.1f} s"
    )
    assert_same(changelog_table(kafka, job.graph()), expected, "changelog")
    assert_same(stored_table(state, job.store), expected, "worker's store")


# -- 8. several writers of one topic, dead letters once, records that cannot be stored -------


def dead_letter_positions(kafka: Broker, graph_id: str) -> collections.Counter[tuple[str, str]]:
    """How often each source position (partition, offset) is in the dead-letter topic."""
    records = run_async(read_topic(kafka, f"{graph_id}-dlq"))
    return collections.Counter(
        (h["source.partition"].decode(), h["source.offset"].decode())
        for rs in records.values()
        for h in (dict(r.headers) for r in rs)
    )


def bot_positions(by_partition: dict[int, list[Click]]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(
        (str(p), str(offset))
        for p, part in by_partition.items()
        for offset, c in enumerate(part)
        if c.bot
    )


@pytest.mark.slow
def test_two_sources_writing_one_sink_are_exact_over_two_runs(
    kafka: Broker, tmp_path: Path
) -> None:
    """The second run's recovery must not take the second source's records for the first's."""
    job = Job.new("two-sources", factory="make_two_sources_graph")
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    first, second = make_clicks(5_000, seed=11), make_clicks(6_000, seed=12)
    write_input(kafka, job.topic, first)
    write_input(kafka, f"{job.topic}-b", [], create=True)
    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    write_input(kafka, f"{job.topic}-b", second, create=False)
    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.summary_number("events") == len(second)

    out = run_async(read_topic(kafka, f"{job.graph_id}-out"))
    written = collections.Counter(
        (v["url"], v["user"], v["ts"])
        for rs in out.values()
        for v in (json.loads(r.value) for r in rs)
    )
    expected = collections.Counter((c.url, c.user, c.ts) for c in [*first, *second])
    assert written == expected, (
        f"{sum(written.values())} sink records for {sum(expected.values())} inputs"
    )


@pytest.mark.slow
def test_kill_9_after_produce_writes_each_dead_letter_once(kafka: Broker, tmp_path: Path) -> None:
    job = Job.new("dlq-once", factory="make_dead_letter_graph")
    clicks = make_clicks(60_000, seed=13)
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    by_partition = write_input(kafka, job.topic, clicks)
    crashed = flowgraph_run(job.target, broker, state, "--until-idle", crash_at="after-produce:2")
    assert crashed.returncode == -signal.SIGKILL, crashed.why()
    before = sum(dead_letter_positions(kafka, job.graph_id).values())
    source_committed = committed(kafka, job.graph_id, job.topic, job.partitions)
    bots_committed = sum(
        1 for p, upto in source_committed.items() for c in by_partition.get(p, [])[:upto] if c.bot
    )
    assert before > bots_committed, "crash window missed: no dead letter beyond the commit"

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    letters = dead_letter_positions(kafka, job.graph_id)
    assert letters == bot_positions(by_partition), (
        f"{sum(letters.values())} dead letters for {sum(bot_positions(by_partition).values())} "
        "bot clicks"
    )
    assert_same(changelog_table(kafka, job.graph()), counts(clicks), "changelog")
    print(
        f"[kafka] dead letters once: {before} written before the crash, {bots_committed} committed"
    )


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["in-batch:6", "after-produce:2"])
def test_kill_9_with_async_calls_in_flight_keeps_counts_and_dead_letters_exact(
    kafka: Broker, tmp_path: Path, crash_at: str
) -> None:
    """An async step's calls are in flight when the worker is killed (right after a run, or
    once a commit has produced its records); the restart replays what was not committed and
    writes no dead letter twice and counts no click twice."""
    job = Job.new("async-kill", factory="make_async_dead_letter_graph")
    clicks = make_clicks(24_000, seed=15)  # a dozen runs of 2,000 records, a commit or two
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    by_partition = write_input(kafka, job.topic, clicks)
    crashed = flowgraph_run(job.target, broker, state, "--until-idle", crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.why()
    before = sum(dead_letter_positions(kafka, job.graph_id).values())
    done_before = sum(committed(kafka, job.graph_id, job.topic, job.partitions).values())
    assert done_before < len(clicks), "the kill came after the last commit: not mid-run"

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.summary_number("events") == len(clicks) - done_before
    letters = dead_letter_positions(kafka, job.graph_id)
    assert letters == bot_positions(by_partition), (
        f"{sum(letters.values())} dead letters for {sum(bot_positions(by_partition).values())} "
        "bot clicks"
    )
    assert_same(changelog_table(kafka, job.graph()), counts(clicks), "changelog")
    assert_same(stored_table(state, job.store), counts(clicks), "worker's store")
    print(
        f"[kafka] async kill at {crash_at}: {before} dead letters before, "
        f"{done_before} of {len(clicks)} committed"
    )


@pytest.mark.slow
def test_keyless_records_into_a_count_are_dead_lettered(kafka: Broker, tmp_path: Path) -> None:
    """A keyless record reaching a count by source key cannot be stored: it is a dead letter,
    the run goes on and ends cleanly, and a restart runs too."""
    job = Job.new("keyless")
    clicks = make_clicks(3_000, seed=14)
    by_partition = write_input(kafka, job.topic, clicks)
    keyless = [c for c in make_clicks(50, seed=15) if not c.bot]

    async def produce_keyless() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for c in keyless:
                await producer.send_and_wait(job.topic, key=None, value=c.encode(), partition=1)
        finally:
            await producer.stop()

    run_async(produce_keyless())
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.summary_number("dead letters") == len(keyless)
    letters = dead_letter_positions(kafka, job.graph_id)
    start = len(by_partition.get(1, []))
    assert letters == collections.Counter(("1", str(start + i)) for i in range(len(keyless)))
    records = run_async(read_topic(kafka, f"{job.graph_id}-dlq"))
    headers = dict(next(iter(r for rs in records.values() for r in rs)).headers)
    assert headers["error.step"] == TABLE.encode()
    assert b"cannot encode key" in headers["error.message"]
    assert_same(changelog_table(kafka, job.graph()), counts(clicks), "changelog")

    again = flowgraph_run(job.target, broker, state, "--until-idle")
    assert again.returncode == 0, again.why()
    assert again.summary_number("events") == 0
    assert dead_letter_positions(kafka, job.graph_id) == letters
