"""Faults met by the real ``flowgraph run``, in subprocesses: signals in every state of a worker
(connecting, waiting for partitions, restoring, running, stuck in a batch, its broker gone)
and state stores that cannot be written. Each must end in seconds, with one line on stderr and
the documented exit code. Last, closing the Kafka transport when one client's close fails."""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.test_cli import FLOWGRAPH, line_queue
from tests.kafka_broker import Broker, BrokerUnavailable, start_broker

pytestmark = pytest.mark.integration

STOPPED_WITHIN = 8.0
"""Seconds a worker may take from a signal to its exit (a few, plus a loaded machine)."""
FAST_GROUP = "session_timeout_ms=2000&heartbeat_interval_ms=300"

JOB = """\
import asyncio
import itertools

import flowgraph as fg


def counts(graph_id, topic, partitions=1):
    g = fg.Graph(graph_id)
    g.source(topic, key_type=str, value_type=str, partitions=partitions).count(name="total")
    return g


ticks = fg.Graph("ticks")
ticks.source_from(itertools.count(), name="ticks").count(name="total")



async def slow(n):
    await asyncio.sleep(60)
    return n


stuck = fg.Graph("stuck")  # its first batch takes a minute
stuck.source_from(itertools.count(), name="ticks").map(slow).count(name="total")


def spread(n):
    return n % 200_000


many = fg.Graph("many")  # 200,000 keys: every commit writes megabytes of state
many.source_from(range(50_000_000), name="numbers").key_by(spread).count(name="total")
"""


