"""Restores keep, per key, the changelog record with the highest source position.

A worker paused past its session can write a changelog record after the new owner of its
partitions wrote a newer one for the same key; its record carries the lower position and
must not win a restore (`recovery.changelog_applier`, `recovery.newer`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime.codecs import topic_codecs
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.recovery import POSITION_HEADER, changelog_applier, encode_position, newer
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker

# -- newer: ints, and tuples (one offset per input topic) ---------------------------------------


def test_an_int_position_is_newer_only_when_greater():
    assert newer(5, 4)
    assert not newer(4, 5)
    assert not newer(4, 4)


def test_a_tuple_is_newer_when_ahead_or_level_on_every_input_and_not_equal():
    assert newer((3, 7), (3, 6))
    assert newer((4, 7), (3, 6))
    assert not newer((3, 6), (3, 6))
    assert not newer((3, 6), (3, 7))


def test_incomparable_positions_are_neither_newer():
    assert not newer((4, 6), (3, 7))
    assert not newer((3, 7), (4, 6))
    assert not newer(5, (1, 2))
    assert not newer((1, 2), 5)
    assert not newer((1, 2, 3), (1, 2))


# -- the applier on hand-written changelog chunks, both stores ---------------------------------


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request, tmp_path):
    url = "memory://" if request.param == "memory" else "rocksdb://" + str(tmp_path / "state")
    opened = open_backend(url)
    yield opened
    opened.close()


def counts_graph(inputs: int = 1) -> fg.Graph:
    g = fg.Graph("t")
    streams = [
        g.source(f"in{i}", key_type=str, value_type=str, partitions=1) for i in range(inputs)
    ]
    merged = streams[0] if inputs == 1 else streams[0].merge(*streams[1:])
    merged.count(name="counts")
    return g


class Changelog:
    """Encodes changelog records of the `counts` table as a worker writes them."""

    def __init__(self, inputs: int = 1) -> None:
        plan = counts_graph(inputs).plan()
        self.codecs = topic_codecs(plan, in_process=False)
        self.topic = plan.stores[0].changelog
        self.kc, self.vc = self.codecs[self.topic]
        self.offset = 0

    def record(self, key: str, value: int | None, position: Any) -> tuple[Any, ...]:
        headers = None if position is None else ((POSITION_HEADER, encode_position(position)),)
        encoded = None if value is None else self.vc.encode(value)
        self.offset += 1
        return (self.kc.encode(key), encoded, 0.0, self.offset - 1, headers)

    def apply(self, store: Any, *records: tuple[Any, ...], applier: Any = None) -> None:
        (applier or changelog_applier(self.codecs, self.topic))(store, list(records))


def test_a_stale_record_after_a_newer_one_in_the_same_chunk_is_dropped(backend):
    log = Changelog()
    store = backend.open("t-counts", 0)
    log.apply(store, log.record("a", 7, 70), log.record("b", 1, 71), log.record("a", 5, 50))
    assert dict(store.items()) == {"a": 7, "b": 1}
    assert store.get("a") == (70, 7)
    assert store.changelog_offset() == 2


def test_a_stale_record_in_a_later_chunk_is_dropped(backend):
    log = Changelog()
    store = backend.open("t-counts", 0)
    apply = changelog_applier(log.codecs, log.topic)
    log.apply(store, log.record("a", 7, 70), applier=apply)
    log.apply(store, log.record("a", 5, 50), log.record("b", 2, 72), applier=apply)
    assert dict(store.items()) == {"a": 7, "b": 2}
    assert store.changelog_offset() == 2


def test_a_commit_cut_by_the_chunk_boundary_is_applied_whole(backend):
    """A commit's records are in no order of position, so the second chunk holds records
    below the first chunk's highest position that are nonetheless the newest of their keys."""
    log = Changelog()
    store = backend.open("t-counts", 0)
    apply = changelog_applier(log.codecs, log.topic)
    log.apply(store, log.record("a", 1, 70), log.record("b", 1, 75), applier=apply)
    log.apply(store, log.record("c", 1, 72), log.record("a", 2, 71), applier=apply)
    log.apply(store, log.record("a", 3, 73), log.record("c", 0, 60), applier=apply)
    assert store.get("a") == (73, 3)
    assert store.get("b") == (75, 1)
    assert store.get("c") == (72, 1)


