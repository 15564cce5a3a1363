"""Windowed graphs that test_kafka_windows.py runs in `flowgraph run` subprocesses.

Like ``kafka_jobs.py``: a target names a factory with literal arguments, so every test has a
graph id (consumer group, prefix of internal topics), an input topic and output topics of its
own on the shared broker, e.g.
``tests.integration.kafka_window_jobs:make_graph('w-1a2b', 'w-1a2b-readings', 4)``. By module
name, not path: the sliding aggregate stores `Reading` records (their class is named by the
module), and the test process restores them too.

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

SLIDE = "mix_30s"
"""Sliding aggregate per sensor of the small readings (`small`): an order-sensitive `mix` of
their amounts over [t - 30, t], so a window folded in another order differs."""
SLIDE_SIZE, SLIDE_GRACE, SLIDE_RETENTION = 30.0, 2.0, 20.0
SLIDE_MAX_AMOUNT = 10
"""Only readings with an amount up to this (about 10 %) are slid: a sliding window per record
that each out-of-order record joins costs far more than a tumbling one."""

SESSION = "visits"
"""Session count per sensor: readings less than `SESSION_GAP` apart are one visit."""
SESSION_GAP, SESSION_GRACE = 0.5, 3_600.0
"""Half a second: about every other reading of a sensor starts a new session, and the readings
that come early bridge sessions. The grace is longer than the input spans, so nothing is late
and the sessions are those of sorting each sensor's readings."""

KEYED_COUNT = "per_zone_10s"
"""`make_keyed_graph`: tumbling count per zone, after a `key_by` (so a repartition topic)."""
KEYED_CLOSE = "per_zone_30_10"
"""`make_keyed_graph`: hopping count per zone, emit on close, closed windows to a sink."""
KEYED_SIZE = 10.0
KEYED_HOP_SIZE, KEYED_HOP_STEP = 30.0, 10.0
KEYED_GRACE, KEYED_RETENTION = 3_600.0, 86_400.0
"""A grace longer than the input's whole span of event times: no interleaving of the source
partitions in the repartition topic can make a record late, so the result is deterministic.
Closed windows are held a day, so the final windows can be queried."""
ZONES = 12
ORDERED = "per_zone_5m"
"""`make_ordered_graph`: tumbling count per zone behind a `key_by`, placed by the source's
extracted event time, with a grace (30 s) far shorter than a batch of one partition spans."""
ORDERED_SIZE, ORDERED_GRACE, ORDERED_RETENTION = 300.0, 30.0, 10**9


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


def small(reading: Reading) -> bool:
    return reading.amount <= SLIDE_MAX_AMOUNT


def mix(acc: int, amount: int) -> int:
    """Order-sensitive: the amounts (1 to 99) as base-100 digits, mod a large prime."""
    return (acc * 100 + amount) % 1_000_000_007


def mix_reading(acc: int, reading: Reading) -> int:
    return mix(acc, reading.amount)


def zone(reading: Reading) -> str:
    """The key of `make_keyed_graph`: not the sensor the input is partitioned by."""
    return f"zone-{reading.amount % ZONES:03d}"


def closed_topic(graph_id: str) -> str:
    """Sink of the count's closed windows: (WindowKey, final count), once per window."""
    return f"{graph_id}-closed"


def late_topic(graph_id: str) -> str:
    """Sink of the readings too late for their count window, as (sensor, reading)."""
    return f"{graph_id}-late"


def make_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Readings keyed by sensor: a tumbling count (emit on close), a hopping sum, a sliding
    aggregate of the small readings and a session count, no repartition, so the stream time
    of each is that of each input partition (for the sliding one: of its small readings)."""
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
    readings.filter(small).window(
        fg.Sliding(SLIDE_SIZE, grace=SLIDE_GRACE, retention=SLIDE_RETENTION),
        timestamp=event_time,
    ).aggregate(0, mix_reading, name=SLIDE, value_type=int)
    readings.window(fg.Session(SESSION_GAP, grace=SESSION_GRACE), timestamp=event_time).count(
        name=SESSION
    )
    return g


def make_keyed_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Readings re-keyed by zone: windowed counts behind a repartition topic of `partitions`
    partitions (stream time per repartition partition), the hopping one emitting on close."""
    g = fg.Graph(graph_id)
    readings = g.source(topic, key_type=str, value_type=Reading, partitions=partitions)
    zones = readings.key_by(zone)
    zones.window(
        fg.Tumbling(KEYED_SIZE, grace=KEYED_GRACE, retention=KEYED_RETENTION),
        timestamp=event_time,
    ).count(name=KEYED_COUNT)
    closing = zones.window(
        fg.Hopping(
            KEYED_HOP_SIZE,
            KEYED_HOP_STEP,
            grace=KEYED_GRACE,
            retention=KEYED_RETENTION,
            emit="close",
        ),
        timestamp=event_time,
    ).count(name=KEYED_CLOSE)
    closing.changes().to(closed_topic(graph_id), partitions=1)
    return g


def make_ordered_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Readings re-keyed by zone, their record time taken from the value at the source: in
    timestamp order across the source partitions, no in-order reading is late downstream."""
    g = fg.Graph(graph_id)
    readings = g.source(
        topic, key_type=str, value_type=Reading, partitions=partitions, timestamp=event_time
    )
    readings.key_by(zone).window(
        fg.Tumbling(ORDERED_SIZE, grace=ORDERED_GRACE, retention=ORDERED_RETENTION)
    ).count(name=ORDERED)
    return g
