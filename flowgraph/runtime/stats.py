"""`RunStats`: the live counters of a run, read by the live view and the end summary.

Also what makes failures visible: dead letters summed up by step and error type
(`DeadLetterSummary`), the limit that stops a run with too many (`DeadLetterLimit`), the
JSON-lines copy of each dead letter (`DeadLetterLog`), and the records out of every step
(`derive_step_counts`), worked out from a few raw counters so the hot path counts almost
nothing.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

import attrs

from flowgraph.errors import ConfigurationError, DeadLetterLimitError, FlowgraphError
from flowgraph.runtime.transport import TP
from planner import logical as lg

if TYPE_CHECKING:
    from flowgraph.runtime.task import Failure
    from planner.physical import PhysicalPlan

__all__ = [
    "FRACTION_MIN_EVENTS",
    "DeadLetterLimit",
    "DeadLetterLimitError",
    "DeadLetterLog",
    "DeadLetterSummary",
    "RunStats",
    "Tally",
    "derive_step_counts",
]

Tally = dict[tuple[str, str], int]
"""Raw per-step counters, summable across tasks: ``(kind, step id) -> n``; see `Task.tally`."""

EXAMPLE_CHARS = 60
"""An example key or value in the summary is cut to about this many characters."""
MESSAGE_CHARS = 160
"""An example error message in the summary is cut to about this many characters."""
FRACTION_MIN_EVENTS = 1_000
"""A fractional dead-letter limit is judged only once this many source records are processed,
so the first few records of a run do not decide it."""


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@attrs.define
class DeadLetterSummary:
    """The dead letters of one step with one error type: how many, and the first of them."""

    step: str
    error_type: str
    count: int
    message: str
    """The first one's error message (one line, cut short)."""
    example: str
    """The first one's key, or its value when it has no key, as a short repr."""
    topic: str
    partition: int
    offset: int

    @classmethod
    def first_of(cls, f: Failure) -> DeadLetterSummary:
        """A summary of one dead letter `f`, its first."""
        shown = f.key if f.key is not None else f.value
        return cls(
            step=f.step,
            error_type=type(f.error).__name__,
            count=1,
            message=_cut(str(f.error), MESSAGE_CHARS),
            example=_cut(repr(shown), EXAMPLE_CHARS),
            topic=f.topic,
            partition=f.partition,
            offset=f.offset if isinstance(f.offset, int) else -1,
        )

    def describe(self) -> str:
        """``step: ErrorType xN (e.g. "message" at offset O, key 'k')``."""
        where = f"{self.topic}[{self.partition}] offset {self.offset}"
        return (
            f'{self.step}: {self.error_type} x{self.count} (e.g. "{self.message}" at {where}, '
            f"record {self.example})"
        )


@attrs.frozen
class DeadLetterLimit:
    """At most `limit` dead letters: a count (int) or a fraction of source records (float
    in (0, 1)), judged once `FRACTION_MIN_EVENTS` source records are processed."""

    limit: int | float

    @classmethod
    def of(cls, value: int | float | None) -> DeadLetterLimit | None:
        """The limit `value` asks for (None: no limit), or a `ConfigurationError`."""
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(value)
        if isinstance(value, float) and 0.0 < value < 1.0:
            return cls(value)
        msg = (
            f"max_dead_letters must be a count (an int >= 0) or a fraction of source records "
            f"between 0 and 1 (0.01 is 1%), got {value!r}"
        )
        raise ConfigurationError(msg)

    def exceeded(self, dead_letters: int, events: int) -> bool:
        """True when `dead_letters` out of `events` source records are too many."""
        if isinstance(self.limit, int):
            return dead_letters > self.limit
        return events >= FRACTION_MIN_EVENTS and dead_letters > self.limit * events


class DeadLetterLog:
    """Appends each dead letter as one JSON line to `path`, opened at the first one.

    On ``memory://`` the dead-letter topic ends with the process; this file keeps them.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self._file: IO[str] | None = None

    def write(self, failures: Iterable[Failure]) -> None:
        """Append `failures`, one line each, and flush (called at a commit)."""
        lines = [json.dumps(_jsonable(f), ensure_ascii=False) + "\n" for f in failures]
        if not lines:
            return
        try:
            if self._file is None:
                directory = os.path.dirname(self.path)
                if directory:
                    os.makedirs(directory, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._file.writelines(lines)
            self._file.flush()
        except OSError as exc:
            msg = (
                f"cannot write dead letters to {self.path!r}: {exc.strerror or exc}; "
                "name a writable file with --dead-letters (dead_letters_file=)"
            )
            raise FlowgraphError(msg) from exc
        self.written += len(lines)

    def close(self) -> None:
        """Close the file, if one was opened; idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _data(obj: Any) -> tuple[str | None, str | None]:
    """A key or value for JSON: (text, how it is written) - base64 for bytes, else repr."""
    if obj is None:
        return None, None
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii"), "base64"
    return repr(obj), "repr"


