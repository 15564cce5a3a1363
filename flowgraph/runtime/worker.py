"""The worker: runs a physical plan on a transport and a state backend, a batch at a time.

Records are fetched a batch per partition at a time into a `Schedule`, which hands them to
the tasks in timestamp order across the partitions of each sub-topology, in runs (decode,
steps, state kept in memory). Every `commit_every` records or `commit_interval` seconds, and
whenever the run goes idle or stops, a commit makes it durable, in this order (the
durability order of docs/concepts/planner.md):

1. (processing, as above);
2. records for repartition topics, sinks and the dead-letter topic are produced, and each
   changed key's new entry (value + source offset) goes to its changelog; all acks awaited;
3. each store partition writes its changed keys and the changelog offset in one atomic batch;
4. the source offsets are committed.

A crash anywhere in between replays input, and the per-key offsets in the stored entries
make sure no record is applied to a table twice. A deleted key keeps its offset as a grave
until the commit after the one that deleted it (see aggregate.py), so a task that wrote
graves takes part in the next commit even if it processes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.errors import ConfigurationError, GroupStalledError
from flowgraph.runtime.aggregate import AggregateOp
from flowgraph.runtime.codecs import codec_or, topic_codecs
from flowgraph.runtime.collector import quiet_gc
from flowgraph.runtime.feeder import Feeder
from flowgraph.runtime.idle import CHECK_INTERVAL, GroupIdle
from flowgraph.runtime.ops import unstorable
from flowgraph.runtime.recovery import POSITION_HEADER, Recovery, encode_position
from flowgraph.runtime.schedule import (
    DEFAULT_MAX_IDLE,
    DEFAULT_MAX_SKEW,
    Schedule,
    time_ordered,
)
from flowgraph.runtime.state.base import Entry, StateBackend, StorePartition
from flowgraph.runtime.stats import RunStats
from flowgraph.runtime.task import Failure, Task
from flowgraph.runtime.transport import TP, Consumer, InProcessTransport, OutRecord, Transport
from flowgraph.runtime.window_views import WindowedTableView
from flowgraph.runtime.windowed import WindowedAggregateOp
from flowgraph.serde import AutoCodec, Codec
from planner import logical as lg
from planner.physical import PhysicalPlan

__all__ = ["DEFAULT_MAX_IDLE", "DEFAULT_MAX_SKEW", "RunStats", "Worker", "topic_codecs"]


DEFAULT_MAX_BATCH = 2_000
"""Records fetched per partition at a time: small enough to stay in the CPU caches. A
partition is fetched for while it buffers fewer than this many records."""
COMMIT_EVERY = 100_000
"""Records processed between commits (each commit writes one changelog record per key)."""
COMMIT_INTERVAL = 1.0
"""Seconds at most between commits while records flow."""
FEED_CHUNK = 5_000


def _position_header(entry: Entry) -> tuple[tuple[str, bytes], ...]:
    """The header of a changelog record: the source offset(s) the entry reflects."""
    return ((POSITION_HEADER, encode_position(entry[0])),)


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
    ) -> None:
        """`crash_point` is fault injection for tests: called with the name of each point
        passed (in-batch, after-produce, after-store, after-commit, in-restore), it may raise
        or kill the process there (see `flowgraph.runtime.faults`)."""
        _check_settings(max_batch, max_skew, max_idle)
        self.plan = plan
        self.transport = transport
        self.backend = backend
        self.max_batch = max_batch
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self.schedule = Schedule(capacity=max_batch, max_skew=max_skew, max_idle=max_idle)
        """Fetched records not processed yet, handed out in timestamp order."""
        self._time_ordered = time_ordered(plan)
        self._tails: dict[TP, int] = {}
        """Per partition, the end of dead letters that `_stamp` dropped after the last
        buffered record: its offset to commit once that record is processed."""
        self._stalled = False
        """The last step processed nothing while records were buffered: wait in the fetch."""
        self._touched: dict[int, Task] = {}
        self.clock: Callable[[], float] = time.time
        """Wall-clock seconds, for window idle timeouts and `now()`; the TestDriver sets its own."""
        self._crash_hook = crash_point
        self._failure: Exception | None = None
        """What assigning partitions raised, raised again by `step` (see `_on_assigned`)."""
        self._joined = False
        """True once the group gave this worker its partitions (maybe none), and no
        rebalance has begun since."""
        self._lock = asyncio.Lock()
        """Held while processing and committing, so a rebalance never cuts a batch in two."""
        self._positions: dict[TP, int] = {}
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self._changelogs = {s.name: s.changelog for s in plan.stores}
        self.stats = RunStats()
        self.codecs = topic_codecs(plan, in_process=not transport.encoded)
        self.hash_codecs: dict[str, Codec] = {
            t.name: codec_or(t.key_type, AutoCodec()) for t in plan.topics
        }
        self.tasks: dict[TP, Task] = {}
        self.stores: dict[tuple[str, int], StorePartition] = {}
        self._consumer: Consumer | None = None
        self._feeders: list[Feeder] = []
        self._source_topics = {t.name for t in plan.topics if t.role in ("source", "feed")}
        self._all_tasks: list[Task] = []
        self._writers: dict[str, Any] = {}
        self._direct: dict[str, list[int]] = {}
        """Per directly wired topic: the end offsets of its partitions when it was wired."""
        self._direct_marks: list[Callable[[], None]] = []
        self.recovery = Recovery(plan, transport, self.codecs, self.stats, self._crash_point)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create topics, join the group, open and restore stores, build tasks."""
        await self.transport.start()
        await self.transport.create_topics(self.plan.topics)
        self._writers = {
            t.name: self.transport.writer(t.name)
            for t in self.plan.topics
            if t.role in ("repartition", "sink", "dlq")
        }
        for sub in self.plan.subtopologies:
            for step in sub.steps:
                if isinstance(step, lg.Source) and step.feed is not None:
                    spec = self.plan.topic(step.topic)
                    self._feeders.append(Feeder(step, spec, self.codecs[spec.name][1]))
        entry_topics = [t for sub in self.plan.subtopologies for t in sub.source_topics]
        self._consumer = await self.transport.consumer(
            self.plan.graph_id, entry_topics, self._on_assigned, self._on_revoked
        )
        if self.transport.in_process:  # one member owns everything, at once
            await self._assign(self._consumer.assignment())
            self._joined = True

    async def _on_assigned(self, assignment: frozenset[TP]) -> None:
        """A rebalance gave this worker `assignment`: restore its stores, build its tasks.

        The consumer calls this and only logs what it raises, so a failure (a changelog
        that cannot be restored) is kept and raised by the next `step`: the run stops on it
        instead of going on without the state.
        """
        async with self._lock:
            try:
                await self._assign(assignment)
            except Exception as exc:
                self._failure = exc
            self._joined = True

    async def _on_revoked(self, revoked: frozenset[TP]) -> None:
        """A rebalance takes `revoked` away: commit everything, then drop their tasks."""
        self._joined = False  # until the rebalance settles: an idle worker then leaves cleanly
        async with self._lock:
            await self.commit()
            if self._touched:  # graves this commit wrote: one more deletes them for good
                await self.commit()
            gone = {id(t) for tp, t in self.tasks.items() if tp in revoked}
            for task in self._all_tasks:
                if id(task) in gone:
                    for name in task.stores:
                        self.stores.pop((name, task.partition), None)
            self.tasks = {tp: t for tp, t in self.tasks.items() if id(t) not in gone}
            self.schedule.drop(revoked)
            for tp in revoked:
                self._tails.pop(tp, None)
            self._all_tasks = [t for t in self._all_tasks if id(t) not in gone]

    async def _assign(self, assignment: frozenset[TP]) -> None:
        self.recovery.begin()
        by_topic = {t: sub for sub in self.plan.subtopologies for t in sub.source_topics}
        # Downstream first, so a repartition topic read in this process can be wired to its
        # readers before the tasks that write it are compiled.
        for sub in reversed(self.plan.subtopologies):
            for p in range(sub.partitions):
                if not any((t, p) in assignment for t in sub.source_topics):
                    continue
                if any((t, p) in self.tasks for t in sub.source_topics):
                    continue  # already running here
                stores: dict[str, StorePartition] = {}
                for spec in self.plan.stores:
                    if any(s.id == spec.step for s in sub.steps):
                        store = self.backend.open(spec.name, p)
                        await self.recovery.restore(store, (spec.changelog, p))
                        stores[spec.name] = self.stores[(spec.name, p)] = store
                task = Task(
                    self.plan,
                    sub,
                    p,
                    stores,
                    self.codecs,
                    self.hash_codecs,
                    self._writers,
                    tag_origins=self.transport.encoded,
                    clock=lambda: self.clock(),  # noqa: PLW0108 - read late: drivers replace it
                )
                if task.tag_origins:
                    await self.recovery.recover_writes(task)
                self._all_tasks.append(task)
                # All its partitions are merged when what it writes reaches windows
                # through repartition topics (its order is their readers' order); else
                # only its task's own inputs, as in Kafka Streams.
                group = sub.id if sub.id in self._time_ordered else (sub.id, p)
                for t in sub.source_topics:
                    if (t, p) in assignment and by_topic[t] is sub:
                        self.tasks[(t, p)] = task
                        source = t in self._source_topics
                        handle = ((t, p), task, id(task), task.runner(t), source)
                        self.schedule.assign((t, p), group, handle)
            for t in sub.source_topics:
                if self.plan.topic(t).role == "repartition":
                    await self._wire_direct(t)

    async def _wire_direct(self, topic: str) -> None:
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
            or self._consumer is None
        ):
            return
        parts = self.plan.topic(topic).partitions
        tasks = [self.tasks.get((topic, p)) for p in range(parts)]
        if any(t is None or t.has_async for t in tasks):
            return
        first = [transport.end(topic, p) for p in range(parts)]
        for p, end in enumerate(first):
            if (await self._consumer.committed((topic, p)) or 0) < end:
                return  # records left by an earlier worker: read them through the log
        delivers = [t.entry_push(topic) for t in tasks if t is not None]
        self._direct[topic] = first
        touched = self._touched
        readers = {id(t): t for t in tasks if t is not None}

        def mark() -> None:
            touched.update(readers)

        self._direct_marks.append(mark)
        self._writers[topic] = transport.direct_writer(topic, delivers)

    async def stop(self) -> None:
        """Commit what is processed, leave the group and close every store."""
        try:
            if self._consumer is not None:
                await self.commit()
                if self._touched:  # graves this commit wrote: one more deletes them for good
                    await self.commit()
                await self._consumer.stop()
        finally:
            self.backend.close()
            await self.transport.stop()
            self.stats.finished = time.monotonic()

    # -- running -------------------------------------------------------------------------

    async def run(
        self,
        *,
        until_idle: bool = False,
        max_events: int | None = None,
        stop: asyncio.Event | None = None,
        idle_wait: float = 0.05,
        stall_timeout: float | None = None,
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
        `GroupStalledError`. Whatever ends the run, everything processed is committed first.
        """
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
                budget = None if max_events is None else max_events - self.stats.events
                wait = 0.0 if self.transport.in_process else idle_wait
                if await self.step(budget, wait):
                    if group is not None:
                        group.progressed()
                    continue
                async with self._lock:
                    await self.commit()
                if until_idle and all(f.done for f in self._feeders):
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
                await self._consumer.commit(ahead)

    async def step(self, budget: int | None = None, timeout: float = 0.0) -> bool:
        """Fetch for the partitions whose buffers run low, then run what the schedule hands
        out (at most `budget` source records); False if nothing was fetched or run.

        Commits when `commit_every` records or `commit_interval` seconds have passed since
        the last commit, so state is written (and changelogged) once per key per commit.
        """
        assert self._consumer is not None, "start() first"
        if self._failure is not None:
            raise self._failure
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
        if self._failure is not None:  # a rebalance during the fetch could not assign
            raise self._failure
        async with self._lock:
            for tp, messages in batches.items():
                task = self.tasks.get(tp)
                if task is None:  # revoked by a rebalance since the fetch
                    continue
                if task.stampers and tp[0] in task.stampers:
                    messages = self._stamp(task, tp, messages)
                schedule.add(tp, messages)
            processed = await self._process(budget)
            self._stalled = not processed and schedule.pending()
            if not batches and not processed:
                self._tick_tasks()
                return False
            for mark in self._direct_marks:
                mark()
            self._tick_tasks()
            if (
                self._since_commit >= self.commit_every
                or time.monotonic() - self._last_commit >= self.commit_interval
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
        return not self.schedule.pending() and await self._consumer.caught_up()

    async def commit(self) -> None:
        """Make everything processed since the last commit durable, in the durability order.

        Sink, repartition and dead-letter records and the changelog records (one per changed
        key) are produced and acknowledged; then each store writes its changes with the
        changelog offset in one atomic batch; then the source offsets are committed.
        """
        self._last_commit = time.monotonic()
        if not self._touched:
            return
        touched = list(self._touched.values())
        self._touched.clear()  # cleared in place: direct writers hold this dict
        positions, self._positions = self._positions, {}
        self._since_commit = 0
        changes: list[tuple[Task, AggregateOp | WindowedAggregateOp, dict[Any, Entry | None]]] = []
        for task in touched:
            for agg in task.aggregates.values():
                dirty = agg.flush()
                if dirty:
                    changes.append((task, agg, dirty))
            self.stats.dead_letters += task.take_failed()
        self.stats.skipped = sum(a.skipped for t in self._all_tasks for a in t.aggregates.values())
        self.stats.late = sum(w.late for t in self._all_tasks for w in t.windowed)
        now = time.time()
        changelog_writes = []
        for task, agg, dirty in changes:
            store = agg.store
            changelog = self._changelogs[store.name]
            kc, vc = self.codecs[changelog]
            # A deleted key's grave is a tombstone that keeps its position in the header
            # (see aggregate.py); deleting the grave for good is a tombstone without one.
            if vc is None:  # in process: the entry itself
                records: list[OutRecord] = [
                    (store.partition, k, e, now, None)
                    if e is None or e[1] is not DELETE
                    else (store.partition, k, None, now, _position_header(e))
                    for k, e in dirty.items()
                ]
            else:  # the value as bytes, the source offset(s) it reflects in a header
                assert kc is not None
                try:
                    records = [
                        (
                            store.partition,
                            kc.encode(k),
                            None if e is None or e[1] is DELETE else vc.encode(e[1]),
                            now,
                            None if e is None else _position_header(e),
                        )
                        for k, e in dirty.items()
                    ]
                except Exception:  # some entry cannot be stored: find it, key by key
                    records = self._storable(task, agg, dirty, kc, vc, now)
                    if not records:
                        continue
            changelog_writes.append((store, dirty, changelog, records))
        self.stats.dead_letters += sum(task.take_failed() for task in touched)
        for task in touched:
            if task.dedupe:
                task.retire_commit_marks()
        results = await asyncio.gather(
            self.transport.flush(),
            *(self.transport.produce(topic, recs) for _, _, topic, recs in changelog_writes),
        )
        acked = results[1:]
        self._crash_point("after-produce")
        for (store, dirty, _, _), last in zip(changelog_writes, acked, strict=True):
            assert last is not None
            store.write(dirty, changelog_offset=last[store.partition])
        self._crash_point("after-store")
        assert self._consumer is not None
        await self._consumer.commit(positions)
        self._crash_point("after-commit")
        for task in touched:
            if task.has_graves:  # deleted keys: the next commit deletes their graves for good
                self._touched[id(task)] = task
        await self.recovery.write_checkpoints(touched)
        for tp, position in positions.items():
            high = self._consumer.highwater(tp)
            if high is not None and tp[0] in self._source_topics:
                self.stats.lag[tp] = max(high - position, 0)

    def _storable(
        self,
        task: Task,
        agg: AggregateOp | WindowedAggregateOp,
        dirty: dict[Any, Entry | None],
        kc: Codec,
        vc: Codec,
        now: float,
    ) -> list[OutRecord]:
        """Changelog records of the entries of `dirty` that encode; each other entry is
        dead-lettered, dropped from `dirty`, and its key goes back to its stored state.

        Only taken when encoding the whole batch failed, so a normal commit pays nothing.
        """
        store = agg.store
        changelog = self._changelogs[store.name]
        records: list[OutRecord] = []
        for k, e in list(dirty.items()):
            part = "key"
            try:
                kb = kc.encode(k)
                part = "value"
                vb = None if e is None or e[1] is DELETE else vc.encode(e[1])
            except Exception as exc:
                del dirty[k]
                agg.revert(k)
                position: Any = -1 if e is None else e[0]
                error = unstorable(exc, agg.node.id, k, changelog, part, reverted=True)
                rec = (k, None if e is None else e[1], now, position, None)
                topic = ",".join(task.sub.source_topics)
                last = position if isinstance(position, int) else max(position)
                task.fail_at_commit(Failure(agg.node.id, error, rec, topic, task.partition), last)
                continue
            headers = None if e is None else _position_header(e)
            records.append((store.partition, kb, vb, now, headers))
        return records

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
            for task in sorted(self._all_tasks, key=lambda t: t.partition)
            for op in task.windowed
            if op.node.id == name
        ]
        node = next(n for sub in self.plan.subtopologies for n in sub.steps if n.id == name)
        if isinstance(node, lg.Aggregate) and node.window is not None:
            return WindowedTableView(name, windowed, lambda: self.clock())  # noqa: PLW0108
        result: dict[Any, Any] = {}
        for (store_name, _), store in sorted(self.stores.items(), key=lambda i: i[0][1]):
            if store_name == spec.name:
                result.update(store.items())
        return result

    def step_counts(self) -> dict[str, int]:
        """Records out of each step, over all tasks."""
        counts: dict[str, int] = {}
        for task in self._all_tasks:
            for step, n in task.counts.items():
                counts[step] = counts.get(step, 0) + n
        entries = {
            s.topic: s.id
            for sub in self.plan.subtopologies
            for s in sub.steps
            if isinstance(s, lg.Repartition)
        }
        for topic, first in self._direct.items():
            step = entries[topic]
            transport: Any = self.transport
            ends = [transport.end(topic, p) for p in range(len(first))]
            counts[step] = counts.get(step, 0) + sum(ends) - sum(first)
        return counts
