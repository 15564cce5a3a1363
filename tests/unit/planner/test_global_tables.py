"""What the planner makes of a global table: a store marked global, its checks, its text."""

from __future__ import annotations

import pytest

import flowgraph as fg
from planner import naming
from planner.describe import PlanDescription, describe
from planner.errors import GraphValidationError
from planner.logical import Aggregate, LogicalPlan, Source
from planner.pipeline import plan


def test_global_table_is_a_table_of_its_topic_with_a_global_store() -> None:
    g = fg.Graph("g")
    users = g.global_table("users", key_type=str, value_type=int, partitions=3, name="u")
    p = g.plan()
    [store] = p.stores
    assert (store.name, store.step, store.changelog, store.partitions) == (
        "g-u",
        "u",
        "g-u-changelog",
        3,
    )
    assert store.is_global
    assert users.store == store.name
    assert naming.global_store(store.name) == "g-u.global"
    assert p.topic("users").role == "source"
    d = describe(p)
    assert [s.is_global for s in d.stores] == [True]
    assert PlanDescription.from_json(d.to_json()) == d


def test_ordinary_tables_are_not_global() -> None:
    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).count(name="n")
    assert [s.is_global for s in g.plan().stores] == [False]
    assert "is global" not in g.explain()


def _logical(*nodes: object) -> LogicalPlan:
    return LogicalPlan(graph_id="g", nodes=nodes)  # type: ignore[arg-type]


def test_a_global_windowed_table_is_refused() -> None:
    src = Source(id="in", topic="in", key_type=str, value_type=int)
    agg = Aggregate(id="n", inputs=("in",), agg="count", window=object(), is_global=True)
    with pytest.raises(GraphValidationError, match="global and windowed"):
        plan(_logical(src, agg))


def test_a_step_named_like_the_global_copy_is_refused() -> None:
    g = fg.Graph("g")
    g.global_table("users", key_type=str, value_type=str)
    g.source("other", key_type=str, value_type=str).to_table(name="users.global")
    with pytest.raises(GraphValidationError, match=r"users\.global would share"):
        g.plan()
