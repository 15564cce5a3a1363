"""Tables that delete keys: `to_table` tombstones and `fg.DELETE`, exact across replays."""

from __future__ import annotations

import asyncio

import pytest

import flowgraph as fg
from flowgraph.runtime.recovery import POSITION_HEADER
from flowgraph.runtime.state import RocksDBBackend
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver
from tests.executor.harness import Cluster


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path) -> str:
    return "memory://" if request.param == "memory" else "rocksdb://" + str(tmp_path / "state")


# -- to_table: the latest value per key, None deletes ------------------------------------------


def users_graph() -> fg.Graph:
    g = fg.Graph("t")
    users = g.source("users", key_type=str, value_type=str, partitions=2)
    users.to_table(name="profiles").changes().to("user-changes")
    return g


def test_to_table_keeps_the_latest_value_and_a_tombstone_deletes(store):
    with TestDriver(users_graph(), store=store) as driver:
        driver.send_many("users", [("ann", "a1"), ("bob", "b1"), ("ann", "a2")])
        assert driver.table("profiles") == {"ann": "a2", "bob": "b1"}
        driver.send("users", "ann", None)
        assert driver.table("profiles") == {"bob": "b1"}
        assert driver.output("user-changes")[-1] == ("ann", None)


def test_changes_of_a_delete_reach_the_sink_as_a_tombstone(store):
    with TestDriver(users_graph(), store=store) as driver:
        driver.send_many("users", [("ann", "a1"), ("ann", None), ("bob", "b1")])
        out = driver.output("user-changes")
        assert [r for r in out if r[0] == "ann"] == [("ann", "a1"), ("ann", None)]
        log = driver._transport.broker.logs["user-changes"]
        raw = [(k, v) for part in log for k, v, *_ in part]
        assert (b"ann", None) in raw  # a null value on the topic: a Kafka tombstone


def test_a_deleted_key_comes_back_with_its_next_value(store):
    with TestDriver(users_graph(), store=store) as driver:
        driver.send_many("users", [("ann", "a1"), ("ann", None), ("ann", "a3")])
        assert driver.table("profiles") == {"ann": "a3"}


def test_a_tombstone_for_an_unknown_key_deletes_nothing_else(store):
    with TestDriver(users_graph(), store=store) as driver:
        driver.send_many("users", [("bob", "b1"), ("nobody", None)])
        assert driver.table("profiles") == {"bob": "b1"}
        assert sorted(driver.output("user-changes")) == [("bob", "b1"), ("nobody", None)]


def test_to_table_after_key_by_reads_a_repartition():
    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=str, partitions=2)
    src.key_by(str.upper, name="upper").to_table(name="latest")
    with TestDriver(g) as driver:
        driver.send_many("in", [("1", "a"), ("2", "b"), ("3", "a")])
        assert driver.table("latest") == {"A": "a", "B": "b"}


# -- fg.DELETE from aggregate and reduce ---------------------------------------------------------


def balance(acc: int, v: int) -> object:
    """A running balance; the key is deleted when it reaches zero (a decision from `acc`)."""
    total = acc + v
    return fg.DELETE if total == 0 else total


async def async_balance(acc: int, v: int) -> object:
    await asyncio.sleep(0)
    return balance(acc, v)


def balances_graph() -> fg.Graph:
    g = fg.Graph("t")
    moves = g.source("moves", key_type=str, value_type=int, partitions=2)
    moves.aggregate(0, balance, name="balance").changes().to("balances")
    return g


def test_aggregate_deletes_a_key_and_starts_it_again_from_the_initial_value(store):
    with TestDriver(balances_graph(), store=store) as driver:
        driver.send_many("moves", [("a", 5), ("b", 1), ("a", -5)])
        assert driver.table("balance") == {"b": 1}
        driver.send("moves", "a", 3)
        assert driver.table("balance") == {"a": 3, "b": 1}
        assert driver.output("balances") == [("a", 5), ("b", 1), ("a", None), ("a", 3)]


def test_reduce_deletes_a_key():
    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    src.reduce(lambda a, b: fg.DELETE if b < 0 else a + b, name="total").changes().to("out")
    with TestDriver(g) as driver:
        driver.send_many("in", [("k", 1), ("k", 2), ("k", -1), ("k", 7), ("j", 1)])
        assert driver.table("total") == {"k": 7, "j": 1}  # 7 started it again, as a first value
        assert ("k", None) in driver.output("out")


def test_async_aggregate_deletes_a_key():
    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    src.aggregate(0, async_balance, name="b").changes().to("out")
    with TestDriver(g) as driver:
        driver.send_many("in", [("k", 2), ("k", -2), ("k", 4)])
        assert driver.table("b") == {"k": 4}
        assert driver.output("out") == [("k", 2), ("k", None), ("k", 4)]