class Running:
    """A `flowgraph run` subprocess whose stdout lines are read as they come."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [*FLOWGRAPH, "run", *args],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.lines = line_queue(self.proc.stdout)
        self.seen: list[str] = []
        self._err: str | None = None
        self._ended = False

    def wait_for_line(self, start: str, timeout: float = 60) -> None:
        """Wait for a stdout line starting with `start`."""
        deadline = time.monotonic() + timeout
        while not any(line.startswith(start) for line in self.seen):
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {start!r} in {timeout} s: {self.out()}") from None
            assert line is not None, f"exited before {start!r}: {self.out()}{self.err()}"
            self.seen.append(line)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> tuple[int, float]:
        """Send `sig`; the exit code and the seconds it took to exit."""
        sent = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"still running 60 s after {sig.name}") from None
        return code, time.monotonic() - sent

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def out(self) -> str:
        """Its stdout so far (all of it once it has exited)."""
        while not self._ended:
            try:
                line = self.lines.get(timeout=2 if self.proc.poll() is not None else 0.01)
            except queue.Empty:
                break
            if line is None:
                self._ended = True
            else:
                self.seen.append(line)
        return "".join(self.seen)

    def err(self) -> str:
        """Its stderr, once it has exited."""
        assert self.proc.stderr is not None
        if self._err is None and self.proc.poll() is not None:
            self._err = self.proc.stderr.read()
        return self._err or ""

    def close(self) -> None:
        """Kill it if still running, then close its pipes once the reader reached their end."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    return tmp_path


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Workers a test starts; killed at its end if still running."""
    started: list[Running] = []
    yield started
    for worker in started:
        worker.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_topic(kafka: Broker, partitions: int, records: int = 0) -> tuple[str, str]:
    """A fresh graph id and input topic (with `records` records spread over its partitions)."""
    suffix = uuid.uuid4().hex[:8]
    graph_id, topic = f"faults-{suffix}", f"faults-{suffix}-in"

    async def body() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
        if not records:
            return
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            sent = [
                await producer.send(
                    topic, key=f"k{i}".encode(), value=b"v", partition=i % partitions
                )
                for i in range(records)
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(body())
    return graph_id, topic


# -- Goal: always stoppable ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_worker_connecting_to_an_unreachable_broker(
    job: Path, running: list[Running], sig: signal.Signals
) -> None:
    """It would retry for 15 s; a signal ends that at once, exit 130 and one line."""
    worker = Running(
        ["job.py:ticks", "--broker", f"kafka://127.0.0.1:{closed_port()}", "--store", "memory://"],
        job,
    )
    running.append(worker)
    worker.wait_for_line("processed ")  # the live view runs: handlers are installed
    code, took = worker.stop(sig)
    err = worker.err()
    assert code == 130, err
    assert took < STOPPED_WITHIN
    assert err.startswith("flowgraph: interrupted: stopped before the worker started"), err
    assert len(err.splitlines()) == 1, err
    print(f"[faults] {sig.name} while connecting: exited in {took:.2f} s")


@pytest.mark.slow
def test_a_signal_stops_a_worker_waiting_for_partitions_and_one_running(
    kafka: Broker, job: Path, running: list[Running], tmp_path: Path
) -> None:
    """On a 1-partition topic one of two workers of a group never gets a partition; both
    stop cleanly (exit 0) within seconds, the waiting one and the running one."""
    graph_id, topic = new_topic(kafka, partitions=1, records=1_000)
    target = f"job.py:counts('{graph_id}', '{topic}')"
    broker = f"{kafka.url}?{FAST_GROUP}"
    first = Running([target, "--broker", broker, "--store", f"rocksdb://{tmp_path / 'a'}"], job)
    running.append(first)
    first.wait_for_line("processed 1000 events")  # it owns the partition and read it all
    second = Running([target, "--broker", broker, "--store", f"rocksdb://{tmp_path / 'b'}"], job)
    running.append(second)
    second.wait_for_line("running graph")
    time.sleep(4)  # in the group and rebalanced: one of them owns the partition, not both
    # the assignor may move the partition to the newcomer; the other one then waits
    moved = (tmp_path / "b" / f"{graph_id}-total" / "0").exists()
    waiting, holder = (first, second) if moved else (second, first)
    code, took = waiting.stop(signal.SIGTERM)
    assert code == 0, waiting.err()
    assert took < STOPPED_WITHIN
    code, held = holder.stop(signal.SIGINT)
    assert code == 0, holder.err()
    assert held < STOPPED_WITHIN
    assert "events:       1000" in first.out()
    print(f"[faults] stopped while waiting for partitions in {took:.2f} s, running in {held:.2f} s")


@pytest.mark.slow
def test_a_signal_stops_a_worker_restoring_a_changelog(
    kafka: Broker, job: Path, running: list[Running], tmp_path: Path
) -> None:
    """Restoring 12 changelog partitions takes 12 x 1 s here (FLOWGRAPH_SLOW_AT makes each
    restored chunk slow); the worker restores in its own loop and looks at the stop request
    between partitions, so a signal in the middle stops it cleanly (exit 0) within seconds."""
    graph_id, topic = new_topic(kafka, partitions=12, records=600)
    target = f"job.py:counts('{graph_id}', '{topic}', 12)"
    broker = f"{kafka.url}?{FAST_GROUP}"
    first = subprocess.run(
        [*FLOWGRAPH, "run", target, "--broker", broker, "--store", "memory://", "--until-idle"],
        cwd=job,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.returncode == 0, first.stderr  # the changelog now holds 600 counts
    state = tmp_path / "state"
    worker = Running(
        [target, "--broker", broker, "--store", f"rocksdb://{state}"],
        job,
        env={"FLOWGRAPH_SLOW_AT": "in-restore:1"},
    )
    running.append(worker)
    began = time.monotonic()
    deadline = began + 60
    while not (state / f"{graph_id}-total" / "0").exists():  # restoring its first partition
        assert worker.proc.poll() is None and time.monotonic() < deadline, worker.out()
        time.sleep(0.1)
    time.sleep(1)
    code, took = worker.stop(signal.SIGINT)
    err = worker.err()
    assert code == 0, err
    assert took < STOPPED_WITHIN
    assert "Traceback" not in err, err
    assert time.monotonic() - began < 12, "the restore ran to its end before the signal"
    print(f"[faults] stopped while restoring in {took:.2f} s")


@pytest.mark.slow
def test_a_batch_that_does_not_end_is_cut_after_the_grace_period(
    job: Path, running: list[Running]
) -> None:
    """The loop cannot see the stop request inside a minute-long batch: after STOP_GRACE
    seconds the run is cancelled, commits nothing of that batch, and exits with 130."""
    worker = Running(["job.py:stuck", "--store", "rocksdb://state"], job)
    running.append(worker)
    worker.wait_for_line("processed ")
    code, took = worker.stop(signal.SIGTERM)
    err = worker.err()
    assert code == 130, err
    assert 2.5 < took < STOPPED_WITHIN  # the grace period, then at once
    assert "interrupted: stopped in the middle of a batch or a commit" in err, err
    assert len(err.splitlines()) == 1, err
    print(f"[faults] a stuck batch was cut {took:.2f} s after the signal")


def test_a_second_signal_stops_at_once(job: Path, running: list[Running]) -> None:
    worker = Running(["job.py:stuck", "--store", "rocksdb://state"], job)
    running.append(worker)
    worker.wait_for_line("processed ")
    worker.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    code, took = worker.stop(signal.SIGINT)
    err = worker.err()
    assert code == 130, err
    assert took < 2.0, took  # not the grace period
    assert err.startswith("flowgraph: interrupted: stopped at once by a second signal"), err
    assert len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_a_worker_whose_broker_went_away_still_stops(
    kafka: Broker, job: Path, running: list[Running], tmp_path: Path
) -> None:
    """A broker of its own, killed while the worker runs: its commit, its leaving the group
    and its clients' closing are each given up after a few seconds, and it says so."""
    del kafka  # only so that no broker means a skip (or, in CI, a failure) like the others
    try:
        broker = start_broker(log_dir=tmp_path)
    except BrokerUnavailable as exc:
        pytest.skip(f"cannot start a broker of its own: {exc}")
    try:
        worker = Running(
            ["job.py:ticks", "--broker", f"{broker.url}?{FAST_GROUP}", "--store", "memory://"],
            job,
        )
        running.append(worker)
        worker.wait_for_line("running graph")
        worker.wait_for_line("processed ")
        assert broker.process is not None
        broker.process.kill()
        broker.process.wait()
        time.sleep(1)
        code, took = worker.stop(signal.SIGTERM)
    finally:
        broker.stop()
    err = worker.err()
    assert code == 130, err
    assert took < 15, took  # grace 3 s, commit 3 s, leaving and closing a few more
    assert err.startswith("flowgraph: interrupted: stopped "), err
    assert len(err.splitlines()) == 1, err
    print(f"[faults] stopped {took:.2f} s after SIGTERM with its broker gone: {err.strip()}")


