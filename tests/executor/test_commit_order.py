"""The order of a commit's side effects, seen from a transport, a consumer and stores that
record every call (no broker): changelog records produced and acknowledged, then each store
written with the changelog offset its records were acknowledged at, then source offsets
committed. A crash between any two of them then replays input onto state that is either
the old state or the new one, never a store ahead of its changelog."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import flowgraph as fg
from flowgraph.runtime.memory import MemoryConsumer, MemoryTransport
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.state.memory import MemoryStorePartition
from flowgraph.runtime.worker import Worker

Event = tuple[Any, ...]


class RecordingStore(MemoryStorePartition):
    def __init__(self, name: str, partition: int, events: list[Event]) -> None:
        super().__init__(name, partition)
        self.events = events

    def write(self, updates: Mapping[Any, Any], *, changelog_offset: int | None = None) -> None:
        self.events.append(("write", self.name, self.partition, changelog_offset, len(updates)))
        super().write(updates, changelog_offset=changelog_offset)


class RecordingBackend(MemoryBackend):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    def open(self, store: str, partition: int) -> MemoryStorePartition:
        found = self._partitions.get((store, partition))
        if found is None:
            found = self._partitions[store, partition] = RecordingStore(
                store, partition, self.events
            )
        return found


class RecordingConsumer(MemoryConsumer):
    events: list[Event]

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        self.events.append(("commit", dict(offsets)))
        await super().commit(offsets)


class RecordingTransport(MemoryTransport):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    async def produce(self, topic: str, records: Sequence[Any]) -> dict[int, int]:
        self.events.append(("produce", topic))
        await asyncio.sleep(0)  # the acknowledgement comes later
        acked = await super().produce(topic, records)
        self.events.append(("ack", topic, dict(acked)))
        return acked

    async def flush(self) -> None:
        """Records written by tasks (sinks, repartitions, dead letters), all acknowledged."""
        self.events.append(("flush",))
        await asyncio.sleep(0)
        await super().flush()
        self.events.append(("flushed",))

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assigned: Any = None,
        on_revoked: Any = None,
        assignor: Any = None,
    ) -> MemoryConsumer:
        consumer = RecordingConsumer(self.broker, group, topics)
        consumer.events = self.events
        return consumer


def run_recorded(values: list[int]) -> tuple[list[Event], Any]:
    """A count and a failing fold over `values` (two partitions, a commit every 4 records)."""

    def fold(acc: int, v: int) -> int:
        if v < 0:
            raise ValueError("unlucky")
        return acc + v

    g = fg.Graph("t")
    s = g.source("in", key_type=int, value_type=int, partitions=2)
    s.count(name="n")
    s.aggregate(0, fold, name="total")
    events: list[Event] = []

    async def main() -> Any:
        transport = RecordingTransport(events)
        worker = Worker(g.plan(), transport, RecordingBackend(events), max_batch=2, commit_every=4)
        await worker.start()
        for i, v in enumerate(values):
            transport.broker.append("in", [(i % 2, b"%d" % (i % 3), b"%d" % v, float(i), None)])
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
        finally:
            await worker.stop()
        return worker

    worker = asyncio.run(main())
    return events, worker


def rounds(events: list[Event]) -> list[list[Event]]:
    """The events up to and including each source offset commit."""
    out: list[list[Event]] = [[]]
    for e in events:
        out[-1].append(e)
        if e[0] == "commit":
            out.append([])
    assert out[-1] == [], "every side effect is followed by a commit"
    return out[:-1]


def test_a_commit_acks_the_changelog_then_writes_stores_then_commits_offsets():
    values = [*range(20), -1]
    events, worker = run_recorded(values)
    changelogs = {s.name: s.changelog for s in worker.plan.stores}
    assert len(rounds(events)) > 2  # commit_every makes several commits
    committed: dict[Any, int] = {}
    for commit in rounds(events):
        kinds = [e[0] for e in commit]
        last_ack = max(i for i, k in enumerate(kinds) if k in ("ack", "flushed"))
        writes = [i for i, k in enumerate(kinds) if k == "write"]
        assert writes, commit
        assert "flushed" in kinds, "the records tasks wrote are flushed at every commit"
        assert last_ack < min(writes), "every produce is acknowledged before a store is written"
        assert kinds[-1] == "commit" and kinds.count("commit") == 1
        acked: dict[str, dict[int, int]] = {}
        for e in commit:
            if e[0] == "ack":
                acked.setdefault(e[1], {}).update(e[2])
        for _, store, partition, offset, _ in (commit[i] for i in writes):
            assert offset == acked[changelogs[store]][partition], (
                "a store is written with the offset its changelog records were acknowledged at"
            )
        committed.update(commit[-1][1])
    assert committed == {("in", 0): 11, ("in", 1): 10}
    # the failed fold's record, written (and flushed) once, as a dead letter
    assert len(worker.transport.broker.records(worker.plan.dlq)) == 1


def test_the_stores_hold_what_their_changelogs_hold():
    """The end state the commit order protects: store == the latest changelog entry per key."""
    _, worker = run_recorded(list(range(10)))
    broker = worker.transport.broker
    for spec in worker.plan.stores:
        for p in range(2):
            latest = {k: e for k, e, *_ in broker.logs[spec.changelog][p]}
            store = worker.backend.open(spec.name, p)
            assert dict(store.entries()) == latest
            assert store.changelog_offset() == broker.logs[spec.changelog][p].end - 1
