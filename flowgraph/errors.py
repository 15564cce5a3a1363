"""Errors a flowgraph user can meet, in one tree.

::

    FlowgraphError
    ├── GraphDefinitionError (ValueError)     the graph as written cannot work
    │   └── GraphValidationError               every problem validation found
    ├── PlanningError                          a valid graph the planner cannot place
    ├── PlannerInternalError (RuntimeError)    a bug in flowgraph; please report
    ├── ConfigurationError (ValueError)        bad broker/store URL, bad CLI target
    ├── SerializationError (ValueError)        bytes that do not decode into the declared type
    ├── RuntimeFailure                         a user step raised; wraps it with the step id
    ├── StorageError                           a state store failed while running (disk full)
    ├── GroupStalledError                      an until-idle run gave up: the group cannot finish
    ├── DeadLetterLimitError                   a run stopped: too many dead letters
    └── Interrupted                            a signal stopped a run before it could finish cleanly

The planner-side classes are defined in `planner.errors` (the pure layer) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.errors import (
    FlowgraphError,
    GraphDefinitionError,
    GraphValidationError,
    PlannerInternalError,
    PlanningError,
)

__all__ = [
    "ConfigurationError",
    "DeadLetterLimitError",
    "FlowgraphError",
    "GraphDefinitionError",
    "GraphValidationError",
    "GroupStalledError",
    "Interrupted",
    "PlannerInternalError",
    "PlanningError",
    "RuntimeFailure",
    "SerializationError",
    "StorageError",
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


class GroupStalledError(FlowgraphError):
    """An until-idle run gave up: records of the graph's inputs are left that the group did
    not process, and it made no progress for `stalled_for` seconds.

    `left` holds the records not yet committed per ``(topic, partition)``; `result` is the
    run's `RunResult` (what this worker did) when `fg.run` raises it, else None.
    """

    def __init__(self, group: str, left: Mapping[tuple[str, int], int], stalled_for: float) -> None:
        self.group = group
        self.left = dict(left)
        self.stalled_for = stalled_for
        self.result: Any = None
        by_topic: dict[str, list[tuple[int, int]]] = {}
        for (topic, partition), n in sorted(self.left.items()):
            by_topic.setdefault(topic, []).append((partition, n))
        parts = []
        for topic, found in by_topic.items():
            word = "partition" if len(found) == 1 else "partitions"
            numbers = ", ".join(str(p) for p, _ in found)
            parts.append(f"{sum(n for _, n in found):,} in {topic!r} {word} {numbers}")
        where = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        super().__init__(
            f"group {group!r} did not finish: {sum(self.left.values()):,} input records are "
            f"not processed ({where}) and no member committed any progress for "
            f"{stalled_for:.0f} s; another member holds these partitions or cannot process "
            "them; check the group's other workers, or give them more time with --stall-timeout"
        )


class DeadLetterLimitError(FlowgraphError):
    """A run stopped because its dead letters went over ``max_dead_letters``.

    Raised after everything processed is committed; `result` holds the run's `RunResult`.
    """

    def __init__(self, count: int, limit: int | float, first: Any) -> None:
        """`first` is the `DeadLetterSummary` of the first dead letter's kind, or None."""
        self.count = count
        self.limit = limit
        self.first = first
        self.result: Any = None
        super().__init__(self.sentence("max_dead_letters="))

    def sentence(self, option: str = "max_dead_letters=") -> str:
        """One sentence naming the limit as `option` spells it (``--max-dead-letters ``)."""
        limit = (
            f"{self.limit}"
            if isinstance(self.limit, int)
            else f"{self.limit:g} ({self.limit * 100:g}% of the source records)"
        )
        first = ""
        if self.first is not None:
            f = self.first
            first = (
                f'; the first: {f.step}: {f.error_type} "{f.message}" at {f.topic}[{f.partition}] '
                f"offset {f.offset}"
            )
        return f"stopped: {self.count} dead letters exceed {option}{limit}{first}"


class StorageError(FlowgraphError):
    """A state store on disk failed while running: the disk is full, or its directory was
    removed. `path` is where, `cause` what (e.g. "no space left on device"), in one sentence.

    Found while opening, the same problem is a `ConfigurationError` (the setup is wrong);
    found while running, it is this error, since the run stops with state not written.
    """

    def __init__(self, path: str, cause: str, *, what: str = "write state store") -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"cannot {what} at {path!r}: {cause}")


class Interrupted(FlowgraphError):
    """SIGINT/SIGTERM (or the `stop` event of `run_async`) ended a run that could not stop
    cleanly: it was still starting (connecting, joining the group), did not stop within a
    few seconds (`STOP_GRACE`: a batch or a restore went on), or got a second signal. The
    message says whether what was processed is committed."""
