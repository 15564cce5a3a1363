"""When an until-idle run may stop: the whole group, not one worker, has nothing left.

A worker that has read its own partitions to their ends is not done: another member may
still hold records of a source topic, and what it writes to a repartition topic lands in
partitions this worker reads (or will read after a rebalance). So a worker stops only when
every partition of every input topic of the graph (source and repartition topics; not
changelogs, checkpoints, the dead-letter topic or sinks) is consumed *and committed by the
group*: committed offset == end offset.

The reads race with the other members: between two reads one may write repartition records
and commit the source offsets they came from. `GroupIdle.check` therefore reads the end
offsets, then the committed offsets, then the end offsets again, and calls the group done
only when the committed offset equals both end readings, for every partition. Why that is
enough: end offsets and committed offsets only grow, and a committed offset never passes the
end. Equal ends before and after mean no input partition got a record in between; the
committed offsets, read in between, then cover every record those partitions hold. A member
writes the repartition records of a source record, and waits for their acks, *before* it
commits that record's offset (the worker's durability order), so every record derived from a
committed record was already in its partition when the ends were read the second time, and
is committed too. Nothing the group has read can make more input, so the group is done (until
someone outside it produces again).

When the group cannot finish (a member holds partitions and is stopped or stuck, a consumer
outside flowgraph sits in the group), waiting forever would hang a backfill. The worker gives
up when the group made no progress for `stall_timeout` seconds: no committed offset moved,
no partition's lag shrank, and this worker processed and restored nothing. The default is a
few session timeouts, long enough for the group to move a dead member's partitions to the
live ones (which is progress) before giving up.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from flowgraph.errors import GroupStalledError
from flowgraph.runtime.transport import TP, Consumer, Transport
from planner.physical import PhysicalPlan

__all__ = ["CHECK_INTERVAL", "GroupIdle", "default_stall_timeout"]

CHECK_INTERVAL = 0.5
"""Seconds at least between two group checks of an idle worker (each is three requests)."""
STALL_SESSIONS = 3
"""Session timeouts without progress before an until-idle worker gives up (by default)."""
MIN_STALL_TIMEOUT = 30.0
"""Seconds without progress before giving up, at least (by default): a rebalance, with a
restore of the moved partitions' tables, takes a while even with short sessions."""

Ends = Callable[[Sequence[TP]], Awaitable[Mapping[TP, int]]]
Committed = Callable[[Sequence[TP]], Awaitable[Mapping[TP, int | None]]]


def default_stall_timeout(session_timeout: float) -> float:
    """Seconds without progress before an until-idle run gives up, by default."""
    return max(MIN_STALL_TIMEOUT, STALL_SESSIONS * session_timeout)


class GroupIdle:
    """Tells whether the group has consumed and committed every input, and when to give up.

    `ends` and `committed` read the end offsets and the group's committed offsets (None: no
    commit yet) of the given partitions; `clock` is monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        group: str,
        partitions: Sequence[TP],
        ends: Ends,
        committed: Committed,
        *,
        stall_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.partitions = tuple(partitions)
        self._ends = ends
        self._committed = committed
        self.stall_timeout = stall_timeout
        self._clock = clock
        self._progress_at = clock()
        self._last: dict[TP, int] | None = None
        self.committed: dict[TP, int] = {}
        """The group's committed offsets at the last check (0 where none)."""
        self._lag: dict[TP, int] = {}
        self.left: dict[TP, int] = {}
        """Per partition with records the group has not committed: how many (last check)."""

    @classmethod
    def of_plan(
        cls,
        plan: PhysicalPlan,
        transport: Transport,
        consumer: Consumer,
        stall_timeout: float | None = None,
    ) -> GroupIdle:
        """The check over every partition of the plan's input topics (source, repartition),
        giving up after `stall_timeout` seconds (default: `default_stall_timeout`)."""
        inputs = dict.fromkeys(t for sub in plan.subtopologies for t in sub.source_topics)
        partitions = [(t, p) for t in inputs for p in range(plan.topic(t).partitions)]
        if stall_timeout is None:
            stall_timeout = default_stall_timeout(transport.session_timeout)
        return cls(
            plan.graph_id,
            partitions,
            transport.end_offsets,
            consumer.group_offsets,
            stall_timeout=stall_timeout,
        )

    def progressed(self) -> None:
        """This worker did something (processed or restored records): the group is not stuck."""
        self._progress_at = self._clock()

    async def check(self) -> bool:
        """True when every input partition is committed up to its end (see the module doc)."""
        before = await self._ends(self.partitions)
        found = await self._committed(self.partitions)
        after = await self._ends(self.partitions)
        committed = {tp: found.get(tp) or 0 for tp in self.partitions}
        lag = {tp: max(after[tp] - committed[tp], 0) for tp in self.partitions}
        moved = self._last is not None and committed != self._last
        shrank = any(lag[tp] < self._lag.get(tp, lag[tp]) for tp in self.partitions)
        if moved or shrank:
            self._progress_at = self._clock()
        self._last, self._lag = committed, lag
        self.committed = committed
        self.left = {tp: n for tp, n in lag.items() if n}
        return all(committed[tp] == before[tp] == after[tp] for tp in self.partitions)

    @property
    def stalled_for(self) -> float:
        """Seconds since the group last made progress."""
        return self._clock() - self._progress_at

    def stalled(self) -> bool:
        """True when the group made no progress for `stall_timeout` seconds."""
        return self.stalled_for >= self.stall_timeout

    def error(self) -> GroupStalledError:
        """The one-sentence error that says what the group leaves undone."""
        return GroupStalledError(self.group, self.left, self.stalled_for)
