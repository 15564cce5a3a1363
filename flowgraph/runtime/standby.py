"""Standby tasks: replicas of tasks other workers run, kept warm for a fast takeover.

A standby task holds the stores of a stateful task whose active copy runs elsewhere and
follows their changelog partitions in the background (`ChangelogTailer`), writing each
chunk into the local store with its changelog position. When the group makes this worker
the task's owner, the task manager stops the following and builds the task on the same open
stores: the restore then reads only the changelog records the standby had not applied yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flowgraph.runtime.state.base import StateBackend, StorePartition
from flowgraph.runtime.tailer import ChangelogTailer
from flowgraph.runtime.transport import TP
from planner.assignment import TaskId
from planner.physical import PhysicalPlan

__all__ = ["Standbys", "TaskId"]

log = logging.getLogger("flowgraph")


class Standbys:
    """The standby tasks of one worker and the tailer that keeps their stores current."""

    def __init__(self, plan: PhysicalPlan, backend: StateBackend, tailer: ChangelogTailer) -> None:
        self.plan = plan
        self.backend = backend
        self.tailer = tailer
        self.tasks: dict[TaskId, dict[TP, StorePartition]] = {}
        """Per standby task, its changelog partitions and the stores they feed."""
        self._stores = {
            sub.id: [s for s in plan.stores if any(step.id == s.step for step in sub.steps)]
            for sub in plan.subtopologies
        }

    def stateful(self, task: TaskId) -> bool:
        """True when `task` has stores, so a standby of it holds something."""
        return bool(self._stores.get(task[0]))

    def assign(self, wanted: Iterable[TaskId]) -> None:
        """Hold exactly the standby tasks `wanted` (stateless ones are skipped): open and
        follow the new ones, stop following and close those no longer wanted."""
        wanted = {t for t in wanted if self.stateful(t)}
        for task in sorted(set(self.tasks) - wanted):
            for tp, store in self.tasks.pop(task).items():
                self.tailer.remove(tp)
                store.close()
        for task in sorted(wanted - set(self.tasks)):
            self.adopt(task)
        if self.tasks:
            self.tailer.start()

    def adopt(self, task: TaskId) -> None:
        """Make `task` a standby here, following its stores from their own positions (a
        backend hands out a store already open, such as the one of a task that ran here)."""
        sub, p = task
        followed: dict[TP, StorePartition] = {}
        for spec in self._stores.get(sub, []):
            store = self.backend.open(spec.name, p)
            followed[(spec.changelog, p)] = store
            self.tailer.add((spec.changelog, p), store)
        self.tasks[task] = followed
        self.tailer.start()

    def take(self, task: TaskId) -> bool:
        """This worker becomes `task`'s owner: stop following its changelogs (its stores
        stay open, so the task is built on them); False when it was no standby here."""
        followed = self.tasks.pop(task, None)
        if followed is None:
            return False
        for tp in followed:
            self.tailer.remove(tp)
        return True

    def offsets(self) -> dict[TaskId, int]:
        """Per standby task, the sum of its stores' changelog positions (how far it is)."""
        out: dict[TaskId, int] = {}
        for task, followed in self.tasks.items():
            out[task] = sum(p for tp in followed if (p := self.tailer.position(tp)) is not None)
        return out

    def lag(self) -> dict[TaskId, int | None]:
        """Per standby task, changelog records not applied yet (None: not known yet)."""
        lags = self.tailer.lag()
        out: dict[TaskId, int | None] = {}
        for task, followed in self.tasks.items():
            parts = [lags.get(tp) for tp in followed]
            out[task] = None if any(x is None for x in parts) else sum(x or 0 for x in parts)
        return out

    async def stop(self) -> None:
        """Stop following (the stores are closed with the backend)."""
        await self.tailer.stop()
        self.tasks.clear()