# -- Goal: storage faults are one sentence ----------------------------------------------------


def one_error_line(err: str, *parts: str) -> None:
    """`err` is one ``flowgraph: error:`` line holding each of `parts`, and no traceback."""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("flowgraph: error: "), err
    for part in parts:
        assert part in err, err


def run_to_end(
    job: Path, *args: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOWGRAPH, "run", *args],
        cwd=job,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec_fn,  # only setrlimit, prctl and signal: safe before exec
    )


def without_root_override() -> None:
    """Make permission bits bind even for root (as in a container): drop the capabilities
    that bypass them from the bounding set, so the command run after exec lacks them."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            os._exit(99)  # cannot: the test skips on this exit code


def file_size_limit(limit: int) -> Callable[[], None]:
    """A full disk without root: writes past `limit` bytes of one file fail with EFBIG."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, do not kill

    return apply


def test_an_unwritable_store_directory_is_a_usage_error(job: Path) -> None:
    state = job / "state"
    state.mkdir()
    state.chmod(0o555)
    done = run_to_end(
        job, "job.py:ticks", "--store", f"rocksdb://{state}", preexec_fn=without_root_override
    )
    if done.returncode == 99:
        pytest.skip("cannot drop root's permission override here")
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, f"state directory {str(state)!r}", "permission denied")


