"""`RunStats`: the live counters of a run, read by the live view and the end summary."""

from __future__ import annotations

import time

import attrs

from flowgraph.runtime.transport import TP

__all__ = ["RunStats"]


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
    """Records too late for one of their windows (a closed window), over windowed tables."""
    steps: dict[str, int] = attrs.field(factory=dict)
    lag: dict[TP, int] = attrs.field(factory=dict)
    restored: int = 0
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Source events per second over the run."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0