def test_a_table_over_two_topics_deletes_and_replays_exactly():
    """Co-partitioned inputs keep one position per topic; a grave keeps all of them."""
    g = fg.Graph("t")
    a = g.source("a", key_type=int, value_type=int, partitions=2)
    b = g.source("b", key_type=int, value_type=int, partitions=2)
    a.merge(b).aggregate(0, balance, name="balance")
    cluster = Cluster(g)
    cluster.run({"a": [(1, b"1", b"5"), (0, b"2", b"1")], "b": [(1, b"1", b"-5")]})
    assert cluster.last_tables == {"balance": {2: 1}}
    cluster.reset_committed()
    cluster.run()
    assert cluster.last_tables == {"balance": {2: 1}}
    cluster.run({"a": [(1, b"1", b"2")]})
    assert cluster.last_tables == {"balance": {1: 2, 2: 1}}


def test_sum_refuses_delete_in_one_sentence():
    g = fg.Graph("t")
    g.source("in", key_type=str, value_type=int).sum(
        lambda v: fg.DELETE if v < 0 else v, name="total"
    )
    with TestDriver(g) as driver:
        driver.send_many("in", [("k", 1), ("k", -1)])
        assert driver.table("total") == {"k": 1}
        (letter,) = driver.dead_letters()
        assert letter.headers["error.message"].startswith("fg.DELETE cannot be added to a sum;")


@pytest.mark.parametrize("fold", [balance, async_balance])
@pytest.mark.parametrize("spec", [fg.Tumbling(10), fg.Hopping(10, 5)])
def test_a_windowed_aggregation_refuses_delete_to_the_dead_letter_topic(spec, fold):
    g = fg.Graph("t")
    g.source("in", key_type=str, value_type=int).window(spec).aggregate(0, fold, name="per_window")
    with TestDriver(g) as driver:
        driver.send("in", "k", 2, timestamp=1.0)
        driver.send("in", "k", -2, timestamp=2.0)
        assert driver.table("per_window")["k"].current() == 2
        (letter,) = driver.dead_letters()
        assert letter.headers["error.step"] == "per_window"
        assert (
            "returned fg.DELETE; a window's value cannot be deleted"
            in (letter.headers["error.message"])
        )


# -- changelog and store: graves -----------------------------------------------------------------


def changelog(driver: TestDriver, store: str) -> list[tuple[object, object, dict[str, bytes]]]:
    topic = f"{store}-changelog"
    log = driver._transport.broker.logs[topic]
    kc, _ = driver._worker.codecs[topic]  # keys as the changelog holds them (bytes when encoded)
    return [
        (k if kc is None else kc.decode(k), v, dict(h or ()))
        for part in log
        for k, v, _ts, _o, h in part
    ]


def test_a_delete_leaves_a_tombstone_on_the_changelog_and_no_grave_in_the_store(tmp_path):
    with TestDriver(balances_graph(), store="rocksdb://" + str(tmp_path)) as driver:
        driver.send_many("moves", [("a", 5), ("b", 1), ("a", -5)])
        (last,) = [r for r in changelog(driver, "t-balance") if r[0] == "a"]
        assert last[1] is None  # compacted: the key's latest record is a tombstone
        assert POSITION_HEADER not in last[2]  # the grave's position is no longer needed
    backend = RocksDBBackend(tmp_path)
    try:
        entries = [e for p in (0, 1) for _, e in backend.open("t-balance", p).entries()]
        assert all(e[1] is not fg.DELETE for e in entries), entries
        assert len(entries) == 1
    finally:
        backend.close()


class Crash(Exception):
    """Stands in for a kill -9 at a crash point (the in-process broker outlives it)."""


def crashing_at(monkeypatch, point: str) -> None:
    def crash_point(self: Worker, name: str) -> None:
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(Worker, "_crash_point", crash_point)


def moves(*values: int) -> list[tuple[int, bytes, bytes]]:
    return [(0, b"a", b"%d" % v) for v in values]


def one_partition_balances(fold=balance) -> fg.Graph:
    g = fg.Graph("t")
    g.source("moves", key_type=str, value_type=int).aggregate(0, fold, name="balance")
    return g


@pytest.mark.parametrize("lose_store", [False, True])
def test_a_crash_after_the_store_write_replays_a_delete_exactly(
    monkeypatch, store, tmp_path, lose_store
):
    """The store holds the delete, the offsets do not: the replay must not apply -3, -2 again.

    Without the grave's position the replay would start `a` from 0 and end at -5, not deleted.
    With `lose_store`, the store is rebuilt from the changelog, whose tombstone keeps it.
    """
    cluster = Cluster(one_partition_balances(), store=store)
    cluster.run({"moves": moves(5)})
    crashing_at(monkeypatch, "after-store")
    with pytest.raises(Crash):
        cluster.run({"moves": moves(-3, -2)})
    monkeypatch.undo()
    if lose_store:
        cluster.backend = None
        if store != "memory://":
            cluster.store = "rocksdb://" + str(tmp_path / "fresh")
    worker = cluster.run()
    assert worker.stats.skipped == 2
    assert cluster.last_tables == {"balance": {}}
    cluster.run({"moves": moves(4)})
    assert cluster.last_tables == {"balance": {"a": 4}}


