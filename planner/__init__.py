"""The flowgraph planner: a pure compiler from a logical graph to a physical plan.

It imports attrs and networkx only: no I/O, no asyncio, no Kafka or RocksDB clients. User
functions travel through it as opaque values and are never called here.
"""

from planner.errors import (
    FlowgraphError as FlowgraphError,
)
from planner.errors import (
    GraphDefinitionError as GraphDefinitionError,
)
from planner.errors import (
    GraphValidationError as GraphValidationError,
)
from planner.errors import (
    PlannerInternalError as PlannerInternalError,
)
from planner.errors import (
    PlanningError as PlanningError,
)
from planner.explain import to_text as to_text
from planner.logical import LogicalPlan as LogicalPlan
from planner.options import PlanOptions as PlanOptions
from planner.physical import PhysicalPlan as PhysicalPlan
from planner.physical import PhysicalPlan as Plan
from planner.pipeline import Stage as Stage
from planner.pipeline import plan as plan
from planner.pipeline import plan_until as plan_until

__all__ = [
    "FlowgraphError",
    "GraphDefinitionError",
    "GraphValidationError",
    "LogicalPlan",
    "PhysicalPlan",
    "Plan",
    "PlanOptions",
    "PlannerInternalError",
    "PlanningError",
    "Stage",
    "plan",
    "plan_until",
    "to_text",
]
