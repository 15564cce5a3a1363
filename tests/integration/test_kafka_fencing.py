"""A worker paused past its session (SIGSTOP, then SIGCONT once its partitions moved) neither
corrupts a table nor writes a sink record twice.

Two real `flowgraph run` workers count clicks per URL and send every count change to a sink
(``kafka_jobs.make_changes_graph``). Worker A stops itself with SIGSTOP at a point of its
commit (``FLOWGRAPH_PAUSE_AT``, `flowgraph.runtime.faults.pause_at`): in a batch (records
processed, nothing written) or after its produce (records and changelog written for input
not committed). B takes A's partitions once A's session ends and processes past them; then A
goes on (SIGCONT). A must notice it was expelled before it writes, log that it lost its
partitions, and rejoin. In the end the changelog, a fresh restore, the workers' stores and
the sink (each URL's counts 1, 2, 3, ... once each, every origin header once) are exact.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_kafka import (
    ROOT,
    Job,
    assert_exact,
    assert_same,
    changelog_table,
    committed,
    counts,
    make_clicks,
    owned,
    read_topic,
    run_async,
    stop_all,
    stored_table,
    wait_for,
    worker_cmd,
    worker_env,
    write_input,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

PARTITIONS = 4
GROUP = "session_timeout_ms=3000&heartbeat_interval_ms=500"
SMALL_COMMITS = ("--commit-every", "500", "--max-batch", "200")
PAUSES = {"in-batch": 3, "after-produce": 1}
"""Where A stops itself (point: n), early in its share of the first input."""


def start(
    job: Job, broker: str, state: Path, log: Path, pause_at: str | None = None
) -> subprocess.Popen[bytes]:
    env = worker_env()
    if pause_at is not None:
        env["FLOWGRAPH_PAUSE_AT"] = pause_at
    with open(log, "wb") as out:
        return subprocess.Popen(
            worker_cmd(job.target, broker, state, *SMALL_COMMITS),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stopped(proc: subprocess.Popen[bytes]) -> bool:
    """True once `proc` is stopped by a signal (it stays a child; nothing is reaped)."""
    pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
    return pid == proc.pid and os.WIFSTOPPED(status)


def all_committed(kafka: Broker, job: Job, written: int) -> bool:
    return sum(committed(kafka, job.graph_id, job.topic, PARTITIONS).values()) == written


def assert_sink_once(kafka: Broker, job: Job, expected: dict[str, int]) -> None:
    """Each URL's counts 1..n once each, in order per partition; every origin header once."""
    got: dict[str, list[int]] = collections.defaultdict(list)
    origins: collections.Counter[bytes] = collections.Counter()
    for records in run_async(read_topic(kafka, f"{job.graph_id}-out")).values():
        for r in records:
            got[r.key.decode()].append(int(r.value))
            origins.update(value for name, value in r.headers if name == "fg.o")
    twice = [o for o, n in origins.items() if n > 1]
    assert not twice, f"{len(twice)} origin headers written more than once"
    wrong = {
        url: got.get(url, [])[-3:]
        for url, n in expected.items()
        if got.get(url) != list(range(1, n + 1))
    }
    assert not wrong, (
        f"{len(wrong)} URLs with counts missing or repeated, e.g. {dict(list(wrong.items())[:3])}"
    )
    assert set(got) == set(expected)


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(PAUSES))
def test_a_worker_paused_past_its_session_writes_nothing_stale(
    kafka: Broker, tmp_path: Path, point: str
) -> None:
    job = Job.new(f"pause-{point}", factory="make_changes_graph", partitions=PARTITIONS)
    broker = f"{kafka.url}?{GROUP}"
    inputs = [make_clicks(2_000, seed=70 + i) for i in range(4)]
    write_input(kafka, job.topic, [], PARTITIONS)
    states = [tmp_path / "a", tmp_path / "b"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = start(job, broker, states[0], logs[0], pause_at=f"{point}:{PAUSES[point]}")
    b = start(job, broker, states[1], logs[1])
    procs = [a, b]
    try:
        wait_for("both own partitions", lambda: all(owned(s, job.store) for s in states), 40, logs)
        written = 0
        write_input(kafka, job.topic, inputs[0], PARTITIONS, create=False)
        written += len(inputs[0])
        wait_for(f"A stops itself at {point}", lambda: stopped(a), 30, logs)
        write_input(kafka, job.topic, inputs[1], PARTITIONS, create=False)
        written += len(inputs[1])
        wait_for(
            "B took A's partitions and processed past them",
            lambda: all_committed(kafka, job, written),
            60,
            logs,
        )
        assert owned(states[1], job.store) == set(range(PARTITIONS))
        assert a.poll() is None  # still there, stopped
        # B's view, as it wrote it: everything so far, counted once
        assert_same(changelog_table(kafka, job.graph()), counts(*inputs[:2]), "B's changelog")

        a.send_signal(signal.SIGCONT)
        wait_for(
            "A notices it lost its partitions",
            lambda: "lost its membership" in logs[0].read_text(),
            30,
            logs,
        )
        write_input(kafka, job.topic, inputs[2], PARTITIONS, create=False)
        written += len(inputs[2])
        wait_for("both processed the rest", lambda: all_committed(kafka, job, written), 60, logs)

        # B leaves: A, back in the group, takes every partition and counts what comes next
        b.send_signal(signal.SIGTERM)
        assert b.wait(30) == 0, logs[1].read_text()[-3000:]
        write_input(kafka, job.topic, inputs[3], PARTITIONS, create=False)
        written += len(inputs[3])
        wait_for("A counted the last input", lambda: all_committed(kafka, job, written), 60, logs)
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0, logs[0].read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        stop_all(procs)

    a_log = logs[0].read_text()
    assert "Traceback" not in a_log and "Traceback" not in logs[1].read_text()
    assert "lost its membership" in a_log, a_log[-3000:]
    expected = counts(*inputs)
    assert_same(stored_table(states[0], job.store, PARTITIONS), expected, "A's stores")
    assert_exact(job, kafka, tmp_path, expected)  # the changelog, and a fresh restore from it
    assert_sink_once(kafka, job, expected)
    print(f"[kafka] pause at {point}: {written} records, every count and sink record once")
