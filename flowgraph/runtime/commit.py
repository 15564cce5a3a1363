"""The commit protocol: what makes the records a worker processed durable, and in what order.

A commit runs every `commit_every` records or `commit_interval` seconds, and whenever the
run goes idle or stops (see worker.py), in this order (the durability order of
docs/concepts/planner.md):

1. (processing: the worker ran records through the tasks, state kept in memory);
2. records for repartition topics, sinks and the dead-letter topic are produced, and each
   changed key's new entry (value + source offset) goes to its changelog; all acks awaited;
3. each store partition writes its changed keys and the changelog offset in one atomic batch;
4. the source offsets are committed.

A crash anywhere in between replays input, and the per-key offsets in the stored entries
make sure no record is applied to a table twice. A deleted key keeps its offset as a grave
until the commit after the one that deleted it (see aggregate.py), so a task that wrote
graves takes part in the next commit even if it processes nothing.

A worker whose event loop stood still (stopped with SIGSTOP, a suspended VM, a long blocking
call) sent no heartbeat meanwhile; if that lasted a session, the group gave its partitions to
another member, and whatever it writes now races the new owner. So before step 2 it asks the
group whether it is still a member when the loop may have stood still for half a session
since it last knew (`Committer.expelled`, watched by `Stall`), and writes nothing if not. A
pause that starts after that check, inside the produce requests, is not caught: those records
land after the new owner's (see docs/concepts/state.md, "Failure model").
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.runtime.aggregate import AggregateOp
from flowgraph.runtime.ops import unstorable
from flowgraph.runtime.recovery import POSITION_HEADER, Recovery, encode_position
from flowgraph.runtime.state.base import Entry
from flowgraph.runtime.stats import RunStats
from flowgraph.runtime.stream_join import StreamJoinOp
from flowgraph.runtime.task import Failure, Task
from flowgraph.runtime.transport import TP, Consumer, MembershipLost, OutRecord, Transport
from flowgraph.runtime.windowed import WindowedAggregateOp
from flowgraph.serde import Codec
from planner.physical import PhysicalPlan

__all__ = ["Committer", "Stall"]

STALL_TICK = 0.25
"""Seconds between the ticks by which `Stall` sees that the event loop runs."""
STALL_IDLE = 60.0
"""Seconds without a commit after which `Stall` stops ticking (until the next one)."""


def _position_header(entry: Entry) -> tuple[tuple[str, bytes], ...]:
    """The header of a changelog record: the source offset(s) the entry reflects."""
    return ((POSITION_HEADER, encode_position(entry[0])),)


class Stall:
    """Notices that the event loop stood still for longer than `limit` seconds.

    A timer ticks every `STALL_TICK` seconds (nothing per record) and notes when it ran; a
    gap between two ticks, or since the last one, longer than `limit` is a stall. It ticks
    while someone asks (`watch`), and stops after `STALL_IDLE` seconds without a question,
    so a stopped worker leaves no timer behind; the next question after that counts the
    silence as a stall, which costs one membership check.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.last = time.monotonic()
        """When the last tick ran."""
        self.ended = -math.inf
        """When the last stall seen by a tick ended."""
        self._asked = self.last
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """Keep ticking on the running event loop (start again if stopped or on a new one)."""
        loop = asyncio.get_running_loop()
        self._asked = time.monotonic()
        if self._timer is None or loop is not self._loop:
            if self._timer is not None:
                self._timer.cancel()
            self._loop = loop
            self._timer = loop.call_later(STALL_TICK, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self.last > self.limit:
            self.ended = now
        self.last = now
        if now - self._asked > STALL_IDLE or self._loop is None:
            self._timer = None
            return
        self._timer = self._loop.call_later(STALL_TICK, self._tick)

    def since(self, moment: float) -> bool:
        """True if the loop stood still after `moment` (or stands still since the last tick)."""
        return self.ended > moment or time.monotonic() - self.last > self.limit


class Committer:
    """Steps 2 to 4 of the durability order for the tasks a worker touched since its last
    commit; the worker decides when to commit and what (see `Worker.commit`)."""

    def __init__(
        self,
        plan: PhysicalPlan,
        transport: Transport,
        codecs: dict[str, tuple[Codec | None, Codec | None]],
        stats: RunStats,
        recovery: Recovery,
        crash_point: Callable[[str], None],
    ) -> None:
        self.transport = transport
        self.codecs = codecs
        self.stats = stats
        self.recovery = recovery
        self._crash_point = crash_point
        self.changelogs = {s.name: s.changelog for s in plan.stores}
        """Per store, its changelog topic."""
        self._source_topics = {t.name for t in plan.topics if t.role in ("source", "feed")}
        self._half_session = transport.session_timeout / 2
        self.stall = Stall(self._half_session) if transport.session_timeout > 0 else None
        """Watches the event loop; None where no group can expel the worker (in process)."""
        self._member_at = time.monotonic()
        """When the group last counted this worker in (an offset commit, a check)."""

    async def expelled(self, consumer: Consumer, fetched_at: float) -> bool:
        """True when the group no longer counts this worker in. Asked (`still_member`) only
        when no heartbeat may have gone out for half a session: the last fetch (`fetched_at`)
        is that old, or the event loop stood still since the group last counted the worker
        in. Otherwise False at once."""
        if self.stall is None:  # in process: the only member, nothing can expel it
            return not await consumer.still_member()
        self.stall.watch()
        if (
            not self.stall.since(self._member_at)
            and time.monotonic() - fetched_at <= self._half_session
        ):
            return False
        for _ in range(3):  # a pause while the answer was on its way makes it stale: ask again
            asked = time.monotonic()
            if not await consumer.still_member():
                return True
            if time.monotonic() - asked <= self._half_session:
                self._member_at = asked
                return False
        return False  # the group keeps answering late: the offset commit will tell

    async def write(
        self,
        consumer: Consumer,
        touched: list[Task],
        positions: dict[TP, int],
        all_tasks: list[Task],
        fetched_at: float = math.inf,
    ) -> MembershipLost | None:
        """Produce, write the stores, commit `positions`; what committing the offsets raised
        when the group no longer counts the worker in (nothing after that is done then).

        Sink, repartition and dead-letter records and the changelog records (one per changed
        key) are produced and acknowledged; then each store writes its changes with the
        changelog offset in one atomic batch; then the source offsets are committed. Right
        before the first produce, a worker whose loop may have stood still since its last
        fetch (`fetched_at`) or check asks again whether it is still a member, and if not,
        drops everything buffered and writes nothing.
        """
        changes: list[
            tuple[Task, AggregateOp | WindowedAggregateOp | StreamJoinOp, dict[Any, Entry | None]]
        ] = []
        for task in touched:
            for agg in task.aggregates.values():
                dirty = agg.flush()
                if dirty:
                    changes.append((task, agg, dirty))
            self.stats.add_dead_letters(task.take_failures())
        self.stats.skipped = self.stats.retired_sum("skip") + sum(
            a.skipped for t in all_tasks for a in t.aggregates.values()
        )
        self.stats.late = (
            self.stats.retired_sum("late")
            + sum(w.late for t in all_tasks for w in t.windowed)
            + sum(j.late for t in all_tasks for j in t.stream_joins)
        )
        now = time.time()
        changelog_writes = []
        for task, agg, dirty in changes:
            store = agg.store
            changelog = self.changelogs[store.name]
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
        for task in touched:
            self.stats.add_dead_letters(task.take_failures())
        for task in touched:
            if task.dedupe:
                task.retire_commit_marks()
        if await self.expelled(consumer, fetched_at):
            self.transport.discard()
            return MembershipLost("expelled from the group (the event loop stood still)")
        results = await asyncio.gather(
            self.transport.flush(),
            *(self.transport.produce(topic, recs) for _, _, topic, recs in changelog_writes),
        )
        acked = results[1:]
        self._crash_point("after-produce")
        before = [store.changelog_offset() for store, _, _, _ in changelog_writes]
        for (store, dirty, _, _), last in zip(changelog_writes, acked, strict=True):
            assert last is not None
            store.write(dirty, changelog_offset=last[store.partition])
        self._crash_point("after-store")
        asked = time.monotonic()
        try:
            await consumer.commit(positions)
        except MembershipLost as exc:
            # The changelogs hold what was processed, which is fine: whoever owns the
            # partitions now replays them from the committed offsets, and the offsets in
            # the entries keep those records from being applied twice. But the new owner
            # may have written newer records before this worker's landed, and a restore
            # from this store would start after them: each store goes back to where its
            # changelog stood before this commit, so its next restore reads them all and
            # keeps, per key, the newest (`recovery.changelog_applier`).
            for (store, _, _, _), offset in zip(changelog_writes, before, strict=True):
                if offset is None:
                    store.clear()
                else:
                    store.write({}, changelog_offset=offset)
            return exc
        self._member_at = asked
        self._crash_point("after-commit")
        return None

    async def committed(
        self, consumer: Consumer, touched: list[Task], positions: dict[TP, int]
    ) -> None:
        """After the offsets are committed: checkpoint what the tasks wrote, note the lag."""
        await self.recovery.write_checkpoints(touched)
        for tp, position in positions.items():
            high = consumer.highwater(tp)
            if high is not None and tp[0] in self._source_topics:
                self.stats.lag[tp] = max(high - position, 0)

    def _storable(
        self,
        task: Task,
        agg: AggregateOp | WindowedAggregateOp | StreamJoinOp,
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
        changelog = self.changelogs[store.name]
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
