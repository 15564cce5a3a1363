"""Keyed aggregations and their changes(), each body run through TestDriver and fg.run."""

from __future__ import annotations

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.memory import MemoryBroker
from flowgraph.testing import TestDriver
from tests.executor.harness import EXECUTORS, Cluster


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


VALUES = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]


def mod3(v: int) -> int:
    return v % 3


def per_key(values: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for v in values:
        groups.setdefault(v % 3, []).append(v)
    return groups


GROUPS = per_key(VALUES)


def test_count(execute):
    out = execute(lambda s: s.key_by(mod3).count(name="c"), VALUES)
    assert out.tables == {"c": {k: len(vs) for k, vs in GROUPS.items()}}


def test_count_without_key_by_counts_per_source_key(execute):
    # A table keyed by None (these inputs have no key) exists only with objects in internal
    # topics; encoded, as on Kafka, its records are dead-lettered (test_encode_failures.py).
    out = execute(lambda s: s.count(name="c"), VALUES, encode=False)
    assert out.tables == {"c": {None: len(VALUES)}}


def test_sum(execute):
    out = execute(lambda s: s.key_by(mod3).sum(name="total"), VALUES)
    assert out.tables == {"total": {k: sum(vs) for k, vs in GROUPS.items()}}


def test_sum_with_fn(execute):
    out = execute(lambda s: s.key_by(mod3).sum(lambda v: v * v, name="squares"), VALUES)
    assert out.tables == {"squares": {k: sum(v * v for v in vs) for k, vs in GROUPS.items()}}


def test_reduce(execute):
    def build(s: fg.Stream) -> None:
        s.key_by(mod3).reduce(lambda a, b: a * 10 + b, name="digits")

    out = execute(build, VALUES)
    expected = {k: int("".join(map(str, vs))) for k, vs in GROUPS.items()}
    assert out.tables == {"digits": expected}


def test_aggregate_with_a_value_initial(execute):
    out = execute(lambda s: s.key_by(mod3).aggregate(100, lambda acc, v: acc - v, name="a"), VALUES)
    assert out.tables == {"a": {k: 100 - sum(vs) for k, vs in GROUPS.items()}}


def test_aggregate_with_a_factory_initial(execute):
    out = execute(
        lambda s: s.key_by(mod3).aggregate(list, lambda acc, v: [*acc, v], name="a"), VALUES
    )
    assert out.tables == {"a": GROUPS}


def test_aggregate_mutating_a_mutable_initial(execute):
    """A mutable initial value is copied for each new key, so in-place updates stay per key."""

    def add(acc: list[int], v: int) -> list[int]:
        acc.append(v)
        return acc

    out = execute(lambda s: s.key_by(mod3).aggregate([], add, name="a"), VALUES)
    assert out.tables == {"a": GROUPS}


def test_changes(execute):
    def build(s: fg.Stream) -> None:
        s.key_by(mod3).count(name="c").changes().to("counts")
        s.key_by(lambda v: v % 2, name="parity").sum(name="s").changes().to("sums")

    out = execute(build, VALUES)
    assert out.by_key("counts") == {k: list(range(1, len(vs) + 1)) for k, vs in GROUPS.items()}
    sums: dict[int, list[int]] = {}
    for v in VALUES:
        running = sums.setdefault(v % 2, [])
        running.append(v + (running[-1] if running else 0))
    assert out.by_key("sums") == sums


def test_changes_through_stateless_steps(execute):
    def build(s: fg.Stream) -> None:
        counts = s.key_by(mod3).count(name="c").changes(name="updates")
        counts.filter(lambda n: n % 2 == 0).map(lambda n: n * 100).to("even")

    out = execute(build, VALUES)
    assert out.by_key("even") == {
        k: [n * 100 for n in range(1, len(vs) + 1) if n % 2 == 0]
        for k, vs in GROUPS.items()
        if len(vs) >= 2
    }


def test_two_aggregates_over_one_key_by(execute):
    def build(s: fg.Stream) -> None:
        keyed = s.key_by(mod3)
        keyed.count(name="c")
        keyed.filter(lambda v: v > 2).sum(name="s")

    out = execute(build, VALUES)
    assert out.tables == {
        "c": {k: len(vs) for k, vs in GROUPS.items()},
        "s": {k: sum(v for v in vs if v > 2) for k, vs in GROUPS.items() if any(v > 2 for v in vs)},
    }


def test_flat_map_records_all_count(execute):
    """The records one input makes share its offset; every one of them is applied."""
    # A table keyed by None (these inputs have no key) exists only with objects in internal
    # topics; encoded, as on Kafka, its records are dead-lettered (test_encode_failures.py).
    out = execute(lambda s: s.flat_map(lambda v: [v, v, v]).count(name="c"), VALUES, encode=False)
    assert out.tables == {"c": {None: 3 * len(VALUES)}}


def test_changes_of_a_mutated_accumulator_are_snapshots(execute):
    def add(acc: list[int], v: int) -> list[int]:
        acc.append(v)
        return acc

    def build(s: fg.Stream) -> None:
        s.flat_map(lambda v: [v, v + 1]).aggregate(list, add, name="a").changes().to("out")

    # A table keyed by None (these inputs have no key) exists only with objects in internal
    # topics; encoded, as on Kafka, its records are dead-lettered (test_encode_failures.py).
    out = execute(build, [10, 20], encode=False)
    assert out.values("out") == [[10], [10, 11], [10, 11, 20], [10, 11, 20, 21]]


def test_mutated_accumulator_updates_through_a_repartition_are_snapshots(execute):
    def add(acc: list[int], v: int) -> list[int]:
        acc.append(v)
        return acc

    def build(s: fg.Stream) -> None:
        updates = s.flat_map(lambda v: [v, v + 1]).aggregate(list, add, name="a").changes()
        by_len = updates.key_by(lambda acc: len(acc) % 2, name="odd_len")
        by_len.aggregate(list, lambda seen, acc: [*seen, list(acc)], name="snapshots")

    # A table keyed by None (these inputs have no key) exists only with objects in internal
    # topics; encoded, as on Kafka, its records are dead-lettered (test_encode_failures.py).
    out = execute(build, [10, 20], encode=False)
    assert out.tables["snapshots"] == {1: [[10], [10, 11, 20]], 0: [[10, 11], [10, 11, 20, 21]]}


def test_co_partitioned_merge_of_keyed_sources():
    g = fg.Graph("t")
    a = g.source("a", key_type=int, value_type=int, partitions=2)
    b = g.source("b", key_type=int, value_type=int, partitions=2)
    a.merge(b).count(name="c").changes().to("out")
    cluster = Cluster(g)
    cluster.run(
        {
            "a": [(k % 2, b"%d" % k, b"1") for k in (0, 1, 2, 3, 0)],
            "b": [(k % 2, b"%d" % k, b"1") for k in (0, 3, 3)],
        }
    )
    assert cluster.last_tables == {"c": {0: 3, 1: 1, 2: 1, 3: 3}}
    assert sorted(cluster.output("out"))[-1] == (3, 3)
    assert isinstance(cluster.broker, MemoryBroker)


def test_key_by_merged_back_with_its_own_source():
    g = fg.Graph("g")
    a = g.source("a", key_type=int, value_type=int)
    keyed = a.key_by(lambda v: v % 2, name="kb")
    keyed.count(name="c")
    keyed.merge(a, name="both").to("out")
    with TestDriver(g) as driver:
        driver.send("a", 7, 1)
        assert driver.table("c") == {1: 1}
        assert sorted(driver.output("out")) == [(1, 1), (7, 1)]


def merged_with_typed_source() -> fg.Graph:
    """A key_by's repartition topic (no key type of its own) read beside a source keyed by
    int: both must hash a key's same bytes, else one key lands in two stores."""
    g = fg.Graph("g")
    a = g.source("a", key_type=int, value_type=int, partitions=4)
    b = g.source("b", key_type=int, value_type=int, partitions=4)
    keyed = b.key_by(lambda v: v, name="kb")
    keyed.count(name="kb_count")
    keyed.merge(a, name="both").count(name="c")
    return g


@pytest.mark.parametrize("encode", [True, False])
def test_key_by_merged_with_a_typed_source_counts_each_key_in_one_store(encode):
    g = merged_with_typed_source()
    kb_topic = next(t for t in g.plan().topics if t.role == "repartition")
    assert kb_topic.key_type is int  # the source's key codec, so the same bytes are hashed
    with TestDriver(g, encode=encode) as driver:
        for k in range(40):
            driver.send("a", k, k)
            driver.send("b", 0, k)
        assert driver.table("c") == {k: 2 for k in range(40)}


def test_key_by_merged_with_a_typed_source_on_a_worker():
    # records placed as a Kafka producer would: murmur2 of the int codec's bytes
    a = [(partition_for(b"%d" % k, 4), b"%d" % k, b"%d" % k) for k in range(40)]
    b = [(partition_for(b"0", 4), b"0", b"%d" % k) for k in range(40)]
    cluster = Cluster(merged_with_typed_source())
    cluster.run({"a": a, "b": b})
    assert cluster.last_tables["c"] == {k: 2 for k in range(40)}
