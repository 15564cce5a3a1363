"""The planner pipeline: ordered pass tuples and named stages.

Order matters: `validate` first (later passes assume a well-formed graph);
`insert_repartitions` before `split_subtopologies` (cuts happen at repartition topics) and
before `mark_unread_keys` (a repartition reads keys);
`fuse` after the split (it groups steps inside one sub-topology); `assign_stores` before
`assign_topics` (changelog topics come from stores).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from planner.invariants import validate_invariants
from planner.logical import LogicalPlan
from planner.options import PlanOptions
from planner.passes import (
    assign_stores,
    assign_topics,
    fuse,
    insert_repartitions,
    mark_unread_keys,
    split_subtopologies,
    validate,
)
from planner.physical import PhysicalPlan

__all__ = ["LOGICAL_PASSES", "PHYSICAL_PASSES", "GraphLike", "Stage", "plan", "plan_until"]

LogicalPass = Callable[[LogicalPlan, PlanOptions], LogicalPlan]
PhysicalPass = Callable[[PhysicalPlan, PlanOptions], PhysicalPlan]

LOGICAL_PASSES: tuple[LogicalPass, ...] = (validate, insert_repartitions, mark_unread_keys)
PHYSICAL_PASSES: tuple[PhysicalPass, ...] = (fuse, assign_stores, assign_topics)


class Stage(enum.Enum):
    """Named points of the pipeline, shared by `plan_until`, `explain` and the CLI."""

    LOGICAL = "logical"
    """The graph as the user built it."""
    PARTITIONED = "partitioned"
    """After validation and repartition insertion."""
    PHYSICAL = "physical"
    """Sub-topologies, fused tasks, topics and stores: what the runtime runs."""


class GraphLike(Protocol):
    """Anything that can hand the planner its logical plan (e.g. `flowgraph.Graph`)."""

    def to_logical(self) -> LogicalPlan:
        """Return the graph as a frozen logical plan."""
        ...


def _logical(graph: GraphLike | LogicalPlan) -> LogicalPlan:
    return graph if isinstance(graph, LogicalPlan) else graph.to_logical()


def plan_until(
    graph: GraphLike | LogicalPlan, stage: Stage, options: PlanOptions | None = None
) -> LogicalPlan | PhysicalPlan:
    """Run the pipeline up to `stage` and return the plan at that point."""
    opts = options or PlanOptions()
    logical = _logical(graph)
    if stage is Stage.LOGICAL:
        return logical
    for logical_pass in LOGICAL_PASSES:
        logical = logical_pass(logical, opts)
        if opts.check_invariants:
            validate_invariants(logical)
    if stage is Stage.PARTITIONED:
        return logical
    physical = split_subtopologies(logical, opts)
    for physical_pass in PHYSICAL_PASSES:
        physical = physical_pass(physical, opts)
        if opts.check_invariants:
            validate_invariants(physical)
    validate_invariants(physical)
    return physical


def plan(graph: GraphLike | LogicalPlan, options: PlanOptions | None = None) -> PhysicalPlan:
    """Compile a graph into the physical plan the runtime executes."""
    result = plan_until(graph, Stage.PHYSICAL, options)
    assert isinstance(result, PhysicalPlan)
    return result
