"""Graphs the rebalance tests (test_kafka_rebalance.py) run in `flowgraph run` subprocesses."""

from __future__ import annotations

import time
from pathlib import Path

import flowgraph as fg
from tests.integration.kafka_jobs import TABLE, Click, by_url, drop_bots

BLOCK_AFTER = 3_000
"""Clicks a blocking worker filters before it blocks."""


def make_blocking_graph(
    graph_id: str, topic: str, partitions: int, flag: str, seconds: float
) -> fg.Graph:
    """`kafka_jobs.make_repartition_graph` whose filter, once `BLOCK_AFTER` clicks have passed
    in this process, blocks the event loop for `seconds` (no heartbeat goes out meanwhile),
    the first time only: the file `flag` remembers that it did, across restarts and rejoins."""
    seen = 0

    def keep(click: Click) -> bool:
        nonlocal seen
        seen += 1
        if seen == BLOCK_AFTER and not Path(flag).exists():
            Path(flag).write_text(str(time.time()))
            time.sleep(seconds)  # a step stuck in sync code longer than the session
        return drop_bots(click)

    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(keep).key_by(by_url).count(name=TABLE)
    return g