def test_tuple_positions_across_chunks(backend):
    log = Changelog(inputs=2)
    store = backend.open("t-counts", 0)
    apply = changelog_applier(log.codecs, log.topic)
    log.apply(store, log.record("a", 1, (5, 1)), log.record("b", 1, (1, 5)), applier=apply)
    log.apply(
        store,
        log.record("a", 0, (4, 1)),  # behind the stored (5, 1): stale
        log.record("b", 2, (2, 5)),  # ahead of the stored (1, 5)
        log.record("c", 1, (3, 3)),  # below the highest of each input, but new
        applier=apply,
    )
    assert store.get("a") == ((5, 1), 1)
    assert store.get("b") == ((2, 5), 2)
    assert store.get("c") == ((3, 3), 1)


def test_a_stale_record_loses_to_what_the_store_held_before_the_restore(backend):
    """An incremental restore (local state, then the changelog's tail) reads the store."""
    log = Changelog()
    store = backend.open("t-counts", 0)
    log.apply(store, log.record("a", 7, 70))
    log.apply(store, log.record("a", 5, 50), log.record("a", 6, 60))  # a new applier
    assert store.get("a") == (70, 7)


def test_an_incremental_restore_remembers_what_it_read_from_the_store(backend):
    log = Changelog()
    store = backend.open("t-counts", 0)
    log.apply(store, log.record("a", 7, 70), log.record("b", 1, 10))
    apply = changelog_applier(log.codecs, log.topic)  # a restore of the tail
    log.apply(store, log.record("a", 5, 50), log.record("b", 2, 20), applier=apply)
    log.apply(
        store,
        log.record("a", 6, 60),  # still behind what the store held
        log.record("b", 1, 15),  # behind what the first chunk wrote
        log.record("c", 1, 5),
        applier=apply,
    )
    assert store.get("a") == (70, 7)
    assert store.get("b") == (20, 2)
    assert store.get("c") == (5, 1)


def test_a_newer_record_after_an_older_one_wins_as_before(backend):
    log = Changelog()
    store = backend.open("t-counts", 0)
    log.apply(store, log.record("a", 1, 10), log.record("a", 2, 20))
    log.apply(store, log.record("a", 3, 30))
    assert store.get("a") == (30, 3)


def test_a_stale_record_after_a_grave_is_dropped_and_the_grave_stays(backend):
    log = Changelog()
    store = backend.open("t-counts", 0)
    log.apply(store, log.record("a", 4, 40), log.record("a", None, 80), log.record("a", 6, 60))
    assert store.get("a") == (80, fg.DELETE)
    assert dict(store.items()) == {}


def test_a_tombstone_without_a_position_deletes_for_good_and_the_next_record_starts_afresh(
    backend,
):
    """What a paused worker's late write after it does: it comes back (documented)."""
    log = Changelog()
    store = backend.open("t-counts", 0)
    log.apply(store, log.record("a", 4, 80), log.record("a", None, None))
    assert store.get("a") is None
    log.apply(store, log.record("a", 3, 30))
    assert store.get("a") == (30, 3)


def test_tuple_positions_keep_the_newer_and_the_later_of_incomparable_ones(backend):
    log = Changelog(inputs=2)
    store = backend.open("t-counts", 0)
    log.apply(
        store,
        log.record("a", 5, (5, 9)),
        log.record("a", 4, (4, 9)),  # behind on the first input, level on the second: stale
        log.record("b", 1, (1, 1)),
        log.record("b", 2, (0, 2)),  # incomparable: the later one wins
    )
    assert store.get("a") == ((5, 9), 5)
    assert store.get("b") == ((0, 2), 2)


