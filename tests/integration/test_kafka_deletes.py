"""kill -9 at every crash point of a job whose table deletes keys: the table stays exact.

The table counts clicks per URL and deletes the key at every 7th (`kafka_jobs.count_to_seven`),
so whether a replayed record deletes depends on the count it is applied to: a replay that
applied a record twice, or started a deleted key over from 0 when it should have skipped,
leaves a different table. Helpers and crash points are those of test_kafka.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration import kafka_jobs
from tests.integration.test_kafka import (
    BIG,
    CRASHES,
    FAST_GROUP,
    Job,
    assert_exact,
    assert_same,
    committed,
    counts,
    crash_run,
    flowgraph_run,
    make_clicks,
    stored_table,
    write_input,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration


def expected_table(clicks: list) -> dict[str, int]:
    """What is left: each URL's count past its last multiple of 7; keys at 0 are deleted."""
    left = {url: n % kafka_jobs.DELETE_AT for url, n in counts(clicks).items()}
    return {url: n for url, n in left.items() if n}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(CRASHES))
def test_kill_9_at_a_crash_point_keeps_a_deleting_table_exact(
    kafka: Broker, tmp_path: Path, point: str
) -> None:
    job = Job.new(f"del-{point}", "make_delete_graph")
    clicks = make_clicks(BIG, seed=5)
    expected = expected_table(clicks)
    assert len(expected) < len(counts(clicks)), "no key ends deleted: the test proves little"
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    started = time.monotonic()
    write_input(kafka, job.topic, clicks)
    timings = [f"produce {time.monotonic() - started:.1f} s"]

    crash_run(job.target, broker, state, f"{point}:{CRASHES[point]}", BIG, timings)
    done_before = sum(committed(kafka, job.graph_id, job.topic, 4).values())
    assert done_before < BIG, "the crash came after the last commit: not mid-run"

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    assert done.summary_number("events") == BIG - done_before
    if point in ("after-produce", "after-store"):
        assert done.summary_number("restored") + done.summary_number("skipped") > 0
    timings.append(f"restart {done.seconds:.1f} s")

    assert_same(stored_table(state, job.store), expected, "worker's store")
    assert_exact(job, kafka, tmp_path, expected)
    print(f"[kafka] deletes, crash at {point} with {done_before} of {BIG} committed: {timings}")
