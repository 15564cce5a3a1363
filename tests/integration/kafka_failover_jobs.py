"""The graph the fail-over test (test_kafka_failover.py) and bench/bench_failover.py run in
`flowgraph run` workers.

Records keyed by a str key are counted per key in a table (so a changelog); the records the
producer marks as `Tick.timed` are also written to ``<graph id>-stamps``, stamped with the
partition they were read from, the worker's pid and the wall-clock time they were processed.
A stamp of a partition by a worker that did not own it before a kill is the first sign that
the partition was taken over: the measure of the takeover time needs no hook in the runtime.

Targets name `make_graph` with literal arguments, so every run gets its own graph id (the
consumer group and the prefix of internal topics) and its own topics on the shared broker,
e.g. ``tests/integration/kafka_failover_jobs.py:make_graph('fo-1a2b', 'fo-1a2b-in', 8)``.
"""

from __future__ import annotations

import os
import time

import flowgraph as fg

TABLE = "per_key"
"""Name of the count step, so of the table the test and the benchmark read."""


class Tick(fg.Record):
    """A record of the input topic: its sequence number in its partition; `timed` ones
    are stamped too."""

    n: int
    timed: bool = False


class Stamp(fg.Record):
    """When and where a timed record was processed."""

    partition: int
    n: int
    pid: int
    at: float


def stamps_topic(graph_id: str) -> str:
    """The sink of the stamps (the caller creates it: flowgraph does not create sinks)."""
    return f"{graph_id}-stamps"


def is_timed(tick: Tick) -> bool:
    return tick.timed


def stamp(tick: Tick, ctx: fg.RecordContext) -> Stamp:
    """`tick` as processed here and now."""
    return Stamp(partition=ctx.partition, n=tick.n, pid=os.getpid(), at=time.time())


def make_graph(graph_id: str, topic: str, partitions: int = 8, delay: float = 0.0) -> fg.Graph:
    """Ticks counted per key; timed ones stamped to ``<graph id>-stamps``. One
    sub-topology: a stamp of partition p is written by the task that owns p's table.

    With `delay`, every record first waits that many seconds (in sync code, so the whole
    worker slows down): workers stay behind a producer that writes faster, and an
    ``--until-idle`` worker cannot find the group done while the test still writes.
    """
    g = fg.Graph(graph_id)
    ticks = g.source(topic, key_type=str, value_type=Tick, partitions=partitions)
    if delay > 0:

        def pace(tick: Tick) -> bool:
            time.sleep(delay)
            return True

        ticks = ticks.filter(pace, name="pace")
    ticks.count(name=TABLE)
    stamps = ticks.filter(is_timed).map(stamp, context=True, name="stamp", value_type=Stamp)
    stamps.to(stamps_topic(graph_id), name="stamps")
    return g