def test_the_applier_forgets_a_store_written_by_someone_else_meanwhile(backend):
    """A standby's store becomes active, is written by its task, then follows again."""
    log = Changelog()
    store = backend.open("t-counts", 0)
    apply = changelog_applier(log.codecs, log.topic)
    log.apply(store, log.record("a", 7, 70), applier=apply)
    store.write({"a": None}, changelog_offset=5)  # the key deleted for good elsewhere
    log.offset = 6
    log.apply(store, log.record("a", 2, 20), applier=apply)
    assert store.get("a") == (20, 2)


# -- a worker restoring a hand-written changelog -------------------------------------------------


def test_a_worker_restores_the_newest_entry_when_a_stale_record_comes_last(tmp_path):
    """The changelog a pause leaves: the new owner's records, then the paused worker's late
    ones with lower positions. A fresh worker restoring it gets the new owner's counts."""
    broker = MemoryBroker()
    graph = counts_graph()
    plan = graph.plan()
    log = Changelog()
    broker.ensure(log.topic, 1)  # not compacted: compaction would keep the last record only
    records = [
        log.record("a", 2, 1),
        log.record("b", 1, 2),
        log.record("a", 3, 3),  # the new owner
        log.record("a", 1, 0),  # the paused worker, late
    ]
    broker.append(log.topic, [(0, k, v, ts, h) for k, v, ts, _o, h in records])
    broker.ensure("in0", 1)
    broker.append("in0", [(0, b"a", b"x", 0.0, None) for _ in range(4)])
    broker.committed.setdefault("t", {})[("in0", 0)] = 4  # all four processed

    async def restore() -> dict[Any, Any]:
        backend = open_backend("rocksdb://" + str(tmp_path / "state"))
        worker = Worker(plan, MemoryTransport(broker, encoded=True), backend)
        await worker.start()
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            return dict(worker.table("counts"))
        finally:
            await worker.stop()

    assert asyncio.run(restore()) == {"a": 3, "b": 1}


# -- a commit that fails at the offset commit ----------------------------------------------------


def test_a_store_written_by_a_commit_the_group_refused_goes_back_to_its_changelog_offset(
    tmp_path, monkeypatch
):
    """The group moved on while the worker committed: its changelog records and store write
    went through, its offsets did not. The store's changelog offset goes back to where it
    was, so its next restore reads everything since (a new owner's records among them)."""
    from flowgraph.runtime.memory import MemoryConsumer
    from flowgraph.runtime.transport import MembershipLost

    broker = MemoryBroker()
    plan = counts_graph().plan()
    url = "rocksdb://" + str(tmp_path / "state")

    async def scenario() -> tuple[int | None, int | None, int, dict[Any, Any]]:
        backend = open_backend(url)
        worker = Worker(plan, MemoryTransport(broker, encoded=True), backend, commit_every=10**9)
        await worker.start()
        try:
            broker.append("in0", [(0, b"a", b"x", 0.0, None)] * 3)
            while await worker.step():
                pass
            await worker.commit()
            store = backend.open("t-counts", 0)
            before = store.changelog_offset()

            async def refused(self: MemoryConsumer, offsets: Any) -> None:
                raise MembershipLost("the group moved on")

            monkeypatch.setattr(MemoryConsumer, "commit", refused)
            broker.append("in0", [(0, b"a", b"x", 0.0, None)] * 2)
            while await worker.step():
                pass
            await worker.commit()
            return before, store.changelog_offset(), worker.lost_memberships, dict(store.items())
        finally:
            monkeypatch.undo()
            await worker.stop(commit=False)

    before, after, lost, stored = asyncio.run(scenario())
    assert lost == 1
    assert before is not None
    assert after == before  # rewound: the next restore reads this commit's records again
    assert stored == {"a": 5}  # written, with its position: a replay will not count it twice

    async def restart() -> dict[Any, Any]:
        backend = open_backend(url)
        worker = Worker(plan, MemoryTransport(broker, encoded=True), backend)
        await worker.start()
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            return dict(worker.table("counts"))
        finally:
            await worker.stop()

    assert asyncio.run(restart()) == {"a": 5}
