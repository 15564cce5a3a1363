"""Checks that hold after every pass; a failure is a planner bug, not a user error."""

from __future__ import annotations

from planner.errors import PlannerInternalError
from planner.logical import STATEFUL, Join, LogicalPlan, StreamJoin
from planner.passes.insert_repartitions import partitioning_of
from planner.physical import PhysicalPlan

__all__ = ["validate_invariants"]


def validate_invariants(plan: LogicalPlan | PhysicalPlan) -> None:
    """Raise `PlannerInternalError` if `plan` breaks an invariant of its stage."""
    problems: list[str] = []
    if isinstance(plan, PhysicalPlan):
        logical = plan.logical
        parts = partitioning_of(logical)
        problems += [
            f"stateful step {n.id!r} reads a stream not partitioned by its key"
            for n in logical.nodes
            if isinstance(n, STATEFUL) and parts.get(n.inputs[0]) is None
        ]
        problems += [
            f"join {n.id!r} reads a stream not partitioned like its table"
            for n in logical.nodes
            if isinstance(n, Join)
            and not n.global_table
            and (parts.get(n.inputs[0]) is None or parts[n.inputs[0]] != parts[n.inputs[1]])
        ]
        problems += [
            f"stream join {n.id!r} reads two streams not co-partitioned"
            for n in logical.nodes
            if isinstance(n, StreamJoin)
            and (parts.get(n.inputs[0]) is None or parts[n.inputs[0]] != parts[n.inputs[1]])
        ]
        placed = [s.id for sub in plan.subtopologies for s in sub.steps]
        if sorted(placed) != sorted(n.id for n in logical.nodes):
            problems.append("sub-topologies do not hold every step exactly once")
        for sub in plan.subtopologies:
            fused = [i for t in sub.tasks for i in t.step_ids]
            if sub.tasks and sorted(fused) != sorted(sub.step_ids):
                problems.append(f"fused tasks of sub-topology {sub.id} do not cover its steps")
            position = {s: i for i, s in enumerate(sub.step_ids)}
            for task in sub.tasks:
                idx = [position[s] for s in task.step_ids]
                if idx != sorted(idx):
                    problems.append(f"a fused task of sub-topology {sub.id} is out of order")
    if problems:
        msg = "planner invariant broken: " + "; ".join(problems) + "; please report"
        raise PlannerInternalError(msg)
