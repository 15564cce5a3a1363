"""Which fetched record runs next: per-partition buffers, merged by record timestamp.

A worker fetches a batch per input partition, but runs the records in timestamp order across
the partitions of a sub-topology, as Kafka Streams' `PartitionGroup` does within a task. The
order matters because the tasks of one sub-topology write to the same repartition topics:
running partition 0's whole batch, then partition 1's, would interleave their records in
the repartition topic in blocks, and stream time downstream would run ahead of the records
still to come (which a window then counts as late).

The rule: take the partition whose next record has the smallest timestamp, and run its
records up to the next-smallest head timestamp plus `max_skew` (ties always run together),
so the tasks still see runs of records, not single ones. A partition whose buffer is empty
but which may have records still to fetch holds its sub-topology back (its next timestamp is
unknown) for at most `max_idle` seconds, like Kafka Streams' ``max.task.idle.ms``; then the
others go on without it.

What is merged is a *group* of partitions, chosen by the worker: all the partitions of a
sub-topology whose order reaches a windowed aggregation through repartition topics
(`time_ordered`), else the inputs of one task (a one-input task then runs whole batches).
Sub-topologies are merged apart where one reads only what a single other one wrote: their
relative order changes nothing then, and a reader of a repartition topic never waits on its
writer. A sub-topology whose order matters and whose inputs come from more than one place (a
re-keyed stream merged with a source, two re-keyed streams merged) is merged with the writers
of its inputs (`merged_groups`): their records meet in it, so their sources must run in
timestamp order together. A run that writes to a partition of its own group that was read to
its end (a repartition topic read in the group, or one its own task reads: a merge of a
re-keyed stream with the sources of its own sub-topology) stops the group until those records
are fetched, since they may be older than the other heads; records handed straight to their
reader (in process) need no wait.

Only records handed out by `runs` are processed; the rest stay here, uncommitted, and are
fetched again by whoever owns the partition after a restart or a rebalance.

A join with ``catch_up=`` holds its stream's partitions out of their group when its task
starts (`hold`, a `CatchUpWait`): they are fetched but not handed out until the table's
partitions have been handed out up to their end offsets of task start, or the wait's bound has
passed. `runs` checks the waits once per call, and only while there are some.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from flowgraph.runtime.catch_up import CatchUpWait
from flowgraph.runtime.transport import TP, Message
from planner import logical as lg
from planner.physical import PhysicalPlan

__all__ = [
    "DEFAULT_MAX_IDLE",
    "DEFAULT_MAX_SKEW",
    "Schedule",
    "fed_back",
    "lateness_slack",
    "merged_groups",
    "time_ordered",
]

DEFAULT_MAX_SKEW = 0.0
"""Seconds of timestamp a run may go past the next partition's head: 0 is strict order (ties
run together), so in-order input is never late, whatever the window grace."""
DEFAULT_MAX_IDLE = 0.5
"""Seconds a sub-topology waits for a partition that is empty but not read to its end."""


class _Buffer:
    """Fetched records of one partition not yet handed out: ``records[at:]``."""

    __slots__ = ("at", "group", "handle", "last", "records", "tp", "waits")

    def __init__(self, tp: TP, group: Hashable, handle: Any) -> None:
        self.tp = tp
        self.group = group
        self.handle = handle
        self.records: list[Message] = []
        self.at = 0
        self.last = -math.inf
        """Timestamp of the last record handed out: while the buffer is empty, the
        partition's next record is taken to be no older (its records come in order)."""
        self.waits: list[CatchUpWait] | None = None
        """The catch-up waits for this (table) partition, told how far its runs reach."""


