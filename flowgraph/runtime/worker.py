"""The worker: runs a physical plan on a transport and a state backend, a batch at a time.

Records are fetched a batch per partition at a time into a `Schedule`, which hands them to
the tasks in timestamp order across the partitions of each sub-topology, in runs (decode,
steps, state kept in memory). Every `commit_every` records or `commit_interval` seconds, and
whenever the run goes idle or stops, a commit makes it durable in the durability order
(commit.py). The tasks of the partitions assigned to the worker are restored and built by
its `TaskManager` (tasks.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowgraph.errors import ConfigurationError, GroupStalledError
from flowgraph.partitioner import partition_for
from flowgraph.runtime.agent import WORKER
from flowgraph.runtime.codecs import codec_or, topic_codecs
from flowgraph.runtime.collector import quiet_gc
from flowgraph.runtime.commit import Committer
from flowgraph.runtime.feeder import Feeder
from flowgraph.runtime.global_tables import GlobalTables
from flowgraph.runtime.idle import CHECK_INTERVAL, GroupIdle
from flowgraph.runtime.rebalance import Rebalancer
from flowgraph.runtime.recovery import Recovery
from flowgraph.runtime.schedule import (
    DEFAULT_MAX_IDLE,
    DEFAULT_MAX_SKEW,
    Schedule,
    fed_back,
    lateness_slack,
)
from flowgraph.runtime.services import Services
from flowgraph.runtime.standby import Standbys
from flowgraph.runtime.state.base import StateBackend, StorePartition
from flowgraph.runtime.stats import (
    DeadLetterLimit,
    DeadLetterLimitError,
    RunStats,
)
from flowgraph.runtime.status import PHASES, Status
from flowgraph.runtime.tailer import ChangelogTailer
from flowgraph.runtime.task import Task
from flowgraph.runtime.tasks import Restoring, TaskManager
from flowgraph.runtime.transport import (
    TP,
    Consumer,
    MembershipLost,
    Transport,
)
from flowgraph.serde import AutoCodec, Codec
from planner import logical as lg
from planner.assignment import topology
from planner.physical import PhysicalPlan

__all__ = [
    "DEFAULT_MAX_IDLE",
    "DEFAULT_MAX_SKEW",
    "PHASES",
    "Restoring",
    "RunStats",
    "Worker",
    "topic_codecs",
]

log = logging.getLogger("flowgraph")


DEFAULT_MAX_BATCH = 2_000
"""Records fetched per partition at a time: small enough to stay in the CPU caches. A
partition is fetched for while it buffers fewer than this many records."""
COMMIT_EVERY = 100_000
"""Records processed between commits (each commit writes one changelog record per key)."""
COMMIT_INTERVAL = 1.0
"""Seconds at most between commits while records flow."""
FEED_CHUNK = 5_000
WAITING_REPORT = 30.0
"""Seconds without an assignment or progress after which a worker logs what it waits for."""


def _check_settings(max_batch: int, max_skew: float, max_idle: float) -> None:
    """One sentence for a scheduling setting out of range."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        msg = f"max_batch must be a positive int, got {max_batch!r}; it is records per fetch"
        raise ConfigurationError(msg)
    for name, value in (("max_skew", max_skew), ("max_idle", max_idle)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            msg = f"{name} must be a number of seconds >= 0, got {value!r}"
            raise ConfigurationError(msg)


class Worker:
    """One member of the graph's consumer group; owns tasks for its assigned partitions."""

    def __init__(
        self,
        plan: PhysicalPlan,
        transport: Transport,
        backend: StateBackend,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        commit_every: int = COMMIT_EVERY,
        commit_interval: float = COMMIT_INTERVAL,
        max_skew: float = DEFAULT_MAX_SKEW,
        max_idle: float = DEFAULT_MAX_IDLE,
        crash_point: Callable[[str], None] | None = None,
        waiting_report: float = WAITING_REPORT,
    ) -> None:
        """`crash_point` is fault injection for tests: called with the name of each point
        passed (in-batch, after-produce, after-store, after-commit, in-restore), it may raise
        or kill the process there (see `flowgraph.runtime.faults`). After `waiting_report`
        seconds with no partition or no progress, the worker logs what it waits for
        (`waiting_for`), and again every `waiting_report` seconds while that lasts."""
        _check_settings(max_batch, max_skew, max_idle)
        if isinstance(waiting_report, bool) or not (
            isinstance(waiting_report, int | float) and waiting_report > 0
        ):
            msg = f"waiting_report must be a number of seconds > 0, got {waiting_report!r}"
            raise ConfigurationError(msg)
        self.plan = plan
        self.transport = transport
        self.backend = backend
        self.max_batch = max_batch
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self.schedule = Schedule(capacity=max_batch, max_skew=max_skew, max_idle=max_idle)
        """Fetched records not processed yet, handed out in timestamp order."""
        self._tails: dict[TP, int] = {}
        """Per partition, the end of dead letters that `_stamp` dropped after the last
        buffered record: its offset to commit once that record is processed."""
        self._stalled = False
        """The last step processed nothing while records were buffered: wait in the fetch."""
        fed = self._fed = fed_back(plan)
        track = getattr(transport, "track_oldest", None)
        self._flush_to_self = bool(fed) and track is not None
        """Some schedule group reads what it writes to a repartition topic, and writes wait
        in the transport for a flush (Kafka): the schedule bounds its runs by the oldest of
        them (`Schedule.own`), and when a group waits for them they are flushed at once."""
        if self._flush_to_self:
            assert track is not None
            track(fed)
            self.schedule.slack = lateness_slack(plan)
        self._touched: dict[int, Task] = {}
        """The tasks to take part in the next commit (by id), shared with the task manager
        and the direct writers: changed in place, never replaced."""
        self.clock: Callable[[], float] = time.time
        """Wall-clock seconds, for window idle timeouts and `now()`; the TestDriver sets its own."""
        self._crash_hook = crash_point
        self._fetched_at = time.monotonic()
        """When a fetch last returned (the event loop ran, so heartbeats went out)."""
        self._lock = asyncio.Lock()
        """Held while processing and committing, so a rebalance never cuts a batch in two."""
        self._positions: dict[TP, int] = {}
        """Per partition, the offset to commit next (changed in place, never replaced)."""
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self.stats = RunStats()
        self.codecs = topic_codecs(plan, in_process=not transport.encoded)
        self.hash_codecs: dict[str, Codec] = {
            t.name: codec_or(t.key_type, AutoCodec()) for t in plan.topics
        }
        self._consumer: Consumer | None = None
        self._feeders: list[Feeder] = []
        self.recovery = Recovery(plan, transport, self.codecs, self.stats, self._crash_point)
        self._committer = Committer(
            plan, transport, self.codecs, self.stats, self.recovery, self._crash_point
        )
        self._manager = TaskManager(
            plan,
            transport,
            backend,
            self.recovery,
            self.schedule,
            self.stats,
            self.codecs,
            self.hash_codecs,
            touched=self._touched,
            positions=self._positions,
            tails=self._tails,
            clock=lambda: self.clock(),  # noqa: PLW0108 - read late: drivers replace it
            on_progress=self._report_waiting,
        )
        self._direct_marks = self._manager.direct_marks
        if not transport.in_process:
            tailer = ChangelogTailer(transport.tail_reader, self.codecs)
            self._manager.standbys = Standbys(plan, backend, tailer)
        self.rebalancer = Rebalancer(self._manager, self._lock, self.commit, self._touched)
        """Applies the group's rebalances to the tasks (rebalance.py)."""
        self._status = Status(plan, transport, self._manager, float(waiting_report))
        """The task manager's list (extended in place): read once per step."""
        self.services = Services(self)
        """The app's timers, crontabs and tasks: started by `start`, stopped by `stop`."""
        self.global_tables = GlobalTables(plan, transport, backend, self.codecs, self.stats)
        """Copies of the plan's global tables, whole (restored by `start`)."""

    # -- the task manager's state, by its names here -------------------------------------

    @property
    def tasks(self) -> dict[TP, Task]:
        """The task reading each assigned partition."""
        return self._manager.tasks

    @property
    def stores(self) -> dict[tuple[str, int], StorePartition]:
        """The open store partitions, by store name and partition."""
        return self._manager.stores

    @property
    def restoring(self) -> Restoring:
        """Progress of the restore under way (or the last one)."""
        return self._manager.restoring

    @property
    def _all_tasks(self) -> list[Task]:
        return self._manager.all_tasks

    @property
    def _joined(self) -> bool:
        return self._manager.joined

    @property
    def _pending(self) -> set[TP]:
        return self._manager.pending

    @property
    def _direct(self) -> dict[str, list[int]]:
        return self._manager.direct

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create topics, join the group, open and restore stores, build tasks."""
        await self.transport.start()
        await self.transport.create_topics(self.plan.topics)
        WORKER.set(self)  # step functions find the global tables they look up here
        await self.global_tables.start()  # whole before any record is processed
        self._manager.open_writers()
        for sub in self.plan.subtopologies:
            for step in sub.steps:
                if isinstance(step, lg.Source) and step.feed is not None:
                    spec = self.plan.topic(step.topic)
                    self._feeders.append(Feeder(step, spec, self.codecs[spec.name][1]))
        entry_topics = [t for sub in self.plan.subtopologies for t in sub.source_topics]
        assignor = None
        if not self.transport.in_process:  # a group: tasks and standbys by flowgraph's rules
            from flowgraph.runtime.kafka_assignor import FlowgraphAssignor

            settings = getattr(self.transport, "settings", None)
            directory = getattr(self.backend, "directory", None)
            if directory is not None:
                self.rebalancer.joined_file = Path(directory) / f"{self.plan.graph_id}.joined"
            assignor = self.rebalancer.assignor = FlowgraphAssignor(
                topology(self.plan),
                getattr(settings, "standby_replicas", None),
                self.rebalancer.member_state,
            )
        self._consumer = await self.transport.consumer(
            self.plan.graph_id, entry_topics, self._on_assigned, self._on_revoked, assignor
        )
        self._manager.consumer = self._consumer
        position = getattr(self._consumer, "fetch_position", None)
        own_oldest = getattr(self.transport, "own_oldest", None)
        if self._flush_to_self and position is not None and own_oldest is not None:
            fed = self._fed

            def own(tp: TP) -> float | None:
                if tp[0] not in fed:
                    return None
                return own_oldest(tp, position(tp))  # type: ignore[no-any-return]

            self.schedule.own = own
        # one member owns everything, at once; with nothing to read (an app of timers
        # only) there is no group to join: the worker is at once in place, owning nothing
        if self.transport.in_process or not entry_topics:
            await self._on_assigned(self._consumer.assignment())
            await self._manager.build()
            if self._manager.failure is not None:
                raise self._manager.failure
        self.services.start()

    async def _on_assigned(self, assignment: frozenset[TP]) -> None:
        """The rebalance listener's: see `Rebalancer.assigned`."""
        await self.rebalancer.assigned(assignment)

    async def _on_revoked(self, revoked: frozenset[TP]) -> None:
        """The rebalance listener's: see `Rebalancer.revoked`."""
        await self.rebalancer.revoked(revoked)

    def _lost(self, exc: MembershipLost) -> None:
        """A commit found this worker out of the group: see `Rebalancer.lost`."""
        self.rebalancer.lost(exc)
        self._since_commit = 0

    @property
    def lost_memberships(self) -> int:
        """Times a commit found this worker out of its group (it then rejoined)."""
        return self.rebalancer.lost_memberships

    def task_states(self) -> dict[tuple[int, int], str]:
        """Every task this worker holds, ``(sub-topology, partition)``, with its state:
        restoring, running, suspended or standby."""
        return self._manager.task_states()

    def task_report(self) -> dict[tuple[int, int], tuple[str, int | None]]:
        """Per task this worker holds, its state and (standbys) changelog lag."""
        lag = self.standby_lag()
        return {t: (state, lag.get(t)) for t, state in self.task_states().items()}

    def explain(self) -> str:
        """The plan as `flowgraph explain` prints it, and the tasks this worker holds now
        (running, restoring, suspended, standby) with each standby's changelog lag."""
        from planner.explain import to_text

        return to_text(self.plan, backend=self.backend.url, tasks=self.task_report())

    def standby_lag(self) -> dict[tuple[int, int], int | None]:
        """Per standby task, changelog records it has not applied yet (None: not known)."""
        standbys = self._manager.standbys
        return {} if standbys is None else standbys.lag()

    async def stop(self, *, commit: bool = True, commit_timeout: float | None = None) -> None:
        """Commit what is processed (unless `commit` is False: a batch was cut short), leave
        the group and close every store and client.

        Each part runs even if one before it failed or was cancelled, so nothing is left
        open; the first failure is raised once all have run (a later one never hides it).
        A commit that takes over `commit_timeout` seconds (a broker gone) is given up.
        """
        failures: list[BaseException] = []
        await self.services.stop()  # first: nothing they do runs beside the last commit

        async def commit_all() -> None:
            await self.commit()
            if self._touched:  # graves this commit wrote: one more deletes them for good
                await self.commit()

        if self._consumer is not None:
            if commit:
                try:
                    await asyncio.wait_for(commit_all(), commit_timeout)
                except TimeoutError:
                    msg = f"the last commit did not finish within {commit_timeout:.0f} s"
                    failures.append(TimeoutError(msg))
                except BaseException as exc:
                    failures.append(exc)
            try:
                await self._consumer.stop()
            except BaseException as exc:
                failures.append(exc)
        for task in self._all_tasks:
            task.close()  # agents' coroutines end with the worker
        if self._manager.standbys is not None:
            try:
                await self._manager.standbys.stop()
            except BaseException as exc:
                failures.append(exc)
        await self.global_tables.stop()
        if WORKER.get() is self:
            WORKER.set(None)
        try:
            self.backend.close()
        except BaseException as exc:
            failures.append(exc)
        try:
            await self.transport.stop()
        except BaseException as exc:
            failures.append(exc)
        self.stats.finished = time.monotonic()
        if failures:
            raise failures[0]

    # -- what it waits for -------------------------------------------------------------

    @property
    def phase(self) -> str:
        """What the worker does now, one of `PHASES` (see `Status.phase`)."""
        return self._status.phase

    def waiting_for(self) -> str | None:
        """One short sentence saying what the worker waits for; None while records flow."""
        return self._status.waiting_for()

    def _report_waiting(self) -> None:
        """Log what the worker waits for, once it has waited `waiting_report` seconds (and
        again every `waiting_report` seconds while it still waits)."""
        self._status.report()

    @property
    def waiting_report(self) -> float:
        """Seconds without a partition or progress before the worker logs what it waits for."""
        return self._status.waiting_report

    # -- running -------------------------------------------------------------------------

    async def run(
        self,
        *,
        until_idle: bool = False,
        max_events: int | None = None,
        stop: asyncio.Event | None = None,
        idle_wait: float = 0.05,
        stall_timeout: float | None = None,
        max_dead_letters: int | float | None = None,
        end_of_input: bool = False,
    ) -> RunStats:
        """Process batches until stopped, idle (if asked) or `max_events` source records.

        With `end_of_input` (until idle only), idle also means the input has ended: the
        open windows are closed (`close_windows`) and the run goes on until idle again, so
        what the closes emit is processed downstream, before it stops.

        Idle means the whole group is done: every input partition consumed and committed by
        the group (`flowgraph.runtime.idle`); on an in-process transport this worker is the
        whole group. When the group makes no progress for `stall_timeout` seconds (default:
        `default_stall_timeout` of the session timeout) an until-idle run gives up with
        `GroupStalledError`. Past `max_dead_letters` (a count, or a fraction of source
        records: `DeadLetterLimit`) the run stops with `DeadLetterLimitError`. Whatever ends
        the run, everything processed is committed first.
        """
        limit = DeadLetterLimit.of(max_dead_letters)
        over = False
        self._manager.stop = stop
        group = None
        if until_idle and not self.transport.in_process:
            assert self._consumer is not None, "start() first"
            group = GroupIdle.of_plan(self.plan, self.transport, self._consumer, stall_timeout)
        checked, restored = -CHECK_INTERVAL, 0
        stalled: GroupStalledError | None = None
        with quiet_gc():
            while stop is None or not stop.is_set():
                if max_events is not None and self.stats.events >= max_events:
                    break
                if limit is not None and limit.exceeded(
                    self.stats.dead_letters + sum(t.failed for t in self._all_tasks),
                    self.stats.events,
                ):
                    over = True
                    break
                budget = None if max_events is None else max_events - self.stats.events
                wait = 0.0 if self.transport.in_process else idle_wait
                if await self.step(budget, wait):
                    if group is not None:
                        group.progressed()
                    continue
                async with self._lock:
                    await self.commit()
                self._report_waiting()
                if until_idle and all(f.done for f in self._feeders) and self.services.tasks_done():
                    if group is None:  # in process: one member, owning every partition
                        if await self._consumer_caught_up():
                            if end_of_input and await self.close_windows():
                                continue
                            break
                    elif time.monotonic() - checked >= CHECK_INTERVAL:
                        checked = time.monotonic()
                        if self.stats.restored != restored:
                            restored = self.stats.restored
                            group.progressed()
                        done = await group.check()
                        # Done, and joined with its own partitions read: its tables are
                        # restored for the caller, and it leaves from a settled generation
                        # (tansu mishandles a member that leaves in the middle of a
                        # rebalance). A group that is done but that this worker could not
                        # join within the stall timeout is done too.
                        caught_up = self._joined and await self._consumer_caught_up()
                        if done and caught_up:
                            if end_of_input and await self.close_windows():
                                group.progressed()
                                continue
                            break
                        if caught_up:
                            await self._commit_read_ends(group)
                        if group.stalled():
                            if not done:
                                stalled = group.error()
                            break
                if self.transport.in_process:
                    await asyncio.sleep(idle_wait)
            await self.commit()
        if over and limit is not None:
            stats = self.stats
            raise DeadLetterLimitError(stats.dead_letters, limit.limit, stats.first_dead_letter)
        if stalled is not None:
            raise stalled
        return self.stats

    async def close_windows(self) -> bool:
        """End of input: close the open windows of the most upstream sub-topology that has
        any, and commit; False when no window is open.

        One sub-topology at a time, in plan order: what its closes emit reaches windows
        downstream only once the run has processed it, so those close at a later call.
        """
        async with self._lock:
            for sub in self.plan.subtopologies:
                tasks = [t for t in self._all_tasks if t.sub is sub and t.has_open_windows()]
                if not tasks:
                    continue
                for task in sorted(tasks, key=lambda t: t.partition):
                    await task.end_of_input()
                    self._touched[id(task)] = task
                for mark in self._direct_marks:  # tasks the closes delivered to in process
                    mark()
                await self.commit()
                return True
        return False

    async def _commit_read_ends(self, group: GroupIdle) -> None:
        """Commit the positions of partitions this idle worker has read to their ends where
        the group's committed offset is behind them.

        Offsets without a record for the worker (transaction markers, records removed by
        retention before anyone read them) are read past, but no processed record moves
        the committed offset over them, so the group would never look done. Everything
        fetched is processed and committed by now, so the position is exact.
        """
        assert self._consumer is not None
        positions = await self._consumer.positions()
        ahead = {tp: p for tp, p in positions.items() if p > group.committed.get(tp, p)}
        if not ahead:
            return
        async with self._lock:  # a rebalance waits; one that began since leaves `_joined` off
            if self._joined and set(ahead) <= self._consumer.assignment():
                try:
                    await self._consumer.commit(ahead)
                except MembershipLost as exc:
                    self._lost(exc)
                else:
                    self._manager.committed.update(ahead)
                    self._manager.resume_at.update(ahead)

    async def step(self, budget: int | None = None, timeout: float = 0.0) -> bool:
        """Fetch for the partitions whose buffers run low, then run what the schedule hands
        out (at most `budget` source records); False if nothing was fetched or run.

        Commits when `commit_every` records or `commit_interval` seconds have passed since
        the last commit, so state is written (and changelogged) once per key per commit.
        """
        assert self._consumer is not None, "start() first"
        manager = self._manager
        if manager.failure is not None:
            raise manager.failure
        if manager.pending and not await manager.build():
            if manager.failure is not None:
                raise manager.failure
            return False  # stopping, or the assignment changed meanwhile
        if manager.starting:  # tasks just built whose joins wait for their tables
            await manager.catch_up()
        for feeder in self._feeders:
            if not feeder.done:
                await self.transport.produce(feeder.topic, feeder.chunk(FEED_CHUNK))
        schedule = self.schedule
        wanted = schedule.wanted()
        pending = schedule.pending()
        wait = timeout if self._stalled or not pending else 0.0
        batches = (
            await self._consumer.getmany(self.max_batch, wait, wanted or None)
            if wanted or not pending  # every buffer full: no fetch; none assigned yet: all
            else {}
        )
        self._fetched_at = time.monotonic()  # the event loop ran (heartbeats went out)
        if manager.failure is not None:  # a rebalance during the fetch could not assign
            raise manager.failure
        async with self._lock:
            tasks = manager.tasks
            for tp, messages in batches.items():
                task = tasks.get(tp)
                if task is None:  # revoked by a rebalance since the fetch, or not built yet
                    if tp in manager.pending:  # assigned during the fetch: read them once built
                        self._consumer.seek(tp, messages[0][3])
                    continue
                if task.stampers and tp[0] in task.stampers:
                    messages = self._stamp(task, tp, messages)
                schedule.add(tp, messages)
            processed = await self._process(budget)
            if self._flush_to_self and schedule.waiting and not await self._flush_own():
                return False
            self._stalled = not processed and schedule.pending()
            if not batches and not processed:
                self._tick_tasks()
                return False
            for mark in self._direct_marks:
                mark()
            self._tick_tasks()
            now = time.monotonic()
            if processed:
                self._status.progress_at = now
            if (
                self._since_commit >= self.commit_every
                or now - self._last_commit >= self.commit_interval
            ):
                await self.commit()
        return True

    async def _process(self, budget: int | None) -> int:
        """Run what the schedule hands out, at most `budget` source records (lock held)."""
        assert self._consumer is not None
        touched = self._touched
        positions = self._positions
        tails = self._tails
        crash = self._crash_hook is not None
        processed = events = 0
        for (tp, task, key, runner, is_source), run in self.schedule.runs(self._consumer.behind):
            n = len(run)
            if is_source:
                if budget is not None:
                    if n > budget:
                        self.schedule.give_back(tp, n - budget)
                        run, n = run[:budget], budget
                    budget -= n
                events += n
            if n:
                if runner is not None:
                    runner(run)
                else:
                    await task.process(tp[0], run)
                if crash:
                    self.stats.events += events
                    events = 0
                    self._crash_point("in-batch")
                touched[key] = task
                positions[tp] = run[-1][3] + 1
                if tails and tp in tails and not self.schedule.held(tp):
                    positions[tp] = max(positions[tp], tails.pop(tp))
                processed += n
            if budget is not None and budget <= 0:
                break  # the rest stays buffered, neither processed nor committed
        self.stats.events += events
        self._since_commit += processed
        return processed

    async def _flush_own(self) -> bool:
        """Send the records written so far, not waiting for the commit: the schedule waits
        for some of them (a repartition topic its group reads, `Schedule.waiting`), which
        a fetch sees only once sent. Nothing is committed: a crash from here on is one
        after the produce step of a commit, which recovery handles. False if the group
        expelled this worker meanwhile (then nothing is sent, as in `commit`)."""
        assert self._consumer is not None
        if await self._committer.expelled(self._consumer, self._fetched_at):
            self.transport.discard()
            self._lost(MembershipLost("expelled from the group"))
            return False
        await self.transport.flush()
        return True

    def _stamp(self, task: Task, tp: TP, messages: list[Any]) -> list[Any]:
        """Give fetched records of a source with ``timestamp=`` their event times.

        A record that gets none is a dead letter; if nothing of `tp` waits before it, its
        offset counts as processed, so it is not read (and dead-lettered) again.
        """
        stamped = task.stamp(tp[0], messages)
        if len(stamped) < len(messages):
            self._touched[id(task)] = task
            end = messages[-1][3] + 1
            if not stamped and not self.schedule.held(tp):
                self._positions[tp] = max(self._positions.get(tp, 0), end)
            elif not stamped or stamped[-1][3] + 1 < end:
                self._tails[tp] = end  # done with once the records before them are
        return stamped

    def _tick_tasks(self) -> None:
        """Idle windows: let stream time of quiet partitions follow the clock (lock held)."""
        for task in self._all_tasks:
            if task.tick():
                self._touched[id(task)] = task

    def _crash_point(self, name: str) -> None:
        """Fault injection: tell the hook passed in that the worker is at point `name`."""
        if self._crash_hook is not None:
            self._crash_hook(name)

    async def _consumer_caught_up(self) -> bool:
        """True when every assigned partition (if any) has been read to its end and processed."""
        assert self._consumer is not None
        return (
            not self._pending and not self.schedule.pending() and await self._consumer.caught_up()
        )

    async def commit(self) -> None:
        """Make everything processed since the last commit durable, in the durability order
        (`Committer.write`), unless the group expelled this worker meanwhile."""
        self._last_commit = time.monotonic()
        if self._touched and await self._settle():
            for mark in self._direct_marks:
                mark()
        if not self._touched:
            return
        assert self._consumer is not None
        if await self._committer.expelled(self._consumer, self._fetched_at):
            # Blocked or stopped so long that no heartbeat went out, and the group expelled
            # this worker: another member may own its partitions by now, so nothing
            # processed since the last commit is written (it is replayed there).
            self.transport.discard()
            self._lost(MembershipLost("expelled from the group"))
            return
        touched = list(self._touched.values())
        self._touched.clear()  # cleared in place: direct writers hold this dict
        positions = self._positions.copy()
        self._positions.clear()  # in place: the task manager holds this dict
        resume = positions.copy()
        for task in touched:
            if task.agents:
                for tp, first in task.held().items():
                    if tp in positions:
                        positions[tp] = min(positions[tp], first)
        self._since_commit = 0
        lost = await self._committer.write(
            self._consumer, touched, positions, self._all_tasks, self._fetched_at
        )
        if lost is not None:
            self._lost(lost)
            return
        self._manager.resume_at.update(resume)
        self._manager.committed.update(positions)
        for task in touched:
            if task.has_graves:  # deleted keys: the next commit deletes their graves for good
                self._touched[id(task)] = task
        await self._committer.committed(self._consumer, touched, positions)

    async def _settle(self) -> bool:
        """Wait for the async calls in flight in touched tasks and make their outputs, so
        the offsets about to be committed cover only records whose outputs are all made;
        True if anything was emitted."""
        emitted = False
        for task in list(self._touched.values()):
            if task.has_async and await task.settle():
                emitted = True
        return emitted

    # -- outside the records: agents' tables and sends from timers and tasks -------------

    def table_states(self, name: str) -> list[Any]:
        """The shards of agent table `name` this worker holds (uncommitted writes included)."""
        return [
            task.aggregates[name]
            for task in sorted(self._all_tasks, key=lambda t: t.partition)
            if name in task.aggregates
        ]

    async def send(
        self,
        topic: str,
        key: Any,
        value: Any,
        *,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
    ) -> None:
        """Write one record to `topic` now, outside any record (a timer, a task): it is
        not tied to an input, so a crash may leave it written while the timer runs again."""
        spec = next((t for t in self.plan.topics if t.name == topic), None)
        if spec is None:
            msg = f"app {self.plan.graph_id!r} has no topic {topic!r}; declare it with app.topic()"
            raise ConfigurationError(msg)
        kc, vc = self.codecs[topic]
        kb = key if key is None or kc is None else kc.encode(key)
        vb = value if value is None or vc is None else vc.encode(value)
        if partition is None:
            from flowgraph.runtime.task import key_bytes

            if key is None:
                p = 0
            elif kc is not None:  # kb is already the key codec's bytes
                p = partition_for(kb, spec.partitions)
            else:
                p = partition_for(key_bytes(key, self.hash_codecs.get(topic)), spec.partitions)
        else:
            p = partition
        ts = self.clock() if timestamp is None else timestamp
        await self.transport.produce(topic, [(p, kb, vb, ts, headers)])

    # -- reading state -------------------------------------------------------------------

    def table(self, name: str) -> Any:
        """The table of step `name` held by this worker: a dict of its keys and values (all
        of them for a global table), or, for a windowed table, a live `WindowedTableView`."""
        if name in self.global_tables.specs:
            return self.global_tables.view(name)
        return self._manager.table(name)

    def global_table(self, name: str) -> dict[Any, Any]:
        """This worker's copy of global table `name`, every partition of it."""
        return self.global_tables.view(name)

    def step_counts(self) -> dict[str, int]:
        """Records out of each step, over all tasks, those a rebalance took away included."""
        return self._manager.step_counts()
