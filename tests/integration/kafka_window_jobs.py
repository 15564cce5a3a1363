"""Windowed graphs that test_kafka_windows.py runs in `flowgraph run` subprocesses.

Like ``kafka_jobs.py``: a target names a factory with literal arguments, so every test has a
graph id (consumer group, prefix of internal topics), an input topic and output topics of its
own on the shared broker, e.g.
``tests/integration/kafka_window_jobs.py:make_graph('w-1a2b', 'w-1a2b-readings', 4)``.

The window parameters are module constants: the test's oracle computes the expected windows
from them (and from nothing else of flowgraph).
"""

from __future__ import annotations

import flowgraph as fg

COUNT = "per_10s"
"""Tumbling count per sensor: its store, and its closed windows on ``<graph>-closed``."""
COUNT_SIZE, COUNT_GRACE, COUNT_RETENTION = 10.0, 2.0, 60.0
"""[k*10, k*10+10), closes 2 s of stream time after its end, held 60 s longer."""

SUM = "amount_30_10"
"""Hopping sum of the amounts per sensor: 30 s windows every 10 s."""
SUM_SIZE, SUM_STEP, SUM_GRACE, SUM_RETENTION = 30.0, 10.0, 1.0, 20.0


class Reading(fg.Record):
    """One sensor reading, JSON on the input topic, keyed by `sensor` when produced."""

    sensor: str
    ts: float
    amount: int


def event_time(reading: Reading) -> float:
    """Windows are placed by the time in the record, not by the Kafka timestamp."""
    return reading.ts


def amount(reading: Reading) -> int:
    return reading.amount


def closed_topic(graph_id: str) -> str:
    """Sink of the count's closed windows: (WindowKey, final count), once per window."""
    return f"{graph_id}-closed"


def late_topic(graph_id: str) -> str:
    """Sink of the readings too late for their count window, as (sensor, reading)."""
    return f"{graph_id}-late"


def make_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Readings keyed by sensor: a tumbling count (emit on close) and a hopping sum, no
    repartition, so the stream time of both is that of each input partition."""
    g = fg.Graph(graph_id)
    readings = g.source(topic, key_type=str, value_type=Reading, partitions=partitions)
    counts = readings.window(
        fg.Tumbling(COUNT_SIZE, grace=COUNT_GRACE, retention=COUNT_RETENTION, emit="close"),
        timestamp=event_time,
    ).count(name=COUNT)
    # One partition each: a starting worker scans every partition its tasks write (for what
    # a crashed run wrote), and on tansu an empty one costs a fetch wait.
    counts.changes().to(closed_topic(graph_id), partitions=1)
    counts.late().to(late_topic(graph_id), partitions=1)
    readings.window(
        fg.Hopping(SUM_SIZE, SUM_STEP, grace=SUM_GRACE, retention=SUM_RETENTION),
        timestamp=event_time,
    ).sum(amount, name=SUM)
    return g
