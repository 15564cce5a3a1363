"""Stream-stream join graphs that test_kafka_stream_joins.py runs, in process and in
`flowgraph run` subprocesses (a target names `make_graph` with literal arguments, so every
test has a graph id and topics of its own on the shared broker).

The join's parameters are module constants: the test's oracle (tests/join_oracle.py) computes
the expected results from them.
"""

from __future__ import annotations

import time

import flowgraph as fg
from tests.join_oracle import pair

LEFT_PARTITIONS, RIGHT_PARTITIONS = 2, 3
WITHIN = 30.0
GRACE = 10.0**7
"""A grace longer than the input's whole span of event times: however the partitions of the
two topics interleave on the way to the join, no record is late and no window closes before
the end of the input, so the result is deterministic."""


def key_of(value: str) -> str:
    """A right record's join key: its value is ``key:name``."""
    return value.split(":")[0]


def make_graph(graph_id: str, left: str, right: str) -> fg.Graph:
    """`left` (keyed by the join key) outer-joined with `right` re-keyed by `key_of`, to
    ``<graph>-out``."""
    g = fg.Graph(graph_id)
    lefts = g.source(left, key_type=str, value_type=str, partitions=LEFT_PARTITIONS)
    rights = g.source(right, key_type=str, value_type=str, partitions=RIGHT_PARTITIONS)
    rekeyed = rights.key_by(key_of, name="by_key")
    lefts.join(rekeyed, pair, within=WITHIN, grace=GRACE, how="outer", name="paired").to(
        f"{graph_id}-out", value_type=str
    )
    return g


CLOSING_LEFT_PARTITIONS, CLOSING_RIGHT_PARTITIONS = 3, 4
CLOSING_WITHIN = 5.0
DISORDER = 20.0
"""The most any input record's timestamp lies below the largest before it (both topics)."""
CLOSING_GRACE = DISORDER + 10.0
"""Longer than the input's disorder, far shorter than its span: windows close all through the
run, yet no record is late, so the result does not depend on how the inputs interleave."""


def make_closing_graph(graph_id: str, left: str, right: str, delay: float = 0.0) -> fg.Graph:
    """`left` left-joined with `right` re-keyed by `key_of` (into the left's three
    partitions), within `CLOSING_WITHIN` and grace `CLOSING_GRACE`, to ``<graph>-out``.

    With `delay`, every record of either side first waits that many seconds (sync code, so
    the worker slows down): the input takes long enough that a second worker joins in.
    """
    g = fg.Graph(graph_id)
    lefts = g.source(left, key_type=str, value_type=str, partitions=CLOSING_LEFT_PARTITIONS)
    rights = g.source(right, key_type=str, value_type=str, partitions=CLOSING_RIGHT_PARTITIONS)
    if delay > 0:

        def pace(value: str) -> bool:
            time.sleep(delay)
            return True

        lefts = lefts.filter(pace, name="pace_left")
        rights = rights.filter(pace, name="pace_right")
    rekeyed = rights.key_by(key_of, name="by_key")
    lefts.join(
        rekeyed, pair, within=CLOSING_WITHIN, grace=CLOSING_GRACE, how="left", name="paired"
    ).to(f"{graph_id}-out", value_type=str)
    return g
