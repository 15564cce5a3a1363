"""Per-key offsets: input replayed after a restart is never applied to a table twice.

Each stored value carries the source offset of the last record applied to it
(flowgraph/runtime/aggregate.py); a record whose offset is not above it is skipped. These
tests run `Worker` on a `MemoryBroker` that outlives it, rewind the group's committed offsets
(what a crash before the commit leaves) and run again on the same broker and store.
"""

from __future__ import annotations

import asyncio

import pytest

import flowgraph as fg
from tests.executor.harness import REPLAY_THROUGH_REPARTITION_BUG, Cluster

VALUES = range(20)


def records(values=VALUES, partitions: int = 2) -> list[tuple[int, bytes, bytes]]:
    """Key ``v % 4`` (so each key lives in one partition, ``key % partitions``), value v."""
    return [((v % 4) % partitions, b"%d" % (v % 4), b"%d" % v) for v in values]


def per_key(values=VALUES) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for v in values:
        groups.setdefault(v % 4, []).append(v)
    return groups


def keyed_graph() -> fg.Graph:
    g = fg.Graph("t")
    src = g.source("in", key_type=int, value_type=int, partitions=2)
    src.count(name="count").changes().to("counts")
    src.sum(name="sum")
    src.reduce(lambda a, b: a * 2 + b, name="fold")
    src.aggregate(list, lambda acc, v: [*acc, v], name="history")
    return g


def expected_tables(values=VALUES) -> dict[str, dict[int, object]]:
    groups = per_key(values)

    def fold(vs: list[int]) -> int:
        acc = vs[0]
        for v in vs[1:]:
            acc = acc * 2 + v
        return acc

    return {
        "count": {k: len(vs) for k, vs in groups.items()},
        "sum": {k: sum(vs) for k, vs in groups.items()},
        "fold": {k: fold(vs) for k, vs in groups.items()},
        "history": groups,
    }


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path) -> str:
    return "memory://" if request.param == "memory" else "rocksdb://" + str(tmp_path)


def test_replay_from_the_start_applies_nothing_twice(store):
    cluster = Cluster(keyed_graph(), store=store)
    cluster.run({"in": records()})
    assert cluster.last_tables == expected_tables()
    counts = cluster.output("counts")
    cluster.reset_committed()
    worker = cluster.run()
    assert cluster.last_tables == expected_tables()
    assert cluster.output("counts") == counts  # skipped records emit no update either
    assert worker.stats.skipped == 4 * len(VALUES)  # every record, in each of 4 aggregates


def test_replay_then_more_input_continues_exactly(store):
    cluster = Cluster(keyed_graph(), store=store)
    cluster.run({"in": records(range(12))})
    cluster.reset_committed()
    cluster.run({"in": records(range(12, 20))})
    assert cluster.last_tables == expected_tables()
    assert sorted(cluster.output("counts"))[-1] == (3, 5)


def test_partial_replay(store):
    """A crash after some of the batches were committed replays only the rest."""
    cluster = Cluster(keyed_graph(), store=store)
    cluster.run({"in": records()}, max_batch=3)
    committed = cluster.broker.committed["t"]
    for tp in committed:
        committed[tp] = 4
    worker = cluster.run(max_batch=3)
    assert cluster.last_tables == expected_tables()
    assert worker.stats.skipped == 4 * (len(VALUES) - 8)


def test_batch_size_does_not_change_the_tables():
    for max_batch in (1, 2, 7, 1000):
        cluster = Cluster(keyed_graph())
        cluster.run({"in": records()}, max_batch=max_batch)
        assert cluster.last_tables == expected_tables(), max_batch


def test_replay_of_a_co_partitioned_merge():
    """A table fed by two topics keeps one offset per topic."""
    g = fg.Graph("t")
    a = g.source("a", key_type=int, value_type=int, partitions=2)
    b = g.source("b", key_type=int, value_type=int, partitions=2)
    a.merge(b).sum(name="sum")
    cluster = Cluster(g)
    cluster.run({"a": records(range(10)), "b": records(range(100, 110))})
    expected = {k: sum(per_key(range(10))[k]) + sum(per_key(range(100, 110))[k]) for k in range(4)}
    assert cluster.last_tables == {"sum": expected}
    cluster.reset_committed(["a"])
    cluster.run({"b": records(range(1000, 1002))})
    expected[0] += 1000
    expected[1] += 1001
    assert cluster.last_tables == {"sum": expected}
    cluster.reset_committed()
    cluster.run()
    assert cluster.last_tables == {"sum": expected}


def repartitioned(async_fold: bool) -> fg.Graph:
    g = fg.Graph("t")
    keyed = g.source("in", key_type=int, value_type=int, partitions=2).key_by(
        lambda v: v % 3, name="mod3"
    )
    if async_fold:

        async def plus_one(acc: int, v: int) -> int:
            await asyncio.sleep(0)
            return acc + 1

        keyed.aggregate(0, plus_one, name="count")
    else:
        keyed.count(name="count")
    return g


EXPECTED_MOD3 = {"count": {0: 7, 1: 7, 2: 6}}


@pytest.mark.xfail(strict=True, reason=REPLAY_THROUGH_REPARTITION_BUG)
def test_replay_of_the_source_through_an_in_process_repartition():
    cluster = Cluster(repartitioned(async_fold=False))
    cluster.run({"in": records()})
    assert cluster.last_tables == EXPECTED_MOD3
    cluster.reset_committed(["in"])
    cluster.run()
    assert cluster.last_tables == EXPECTED_MOD3


@pytest.mark.xfail(strict=True, reason=REPLAY_THROUGH_REPARTITION_BUG)
def test_replay_of_the_source_through_a_repartition_log():
    """The same, with an async fold, which reads the repartition topic through its log."""
    cluster = Cluster(repartitioned(async_fold=True))
    cluster.run({"in": records()})
    assert cluster.last_tables == EXPECTED_MOD3
    cluster.reset_committed(["in"])
    cluster.run()
    assert cluster.last_tables == EXPECTED_MOD3


def test_rewinding_a_trimmed_repartition_topic():
    """Committed repartition records are dropped; rewinding past them must not crash."""
    cluster = Cluster(repartitioned(async_fold=True))
    cluster.run({"in": records()})
    cluster.reset_committed()
    cluster.run()
    assert cluster.last_tables["count"].keys() == {0, 1, 2}


def test_a_restart_on_the_same_broker_and_store_continues_after_a_repartition():
    cluster = Cluster(repartitioned(async_fold=False))
    cluster.run({"in": records(range(10))})
    cluster.run({"in": records(range(10, 20))})
    assert cluster.last_tables == EXPECTED_MOD3
