"""Stream-stream join graphs that test_kafka_stream_joins.py runs, in process and in
`flowgraph run` subprocesses (a target names `make_graph` with literal arguments, so every
test has a graph id and topics of its own on the shared broker).

The join's parameters are module constants: the test's oracle (tests/join_oracle.py) computes
the expected results from them.
"""

from __future__ import annotations

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
