"""Stream-table joins: each stream record looks up its table's value on the same task (the
planner co-partitions the two), or a global table's value on every worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime import aggregate
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver


def priced(value: dict[str, Any], price: Any) -> str:
    return f"{value['order']}:{value['item']}:{price}"


def orders_graph(how: str, *, table_partitions: int = 3, order_partitions: int = 2) -> fg.Graph:
    """Orders keyed by order id, re-keyed by item and joined with a table of prices."""
    g = fg.Graph("shop")
    prices = g.source("prices", key_type=str, value_type=int, partitions=table_partitions)
    table = prices.to_table(name="price")
    orders = g.source("orders", key_type=str, value_type="json", partitions=order_partitions)
    orders.key_by(lambda o: o["item"], name="by_item").join(table, priced, how=how).to("out")
    return g


def order(i: int, item: str) -> dict[str, Any]:
    return {"order": f"o{i}", "item": item}


@pytest.mark.parametrize("encode", [True, False])
@pytest.mark.parametrize("how", ["inner", "left"])
def test_a_rekeyed_stream_looks_up_the_tables_current_value(how: str, encode: bool) -> None:
    g = orders_graph(how)
    plan = g.plan()
    (rep,) = [t for t in plan.topics if t.role == "repartition"]
    assert rep.partitions == 3  # the stream follows the table's partitions
    with TestDriver(g, encode=encode) as driver:
        for i in range(6):
            driver.send("prices", f"i{i}", 10 * i)
        for i in range(8):
            driver.send("orders", f"o{i}", order(i, f"i{i}"))
        driver.send("prices", "i1", 111)  # an update between stream records
        driver.send("prices", "i2", None)  # a tombstone deletes
        driver.send("orders", "o8", order(8, "i1"))
        driver.send("orders", "o9", order(9, "i2"))
        got = driver.output("out")
    expected = [(f"i{i}", f"o{i}:i{i}:{10 * i}") for i in range(6)]
    if how == "left":
        expected += [("i6", "o6:i6:None"), ("i7", "o7:i7:None"), ("i2", "o9:i2:None")]
    expected += [("i1", "o8:i1:111")]
    assert sorted(got) == sorted(expected)


def test_a_stream_already_keyed_like_the_table_is_not_repartitioned() -> None:
    g = fg.Graph("shop")
    table = g.source("prices", key_type=str, value_type="json", partitions=4).to_table(name="price")
    g.source("orders", key_type=str, value_type="json", partitions=4).join(
        table, lambda o, p: (o, p), name="both", value_type="json"
    ).to("out")
    plan = g.plan()
    assert [t for t in plan.topics if t.role == "repartition"] == []
    assert len(plan.subtopologies) == 1  # the stream and the table run on one task
    with TestDriver(g) as driver:
        driver.send("prices", "k1", "p1")
        driver.send("orders", "k1", "a")
        driver.send("orders", "k2", "b")
        assert driver.output("out") == [("k1", ["a", "p1"])]


def test_a_stream_of_other_partitions_is_repartitioned_before_the_join() -> None:
    g = fg.Graph("shop")
    table = g.source("prices", key_type=str, value_type="json", partitions=3).to_table(name="price")
    g.source("orders", key_type=str, value_type="json", partitions=2).join(
        table, lambda o, p: (o, p), name="both", value_type="json"
    ).to("out")
    plan = g.plan()
    (rep,) = [t for t in plan.topics if t.role == "repartition"]
    assert (rep.name, rep.partitions) == ("shop-both-repartition", 3)
    assert "join 'both' on table 'price' of 3 partitions" in g.explain()
    with TestDriver(g) as driver:
        for k in range(9):
            driver.send("prices", f"k{k}", k)
        for k in range(9):
            driver.send("orders", f"k{k}", "x")
        assert sorted(driver.output("out")) == [(f"k{k}", ["x", k]) for k in range(9)]


def test_a_join_and_a_count_read_the_same_table_state() -> None:
    """The table is an aggregation of the stream itself: each record sees the count that
    includes it, since a record reaches the steps that read it in the order they were added."""
    g = fg.Graph("seen")
    clicks = g.source("clicks", key_type=str, value_type="json", partitions=2)
    counts = clicks.count(name="clicks-per-user")
    clicks.join(counts, lambda v, n: f"{v}#{n}", name="numbered", value_type=str).to("out")
    with TestDriver(g) as driver:
        for v in ["a", "b", "c"]:
            driver.send("clicks", "u1", v)
        driver.send("clicks", "u2", "d")
        assert sorted(driver.output("out")) == [
            ("u1", "a#1"),
            ("u1", "b#2"),
            ("u1", "c#3"),
            ("u2", "d#1"),
        ]


def test_a_failing_join_function_dead_letters_its_record() -> None:
    g = fg.Graph("shop")
    table = g.source("prices", key_type=str, value_type="json").to_table(name="price")
    g.source("orders", key_type=str, value_type="json").join(
        table, lambda o, p: o / p, name="ratio", value_type="json"
    ).to("out")
    with TestDriver(g) as driver:
        driver.send("prices", "k", 0)
        driver.send("prices", "j", 2)
        driver.send("orders", "k", 1)
        driver.send("orders", "j", 1)
        assert driver.output("out") == [("j", 0.5)]
        (dead,) = driver.dead_letters()
        assert "ZeroDivisionError" in str(dead.headers)


def test_fg_run_joins_over_several_partitions() -> None:
    g = fg.Graph("shop")
    prices = g.source_from([("i1", 5), ("i2", 7)], name="prices-feed", partitions=1)
    table = (
        prices.key_by(lambda kv: kv[0], name="by_sku").map(lambda kv: kv[1]).to_table(name="price")
    )
    orders = g.source_from(
        [{"order": f"o{i}", "item": f"i{i % 3}"} for i in range(12)], name="orders", partitions=3
    )
    joined = orders.key_by(lambda o: o["item"], name="by_item").join(table, priced, how="left")
    joined.count(name="per-item-priced")  # keeps the run's result readable
    out: list[tuple[Any, Any]] = []
    joined.to(lambda k, v: out.append((k, v)), name="collect")
    started: list[Worker] = []
    result = fg.run(g, on_start=started.append)
    assert result.tables["per-item-priced"] == {"i0": 4, "i1": 4, "i2": 4}
    # the prices feed races the orders: every order saw a price or None, never another's
    for key, value in out:
        _, item, price = value.split(":")
        assert item == key
        assert price in ("None", {"i1": "5", "i2": "7"}.get(item, "None"))
    assert len(out) == 12


def test_a_global_table_join_looks_up_a_key_of_the_value() -> None:
    g = fg.Graph("shop")
    users = g.global_table("users", key_type=str, value_type=str, partitions=3)
    orders = g.source("orders", key_type=str, value_type="json", partitions=2)
    orders.join(
        users, lambda o, u: f"{o['id']}:{u}", key=lambda o: o["user"], how="left", value_type=str
    ).to("out")
    plan = g.plan()
    assert [t for t in plan.topics if t.role == "repartition"] == []
    assert "left join on global table users" in g.explain()
    with TestDriver(g) as driver:
        for i in range(6):
            driver.send("users", f"u{i}", f"name{i}")
        for i in range(8):
            driver.send("orders", f"o{i}", {"id": f"o{i}", "user": f"u{i}"})
        got = sorted(driver.output("out"))
    assert got == sorted(
        [(f"o{i}", f"o{i}:name{i}") for i in range(6)] + [("o6", "o6:None"), ("o7", "o7:None")]
    )


def test_join_arguments_are_checked_in_one_sentence() -> None:
    g = fg.Graph("shop")
    table = g.source("prices", key_type=str, value_type="json").to_table(name="price")
    orders = g.source("orders", key_type=str, value_type="json")
    with pytest.raises(fg.GraphDefinitionError, match='how= must be "inner" or "left"'):
        orders.join(table, lambda o, p: o, how="outer", name="j1")
    with pytest.raises(fg.GraphDefinitionError, match="key= is only for a global table"):
        orders.join(table, lambda o, p: o, key=lambda o: o, name="j2")
    with pytest.raises(fg.GraphDefinitionError, match="calls fn"):
        orders.join(table, lambda o: o, name="j3")
    with pytest.raises(fg.GraphDefinitionError, match="another stream needs within="):
        orders.join(orders, lambda o, p: o, name="j4")
    with pytest.raises(fg.GraphDefinitionError, match="needs a table"):
        orders.join("prices", lambda o, p: o, name="j5")  # type: ignore[arg-type]


def test_a_key_by_with_other_partitions_than_the_table_is_refused() -> None:
    g = fg.Graph("shop")
    table = g.source("prices", key_type=str, value_type="json", partitions=3).to_table(name="price")
    rekeyed = g.source("orders", key_type=str, value_type="json").key_by(
        lambda o: o, name="by_item", partitions=2
    )
    rekeyed.join(table, lambda o, p: p, name="both", value_type="json").to("out")
    with pytest.raises(fg.GraphDefinitionError, match="give key_by partitions=3"):
        g.plan()


def test_a_join_reads_keys_no_longer_in_memory_from_the_rocksdb_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the table's cache emptied at every commit, lookups read the RocksDB store."""
    monkeypatch.setattr(aggregate, "CACHE_KEYS", 0)
    g = orders_graph("left")
    with TestDriver(g, store="rocksdb://" + str(tmp_path)) as driver:
        for i in range(4):
            driver.send("prices", f"i{i}", i + 1)
        driver.send("prices", "i3", None)  # a grave, then deleted for good
        driver.send("prices", "i0", 7)
        ops = [
            t.aggregates["price"] for t in driver._worker.tasks.values() if "price" in t.aggregates
        ]
        assert ops and all(not op.cur for op in ops)  # nothing left in memory
        for i in range(5):
            driver.send("orders", f"o{i}", order(i, f"i{i}"))
        got = sorted(v for _, v in driver.output("out"))
    assert got == ["o0:i0:7", "o1:i1:2", "o2:i2:3", "o3:i3:None", "o4:i4:None"]
    assert any(tmp_path.iterdir())
