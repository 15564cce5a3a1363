"""Rebalances on Kafka: workers joining a busy group, a member the group expelled, an extra one.

Real `flowgraph run` workers in subprocesses against the session's broker (see test_kafka.py,
whose helpers these tests share). A worker restores its partitions outside the rebalance
callback, so a member that joins while another restores does not get it expelled; a member
that the group expelled anyway (its event loop blocked past the session timeout) finds out at
its next commit, drops its partitions and rejoins; the tables stay exact throughout.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.integration import kafka_jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    FLOWGRAPH,
    ROOT,
    Job,
    assert_exact,
    changelog_table,
    counts,
    make_clicks,
    owned,
    start_worker,
    stop_all,
    wait_for,
    worker_env,
    write_input,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

REBALANCE_JOBS = Path(kafka_jobs.__file__).resolve()
LOST = "lost its membership"
SAID = ": no partitions assigned for"
"""What the logged report of a worker without partitions says after the group name."""


def running_since(log: Path, offset: int) -> bool:
    """The live view's plain log line, written after `offset`, says the worker runs (it
    names no join, restore or wait)."""
    with open(log, "rb") as f:
        f.seek(offset)
        lines = f.read().decode().splitlines()
    return len(lines) >= 2 and lines[-1].startswith("processed ") and "; " not in lines[-1]


@pytest.mark.slow
def test_a_worker_joining_a_busy_group_of_16_partitions_shares_the_work(
    kafka: Broker, tmp_path: Path
) -> None:
    """The second worker starts while the first processes: both end up processing, neither
    is expelled for restoring inside a rebalance, and the table is exact."""
    job = Job.new("stagger", "make_repartition_graph", partitions=16)
    broker = f"{kafka.url}?{FAST_GROUP}"
    inputs = [make_clicks(4_000, seed=300 + i) for i in range(8)]
    write_input(kafka, job.topic, inputs[0], 16, key="user")
    states = [tmp_path / "w1", tmp_path / "w2"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [start_worker(job.target, broker, states[0], logs[0])]
    try:
        wait_for(
            "the first worker counts",
            lambda: bool(changelog_table(kafka, job.graph())),
            60,
            logs,
        )
        procs.append(start_worker(job.target, broker, states[1], logs[1]))
        for part in inputs[1:]:
            write_input(kafka, job.topic, part, 16, create=False, key="user")
            time.sleep(0.5)
        wait_for(
            "both workers own partitions",
            lambda: all(owned(s, job.store) for s in states),
            60,
            logs,
        )
        expected = counts(*inputs)
        wait_for(
            "everything is counted",
            lambda: changelog_table(kafka, job.graph()) == expected,
            90,
            logs,
        )
        # One at a time, each from a settled group: tansu keeps a member that leaves in
        # the middle of a rebalance, and a later reader of the group never joins.
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0, logs[1].read_text()[-3000:]
        seen = logs[0].stat().st_size
        wait_for("the first worker runs alone", lambda: running_since(logs[0], seen), 30, logs)
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(30) == 0, logs[0].read_text()[-3000:]
    finally:
        stop_all(procs)
    for log in logs:
        out = log.read_text()
        assert "Traceback" not in out, out[-3000:]
        assert LOST not in out, out[-3000:]
        events = [int(line.split()[1]) for line in out.splitlines() if "events:" in line]
        assert events and events[-1] > 0, f"{log.name} processed nothing:\n{out[-3000:]}"
    assert_exact(job, kafka, tmp_path, expected)


@pytest.mark.slow
def test_an_expelled_worker_rejoins_and_the_table_stays_exact(
    kafka: Broker, tmp_path: Path
) -> None:
    """Of two workers, the one whose event loop blocks past the session timeout is expelled
    (the other takes its partitions); its next commit says so in one line, it drops its
    partitions, rejoins and goes on; the table is exact.

    The rejoined worker is given partitions whose input the other one processed while it was
    out, and it is the one left running at the end: the other stops first, so a rebalance
    gives the rejoined worker back the tasks it runs. They resume at the group's offsets;
    resumed where it stopped before it was expelled, a task would replay input the other
    worker processed and write its repartition records again (counted twice).
    """
    suffix = uuid.uuid4().hex[:8]
    job = Job(f"kt-expel-{suffix}", f"kt-expel-{suffix}-clicks", "make_repartition_graph", 4)
    trigger = tmp_path / "block"
    target = (
        f"{REBALANCE_JOBS}:make_blocking_graph({job.graph_id!r}, {job.topic!r}, 4, "
        f"{str(trigger)!r}, 6.0)"
    )
    inputs = [make_clicks(5_000, seed=400 + i) for i in range(4)]
    write_input(kafka, job.topic, inputs[0], key="user")
    broker = f"{kafka.url}?session_timeout_ms=1500&heartbeat_interval_ms=300"
    states = [tmp_path / "w1", tmp_path / "w2"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [start_worker(target, broker, s, log) for s, log in zip(states, logs, strict=True)]
    try:
        wait_for(
            "both workers own partitions and count",
            lambda: (
                all(owned(s, job.store) for s in states)
                and changelog_table(kafka, job.graph()) == counts(inputs[0])
            ),
            60,
            logs,
        )
        trigger.write_text("")
        # the other worker processes all of this while the blocked one is out of the group
        write_input(kafka, job.topic, inputs[1], create=False, key="user")
        write_input(kafka, job.topic, inputs[2], create=False, key="user")
        wait_for(
            "a worker lost its membership",
            lambda: any(LOST in log.read_text() for log in logs),
            60,
            logs,
        )
        pid = int(Path(f"{trigger}.done").read_text())
        out = next(i for i, proc in enumerate(procs) if proc.pid == pid)
        stays = 1 - out
        lost_at = logs[out].read_bytes().index(LOST.encode())
        wait_for(
            "the expelled worker runs again",
            lambda: running_since(logs[out], lost_at),
            60,
            logs,
        )
        expected = counts(*inputs[:3])
        wait_for(
            "everything is counted",
            lambda: changelog_table(kafka, job.graph()) == expected,
            60,
            logs,
        )
        # one at a time (see the test above): the expelled worker is left running
        procs[stays].send_signal(signal.SIGTERM)
        assert procs[stays].wait(30) == 0, logs[stays].read_text()[-3000:]
        seen = logs[out].stat().st_size
        wait_for("the expelled worker runs alone", lambda: running_since(logs[out], seen), 30, logs)
        write_input(kafka, job.topic, inputs[3], create=False, key="user")
        expected = counts(*inputs)
        wait_for(
            "everything is counted, or something twice",
            lambda: not counted_below(changelog_table(kafka, job.graph()), expected),
            60,
            logs,
        )
        procs[out].send_signal(signal.SIGTERM)
        assert procs[out].wait(30) == 0, logs[out].read_text()[-3000:]
    finally:
        stop_all(procs)
    outs = [log.read_text() for log in logs]
    assert sum(out.count(LOST) for out in outs) == 1, "\n".join(outs)
    assert not any("Traceback" in out for out in outs), "\n".join(outs)
    assert_exact(job, kafka, tmp_path, expected, logs)


def counted_below(table: dict[str, int], expected: dict[str, int]) -> bool:
    """Some key of `expected` is not counted as far yet (a key counted further, twice
    over, is not: waiting would not help)."""
    return any(table.get(key, 0) < n for key, n in expected.items())


def test_a_worker_without_partitions_says_so(kafka: Broker, tmp_path: Path) -> None:
    """Two workers of a group on a one-partition topic: one of them owns nothing and, after
    --report-after seconds, says that the group has more members than partitions."""
    job = Job.new("extra", partitions=1)
    write_input(kafka, job.topic, make_clicks(100, seed=500), 1)
    broker = f"{kafka.url}?{FAST_GROUP}"
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = []
    try:
        for i, log in enumerate(logs):
            cmd = [
                *FLOWGRAPH,
                "run",
                job.target,
                "--broker",
                broker,
                "--store",
                f"rocksdb://{tmp_path / f'w{i}'}",
                "--report-after",
                "1",
            ]
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, env=worker_env(), stdout=out, stderr=subprocess.STDOUT
                    )
                )
            if i == 0:
                wait_for(
                    "the first worker counts",
                    lambda: bool(changelog_table(kafka, job.graph())),
                    60,
                    logs,
                )
        wait_for(
            "a worker says it has no partition",
            lambda: any(SAID in log.read_text() for log in logs),
            60,
            logs,
        )
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        stop_all(procs)
    said = next(log.read_text() for log in logs if SAID in log.read_text())
    line = next(x for x in said.splitlines() if SAID in x)
    assert f"the group has more members than partitions of {job.topic!r}?" in line, line
    assert "Traceback" not in said
