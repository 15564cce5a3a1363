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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.runtime.aggregate import AggregateOp
from flowgraph.runtime.ops import unstorable
from flowgraph.runtime.recovery import POSITION_HEADER, Recovery, encode_position
from flowgraph.runtime.state.base import Entry
from flowgraph.runtime.stats import RunStats
from flowgraph.runtime.task import Failure, Task
from flowgraph.runtime.transport import TP, Consumer, MembershipLost, OutRecord, Transport
from flowgraph.runtime.windowed import WindowedAggregateOp
from flowgraph.serde import Codec
from planner.physical import PhysicalPlan

__all__ = ["Committer"]


def _position_header(entry: Entry) -> tuple[tuple[str, bytes], ...]:
    """The header of a changelog record: the source offset(s) the entry reflects."""
    return ((POSITION_HEADER, encode_position(entry[0])),)


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

    async def write(
        self,
        consumer: Consumer,
        touched: list[Task],
        positions: dict[TP, int],
        all_tasks: list[Task],
    ) -> MembershipLost | None:
        """Produce, write the stores, commit `positions`; what committing the offsets raised
        when the group no longer counts the worker in (nothing after that is done then).

        Sink, repartition and dead-letter records and the changelog records (one per changed
        key) are produced and acknowledged; then each store writes its changes with the
        changelog offset in one atomic batch; then the source offsets are committed.
        """
        changes: list[tuple[Task, AggregateOp | WindowedAggregateOp, dict[Any, Entry | None]]] = []
        for task in touched:
            for agg in task.aggregates.values():
                dirty = agg.flush()
                if dirty:
                    changes.append((task, agg, dirty))
            self.stats.add_dead_letters(task.take_failures())
        self.stats.skipped = self.stats.retired_sum("skip") + sum(
            a.skipped for t in all_tasks for a in t.aggregates.values()
        )
        self.stats.late = self.stats.retired_sum("late") + sum(
            w.late for t in all_tasks for w in t.windowed
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
        try:
            await consumer.commit(positions)
        except MembershipLost as exc:
            # The stores and changelogs hold what was processed, which is fine: whoever
            # owns the partitions now replays them from the committed offsets, and the
            # offsets in the stored entries keep those records from being applied twice.
            return exc
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
