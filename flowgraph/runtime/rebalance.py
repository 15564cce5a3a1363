"""What a rebalance does to a worker.

The group's rebalance listener calls `Rebalancer.revoked` when a rebalance begins (commit
everything processed, then suspend the tasks of the partitions taken away) and
`Rebalancer.assigned` when it ends (resume the tasks that came back, close or demote to
standby the others, note the new partitions: `TaskManager.assigned`). A commit that finds
the worker out of its group calls `Rebalancer.lost`. The partition assignor asks
`Rebalancer.member_state` what this worker holds, so tasks stay where their state is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from flowgraph.runtime.standby import TaskId
from flowgraph.runtime.tasks import TaskManager
from flowgraph.runtime.transport import TP, MembershipLost
from planner.assignment import MemberState

__all__ = ["Rebalancer"]

log = logging.getLogger("flowgraph")


class Rebalancer:
    """Applies the group's rebalances to a worker's tasks."""

    def __init__(
        self,
        manager: TaskManager,
        lock: asyncio.Lock,
        commit: Callable[[], Awaitable[None]],
        touched: dict[int, Any],
    ) -> None:
        """`lock` is the worker's processing lock (a rebalance never cuts a batch in two),
        `commit` its commit, `touched` the tasks taking part in the next one."""
        self.manager = manager
        self._lock = lock
        self._commit = commit
        self._touched = touched
        self.assignor: Any = None
        """The group's partition assignor, when it hands out standby tasks."""
        self.lost_memberships = 0
        """Times a commit found this worker out of its group (it then rejoined)."""
        self.rebalances = 0
        """Assignments received (the first one included)."""
        self.joined_file: Path | None = None
        """Where the state sent at the last join is kept, in the store directory (None:
        stores not on disk)."""

    async def assigned(self, assignment: frozenset[TP]) -> None:
        """The group gave this worker `assignment` (and the assignor, standby tasks)."""
        self.rebalances += 1
        standby: frozenset[TaskId] = frozenset()
        if self.assignor is not None:
            standby = frozenset(getattr(self.assignor, "standby", ()) or ())
        await self.manager.assigned(assignment, standby)

    async def revoked(self, revoked: frozenset[TP]) -> None:
        """A rebalance takes `revoked` away: commit everything, then suspend their tasks."""
        self.manager.revoking()
        async with self._lock:
            await self._commit()
            if self._touched:  # graves this commit wrote: one more deletes them for good
                await self._commit()
            self.manager.suspend(revoked)

    def lost(self, exc: MembershipLost) -> None:
        """A commit found this worker out of the group: drop every task (see
        `TaskManager.lose`), wait for the rejoin."""
        self.manager.lose(exc)
        self.lost_memberships += 1

    def member_state(self) -> MemberState:
        """What this worker holds, for the assignor: active tasks (running, suspended or
        restoring), standby tasks, and how far the local state of each goes.

        Until its first assignment, a worker whose store directory keeps the state it sent
        at its last join (`joined_file`) sends that again: its stores on disk still hold
        those tasks' state, so the group may give them back; and a static member
        (``group_instance_id``) restarted with the same join data keeps its assignment
        without a rebalance on every broker.
        """
        if self.rebalances == 0 and self.joined_file is not None:
            saved = _read_state(self.joined_file)
            if saved is not None:
                return saved
        states = self.manager.task_states()
        state = MemberState(
            active=frozenset(t for t, s in states.items() if s != "standby"),
            standby=frozenset(t for t, s in states.items() if s == "standby"),
            offsets=self.manager.local_offsets(),
        )
        if self.joined_file is not None:
            _write_state(self.joined_file, state)
        return state


def _read_state(path: Path) -> MemberState | None:
    """The state saved at a join, None when there is none (or it cannot be read)."""
    from flowgraph.runtime.kafka_assignor import decode_state

    try:
        data = path.read_bytes()
    except OSError:
        return None
    state = decode_state(data)
    return state if state.active or state.standby else None


def _write_state(path: Path, state: MemberState) -> None:
    """Save the state sent at a join, atomically (a crash leaves the old or the new one)."""
    from flowgraph.runtime.kafka_assignor import encode_state

    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encode_state(state))
        os.replace(tmp, path)
    except OSError as exc:  # not worth stopping for: the join goes out all the same
        log.warning("could not save this worker's join state in %s: %s", path, exc)
