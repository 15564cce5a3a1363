"""``flowgraph run --until-idle --close-windows`` on Kafka: once the group is idle, the open
windows close and each is emitted once, final; a later run's records for them are late.

The graph is ``make_keyed_graph`` of ``kafka_window_jobs.py``: counts per zone behind a
repartition topic, the hopping one emitting on close, with a grace longer than the input, so
that without end of input no window closes.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from tests.integration import kafka_window_jobs as jobs
from tests.integration.test_kafka import FAST_GROUP, flowgraph_run, write_input
from tests.integration.test_kafka_windows import (
    PARTITIONS,
    Job,
    W,
    assert_once,
    emitted_windows,
    hop_windows,
    make_readings,
    show_window,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

N = 3_000


@pytest.mark.slow
def test_close_windows_on_kafka_emits_every_window_once(kafka: Broker, tmp_path: Path) -> None:
    job = Job.new("eoi", factory="make_keyed_graph")
    readings = make_readings(N, seed=11)
    expected: collections.Counter[W] = collections.Counter()
    for r in readings:
        for start, end in hop_windows(r.ts, jobs.KEYED_HOP_SIZE, jobs.KEYED_HOP_STEP):
            expected[(jobs.zone(r), start, end)] += 1
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    write_input(kafka, job.topic, readings, PARTITIONS, key="sensor")

    plain = flowgraph_run(job.target, broker, state, "--until-idle")
    assert plain.returncode == 0, plain.why()
    assert emitted_windows(kafka, job) == collections.Counter(), "off by default for topics"

    closing = flowgraph_run(job.target, broker, state, "--until-idle", "--close-windows")
    assert closing.returncode == 0, closing.why()
    assert_once(emitted_windows(kafka, job), expected.items(), "closed at the end", show_window)

    # a later record for a closed window is late; nothing is emitted again
    middle = readings[N // 2]
    write_input(kafka, job.topic, [middle], PARTITIONS, create=False, key="sensor")
    later = flowgraph_run(job.target, broker, state, "--until-idle", "--close-windows")
    assert later.returncode == 0, later.why()
    assert later.summary_number("late") >= 1, later.why()
    assert_once(emitted_windows(kafka, job), expected.items(), "after a late record", show_window)