def test_a_file_where_the_store_directory_goes_is_a_usage_error(job: Path) -> None:
    (job / "state").write_text("")
    done = run_to_end(job, "job.py:ticks", "--store", "rocksdb://state")
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, "'state'", "is a file, not a directory")
    (job / "nested").mkdir()
    (job / "nested" / "ticks-total").write_text("")  # where the store's directory goes
    done = run_to_end(job, "job.py:ticks", "--store", "rocksdb://nested")
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, "'nested/ticks-total/0'", "not a directory")


def test_a_full_disk_at_start_is_a_usage_error(job: Path) -> None:
    """RLIMIT_FSIZE of 0: no byte can be written, as on a full disk; the probe finds it.
    (EFBIG stands in for ENOSPC: both are a write the OS refuses for want of room.)"""
    done = run_to_end(
        job, "job.py:ticks", "--store", "rocksdb://state", preexec_fn=file_size_limit(0)
    )
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, "state directory 'state'", "file too large")
    # 1,000 bytes: the probe passes, but RocksDB cannot write its first files
    done = run_to_end(
        job, "job.py:ticks", "--store", "rocksdb://state", preexec_fn=file_size_limit(1_000)
    )
    assert done.returncode == 2, done.stderr
    one_error_line(
        done.stderr, "store 'ticks-total' partition 0 at 'state/ticks-total/0'", "file too large"
    )


@pytest.mark.slow
def test_a_disk_that_fills_up_while_running_fails_in_one_line(job: Path) -> None:
    """RLIMIT_FSIZE of 2 MB: the store's write-ahead log outgrows it within a few commits
    (EFBIG, as a full disk gives ENOSPC); the run stops with exit 1, naming the store."""
    done = run_to_end(
        job, "job.py:many", "--store", "rocksdb://state", preexec_fn=file_size_limit(2_000_000)
    )
    assert done.returncode == 1, done.stderr
    one_error_line(
        done.stderr, "store 'many-total' partition", "at 'state/many-total/", "file too large"
    )


@pytest.mark.slow
def test_a_store_directory_removed_while_running_fails_in_one_line(
    job: Path, running: list[Running]
) -> None:
    """RocksDB would go on writing into its deleted files and lose everything; the next
    commit sees the directory is gone and the run stops with exit 1."""
    worker = Running(["job.py:many", "--store", "rocksdb://state"], job)
    running.append(worker)
    worker.wait_for_line("processed ")
    assert (job / "state" / "many-total").is_dir()
    shutil.rmtree(job / "state")
    removed = time.monotonic()
    code = worker.wait(timeout=60)
    took = time.monotonic() - removed
    assert code == 1, worker.err()
    one_error_line(worker.err(), "at 'state/many-total/", "the directory was removed")
    assert took < STOPPED_WITHIN


def test_closing_the_kafka_transport_closes_every_client_when_one_fails(kafka: Broker) -> None:
    """The reader's close fails (after really closing): the producer, the other reader and
    the admin client are closed all the same, and that first failure is raised."""
    from flowgraph.runtime.kafka import KafkaTransport

    async def body() -> None:
        transport = KafkaTransport(kafka.bootstrap)
        await transport.start()
        clients = [transport._producer, transport._reader, transport._admin]
        reader = transport._reader
        assert reader is not None
        close_reader = reader.stop

        async def failing_stop() -> None:
            await close_reader()
            msg = "the reader's connection broke"
            raise OSError(msg)

        reader.stop = failing_stop  # type: ignore[method-assign]
        with pytest.raises(OSError, match="the reader's connection broke"):
            await transport.stop()
        assert all(client is not None and client._closed for client in clients)

    asyncio.run(body())
