"""What a worker does now and, when it waits, for what: its phase and the sentence it logs."""

from __future__ import annotations

import logging
import time

from flowgraph.runtime.tasks import TaskManager
from flowgraph.runtime.transport import Transport
from planner.physical import PhysicalPlan

__all__ = ["PHASES", "Status"]

log = logging.getLogger("flowgraph")

PHASES = ("connecting", "joining", "restoring", "running", "waiting")
"""`Worker.phase` values; waiting: in the group, but owning no partition."""


class Status:
    """A worker's phase, read from its task manager, and the report of what it waits for."""

    def __init__(
        self,
        plan: PhysicalPlan,
        transport: Transport,
        manager: TaskManager,
        waiting_report: float,
    ) -> None:
        self.plan = plan
        self.transport = transport
        self.manager = manager
        self.waiting_report = waiting_report
        self.progress_at = self._phase_since = time.monotonic()
        """When the worker last processed a record, and when its phase last changed."""
        self._reported = 0.0
        """When `waiting_for` was last logged."""
        self._phase = "connecting"
        self._inputs = ", ".join(repr(t.name) for t in plan.topics if t.role == "source")

    @property
    def phase(self) -> str:
        """What the worker does now, one of `PHASES`: connecting (to the broker), joining
        (its group), restoring (state of partitions just assigned), running, or waiting
        (in the group, but owning no partition)."""
        manager = self.manager
        if manager.consumer is None:
            phase = "connecting"
        elif not manager.joined:
            phase = "joining"
        elif manager.pending:
            phase = "restoring"
        elif not manager.tasks:
            phase = "waiting"
        else:
            phase = "running"
        if phase != self._phase:
            self._phase, self._phase_since = phase, time.monotonic()
        return phase

    def waiting_for(self) -> str | None:
        """One short sentence saying what the worker waits for; None while records flow
        (and always for an app of timers only, which reads no topic)."""
        if not self.plan.subtopologies:
            return None
        phase = self.phase
        now = time.monotonic()
        if phase == "connecting":
            return f"connecting to {self.transport.url}"
        if phase == "joining":
            return f"joining group {self.plan.graph_id!r}"
        if phase == "restoring":
            r = self.manager.restoring
            return f"restoring {r.done} of {r.total} tasks ({r.records:,} records)"
        if phase == "waiting":
            return (
                f"no partitions assigned for {now - self._phase_since:.0f} s: the group has "
                f"more members than partitions of {self._inputs}?"
            )
        quiet = now - max(self.progress_at, self._phase_since)
        if quiet < self.waiting_report:
            return None
        return f"no records for {quiet:.0f} s on {self._inputs}"

    def report(self) -> None:
        """Log what the worker waits for, once it has waited `waiting_report` seconds (and
        again every `waiting_report` seconds while it still waits)."""
        now = time.monotonic()
        if now - self._reported < self.waiting_report:
            return
        sentence = self.waiting_for()
        if sentence is None or now - max(self.progress_at, self._phase_since) < (
            self.waiting_report
        ):
            return
        self._reported = now
        log.warning("flowgraph worker of group %r: %s", self.plan.graph_id, sentence)
