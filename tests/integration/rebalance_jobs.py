"""Graphs the rebalance tests (test_kafka_rebalance.py) run in `flowgraph run` subprocesses.

Loaded by file path, so it imports nothing from the tests package; its graph plans like
`kafka_jobs.make_repartition_graph` (same topics, store and changelog).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import flowgraph as fg

TABLE = "per_url"


class Click(fg.Record):
    """One page view, JSON on the input topic."""

    url: str
    user: str
    ts: float


def drop_bots(click: Click) -> bool:
    """Keep the clicks of people."""
    return not click.user.startswith("bot-")


def by_url(click: Click) -> str:
    """The key to count by (names the repartition topic)."""
    return click.url


def make_blocking_graph(
    graph_id: str, topic: str, partitions: int, trigger: str, seconds: float
) -> fg.Graph:
    """`kafka_jobs.make_repartition_graph` whose filter blocks the event loop for `seconds`
    (no heartbeat goes out meanwhile) at the first click it sees once the file `trigger`
    exists; only once in all the workers sharing `trigger`: ``<trigger>.done`` says one did.
    """
    done = Path(trigger + ".done")

    def keep(click: Click) -> bool:
        if os.path.exists(trigger) and not done.exists():
            done.write_text(str(os.getpid()))
            time.sleep(seconds)  # a step stuck in sync code longer than the session
        return drop_bots(click)

    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(keep).key_by(by_url).count(name=TABLE)
    return g