@pytest.mark.parametrize("fold", [balance, async_balance])
def test_a_grave_left_by_a_crash_is_deleted_once_its_record_is_replayed(
    monkeypatch, tmp_path, fold
):
    cluster = Cluster(one_partition_balances(fold), store="rocksdb://" + str(tmp_path))
    crashing_at(monkeypatch, "after-store")
    with pytest.raises(Crash):
        cluster.run({"moves": moves(1, -1)})
    monkeypatch.undo()
    backend = RocksDBBackend(tmp_path)
    assert backend.open("t-balance", 0).get("a") == (1, fg.DELETE)
    backend.close()
    cluster.run()
    backend = RocksDBBackend(tmp_path)
    try:
        assert backend.open("t-balance", 0).get("a") is None
    finally:
        backend.close()


def test_a_restarted_worker_continues_after_deletes_on_disk(tmp_path):
    g = fg.Graph("t")
    users = g.source("users", key_type=str, value_type=str, partitions=2)
    users.to_table(name="profiles")
    cluster = Cluster(g, store="rocksdb://" + str(tmp_path))
    cluster.run({"users": [(0, b"ann", b"a1"), (1, b"bob", b"b1"), (0, b"ann", None)]})
    assert cluster.last_tables == {"profiles": {"bob": "b1"}}
    cluster.run({"users": [(1, b"bob", None), (0, b"cid", b"c1")]})
    assert cluster.last_tables == {"profiles": {"cid": "c1"}}
    cluster.reset_committed()  # a replay of everything over the same disk
    cluster.run()
    assert cluster.last_tables == {"profiles": {"cid": "c1"}}
    cluster.run({"users": [(0, b"ann", b"a2")]})
    assert cluster.last_tables == {"profiles": {"ann": "a2", "cid": "c1"}}


def test_a_fresh_store_is_restored_from_a_changelog_with_tombstones(store, tmp_path):
    cluster = Cluster(balances_graph(), store="rocksdb://" + str(tmp_path / "a"))
    cluster.run({"moves": [(0, b"a", b"5"), (1, b"b", b"1"), (0, b"a", b"-5"), (1, b"c", b"2")]})
    before = cluster.last_tables
    assert before == {"balance": {"b": 1, "c": 2}}
    cluster.store = store  # a fresh store: the fixture's directory is not "a"
    cluster.backend = None
    worker = cluster.run()
    assert worker.stats.restored > 0
    assert cluster.last_tables == before


def process_balance(acc: int, v: int) -> tuple[int | None, list[int]]:
    """`balance` as a `process` step: None deletes the key; it emits the new balance."""
    total = acc + v
    return (None if total == 0 else total), [total]


def one_partition_process_balances() -> fg.Graph:
    g = fg.Graph("t")
    moves = g.source("moves", key_type=str, value_type=int)
    moves.process(process_balance, 0, name="balance").to("balances")
    return g


def test_a_crash_after_the_store_write_replays_a_process_delete_exactly(monkeypatch):
    cluster = Cluster(one_partition_process_balances())
    cluster.run({"moves": moves(5)})
    crashing_at(monkeypatch, "after-store")
    with pytest.raises(Crash):
        cluster.run({"moves": moves(-3, -2)})
    monkeypatch.undo()
    worker = cluster.run()
    assert worker.stats.skipped == 2  # both were applied before the crash, the delete too
    assert cluster.last_tables == {"balance": {}}
    cluster.run({"moves": moves(4)})
    assert cluster.last_tables == {"balance": {"a": 4}}


def test_a_process_grave_left_by_a_crash_is_deleted_once_its_record_is_replayed(
    monkeypatch, tmp_path
):
    cluster = Cluster(one_partition_process_balances(), store="rocksdb://" + str(tmp_path))
    crashing_at(monkeypatch, "after-store")
    with pytest.raises(Crash):
        cluster.run({"moves": moves(1, -1)})
    monkeypatch.undo()
    backend = RocksDBBackend(tmp_path)
    assert backend.open("t-balance", 0).get("a") == (1, fg.DELETE)
    backend.close()
    cluster.run()
    backend = RocksDBBackend(tmp_path)
    try:
        assert backend.open("t-balance", 0).get("a") is None
    finally:
        backend.close()
