"""split_subtopologies: cut a partitioned logical plan at repartition topics."""

from __future__ import annotations

from planner.logical import (
    Aggregate,
    Changes,
    KeyBy,
    LogicalPlan,
    Map,
    Merge,
    Repartition,
    Sink,
    Source,
)
from planner.options import PlanOptions
from planner.passes.split_subtopologies import split_subtopologies
from planner.physical import PhysicalPlan, Subtopology

OPTS = PlanOptions()


def inc(v: int) -> int:
    return v + 1


def parity(v: int) -> int:
    return v % 2


def plan_of(*nodes: object) -> LogicalPlan:
    return LogicalPlan(graph_id="g", nodes=nodes)


def split(plan: LogicalPlan) -> PhysicalPlan:
    result = split_subtopologies(plan, OPTS)
    again = split_subtopologies(plan, OPTS)
    assert again == result  # deterministic: a value, built fresh each time
    assert again is not result
    return result


SRC = Source(id="in", topic="in", partitions=3)
INC = Map(id="inc", inputs=("in",), fn=inc)
OUT = Sink(id="out", inputs=("inc",), topic="out")


def test_stateless_chain_is_one_subtopology():
    plan = plan_of(SRC, INC, OUT)
    assert split(plan) == PhysicalPlan(
        graph_id="g",
        logical=plan,
        subtopologies=[
            Subtopology(id=0, steps=(SRC, INC, OUT), partitions=3, source_topics=("in",)),
        ],
    )


def test_repartition_cuts_the_plan():
    kb = KeyBy(id="parity", inputs=("in",), fn=parity)
    rep = Repartition(
        id="parity-repartition",
        inputs=("parity",),
        topic="g-parity-repartition",
        partitions=5,
        reason="key changed",
    )
    count = Aggregate(id="count", inputs=("parity-repartition",), agg="count")
    updates = Changes(id="updates", inputs=("count",))
    sink = Sink(id="out", inputs=("updates",), topic="out")
    plan = plan_of(SRC, kb, rep, count, updates, sink)
    result = split(plan)
    assert result == PhysicalPlan(
        graph_id="g",
        logical=plan,
        subtopologies=[
            Subtopology(
                id=0,
                steps=(SRC, kb),
                partitions=3,
                source_topics=("in",),
                outputs=(("parity", "g-parity-repartition"),),
            ),
            Subtopology(
                id=1,
                steps=(rep, count, updates, sink),
                partitions=5,
                source_topics=("g-parity-repartition",),
            ),
        ],
    )
    assert result.subtopologies[1].cuts == ("key changed",)


def test_independent_sources_are_separate_subtopologies_in_creation_order():
    a = Source(id="a", topic="a", partitions=1)
    b = Source(id="b", topic="b", partitions=2)
    sa = Sink(id="sa", inputs=("a",), topic="oa")
    sb = Sink(id="sb", inputs=("b",), topic="ob")
    plan = plan_of(b, a, sa, sb)
    assert split(plan).subtopologies == (
        Subtopology(id=0, steps=(b, sb), partitions=2, source_topics=("b",)),
        Subtopology(id=1, steps=(a, sa), partitions=1, source_topics=("a",)),
    )


def test_merge_joins_its_sources_into_one_subtopology():
    a = Source(id="a", topic="a", partitions=2)
    b = Source(id="b", topic="b", partitions=2)
    merged = Merge(id="both", inputs=("a", "b"))
    count = Aggregate(id="count", inputs=("both",), agg="count")
    plan = plan_of(a, b, merged, count)
    assert split(plan).subtopologies == (
        Subtopology(id=0, steps=(a, b, merged, count), partitions=2, source_topics=("a", "b")),
    )


def test_subtopology_width_is_its_widest_entry():
    """A source and a repartition topic that meet in one merge share a sub-topology."""
    a = Source(id="a", topic="a", partitions=2)
    kb = KeyBy(id="kb", inputs=("a",), fn=parity)
    rep = Repartition(id="kb-repartition", inputs=("kb",), topic="g-kb-repartition", partitions=6)
    b = Source(id="b", topic="b", partitions=3)
    merged = Merge(id="both", inputs=("kb-repartition", "b"))
    sink = Sink(id="out", inputs=("both",), topic="out")
    plan = plan_of(a, kb, rep, b, merged, sink)
    subs = split(plan).subtopologies
    assert [s.step_ids for s in subs] == [("a", "kb"), ("kb-repartition", "b", "both", "out")]
    assert subs[1].partitions == 6
    assert subs[1].source_topics == ("g-kb-repartition", "b")


def test_steps_are_in_topological_order_with_creation_order_breaking_ties():
    a = Source(id="a", topic="a")
    m2 = Map(id="m2", inputs=("a",), fn=inc)
    m1 = Map(id="m1", inputs=("a",), fn=inc)
    merged = Merge(id="both", inputs=("m1", "m2"))
    sink = Sink(id="out", inputs=("both",), topic="out")
    plan = plan_of(a, m2, m1, merged, sink)
    (sub,) = split(plan).subtopologies
    assert sub.step_ids == ("a", "m2", "m1", "both", "out")
