"""The tasks of a worker: the partitions the group assigns it, restored and built into tasks.

A task is a sub-topology on one partition, and moves through explicit states:

- ``restoring``: assigned, its stores being restored from their changelogs. A rebalance only
  notes what it assigns (`TaskManager.assigned`) and pauses fetching it; the worker's next
  step restores and builds (`TaskManager.build`), outside the rebalance callback, which
  sends no heartbeat, so a long restore never holds up the group.
- ``running``: built, its partitions fetched and processed.
- ``suspended``: a rebalance began and took its partitions away (everything it processed is
  committed). It is kept whole, caches and agents included, until the new assignment is
  known: given back, it runs on from where it stopped without a restore, so a rebalance
  touches only the tasks that move.
- ``standby``: a replica of a task another worker runs, its stores following their changelogs
  (standby.py); promoted, it restores only the changelog tail it had not applied.
- ``closed``: gone from this worker (moved elsewhere, or the worker lost its membership).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from flowgraph.runtime.catch_up import CatchUpWait
from flowgraph.runtime.ops import Window
from flowgraph.runtime.recovery import Recovery
from flowgraph.runtime.schedule import Schedule, merged_groups
from flowgraph.runtime.standby import Standbys, TaskId
from flowgraph.runtime.state.base import StateBackend, StorePartition
from flowgraph.runtime.stats import RunStats, derive_step_counts
from flowgraph.runtime.task import Task
from flowgraph.runtime.transport import TP, Consumer, InProcessTransport, MembershipLost, Transport
from flowgraph.runtime.window_views import WindowedTableView
from flowgraph.runtime.windowed_table import WindowedTableView as AgentWindowedView
from flowgraph.serde import Codec
from planner import logical as lg
from planner.physical import PhysicalPlan

__all__ = ["TASK_STATES", "Restoring", "TaskManager"]

TASK_STATES = ("restoring", "running", "suspended", "standby", "closed")
"""The states a task moves through (see the module docstring)."""

log = logging.getLogger("flowgraph")


class Restoring:
    """Progress of the restore under way: tasks restored of those to restore, records read."""

    __slots__ = ("done", "records", "total")

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.records = 0

    def __repr__(self) -> str:
        return f"Restoring(done={self.done}, total={self.total}, records={self.records})"


class TaskManager:
    """Owns a worker's tasks and stores, and the partitions assigned to it but not built yet.

    It shares with the worker, by reference, the schedule (buffered records per partition),
    the run's stats, and the per-task and per-partition state a commit takes in (`touched`,
    `positions`, `tails`), which it cleans up when it drops partitions.
    """

    def __init__(
        self,
        plan: PhysicalPlan,
        transport: Transport,
        backend: StateBackend,
        recovery: Recovery,
        schedule: Schedule,
        stats: RunStats,
        codecs: dict[str, tuple[Codec | None, Codec | None]],
        hash_codecs: dict[str, Codec],
        *,
        touched: dict[int, Task],
        positions: dict[TP, int],
        tails: dict[TP, int],
        clock: Callable[[], float],
        on_progress: Callable[[], None],
    ) -> None:
        """`clock` is handed to every task; `on_progress` is called as a restore proceeds
        (the worker reports what it waits for)."""
        self.plan = plan
        self.transport = transport
        self.backend = backend
        self.recovery = recovery
        self.schedule = schedule
        self.stats = stats
        self.codecs = codecs
        self.hash_codecs = hash_codecs
        self.touched = touched
        self.positions = positions
        self.tails = tails
        self._clock = clock
        self._on_progress = on_progress
        self.consumer: Consumer | None = None
        """The worker's consumer, once it has one (pausing, resuming, committed offsets)."""
        self._groups = merged_groups(plan)
        """Per sub-topology merged across its tasks, its schedule group (`merged_groups`)."""
        members = Counter(self._groups.values())
        self._merged: dict[int, str] = {}
        """Per sub-topology whose tasks run in timestamp order with other tasks, with which:
        ``"partitions"`` (its own only) or ``"subtopologies"`` (see `Task`)."""
        for sub in plan.subtopologies:
            if sub.id in self._groups:
                if members[self._groups[sub.id]] > 1:
                    self._merged[sub.id] = "subtopologies"
                elif sub.partitions > 1:
                    self._merged[sub.id] = "partitions"
        self._reader = {t: sub for sub in plan.subtopologies for t in sub.source_topics}
        self._source_topics = {t.name for t in plan.topics if t.role in ("source", "feed")}
        self._held = {t for sub in plan.subtopologies for c in sub.catch_up for t in c.held}
        """Topics a join's catch-up may hold at task start: never wired directly."""
        self.starting: list[Task] = []
        """Tasks built whose joins' catch-up waits start with the worker's next step
        (`catch_up`): in process, the first step comes after what a run feeds at start."""
        self.failure: Exception | None = None
        """What assigning partitions raised, raised again by the worker's `step`."""
        self.joined = False
        """True once the group gave this worker its partitions (maybe none), and no
        rebalance has begun since."""
        self.pending: set[TP] = set()
        """Assigned partitions whose tasks are not built yet: `build` restores their state
        in the worker's `step`, outside the rebalance callback (fetching them is paused)."""
        self.generation = 0
        """Counts the assignments taken away (revoked or lost): a build under way that sees
        it change gives up, since what it builds is no longer this worker's."""
        self.stop: asyncio.Event | None = None
        """The run's stop event, checked between the partitions a build restores."""
        self.restoring = Restoring()
        """Progress of the restore under way (or the last one)."""
        self.tasks: dict[TP, Task] = {}
        """The task reading each assigned partition."""
        self.stores: dict[tuple[str, int], StorePartition] = {}
        self.all_tasks: list[Task] = []
        self.writers: dict[str, Any] = {}
        """Per output topic (repartition, sink, dead letters), its writer, shared by tasks."""
        self.direct: dict[str, list[int]] = {}
        """Per directly wired topic: the end offsets of its partitions when it was wired."""
        self.direct_marks: list[Callable[[], None]] = []
        """Mark the readers of directly wired topics touched (they may have new records)."""
        self.windows: dict[str, Window] = {}
        """Per ``async def`` step, its calls in flight, shared by its tasks (`Task`)."""
        self.suspended: dict[TaskId, Task] = {}
        """Tasks a rebalance under way took away, kept whole until the new assignment says
        whether they come back (`suspend`, `assigned`)."""
        self.committed: dict[TP, int] = {}
        """Per partition, the offset this worker last committed for it."""
        self.resume_at: dict[TP, int] = {}
        """Per partition, the next offset its task processes: above `committed` while an
        agent holds a `take()` batch whose records a crash would replay."""
        self.standbys: Standbys | None = None
        """This worker's standby tasks (None in process: one member owns everything)."""

    def open_writers(self) -> None:
        """Open a writer per topic the tasks write to (a source topic too, when an agent
        writes it: one agent feeding another)."""
        written = {
            s.topic
            for sub in self.plan.subtopologies
            for s in sub.steps
            if isinstance(s, lg.Send) and s.topic is not None
        }
        self.writers.update(
            (t.name, self.transport.writer(t.name))
            for t in self.plan.topics
            if t.role in ("repartition", "sink", "dlq") or t.name in written
        )

    async def assigned(
        self, assignment: frozenset[TP], standby: frozenset[TaskId] = frozenset()
    ) -> None:
        """A rebalance gave this worker `assignment` (and `standby` tasks to mirror).

        Suspended tasks whose partitions all came back run on where they stopped, unless
        the group's committed offsets moved meanwhile (another member ran them: this
        worker's state is stale, so they are built afresh). The other suspended tasks are
        closed or, when assigned as standbys, become standbys on their open stores. New
        partitions are noted and not fetched yet: nothing slow happens here (the consumer
        sends no heartbeat while a rebalance callback runs); the worker's next `step`
        restores their stores and builds their tasks (`build`).
        """
        back = [
            task
            for task in self.suspended.values()
            if all((t, task.partition) in assignment for t in task.sub.source_topics)
        ]
        if back and self.consumer is not None:
            tps = [(t, task.partition) for task in back for t in task.sub.source_topics]
            found = await self.consumer.group_offsets(tps)
            moved = {tp for tp in tps if found.get(tp) != self.committed.get(tp)}
            back = [
                task
                for task in back
                if not any((t, task.partition) in moved for t in task.sub.source_topics)
            ]
        for task in back:
            del self.suspended[(task.sub.id, task.partition)]
            task.state = "running"
            for tp in [(t, task.partition) for t in task.sub.source_topics]:
                if tp in self.resume_at and self.consumer is not None:
                    self.consumer.seek(tp, self.resume_at[tp])
            self.publish(task, set(assignment))
        for task in self.suspended.values():
            self._close(task)  # its stores stay open: a standby of it here follows them on
            self._forget([(t, task.partition) for t in task.sub.source_topics])
        self.suspended.clear()
        new = {tp for tp in assignment if tp not in self.tasks}
        promoted = 0
        if self.standbys is not None:
            for sub in self.plan.subtopologies:
                for p in range(sub.partitions):
                    if any((t, p) in new for t in sub.source_topics):
                        promoted += self.standbys.take((sub.id, p))  # built on its stores
            self.standbys.assign(standby)
        if self.consumer is not None and new:
            self.consumer.pause(sorted(new))
        self.pending |= new
        self.recovery.begin()  # checkpoints are read afresh for this assignment
        self.joined = True
        if not self.transport.in_process:
            log.info(
                "group %r assigned this worker %d partitions: %d tasks kept, %d partitions "
                "to restore (%d tasks from standbys), %d standby tasks",
                self.plan.graph_id,
                len(assignment),
                len(back),
                len(new),
                promoted,
                0 if self.standbys is None else len(self.standbys.tasks),
            )

    def suspend(self, tps: frozenset[TP] | set[TP]) -> None:
        """A rebalance takes `tps` away, everything processed being committed: keep their
        tasks whole, suspended, until `assigned` says whether they come back."""
        self.pending -= tps
        gone = {id(t): t for tp, t in self.tasks.items() if tp in tps}
        for task in gone.values():
            task.state = "suspended"
            self.suspended[(task.sub.id, task.partition)] = task
            for name in task.stores:
                self.stores.pop((name, task.partition), None)
            self.touched.pop(id(task), None)
        self.tasks = {tp: t for tp, t in self.tasks.items() if id(t) not in gone}
        self.all_tasks = [t for t in self.all_tasks if id(t) not in gone]
        self.schedule.drop(tps)
        for tp in tps:
            self.tails.pop(tp, None)
            self.positions.pop(tp, None)

    def _close(self, task: Task) -> None:
        """`task` leaves this worker: stop what runs on its own, keep its step counts."""
        task.close()
        self.stats.retire(task.tally())  # its step counts outlive it

    def _forget(self, tps: Iterable[TP]) -> None:
        """`tps` are no longer this worker's to resume: what it committed for them and where
        it stopped belong to an ownership that ended (another member may have run them
        since), so a later resume must not seek back there."""
        for tp in tps:
            self.committed.pop(tp, None)
            self.resume_at.pop(tp, None)

    def revoking(self) -> None:
        """A rebalance begins taking partitions away: stop any build under way."""
        self.joined = False  # until the rebalance settles: an idle worker then leaves cleanly
        self.generation += 1  # a build under way stops: its partitions may be gone

    def drop(self, tps: frozenset[TP] | set[TP]) -> None:
        """Forget the tasks of `tps` (and their stores, buffers and pending builds)."""
        self.pending -= tps
        gone = {id(t) for tp, t in self.tasks.items() if tp in tps}
        for task in self.all_tasks:
            if id(task) in gone:
                self._close(task)
                for name in task.stores:
                    self.stores.pop((name, task.partition), None)
                self.touched.pop(id(task), None)
        self.tasks = {tp: t for tp, t in self.tasks.items() if id(t) not in gone}
        self.schedule.drop(tps)
        for tp in tps:
            self.tails.pop(tp, None)
            self.positions.pop(tp, None)
        self._forget(tps)
        self.all_tasks = [t for t in self.all_tasks if id(t) not in gone]

    def lose(self, exc: MembershipLost) -> None:
        """A commit found this worker out of the group: drop every task, wait for the rejoin.

        Its partitions are another member's (or will be this one's again after the
        rejoin), which replays them from the last committed offsets. That is exact: stored
        entries carry the offsets applied to them (a replayed record is not applied twice)
        and written records carry origins (a replayed input writes nothing twice).
        """
        lost = set(self.tasks) | self.pending
        log.warning(
            "worker of group %r lost its membership (%s): dropped %d partitions and their "
            "uncommitted positions; rejoining",
            self.plan.graph_id,
            exc,
            len(lost),
        )
        self.joined = False
        self.generation += 1
        for task in self.suspended.values():
            self._close(task)
            self._forget([(t, task.partition) for t in task.sub.source_topics])
        self.suspended.clear()
        if self.consumer is not None:  # fetch nothing more for what is no longer ours
            self.consumer.pause(sorted(lost))
        self.drop(lost)

    def interrupted(self, generation: int) -> bool:
        """True when a build must stop: the run is stopping or the assignment changed."""
        return self.generation != generation or (self.stop is not None and self.stop.is_set())

    async def build(self) -> bool:
        """Restore the stores and build the tasks of the pending partitions; False when
        interrupted (see `interrupted`): what is left stays pending for the next step.

        Every task is restored and has recovered what it wrote before it processes a
        record: its stores hold what their changelogs hold, its writers know the records a
        crashed run wrote for the inputs it replays (see recovery.py). The end offsets of
        all changelogs, and of all output partitions, are each read in one request.
        """
        generation = self.generation
        pending = set(self.pending)
        units = [
            (sub, p)
            for sub in reversed(self.plan.subtopologies)  # downstream first: see below
            for p in range(sub.partitions)
            if any((t, p) in pending for t in sub.source_topics)
            and not any((t, p) in self.tasks for t in sub.source_topics)
        ]
        progress = self.restoring
        progress.done, progress.total, progress.records = 0, len(units), 0
        began = time.monotonic()
        restored_before = self.stats.restored
        try:
            restores: list[tuple[StorePartition, TP]] = []
            unit_stores: list[dict[str, StorePartition]] = []
            last_store: set[int] = set()  # indexes in `restores` that complete a task
            for sub, p in units:
                stores: dict[str, StorePartition] = {}
                for spec in self.plan.stores:
                    if any(s.id == spec.step for s in sub.steps):
                        stores[spec.name] = store = self.backend.open(spec.name, p)
                        restores.append((store, (spec.changelog, p)))
                if stores:
                    last_store.add(len(restores) - 1)
                else:
                    progress.done += 1  # nothing to restore
                unit_stores.append(stores)

            def restored(index: int) -> None:
                progress.records = self.stats.restored - restored_before
                if index in last_store:
                    progress.done += 1
                self._on_progress()

            def interrupted() -> bool:
                progress.records = self.stats.restored - restored_before
                return self.interrupted(generation)

            if not await self.recovery.restore_all(restores, interrupted, restored):
                return False
            recovering: list[Task] = []
            built: list[Task] = []
            for (sub, p), stores in zip(units, unit_stores, strict=True):
                task = Task(
                    self.plan,
                    sub,
                    p,
                    stores,
                    self.codecs,
                    self.hash_codecs,
                    self.writers,
                    tag_origins=self.transport.encoded,
                    clock=self._clock,
                    windows=self.windows,
                    merged=self._merged.get(sub.id, ""),
                )
                built.append(task)
                if task.tag_origins:
                    recovering.append(task)
                else:
                    # In process, records of a repartition topic read here may skip the log:
                    # its readers (downstream, built first) are wired before the tasks that
                    # write it are compiled. No recovery is needed there.
                    self.publish(task, pending)
                    for t in sub.source_topics:
                        if self.plan.topic(t).role == "repartition":
                            await self.wire_direct(t)
            if not await self.recovery.recover_writes(recovering, interrupted):
                return False
            if recovering and self.consumer is not None:
                # where the group stands for them now: a rebalance that gives them back
                # resumes them only if nobody moved these offsets meanwhile (`assigned`),
                # and there, not where this worker stopped when it last ran them
                tps = [(t, task.partition) for task in recovering for t in task.sub.source_topics]
                found = await self.consumer.group_offsets(tps)
                self._forget(tps)
                self.committed.update((tp, o) for tp, o in found.items() if o is not None)
                self.resume_at.update((tp, o) for tp, o in found.items() if o is not None)
            if self.interrupted(generation):
                return False
            for task in recovering:
                self.publish(task, pending)
            if self._held:
                self.starting += [task for task in built if task.sub.catch_up]
        except Exception as exc:
            # A changelog that cannot be restored: the run stops on it (raised by `step`)
            # instead of going on without the state.
            self.failure = exc
            return False
        progress.done = progress.total
        progress.records = self.stats.restored - restored_before
        if units and not self.transport.in_process:
            log.info(
                "restored %d tasks in %.2f s (%d changelog records); processing them",
                len(units),
                time.monotonic() - began,
                progress.records,
            )
        return True

    def publish(self, task: Task, assignment: set[TP]) -> None:
        """Hand `task` its partitions: it is restored and knows what it wrote."""
        sub, p = task.sub, task.partition
        self.all_tasks.append(task)
        for name, store in task.stores.items():
            self.stores[(name, p)] = store
        # All its partitions are merged when what it writes reaches windows through
        # repartition topics (its order is their readers' order), with those of the writers
        # of its inputs when records from several places meet in it; else only its task's
        # own inputs, as in Kafka Streams.
        group = self._groups.get(sub.id, (sub.id, p))
        mine = [
            (t, p) for t in sub.source_topics if (t, p) in assignment and self._reader[t] is sub
        ]
        for tp in mine:
            self.tasks[tp] = task
            source = tp[0] in self._source_topics
            handle = (tp, task, id(task), task.runner(tp[0]), source)
            self.schedule.assign(tp, group, handle)
        self.pending.difference_update(mine)
        assert self.consumer is not None
        self.consumer.resume(mine)

    async def catch_up(self) -> None:
        """Start the catch-up waits of the joins of the tasks just built (`starting`): their
        stream partitions are held until their table partitions are processed up to the end
        offsets they have now (read once, in one request), or for the join's bound.

        A table input wired directly needs no wait: its records are processed as they are
        written. Waits start after the restore, so a long one does not eat the bound.
        """
        tasks, self.starting = self.starting, []
        waits = [(task, c) for task in tasks for c in task.sub.catch_up]
        if not waits or self.consumer is None:
            return
        tables = sorted(
            {(t, task.partition) for task, c in waits for t in c.tables if t not in self.direct}
        )
        ends = await self.transport.end_offsets(tables) if tables else {}
        starts = await self.consumer.group_offsets(tables) if tables else {}
        for task, c in waits:
            p = task.partition
            held = [(t, p) for t in c.held if self.tasks.get((t, p)) is task]
            mine = [(t, p) for t in c.tables if (t, p) in ends and self.tasks.get((t, p)) is task]
            if not held:
                continue
            self.schedule.hold(
                CatchUpWait(
                    join=c.join,
                    table=c.table,
                    partition=p,
                    seconds=c.seconds,
                    held=held,
                    ends={tp: ends[tp] for tp in mine},
                    starts={tp: starts.get(tp) or 0 for tp in mine},
                    began=self.schedule.clock(),
                )
            )

    async def wire_direct(self, topic: str) -> None:
        """Hand records for `topic` straight to the tasks that read it, when that is exact.

        On an in-process transport, a repartition topic whose every partition is read by a
        task of this worker (and whose readers await nothing) needs no log: writing a record
        is calling its partition's task, with the offset the log would have given it. This
        skips storing, fetching and re-reading every record, and the records die young.
        """
        transport = self.transport
        if (
            not isinstance(transport, InProcessTransport)
            or transport.encoded
            or self.consumer is None
            or topic in self.direct
            or topic in self._held
        ):
            return
        parts = self.plan.topic(topic).partitions
        tasks = [self.tasks.get((topic, p)) for p in range(parts)]
        if any(t is None or t.has_async for t in tasks):
            return
        first = [transport.end(topic, p) for p in range(parts)]
        for p, end in enumerate(first):
            if (await self.consumer.committed((topic, p)) or 0) < end:
                return  # records left by an earlier worker: read them through the log
        delivers = [t.entry_push(topic) for t in tasks if t is not None]
        self.direct[topic] = first
        touched = self.touched
        readers = {id(t): t for t in tasks if t is not None}

        def mark() -> None:
            touched.update(readers)

        self.direct_marks.append(mark)
        self.writers[topic] = transport.direct_writer(topic, delivers)

    # -- what it holds --------------------------------------------------------------------

    def task_states(self) -> dict[TaskId, str]:
        """Every task this worker holds, by id, with its state (see `TASK_STATES`)."""
        out: dict[TaskId, str] = {}
        if self.standbys is not None:
            out.update((tid, "standby") for tid in self.standbys.tasks)
        for sub in self.plan.subtopologies:
            for p in range(sub.partitions):
                if any((t, p) in self.pending for t in sub.source_topics):
                    out[(sub.id, p)] = "restoring"
        out.update(((t.sub.id, t.partition), t.state) for t in self.all_tasks)
        out.update((tid, "suspended") for tid in self.suspended)
        return out

    def local_offsets(self) -> dict[TaskId, int]:
        """Per task whose state this worker holds (active, suspended or standby), the sum
        of its stores' changelog positions: how far its local state is, for the assignor
        to prefer the most caught-up member when a task moves."""
        out: dict[TaskId, int] = {}
        for task in [*self.all_tasks, *self.suspended.values()]:
            if task.stores:
                out[(task.sub.id, task.partition)] = sum(
                    s.changelog_offset() or 0 for s in task.stores.values()
                )
        if self.standbys is not None:
            out.update(self.standbys.offsets())
        return out

    # -- reading state -------------------------------------------------------------------

    def table(self, name: str) -> Any:
        """The table of step `name` held by this worker: a dict of its keys and values, or,
        for a windowed table, a live `WindowedTableView`."""
        spec = next((s for s in self.plan.stores if s.step == name), None)
        if spec is None:
            known = ", ".join(repr(s.step) for s in self.plan.stores) or "none"
            msg = f"graph {self.plan.graph_id!r} has no table {name!r}; its tables: {known}"
            raise KeyError(msg)
        windowed = [
            op
            for task in sorted(self.all_tasks, key=lambda t: t.partition)
            for op in task.windowed
            if op.node.id == name
        ]
        node = next(n for sub in self.plan.subtopologies for n in sub.steps if n.id == name)
        if isinstance(node, lg.StreamJoin):
            msg = f"step {name!r} is a stream join; it buffers records, it holds no table"
            raise KeyError(msg)
        if isinstance(node, lg.Aggregate) and node.window is not None:
            return WindowedTableView(name, windowed, self._clock)
        if isinstance(node, lg.AgentTable) and node.window is not None:
            states = [
                task.aggregates[name]
                for task in sorted(self.all_tasks, key=lambda t: t.partition)
                if name in task.aggregates
            ]
            return AgentWindowedView(name, states, node.default)  # type: ignore[arg-type]
        result: dict[Any, Any] = {}
        for (store_name, _), store in sorted(self.stores.items(), key=lambda i: i[0][1]):
            if store_name == spec.name:
                result.update(store.items())
        if isinstance(node, lg.Aggregate) and node.wake is not None:
            result.pop((), None)  # the stream time of a process step with timers
        return result

    def step_counts(self) -> dict[str, int]:
        """Records out of each step, over all tasks, those a rebalance took away included."""
        counts = dict(self.stats.retired)
        for task in self.all_tasks:
            for k, n in task.tally().items():
                counts[k] = counts.get(k, 0) + n
        entries = {
            s.topic: s.id
            for sub in self.plan.subtopologies
            for s in sub.steps
            if isinstance(s, lg.Repartition)
        }
        for topic, first in self.direct.items():
            step = entries[topic]
            transport: Any = self.transport
            ends = [transport.end(topic, p) for p in range(len(first))]
            counts["in", step] = counts.get(("in", step), 0) + sum(ends) - sum(first)
        return derive_step_counts(self.plan, counts)
