"""The RocksDB store gives the tables the memory store gives, and keeps them across runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import flowgraph as fg
from tests.executor.harness import EXECUTORS, Cluster


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


VALUES = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7]


def build(s: fg.Stream) -> None:
    keyed = s.key_by(lambda v: v % 3, name="mod3")
    keyed.count(name="count").changes().to("counts")
    keyed.sum(name="sum")
    keyed.reduce(max, name="max")
    keyed.aggregate(list, lambda acc, v: [*acc, v], name="history")
    keyed.aggregate((), lambda acc, v: (*acc, str(v)), name="strings")
    s.map(lambda v: f"k{v % 2}").key_by(lambda k: k, name="text").count(name="by_text")


def test_rocksdb_gives_the_memory_tables(execute, tmp_path):
    memory = execute(build, VALUES)
    rocks = execute(build, VALUES, store="rocksdb://" + str(tmp_path))
    assert rocks.tables == memory.tables
    assert rocks.outputs == memory.outputs
    assert memory.tables["history"] == {k: [v for v in VALUES if v % 3 == k] for k in range(3)}
    assert memory.tables["by_text"] == {"k0": 4, "k1": 10}
    assert any(tmp_path.iterdir())  # the stores are on disk


def counting(items) -> fg.Graph:
    g = fg.Graph("t")
    s = g.source_from(items, name="in", value_type=int)
    s.key_by(lambda v: v % 3, name="mod3").count(name="count")
    return g


def test_a_second_memory_run_on_the_same_rocksdb_dir_starts_from_its_changelog(tmp_path):
    """A store ahead of its changelog (a fresh memory:// broker) is rebuilt, as in Kafka Streams.

    So running a memory:// job twice gives the same tables, never doubled or skipped input.
    """
    store = "rocksdb://" + str(tmp_path)
    first = fg.run(counting(range(6)), store=store)
    assert first.table("count") == {0: 2, 1: 2, 2: 2}
    second = fg.run(counting(range(6, 15)), store=store)
    assert second.table("count") == {0: 3, 1: 3, 2: 3}


def keyed_counts() -> fg.Graph:
    g = fg.Graph("t")
    src = g.source("in", key_type=int, value_type=int, partitions=2)
    src.count(name="per_key")
    src.key_by(lambda v: v % 3, name="mod3").sum(name="sum")
    return g


def batch(values: range) -> list[tuple[int, bytes, bytes]]:
    return [(v % 2, b"%d" % (v % 4), b"%d" % v) for v in values]


def test_a_restarted_worker_on_the_same_dir_and_broker_continues(tmp_path):
    g = fg.Graph("t")
    g.source("in", key_type=int, value_type=int, partitions=2).count(name="per_key")
    cluster = Cluster(g, store="rocksdb://" + str(tmp_path))
    cluster.run({"in": batch(range(10))})
    assert cluster.last_tables == {"per_key": {0: 3, 1: 3, 2: 2, 3: 2}}
    cluster.run({"in": batch(range(10, 16))})
    assert cluster.last_tables == {"per_key": {0: 4, 1: 4, 2: 4, 3: 4}}


def test_a_restarted_worker_continues_after_a_repartition(tmp_path):
    cluster = Cluster(keyed_counts(), store="rocksdb://" + str(tmp_path))
    cluster.run({"in": batch(range(10))})
    assert cluster.last_tables["sum"] == {0: 0 + 3 + 6 + 9, 1: 1 + 4 + 7, 2: 2 + 5 + 8}
    cluster.run({"in": batch(range(10, 16))})
    assert cluster.last_tables["sum"] == {
        k: sum(v for v in range(16) if v % 3 == k) for k in range(3)
    }


def test_state_lost_on_disk_is_restored_from_the_changelog(tmp_path):
    cluster = Cluster(keyed_counts(), store="rocksdb://" + str(tmp_path / "a"))
    cluster.run({"in": batch(range(10))})
    before = cluster.last_tables
    shutil.rmtree(tmp_path / "a")
    worker = cluster.run()
    assert worker.stats.restored > 0
    assert cluster.last_tables == before
    cluster.run({"in": batch(range(10, 16))})
    assert cluster.last_tables["per_key"] == {0: 4, 1: 4, 2: 4, 3: 4}


def test_restore_onto_another_empty_dir(tmp_path: Path):
    cluster = Cluster(keyed_counts(), store="rocksdb://" + str(tmp_path / "a"))
    cluster.run({"in": batch(range(10))})
    before = cluster.last_tables
    cluster.store = "rocksdb://" + str(tmp_path / "b")
    cluster.run()
    assert cluster.last_tables == before
