"""The worker: runs a physical plan on a transport and a state backend, a batch at a time.

Records are fetched a batch per partition at a time and every task runs its batch (decode,
steps, state kept in memory). Every `commit_every` records or `commit_interval` seconds, and
whenever the run goes idle or stops, a commit makes it durable (DESIGN §4), in this order:

1. (processing, as above);
2. records for repartition topics, sinks and the dead-letter topic are produced, and each
   changed key's new entry (value + source offset) goes to its changelog; all acks awaited;
3. each store partition writes its changed keys and the changelog offset in one atomic batch;
4. the source offsets are committed.

A crash anywhere in between replays input, and the per-key offsets in the stored entries
make sure no record is applied to a table twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from flowgraph.errors import GroupStalledError
from flowgraph.runtime.codecs import codec_or, topic_codecs
from flowgraph.runtime.collector import quiet_gc
from flowgraph.runtime.feeder import Feeder
from flowgraph.runtime.idle import CHECK_INTERVAL, GroupIdle
from flowgraph.runtime.recovery import POSITION_HEADER, Recovery, encode_position
from flowgraph.runtime.state.base import Entry, StateBackend, StorePartition
from flowgraph.runtime.stats import RunStats
from flowgraph.runtime.task import Failure, Task, dead_letters
from flowgraph.runtime.transport import TP, Consumer, InProcessTransport, OutRecord, Transport
from flowgraph.runtime.window_views import WindowedTableView
from flowgraph.serde import AutoCodec, Codec
from planner import logical as lg
from planner.physical import PhysicalPlan

__all__ = ["RunStats", "Worker", "topic_codecs"]

DEFAULT_MAX_BATCH = 2_000
"""Records fetched per partition at a time: small enough to stay in the CPU caches."""
COMMIT_EVERY = 100_000
"""Records processed between commits (each commit writes one changelog record per key)."""
COMMIT_INTERVAL = 1.0
"""Seconds at most between commits while records flow."""
FEED_CHUNK = 5_000


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
    ) -> None:
        self.plan = plan
        self.transport = transport
        self.backend = backend
        self.max_batch = max_batch
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._touched: dict[int, Task] = {}
        self.clock: Callable[[], float] = time.time
        """Wall-clock seconds, for window idle timeouts and `now()`; the TestDriver sets its own."""
        crash = os.environ.get("FLOWGRAPH_CRASH_AT", "")
        point, _, nth = crash.partition(":")
        self._crash_at = (point, int(nth or 1)) if point else None
        self._crash_seen = 0
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
        self.codecs = topic_codecs(plan, transport.in_process)
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
            if t.role in ("repartition", "sink")
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
            gone = {id(t) for tp, t in self.tasks.items() if tp in revoked}
            for task in self._all_tasks:
                if id(task) in gone:
                    for name in task.stores:
                        self.stores.pop((name, task.partition), None)
            self.tasks = {tp: t for tp, t in self.tasks.items() if id(t) not in gone}
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
                    tag_origins=not self.transport.in_process,
                    clock=lambda: self.clock(),  # noqa: PLW0108 - read late: drivers replace it
                )
                if task.tag_origins:
                    await self.recovery.recover_writes(task)
                self._all_tasks.append(task)
                for t in sub.source_topics:
                    if (t, p) in assignment and by_topic[t] is sub:
                        self.tasks[(t, p)] = task
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
        if not isinstance(transport, InProcessTransport) or self._consumer is None:
            return
        if not transport.in_process:  # its topics hold bytes for other processes to read
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
    ) -> RunStats:
        """Process batches until stopped, idle (if asked) or `max_events` source records.

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
        """Fetch and process one batch from every partition that has records; False if none.

        Commits when `commit_every` records or `commit_interval` seconds have passed since
        the last commit, so state is written (and changelogged) once per key per commit.
        """
        assert self._consumer is not None, "start() first"
        if self._failure is not None:
            raise self._failure
        for feeder in self._feeders:
            if not feeder.done:
                await self.transport.produce(feeder.topic, feeder.chunk(FEED_CHUNK))
        batches = await self._consumer.getmany(self.max_batch, timeout)
        if self._failure is not None:  # a rebalance during the fetch could not assign
            raise self._failure
        if not batches:
            async with self._lock:
                self._tick_tasks()
            return False
        if budget is not None:
            batches = self._trim(batches, budget)
        async with self._lock:
            for tp, messages in batches.items():
                task = self.tasks.get(tp)
                if task is None:  # revoked by a rebalance since the fetch
                    continue
                await task.process(tp[0], messages)
                self._crash_point("in-batch")
                self._touched[id(task)] = task
                self._positions[tp] = messages[-1][3] + 1
                self._since_commit += len(messages)
                if tp[0] in self._source_topics:
                    self.stats.events += len(messages)
            for mark in self._direct_marks:
                mark()
            self._tick_tasks()
            if (
                self._since_commit >= self.commit_every
                or time.monotonic() - self._last_commit >= self.commit_interval
            ):
                await self.commit()
        return True

    def _tick_tasks(self) -> None:
        """Idle windows: let stream time of quiet partitions follow the clock (lock held)."""
        for task in self._all_tasks:
            if task.tick():
                self._touched[id(task)] = task

    def _crash_point(self, name: str) -> None:
        """Fault injection for the crash tests: ``FLOWGRAPH_CRASH_AT=<point>:<n>`` makes the
        process SIGKILL itself the n-th time it passes `point` (a real ``kill -9``, placed
        exactly: in-batch, after-produce, after-store, after-commit, in-restore)."""
        if self._crash_at is None or self._crash_at[0] != name:
            return
        self._crash_seen += 1
        if self._crash_seen >= self._crash_at[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    async def _consumer_caught_up(self) -> bool:
        """True when every assigned partition has been read to its end (or none is)."""
        assert self._consumer is not None
        return await self._consumer.caught_up()

    def _trim(self, batches: dict[TP, list[Any]], budget: int) -> dict[TP, list[Any]]:
        assert self._consumer is not None
        kept: dict[TP, list[Any]] = {}
        for tp, messages in batches.items():
            if tp[0] in self._source_topics:
                if budget <= 0:
                    self._consumer.seek(tp, messages[0][3])
                    continue
                if len(messages) > budget:
                    self._consumer.seek(tp, messages[budget][3])
                    messages = messages[:budget]
                budget -= len(messages)
            if messages:
                kept[tp] = messages
        return kept

    async def commit(self) -> None:
        """Make everything processed since the last commit durable, in the order of DESIGN §4.

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
        produce: dict[str, list[OutRecord]] = {}
        changes: list[tuple[StorePartition, dict[Any, Entry | None], str]] = []
        failures: list[Failure] = []
        for task in touched:
            failures += task.take_failures()
            for store_name, dirty in task.flush().items():
                if dirty:
                    changes.append((task.stores[store_name], dirty, store_name))
            self.stats.skipped = sum(
                a.skipped for t in self._all_tasks for a in t.aggregates.values()
            )
            self.stats.late = sum(w.late for t in self._all_tasks for w in t.windowed)
        if failures:
            produce.setdefault(self.plan.dlq, []).extend(dead_letters(failures))
            self.stats.dead_letters += len(failures)
        now = time.time()
        changelog_writes = []
        for store, dirty, store_name in changes:
            changelog = self._changelogs[store_name]
            kc, vc = self.codecs[changelog]
            if vc is None:  # in process: the entry itself
                records: list[OutRecord] = [
                    (store.partition, k, e, now, None) for k, e in dirty.items()
                ]
            else:  # the value as bytes, the source offset(s) it reflects in a header
                assert kc is not None
                records = [
                    (
                        store.partition,
                        kc.encode(k),
                        None if e is None else vc.encode(e[1]),
                        now,
                        None if e is None else ((POSITION_HEADER, encode_position(e[0])),),
                    )
                    for k, e in dirty.items()
                ]
            changelog_writes.append((store, dirty, changelog, records))
        results = await asyncio.gather(
            self.transport.flush(),
            *(self.transport.produce(t, recs) for t, recs in produce.items()),
            *(self.transport.produce(topic, recs) for _, _, topic, recs in changelog_writes),
        )
        acked = results[1 + len(produce) :]
        self._crash_point("after-produce")
        for (store, dirty, _, _), last in zip(changelog_writes, acked, strict=True):
            assert last is not None
            store.write(dirty, changelog_offset=last[store.partition])
        self._crash_point("after-store")
        assert self._consumer is not None
        await self._consumer.commit(positions)
        self._crash_point("after-commit")
        await self.recovery.write_checkpoints(touched)
        for tp, position in positions.items():
            high = self._consumer.highwater(tp)
            if high is not None and tp[0] in self._source_topics:
                self.stats.lag[tp] = max(high - position, 0)

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
