"""A join's bounded wait for its table at task start (``join(..., catch_up=seconds)``).

The planner says which inputs of a task are held and for which table inputs
(`planner.physical.CatchUp`); the task manager reads the table partitions' end offsets once,
when it builds the task, and hands the schedule a `CatchUpWait`. The schedule keeps the held
partitions out of its timestamp order (they are still fetched) while the table's partitions
run, checks the wait once per `Schedule.runs` call, and puts them back when it ends. Graphs
without ``catch_up`` never make one, so nothing here runs per record, and nothing is left
once a wait ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flowgraph.runtime.transport import TP

__all__ = ["CatchUpWait"]

log = logging.getLogger("flowgraph")


class CatchUpWait:
    """One join's wait on one task: `held` partitions stay back until every one of
    `ends` (the table's input partitions, with their end offsets at task start) has been
    handed out up to its end, or until `seconds` have passed since `began`."""

    __slots__ = ("began", "ends", "held", "join", "partition", "reached", "seconds", "table")

    def __init__(
        self,
        *,
        join: str,
        table: str,
        partition: int,
        seconds: float,
        held: list[TP],
        ends: dict[TP, int],
        starts: dict[TP, int],
        began: float,
    ) -> None:
        self.join = join
        self.table = table
        self.partition = partition
        self.seconds = seconds
        self.held = held
        self.ends = ends
        self.reached: dict[TP, int] = {tp: starts.get(tp, 0) for tp in ends}
        """Per table partition, the next offset to hand out (from the run's last record)."""
        self.began = began

    def unread(self) -> int:
        """Records of the table's partitions not handed out yet, below their start ends."""
        return sum(max(0, end - self.reached[tp]) for tp, end in self.ends.items())

    def finished(self, now: float, caught_up: Callable[[TP], bool]) -> bool:
        """True (and one log line) once the table caught up or the bound has passed.

        `caught_up(tp)` is the schedule's word for a partition read to the end of its log
        with nothing left buffered: its end offset may lie past its last record (compacted
        away, or records dropped before the schedule), so offsets alone could wait in vain.
        """
        waited = now - self.began
        if all(self.reached[tp] >= end or caught_up(tp) for tp, end in self.ends.items()):
            log.info(
                "join %r on partition %d: table %r caught up after %.2f s; the stream goes on",
                self.join,
                self.partition,
                self.table,
                waited,
            )
            return True
        if waited >= self.seconds:
            log.warning(
                "join %r on partition %d: gave up waiting for table %r after %.2f s "
                "(catch_up=%g) with %d records of it still unread; the stream goes on",
                self.join,
                self.partition,
                self.table,
                waited,
                self.seconds,
                self.unread(),
            )
            return True
        return False
