"""fuse: stateless runs between boundaries become one task; stateful steps stand alone."""

from __future__ import annotations

import attrs

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
from planner.passes.fuse import fuse
from planner.passes.split_subtopologies import split_subtopologies
from planner.physical import FusedTask, PhysicalPlan

OPTS = PlanOptions()
UNFUSED = PlanOptions(fuse=False)


def inc(v: int) -> int:
    return v + 1


def odd(v: int) -> bool:
    return v % 2 == 1


def physical(*nodes: object) -> PhysicalPlan:
    return split_subtopologies(LogicalPlan(graph_id="g", nodes=nodes), OPTS)


def task(*ids: str, stateful: bool = False) -> FusedTask:
    return FusedTask(step_ids=ids, stateful=stateful)


def fused(plan: PhysicalPlan, options: PlanOptions = OPTS) -> PhysicalPlan:
    result = fuse(plan, options)
    assert fuse(result, options) is result
    return result


def tasks_of(plan: PhysicalPlan) -> list[tuple[FusedTask, ...]]:
    return [s.tasks for s in plan.subtopologies]


SRC = Source(id="in", topic="in", partitions=2)


def test_stateless_chain_is_one_task():
    plan = physical(
        SRC,
        Map(id="inc", inputs=("in",), fn=inc),
        Filter(id="odd", inputs=("inc",), fn=odd),
        Sink(id="out", inputs=("odd",), topic="out"),
    )
    result = fused(plan)
    (sub,) = plan.subtopologies
    assert result == attrs.evolve(
        plan, subtopologies=[attrs.evolve(sub, tasks=[task("in", "inc", "odd", "out")])]
    )


def test_stateful_step_is_a_task_of_its_own():
    plan = physical(
        SRC,
        Map(id="inc", inputs=("in",), fn=inc),
        Aggregate(id="count", inputs=("inc",), agg="count"),
        Changes(id="updates", inputs=("count",)),
        Map(id="inc2", inputs=("updates",), fn=inc),
        Sink(id="out", inputs=("inc2",), topic="out"),
    )
    assert tasks_of(fused(plan)) == [
        (
            task("in", "inc"),
            task("count", stateful=True),
            task("updates", "inc2", "out"),
        )
    ]


def test_branches_of_one_entry_fuse_into_one_task_in_order():
    plan = physical(
        SRC,
        Map(id="a", inputs=("in",), fn=inc),
        Filter(id="b", inputs=("in",), fn=odd),
        Sink(id="out-a", inputs=("a",), topic="oa"),
        Peek(id="look", inputs=("b",), fn=print),
    )
    assert tasks_of(fused(plan)) == [(task("in", "a", "b", "out-a", "look"),)]


def test_merge_of_two_sources_fuses_both_entries():
    plan = physical(
        Source(id="a", topic="a", partitions=2),
        Source(id="b", topic="b", partitions=2),
        Merge(id="both", inputs=("a", "b")),
        Aggregate(id="count", inputs=("both",), agg="count"),
    )
    assert tasks_of(fused(plan)) == [(task("a", "b", "both"), task("count", stateful=True))]


def test_two_aggregates_over_one_stream():
    plan = physical(
        SRC,
        Aggregate(id="c1", inputs=("in",), agg="count"),
        Aggregate(id="c2", inputs=("in",), agg="sum"),
    )
    assert tasks_of(fused(plan)) == [
        (task("in"), task("c1", stateful=True), task("c2", stateful=True)),
    ]


def test_each_subtopology_is_fused_on_its_own():
    plan = physical(
        SRC,
        KeyBy(id="kb", inputs=("in",), fn=inc),
        Repartition(id="kb-repartition", inputs=("kb",), topic="g-kb-repartition", partitions=2),
        Filter(id="odd", inputs=("kb-repartition",), fn=odd),
        Aggregate(id="count", inputs=("odd",), agg="count"),
    )
    assert tasks_of(fused(plan)) == [
        (task("in", "kb"),),
        (task("kb-repartition", "odd"), task("count", stateful=True)),
    ]


def test_fuse_off_gives_one_task_per_step():
    plan = physical(
        SRC,
        Map(id="inc", inputs=("in",), fn=inc),
        Aggregate(id="count", inputs=("inc",), agg="count"),
    )
    assert tasks_of(fused(plan, UNFUSED)) == [
        (task("in"), task("inc"), task("count", stateful=True)),
    ]


def test_switching_the_option_refuses_a_fused_plan():
    plan = physical(
        SRC, Map(id="inc", inputs=("in",), fn=inc), Sink(id="out", inputs=("inc",), topic="out")
    )
    on = fused(plan)
    off = fused(on, UNFUSED)
    assert off is not on
    assert tasks_of(off) == [(task("in"), task("inc"), task("out"))]
    assert fused(off) == on


def test_tasks_never_cross_a_repartition():
    plan = physical(
        SRC,
        KeyBy(id="kb", inputs=("in",), fn=inc),
        Repartition(id="kb-repartition", inputs=("kb",), topic="g-kb-repartition", partitions=2),
        Aggregate(id="count", inputs=("kb-repartition",), agg="count"),
        Merge(id="both", inputs=("kb-repartition", "in")),
        Sink(id="out", inputs=("both",), topic="out"),
    )
    (sub,) = plan.subtopologies
    assert sub.step_ids == ("in", "kb", "kb-repartition", "count", "both", "out")
    assert tasks_of(fused(plan)) == [
        (
            task("in", "kb"),
            task("kb-repartition", "both", "out"),
            task("count", stateful=True),
        )
    ]
