"""A `process` graph that test_kafka_process.py runs in `flowgraph run` subprocesses.

Like ``kafka_jobs.py``: the target names a factory with literal arguments, so each test has a
graph id and an input topic of its own on the shared broker, e.g.
``tests.integration.kafka_process_jobs:make_process_graph('p-1a2b', 'p-1a2b-clicks', 4)``.
"""

from __future__ import annotations

import json

import flowgraph as fg

STEP = "number_clicks"
"""The process step, so the table the tests read."""


class Click(fg.Record):
    """One page view, JSON on the input topic (as ``kafka_jobs.Click``)."""

    url: str
    user: str
    ts: float


def number_clicks(n: int, click: Click) -> tuple[int, list[str]]:
    """Numbers each URL's clicks 1, 2, 3...: a click applied twice would reuse or skip one."""
    return n + 1, [json.dumps([click.user, click.ts, n + 1])]


def make_process_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Clicks keyed by URL when produced, numbered per URL, written out.

    No repartition: every commit then holds the step's work, so a crash at the n-th commit
    falls where records were applied and their offsets not yet committed.
    """
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    numbered = clicks.process(number_clicks, 0, name=STEP, value_type=str)
    numbered.to(f"{graph_id}-out", key_type=str)
    return g