def _jsonable(f: Failure) -> dict[str, Any]:
    key, key_format = _data(f.key)
    value, value_format = _data(f.value)
    headers = [
        [name, value_.decode("utf-8", errors="backslashreplace") if value_ is not None else None]
        for name, value_ in (f.headers or ())
        if name != "fg.o"  # the origin header is flowgraph's own bookkeeping
    ]
    return {
        "step": f.step,
        "error_type": type(f.error).__name__,
        "error": str(f.error),
        "topic": f.topic,
        "partition": f.partition,
        "offset": f.offset if isinstance(f.offset, int) else list(f.offset),
        "key": key,
        "key_format": key_format,
        "value": value,
        "value_format": value_format,
        "timestamp": f.timestamp,
        "headers": headers,
    }


@attrs.define
class RunStats:
    """Live counters of a run, read by the live view and the end summary."""

    started: float = attrs.field(factory=time.monotonic)
    events: int = 0
    """Records read from source topics and feeds."""
    dead_letters: int = 0
    skipped: int = 0
    """Records already applied before a restart, skipped by their key's stored offset."""
    late: int = 0
    """Records too late for one of their windows (a closed window), over windowed tables and
    stream-stream joins."""
    steps: dict[str, int] = attrs.field(factory=dict)
    lag: dict[TP, int] = attrs.field(factory=dict)
    restored: int = 0
    finished: float | None = None
    dead_letter_kinds: dict[tuple[str, str], DeadLetterSummary] = attrs.field(factory=dict)
    """Per (step, error type), in the order first met: how many, and the first one."""
    retired: Tally = attrs.field(factory=dict)
    """Raw step counters of tasks a rebalance took away, so step counts survive it."""
    on_dead_letters: Callable[[list[Failure]], None] | None = None
    """Called with each commit's new dead letters (the JSON-lines log of `fg.run`)."""

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Source events per second over the run."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def add_dead_letters(self, failures: list[Failure]) -> None:
        """Count `failures` (taken from a task at a commit) by step and error type."""
        if not failures:
            return
        self.dead_letters += len(failures)
        kinds = self.dead_letter_kinds
        for f in failures:
            kind = (f.step, type(f.error).__name__)
            seen = kinds.get(kind)
            if seen is None:
                kinds[kind] = DeadLetterSummary.first_of(f)
            else:
                seen.count += 1
        if self.on_dead_letters is not None:
            self.on_dead_letters(failures)

    def retire(self, tally: Mapping[tuple[str, str], int]) -> None:
        """Keep the raw step counters of a task that is dropped (revoked)."""
        for k, n in tally.items():
            self.retired[k] = self.retired.get(k, 0) + n

    def retired_sum(self, kind: str) -> int:
        """The `kind` counters (``skip``, ``late``) of the tasks a rebalance took away."""
        return sum(n for (k, _), n in self.retired.items() if k == kind)

    @property
    def first_dead_letter(self) -> DeadLetterSummary | None:
        """The kind of the first dead letter of the run, if any."""
        return next(iter(self.dead_letter_kinds.values()), None)


def derive_step_counts(plan: PhysicalPlan, tally: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Records out of every step, from the raw counters of `Task.tally`.

    Only entries count records (per run, not per record); a filter counts what it drops and
    a flat_map what it emits. Everything else follows: a one-to-one step passes on what came
    in less its dead letters; an aggregation, what it applied (less dead letters, records
    skipped as already applied and late records); a merge, the sum of its inputs; `late()`,
    the late records of its table.
    """
    out: dict[str, int] = {}
    for sub in plan.subtopologies:
        for s in sub.steps:
            sid = s.id
            dead = tally.get(("dead", sid), 0)
            if isinstance(s, lg.Source | lg.Repartition):
                n = tally.get(("in", sid), 0) - dead
            elif isinstance(s, lg.Late):
                n = sum(tally.get(("late", u), 0) for u in s.inputs)
            else:
                ins = s.inputs[:1] if isinstance(s, lg.Join) else s.inputs
                came = sum(out.get(u, 0) for u in ins)
                if isinstance(s, lg.FlatMap | lg.Join) or (
                    isinstance(s, lg.Aggregate) and s.agg == "process"
                ):
                    n = tally.get(("cell", sid), 0)
                elif isinstance(s, lg.Filter):
                    n = came - dead - tally.get(("cell", sid), 0)
                elif isinstance(s, lg.Aggregate):
                    skipped = tally.get(("skip", sid), 0) + tally.get(("late", sid), 0)
                    n = came - dead - skipped
                else:  # map, key_by, peek, sink: one out per one in; merge, changes: all
                    n = came - dead
            out[sid] = max(n, 0)
    return out
