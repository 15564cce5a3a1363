"""assign_stores: give every stateful step a store and a changelog topic name.

Preconditions: a `PhysicalPlan` from `split_subtopologies`.
Postconditions: one `StoreSpec` per `Aggregate`, named ``<graph>-<step>``, with changelog
``<graph>-<step>-changelog`` and the partitions of its sub-topology; a global table's store
is marked `is_global` (every worker also follows all of its changelog). Returns the input when
the stores are already there.

Example: ``count(name="per_url")`` in graph ``clickstats`` gets store
``clickstats-per_url`` and changelog ``clickstats-per_url-changelog``.
"""

from __future__ import annotations

import attrs

from planner import naming
from planner.logical import STATEFUL, AgentTable, Aggregate, Node, StreamJoin
from planner.options import PlanOptions
from planner.physical import PhysicalPlan, StoreSpec

__all__ = ["assign_stores"]


def assign_stores(plan: PhysicalPlan, options: PlanOptions) -> PhysicalPlan:
    """Return `plan` with `stores` listing one store per stateful step."""
    stores: list[StoreSpec] = []
    for sub in plan.subtopologies:
        by_id = {s.id: s for s in sub.steps}
        for step in sub.steps:
            if isinstance(step, STATEFUL):
                windowed = (
                    isinstance(step, StreamJoin)
                    or (isinstance(step, Aggregate | AgentTable) and step.window is not None)
                    or (isinstance(step, Aggregate) and step.wake is not None)
                )
                # an agent's table declares its own types; an aggregation's come from its input
                typed = step if isinstance(step, AgentTable) else None
                name = naming.store_name(plan.graph_id, step.id)
                upstream = by_id[step.inputs[0]]
                stores.append(
                    StoreSpec(
                        name=name,
                        step=step.id,
                        changelog=naming.changelog_topic(name),
                        partitions=sub.partitions,
                        # a windowed store keys by (key, window) and keeps stream time (a
                        # stream join: buffers by key): its changelog needs the
                        # self-describing codec
                        key_type=None if windowed else (typed or upstream).key_type,
                        value_type=None if windowed else _state_type(step),
                        is_global=isinstance(step, Aggregate | AgentTable) and step.is_global,
                    )
                )
    result = tuple(stores)
    return plan if result == plan.stores else attrs.evolve(plan, stores=result)


def _state_type(step: Node) -> object:
    """The type of a table's values: a `process` step emits values of another type."""
    if isinstance(step, Aggregate) and step.agg == "process":
        return step.state_type
    return step.value_type
