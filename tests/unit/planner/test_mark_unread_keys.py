"""mark_unread_keys: a topic source whose keys no step reads needs no key decoding."""

from __future__ import annotations

import attrs
import pytest

from planner.logical import (
    Aggregate,
    Changes,
    Filter,
    KeyBy,
    LogicalPlan,
    Map,
    Merge,
    Peek,
    Repartition,
    Sink,
    Source,
)
from planner.options import PlanOptions
from planner.passes.mark_unread_keys import mark_unread_keys

OPTS = PlanOptions()


def inc(v: int) -> int:
    return v + 1


def parity(v: int) -> int:
    return v % 2


SRC = Source(id="in", topic="in")


def marked(*nodes: object) -> LogicalPlan:
    result = mark_unread_keys(LogicalPlan(graph_id="g", nodes=nodes), OPTS)
    assert mark_unread_keys(result, OPTS) is result
    return result


def key_read(plan: LogicalPlan, source: str = "in") -> bool:
    return plan.node(source).key_read


def test_source_read_by_a_sink_or_aggregate_keeps_its_keys():
    plan = LogicalPlan(graph_id="g", nodes=(SRC, Sink(id="out", inputs=("in",), topic="out")))
    assert mark_unread_keys(plan, OPTS) is plan
    assert key_read(marked(SRC, Aggregate(id="c", inputs=("in",), agg="count")))


def test_key_by_through_key_passing_steps_drops_the_keys():
    plan = marked(
        SRC,
        Map(id="inc", inputs=("in",), fn=inc),
        Filter(id="odd", inputs=("inc",), fn=parity),
        Peek(id="look", inputs=("odd",), fn=print),
        KeyBy(id="kb", inputs=("look",), fn=parity),
        Repartition(id="kb-repartition", inputs=("kb",), topic="g-kb-repartition", partitions=1),
        Aggregate(id="c", inputs=("kb-repartition",), agg="count"),
        Changes(id="ch", inputs=("c",)),
        Sink(id="out", inputs=("ch",), topic="out"),
    )
    assert key_read(plan) is False
    assert plan.nodes[1:] == marked(SRC, *plan.nodes[1:]).nodes[1:]


def test_one_branch_reading_keys_is_enough():
    plan = marked(
        SRC,
        KeyBy(id="kb", inputs=("in",), fn=parity),
        Sink(id="rekeyed", inputs=("kb",), topic="a"),
        Map(id="inc", inputs=("in",), fn=inc),
        Sink(id="raw", inputs=("inc",), topic="b"),
    )
    assert key_read(plan) is True


@pytest.mark.parametrize("other_reads", [True, False])
def test_merge_passes_keys_on(other_reads):
    other = Source(id="b", topic="b")
    downstream = (
        Sink(id="out", inputs=("both",), topic="out")
        if other_reads
        else KeyBy(id="kb", inputs=("both",), fn=parity)
    )
    nodes = [SRC, other, Merge(id="both", inputs=("in", "b")), downstream]
    if not other_reads:
        nodes.append(Sink(id="out", inputs=("kb",), topic="out"))
    plan = marked(*nodes)
    assert key_read(plan) is other_reads
    assert key_read(plan, "b") is other_reads


def test_a_source_marked_unread_is_marked_read_again_when_it_is_read():
    stale = attrs.evolve(SRC, key_read=False)
    plan = marked(stale, Sink(id="out", inputs=("in",), topic="out"))
    assert key_read(plan) is True
