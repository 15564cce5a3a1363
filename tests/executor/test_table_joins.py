"""Table-table joins: a table of ``fn(value, other_value)`` per key, updated when either side
changes, deletes propagated as `how` says; checked against the two tables recomputed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.testing import TestDriver


def profile(name: str | None, total: int | None) -> str:
    return f"{name}:{total}"


def tables_graph(how: str, user_partitions: int = 2, payment_partitions: int = 2) -> fg.Graph:
    g = fg.Graph("tt")
    users = g.source("users", key_type=str, value_type=str, partitions=user_partitions)
    payments = g.source("payments", key_type=str, value_type=int, partitions=payment_partitions)
    users.to_table(name="user").join(
        payments.to_table(name="paid"), profile, how=how, value_type=str
    )
    return g


def expected(how: str, left: dict[str, str], right: dict[str, int]) -> dict[str, str]:
    keys = {
        "inner": left.keys() & right.keys(),
        "left": set(left),
        "outer": left.keys() | right.keys(),
    }[how]
    return {k: profile(left.get(k), right.get(k)) for k in keys}


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
def test_a_table_join_follows_updates_and_deletes_of_both_sides(how: str) -> None:
    g = tables_graph(how, 3, 3)
    rng = random.Random(7)
    left: dict[str, str] = {}
    right: dict[str, int] = {}
    with TestDriver(g) as driver:
        for n in range(150):
            key = f"k{rng.randrange(12)}"
            side = rng.random() < 0.5
            delete = rng.random() < 0.2
            if side:
                value: Any = None if delete else f"n{n}"
                driver.send("users", key, value)
                _apply(left, key, value)
            else:
                value = None if delete else n
                driver.send("payments", key, value)
                _apply(right, key, value)
            if n % 25 == 24:
                assert driver.table("profile") == expected(how, left, right), n
        assert driver.table("profile") == expected(how, left, right)
        assert left and right and set(left) != set(right)  # the cases differ


def _apply(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def test_a_table_join_runs_on_one_task_and_refuses_tables_of_other_partitions() -> None:
    plan = tables_graph("inner").plan()
    assert len(plan.subtopologies) == 1
    assert [t for t in plan.topics if t.role == "repartition"] == []
    with pytest.raises(fg.GraphDefinitionError, match=r"table 'user' \(3 partitions\) with"):
        tables_graph("inner", 3, 2).plan()


def test_table_join_arguments_are_checked_in_one_sentence() -> None:
    g = fg.Graph("tt")
    a = g.source("a").to_table(name="ta")
    b = g.source("b").to_table(name="tb")
    with pytest.raises(fg.GraphDefinitionError, match='"inner", "left" or "outer"'):
        a.join(b, profile, how="cross")
    with pytest.raises(fg.GraphDefinitionError, match="no name="):
        a.join(b, lambda x, y: x)
    with pytest.raises(fg.GraphDefinitionError, match="needs a table"):
        a.join(g.source("c"), profile)  # type: ignore[arg-type]


def test_fg_run_joins_two_tables_fed_by_bounded_sources_on_rocksdb(tmp_path: Path) -> None:
    g = fg.Graph("tt")
    users = g.source_from([("ann", "Ann"), ("bob", "Bob"), ("cid", "Cid")], name="users")
    paid = g.source_from([("ann", 5), ("ann", 6), ("dan", 1)], name="payments", partitions=2)

    def first(kv: tuple[str, Any]) -> str:
        return str(kv[0])

    def second(kv: tuple[str, Any]) -> Any:
        return kv[1]

    names = (
        users.key_by(first, name="by_user", partitions=2)
        .map(second, name="name")
        .to_table(name="user")
    )
    spent = paid.key_by(first, name="by_payer").sum(second, name="spent")
    names.join(spent, profile, how="left", value_type=str)
    result = fg.run(g, store=f"rocksdb://{tmp_path}")
    assert result.table("profile") == {"ann": "Ann:11", "bob": "Bob:None", "cid": "Cid:None"}
    assert any(tmp_path.iterdir())