class Schedule:
    """Buffers of fetched records per input partition, handed out in timestamp order."""

    def __init__(
        self,
        *,
        capacity: int,
        max_skew: float = DEFAULT_MAX_SKEW,
        max_idle: float = DEFAULT_MAX_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        """A partition is fetched for while it holds fewer records than this."""
        self.max_skew = max_skew
        self.max_idle = max_idle
        self.clock = clock
        self._buffers: dict[TP, _Buffer] = {}
        self._groups: dict[Hashable, list[TP]] = {}
        self._blocked_since: dict[Hashable, float] = {}
        self._waits: list[CatchUpWait] = []
        """Catch-up waits under way (`hold`); empty for graphs without ``catch_up``."""
        self._parked: dict[TP, int] = {}
        """Held partitions, out of their group's list, with how many waits hold each."""
        self.waiting = False
        """The last `runs` stopped a group to wait for records not fetched yet: the worker
        flushes its own buffered writes then (`own`)."""
        self.own: Callable[[TP], float | None] | None = None
        """For a worker whose writes wait for a flush (Kafka) and whose groups read some
        of them back (`fed_back`): the oldest timestamp of its writes to a partition not
        fetched yet. A group runs no record newer than that plus `slack`, so those writes,
        once fetched, are not late; None (memory://, other graphs): no bound, no cost."""
        self.slack = 0.0
        """See `own` and `lateness_slack`."""

    def assign(self, tp: TP, group: Hashable, handle: Any = None) -> None:
        """Buffer `tp`, merged with the other partitions of `group` (its sub-topology).

        `runs` hands out each run of `tp` with `handle` (default: `tp` itself), so that the
        caller needs no lookup per run.
        """
        if tp not in self._buffers:
            self._buffers[tp] = _Buffer(tp, group, tp if handle is None else handle)
            self._groups.setdefault(group, []).append(tp)

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget `tps` and what they buffer (revoked: the new owner fetches it again)."""
        for tp in tps:
            buf = self._buffers.pop(tp, None)
            if buf is not None:
                members = self._groups.get(buf.group, [])
                if self._parked.pop(tp, None) is None:
                    members.remove(tp)
                if not members:
                    self._groups.pop(buf.group, None)
                    self._blocked_since.pop(buf.group, None)
        if self._waits:  # the waits of tasks gone with them end unannounced
            self._waits = [w for w in self._waits if any(tp in self._buffers for tp in w.held)]

    def hold(self, wait: CatchUpWait) -> None:
        """Keep `wait.held` out of their groups until `wait` ends (a join's catch-up)."""
        for tp in wait.held:
            buf = self._buffers.get(tp)
            if buf is None:
                continue
            n = self._parked.get(tp, 0)
            if not n:
                self._groups[buf.group].remove(tp)
            self._parked[tp] = n + 1
        for tp in wait.ends:
            buf = self._buffers.get(tp)
            if buf is not None:
                buf.waits = [*(buf.waits or ()), wait]
        self._waits.append(wait)

    def _check_waits(self, behind: Callable[[TP], bool]) -> None:
        """End the waits whose table caught up or whose bound passed: their held partitions
        go back into their groups, after the partitions there (their order is kept)."""
        buffers = self._buffers

        def caught_up(tp: TP) -> bool:
            buf = buffers.get(tp)
            return buf is None or (buf.at >= len(buf.records) and not behind(tp))

        now = self.clock()
        for wait in list(self._waits):
            for tp in wait.ends:  # a run cut short by a budget never came back to say it
                buf = buffers.get(tp)
                if buf is not None and buf.at:
                    wait.reached[tp] = max(wait.reached[tp], buf.records[buf.at - 1][3] + 1)
            if not wait.finished(now, caught_up):
                continue
            self._waits.remove(wait)
            for tp in wait.ends:
                buf = buffers.get(tp)
                if buf is not None and buf.waits is not None:
                    buf.waits = [w for w in buf.waits if w is not wait] or None
            for tp in wait.held:
                n = self._parked.get(tp)
                if n is None:
                    continue  # dropped meanwhile
                if n > 1:
                    self._parked[tp] = n - 1
                    continue
                del self._parked[tp]
                self._groups.setdefault(buffers[tp].group, []).append(tp)

    def add(self, tp: TP, messages: list[Message]) -> None:
        """Append fetched records of `tp` (ignored if `tp` is not assigned any more)."""
        buf = self._buffers.get(tp)
        if buf is None or not messages:
            return
        if buf.at >= len(buf.records):
            buf.records, buf.at = messages, 0
        else:
            del buf.records[: buf.at]
            buf.records += messages
            buf.at = 0

    def wanted(self) -> list[TP]:
        """Partitions to fetch for: those holding fewer than `capacity` records."""
        cap = self.capacity
        return [tp for tp, b in self._buffers.items() if len(b.records) - b.at < cap]

    def held(self, tp: TP) -> int:
        """Records of `tp` buffered, not yet handed out."""
        buf = self._buffers.get(tp)
        return 0 if buf is None else len(buf.records) - buf.at

    def pending(self) -> bool:
        """True while some partition holds records not yet handed out."""
        return any(b.at < len(b.records) for b in self._buffers.values())

    def give_back(self, tp: TP, n: int) -> None:
        """Return the last `n` records of the run just handed out for `tp` (not processed)."""
        if n > 0:
            self._buffers[tp].at -= n

    def _bound(self, tps: list[TP]) -> float:
        """The newest timestamp group `tps` may run: `slack` past the oldest of the
        worker's own writes to them not fetched yet (infinite if none)."""
        own = self.own
        assert own is not None
        oldest = math.inf
        for tp in tps:
            t = own(tp)
            if t is not None and t < oldest:
                oldest = t
        return oldest + self.slack

    def runs(self, behind: Callable[[TP], bool]) -> Iterator[tuple[Any, list[Message]]]:
        """``(handle, run)`` in timestamp order, sub-topology by sub-topology.

        `behind(tp)` says whether `tp` may have records not fetched yet; such a partition
        with an empty buffer stops its sub-topology (until `max_idle` has passed), since
        its next record may be older than every buffered one. The caller may stop early
        (and `give_back` part of the last run).
        """
        if self._waits:
            self._check_waits(behind)
        self.waiting = False
        skew = self.max_skew
        heapreplace, heappop = heapq.heapreplace, heapq.heappop
        for group, tps in list(self._groups.items()):
            # Heads as (timestamp, order, buffer). A partition that ran dry but may have
            # more to fetch stays in as its last timestamp, ordered after equal heads (ties
            # run together): records up to there run; when it is the smallest, the group
            # waits for its fetch, up to `max_idle`.
            heap: list[tuple[float, int, _Buffer]] = []
            n = len(tps)
            dry = False
            absent: list[TP] = []  # read to their ends: a run here may write to them
            for i, tp in enumerate(tps):
                buf = self._buffers[tp]
                if buf.at < len(buf.records):
                    heap.append((buf.records[buf.at][2], i, buf))
                elif behind(tp):
                    heap.append((buf.last, n + i, buf))
                    dry = True
                else:
                    absent.append(tp)
            since = self._blocked_since.get(group)
            waited = since is not None and self.clock() - since >= self.max_idle
            if not dry:
                self._blocked_since.pop(group, None)
            heapq.heapify(heap)
            bound = self._bound(tps) if self.own is not None else math.inf
            while heap:
                if absent and any(behind(tp) for tp in absent):
                    # A run wrote to a partition of this group that was read to its end (a
                    # task that reads its own repartition topic): its new records may be
                    # older than the heads here, so the group waits until they are fetched.
                    self.waiting = True
                    break
                _, i, buf = heap[0]
                records, at = buf.records, buf.at
                end = len(records)
                if at >= end:  # the smallest is a partition that ran dry
                    if waited:  # waited long enough: go on without it
                        heappop(heap)
                        continue
                    if since is None:
                        self._blocked_since[group] = self.clock()
                    self.waiting = True
                    break
                if bound != math.inf and records[at][2] > bound:
                    # own writes not fetched yet would be late behind this: send them first
                    self.waiting = True
                    break
                k = len(heap)
                if k > 1:  # the next-smallest head is a child of the root
                    limit = (heap[1] if k == 2 or heap[1] < heap[2] else heap[2])[0] + skew
                    limit = min(limit, bound)
                    j = at + 1
                    while j < end and records[j][2] <= limit:
                        j += 1
                elif bound != math.inf:  # alone, but not past the bound
                    j = at + 1
                    while j < end and records[j][2] <= bound:
                        j += 1
                else:  # alone (or the last one left): all of it
                    j = end
                buf.at = j
                buf.last = records[j - 1][2]
                yield buf.handle, records[at:j] if (at or j < end) else records
                if self.own is not None:
                    bound = self._bound(tps)
                if buf.waits is not None and buf.at > at:  # a table a join waits for
                    for wait in buf.waits:
                        wait.reached[buf.tp] = records[buf.at - 1][3] + 1
                if buf.at < end:
                    heapreplace(heap, (records[buf.at][2], i, buf))
                else:
                    buf.records, buf.at = [], 0
                    if not waited and behind(buf.tp):
                        heapreplace(heap, (buf.last, n + i % n, buf))
                    else:
                        heappop(heap)
                        absent.append(buf.tp)


def _windowed(step: lg.Node) -> bool:
    """A step whose results depend on the order of event times (it has stream time)."""
    return isinstance(step, lg.StreamJoin) or (
        isinstance(step, lg.Aggregate) and step.window is not None
    )


def time_ordered(plan: PhysicalPlan) -> frozenset[int]:
    """Sub-topologies whose partitions must be merged by timestamp: those whose repartition
    topics lead, directly or through other sub-topologies, to a windowed aggregation.

    Elsewhere the order in which partitions interleave changes no result that event time
    defines (a plain table counts the same in any order), so each task runs its own inputs
    in order and a one-input task its whole batches, which is cheaper.
    """
    readers = {t: sub.id for sub in plan.subtopologies for t in sub.source_topics}
    windowed = {sub.id for sub in plan.subtopologies if any(_windowed(s) for s in sub.steps)}
    feeds = {
        sub.id: {readers[t] for _, t in sub.outputs if t in readers} for sub in plan.subtopologies
    }
    ordered: set[int] = set()
    changed = True
    while changed:  # at most one pass per sub-topology: the graph has no cycles
        changed = False
        for sub, targets in feeds.items():
            if sub not in ordered and targets & (windowed | ordered):
                ordered.add(sub)
                changed = True
    return frozenset(ordered)


def merged_groups(plan: PhysicalPlan) -> dict[int, int]:
    """Sub-topologies whose partitions are merged by timestamp, each mapped to its group (a
    sub-topology id shared by the members); the others merge only each task's own inputs.

    Each time-ordered sub-topology is a group of its own, unless records from more than one
    place meet in a sub-topology whose order matters (it has a window, or leads to one): its
    inputs from outside and from each writer of its input topics then interleave in it, so it
    joins one group with those writers, whose sources then run in timestamp order together.
    A sub-topology fed by a single writer reads what that one ran in order already.
    """
    ordered = time_ordered(plan)
    windowed = {sub.id for sub in plan.subtopologies if any(_windowed(s) for s in sub.steps)}
    writers: dict[str, set[int]] = {}
    for sub in plan.subtopologies:
        for _, topic in sub.outputs:
            writers.setdefault(topic, set()).add(sub.id)
    parent = {s: s for s in ordered}

    def root(s: int) -> int:
        while parent[s] != s:
            s = parent[s]
        return s

    for sub in plan.subtopologies:
        if sub.id not in ordered and sub.id not in windowed:
            continue
        origins: set[int] = set()
        for topic in sub.source_topics:
            # A topic nothing of the plan writes comes from outside: its own place.
            origins |= writers.get(topic, set()) or {sub.id}
        if len(origins) < 2:
            continue  # one writer (possibly itself): its order is already the readers'
        for s in (*origins, sub.id):
            parent.setdefault(s, s)
        for s in origins:
            parent[root(s)] = root(sub.id)
    return {s: root(s) for s in parent}


def fed_back(plan: PhysicalPlan) -> frozenset[str]:
    """Repartition topics a schedule group reads that a member of the same group writes (a
    re-keyed stream meeting a source in a join or a window). A worker whose writes wait in
    the transport for a flush (Kafka) bounds its runs by the oldest of them (`Schedule.own`).
    """
    groups = merged_groups(plan)
    topics: set[str] = set()
    for sub in plan.subtopologies:
        if sub.id not in groups:
            continue
        for _, topic in sub.outputs:
            for reader in plan.subtopologies:
                if topic in reader.source_topics and groups.get(reader.id) == groups[sub.id]:
                    topics.add(topic)
    return frozenset(topics)


def lateness_slack(plan: PhysicalPlan) -> float:
    """Seconds of stream time a record may trail the newest one run and still count as if
    in order anywhere in the plan: the least grace of its windows and stream joins (a join's
    record trailing by more than its grace is not late, but may come after a partner
    ``within`` older than it left the buffer)."""
    slack = math.inf
    for node in plan.logical.nodes:
        if isinstance(node, lg.StreamJoin):
            slack = min(slack, float(node.grace))
        elif isinstance(node, lg.Aggregate) and node.window is not None:
            slack = min(slack, float(getattr(node.window, "grace", 0.0) or 0.0))
    return 0.0 if slack == math.inf else slack
