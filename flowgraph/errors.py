"""Errors a flowgraph user can meet, in one tree.

::

    FlowgraphError
    ├── GraphDefinitionError (ValueError)     the graph as written cannot work
    │   └── GraphValidationError               every problem validation found
    ├── PlanningError                          a valid graph the planner cannot place
    ├── PlannerInternalError (RuntimeError)    a bug in flowgraph; please report
    ├── ConfigurationError (ValueError)        bad broker/store URL, bad CLI target
    ├── SerializationError (ValueError)        bytes that do not decode into the declared type
    └── RuntimeFailure                         a user step raised; wraps it with the step id

The planner-side classes are defined in `planner.errors` (the pure layer) and re-exported here.
"""

from __future__ import annotations

from planner.errors import (
    FlowgraphError,
    GraphDefinitionError,
    GraphValidationError,
    PlannerInternalError,
    PlanningError,
)

__all__ = [
    "ConfigurationError",
    "FlowgraphError",
    "GraphDefinitionError",
    "GraphValidationError",
    "PlannerInternalError",
    "PlanningError",
    "RuntimeFailure",
    "SerializationError",
]


class ConfigurationError(FlowgraphError, ValueError):
    """Configuration that cannot work (URL, CLI target, option); one sentence says why."""


class SerializationError(FlowgraphError, ValueError):
    """Bytes that do not decode into the declared key or value type.

    `topic`, `field` and `reason` are kept separately so dead-letter headers can carry them.
    """

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        field: str | None = None,
        part: str = "value",
        action: str = "decode",
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.field = field
        self.part = part
        self.action = action
        where = f" of topic {topic!r}" if topic else ""
        at = f" at field {field!r}" if field else ""
        super().__init__(f"cannot {action} {part}{where}{at}: {reason}")

    def with_topic(self, topic: str, part: str | None = None) -> SerializationError:
        """Return the same error, now naming the topic (codecs do not know it)."""
        err = SerializationError(
            self.reason, topic=topic, field=self.field, part=part or self.part, action=self.action
        )
        err.__cause__ = self.__cause__
        return err


class RuntimeFailure(FlowgraphError):
    """A user function raised while processing a record; `step` names it."""

    def __init__(self, step: str, exc: BaseException) -> None:
        self.step = step
        self.original = exc
        super().__init__(f"step {step!r} raised {type(exc).__name__}: {exc}")
