"""Errors raised while building and planning a graph.

The hierarchy is shared by the whole project, so it lives in the pure layer::

    FlowgraphError
    ├── GraphDefinitionError (ValueError)    a graph the user built is wrong
    │   └── GraphValidationError              every problem validation found, at once
    ├── PlanningError                         a valid graph the planner cannot place
    └── PlannerInternalError (RuntimeError)   a bug in flowgraph; please report

`flowgraph.errors` adds the runtime side (serialization, configuration, user-step failures).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "FlowgraphError",
    "GraphDefinitionError",
    "GraphValidationError",
    "PlannerInternalError",
    "PlanningError",
]


class FlowgraphError(Exception):
    """Base of every error flowgraph raises on purpose."""


class GraphDefinitionError(FlowgraphError, ValueError):
    """The graph as written cannot work; the message says what to change."""


class GraphValidationError(GraphDefinitionError):
    """Validation found one or more problems; all of them are in `errors`."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        if len(self.errors) == 1:
            msg = self.errors[0]
        else:
            msg = f"{len(self.errors)} problems in the graph:\n" + "\n".join(
                f"  - {e}" for e in self.errors
            )
        super().__init__(msg)


class PlanningError(FlowgraphError):
    """A valid graph that the planner cannot map onto topics and stores."""


class PlannerInternalError(FlowgraphError, RuntimeError):
    """An invariant of the planner broke: a bug in flowgraph, please report it."""
