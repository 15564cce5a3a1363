"""`--until-idle` on Kafka: a worker stops when its whole group is done, or says why not.

Two workers started together over a repartition must both wait until every partition of the
source and the repartition topic is committed by the group (a worker that stopped at the end
of its own partitions left thousands of counts in the repartition topic). A group that
cannot finish (a member that holds partitions is stopped) makes an until-idle worker give up
after `--stall-timeout`, exit 3 and say in one line what is left. Helpers and the graphs are
those of test_kafka.py and kafka_jobs.py.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_kafka import (
    FAST_GROUP,
    ROOT,
    Done,
    Job,
    assert_exact,
    committed,
    counts,
    high_watermarks,
    make_clicks,
    owned,
    start_worker,
    stop_all,
    wait_for,
    worker_cmd,
    worker_env,
    write_input,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

RECORDS = 20_000


def run_together(cmds: list[list[str]], timeout: float = 120.0) -> list[Done]:
    """Start every command at once and wait for all of them."""
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in cmds
    ]
    try:
        outs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    took = time.monotonic() - started
    return [
        Done(proc.returncode, out, err, took) for proc, (out, err) in zip(procs, outs, strict=True)
    ]


@pytest.mark.slow
def test_two_workers_started_together_stop_when_the_group_is_done(
    kafka: Broker, tmp_path: Path
) -> None:
    job = Job.new("idle-two", factory="make_repartition_graph")
    clicks = make_clicks(RECORDS, seed=11)
    write_input(kafka, job.topic, clicks, key="user")  # not keyed by URL: a repartition
    broker = f"{kafka.url}?{FAST_GROUP}"
    # small commits, so each worker writes repartition records for the other all along
    cmds = [
        worker_cmd(job.target, broker, tmp_path / f"w{i}", "--until-idle", "--commit-every",
                   "2000")
        for i in (1, 2)
    ]
    done = run_together(cmds)
    for d in done:
        assert d.returncode == 0, d.why()
        assert "Traceback" not in d.stderr, d.why()
    events = [d.summary_number("events") for d in done]
    assert sum(events) == RECORDS, events

    repartition = f"{job.graph_id}-by_url-repartition"
    for topic in (job.topic, repartition):
        ends = high_watermarks(kafka, topic)
        assert committed(kafka, job.graph_id, topic, job.partitions) == ends, topic
    assert_exact(job, kafka, tmp_path, counts(clicks))
    print(f"[kafka] two until-idle workers: events {events}, both done in {done[0].seconds:.1f} s")


@pytest.mark.slow
def test_a_group_that_cannot_finish_exits_3_saying_what_is_left(
    kafka: Broker, tmp_path: Path
) -> None:
    """A member that owns every partition is stopped (SIGSTOP, with a long session, so the
    group does not move its partitions soon); an until-idle worker gives up in one line."""
    job = Job.new("idle-stuck", factory="make_repartition_graph")
    first, later = make_clicks(2_000, seed=12), make_clicks(3_000, seed=13)
    by_partition = write_input(kafka, job.topic, first, key="user")
    holder_log = tmp_path / "holder.log"
    holder = start_worker(
        job.target, f"{kafka.url}?session_timeout_ms=60000&heartbeat_interval_ms=1000",
        tmp_path / "holder", holder_log,
    )
    try:
        wait_for("the holder owns every partition",
                 lambda: owned(tmp_path / "holder", job.store) == {0, 1, 2, 3}, 60, [holder_log])
        wait_for(
            "the holder committed the first input",
            lambda: sum(committed(kafka, job.graph_id, job.topic, 4).values()) == len(first),
            60, [holder_log],
        )
        holder.send_signal(signal.SIGSTOP)
        by_partition = write_input(kafka, job.topic, later, create=False, key="user")
        stall = 4.0
        started = time.monotonic()
        proc = subprocess.run(
            worker_cmd(job.target, f"{kafka.url}?{FAST_GROUP}", tmp_path / "w", "--until-idle",
                       "--stall-timeout", str(stall)),
            cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=90, check=False,
        )
        took = time.monotonic() - started
    finally:
        holder.send_signal(signal.SIGCONT)
        stop_all([holder])
    done = Done(proc.returncode, proc.stdout, proc.stderr, took)
    print(f"[kafka] stuck group: exit {done.returncode} after {took:.1f} s: {done.stderr.strip()}")
    assert done.returncode == 3, done.why()
    assert "Traceback" not in done.stderr + done.stdout, done.why()
    [line] = done.stderr.strip().splitlines()
    left = {p: len(recs) for p, recs in by_partition.items()}
    assert line.startswith(
        f"flowgraph: error: group {job.graph_id!r} did not finish: {len(later):,} input records "
        f"are not processed ({len(later):,} in {job.topic!r} partitions "
        f"{', '.join(str(p) for p in sorted(left))})"
    ), line
    assert re.search(r"no member committed any progress for [4-9] s", line), line
    assert took < stall + 20, done.why()  # start, join attempt, then the stall timeout
