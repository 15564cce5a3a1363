"""A join's ``catch_up=``: checked by the builder, decided by the planner (which inputs of
which task are held, for which table inputs), shown by explain."""

from __future__ import annotations

from typing import Any

import pytest

import flowgraph as fg
from flowgraph.errors import GraphDefinitionError
from planner.physical import CatchUp


def shop(catch_up: Any = 5) -> fg.Graph:
    g = fg.Graph("shop")
    table = g.source("prices", key_type=str, value_type=int, partitions=3).to_table(name="price")
    orders = g.source("orders", key_type=str, value_type="json", partitions=2)
    orders.key_by(lambda o: o["item"], name="by_item").join(
        table, lambda o, p: p, name="priced", how="left", catch_up=catch_up, value_type=int
    ).to("out")
    return g


def test_the_plan_holds_the_streams_topic_for_the_tables_topic() -> None:
    plan = shop().plan()
    (sub,) = [s for s in plan.subtopologies if s.catch_up]
    assert sub.catch_up == (
        CatchUp(
            join="priced",
            table="price",
            seconds=5.0,
            held=("shop-by_item-repartition",),
            tables=("prices",),
        ),
    )
    assert "left join on table price, catch up <= 5s" in plan.explain()


def test_without_catch_up_nothing_is_held() -> None:
    plan = shop(0).plan()
    assert all(s.catch_up == () for s in plan.subtopologies)
    assert "catch up" not in plan.explain()


def test_a_table_aggregated_from_a_repartitioned_stream_waits_on_that_topic() -> None:
    g = fg.Graph("shop")
    totals = (
        g.source("payments", key_type=str, value_type="json", partitions=2)
        .key_by(lambda p: p["user"], name="by_user", key_type=str)
        .map(lambda p: p["amount"], name="amount", value_type=int)
        .sum(name="spent")
    )
    g.source("visits", key_type=str, value_type=str, partitions=2).join(
        totals, lambda v, s: s, name="with_spent", catch_up=2.5, value_type=int
    ).to("out")
    (wait,) = [c for s in g.plan().subtopologies for c in s.catch_up]
    assert wait.held == ("visits",)
    assert wait.tables == ("shop-by_user-repartition",)
    assert wait.seconds == 2.5


@pytest.mark.parametrize("bad", [-1, -0.1, "5", True, float("nan"), float("inf")])
def test_catch_up_must_be_seconds_at_least_zero(bad: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="catch_up= must be seconds"):
        shop(bad)


def test_catch_up_on_a_global_table_is_refused() -> None:
    g = fg.Graph("clicks")
    users = g.global_table("users", key_type=str, value_type=str)
    clicks = g.source("clicks", key_type=str, value_type=str)
    with pytest.raises(GraphDefinitionError, match="catch_up= is only for a table"):
        clicks.join(users, lambda c, u: u, name="x", catch_up=1)
    clicks.join(users, lambda c, u: u, name="y", catch_up=0)  # the default is fine


def test_catch_up_on_a_stream_stream_join_is_refused() -> None:
    g = fg.Graph("ads")
    shown = g.source("shown", key_type=str, value_type=str)
    clicked = g.source("clicked", key_type=str, value_type=str)
    with pytest.raises(GraphDefinitionError, match="catch_up= is only for a table"):
        shown.join(clicked, lambda s, c: c, name="x", within=5, catch_up=1)


def test_a_stream_that_only_feeds_its_own_table_cannot_wait_for_it() -> None:
    g = fg.Graph("g")
    s = g.source("in", key_type=str, value_type=int, partitions=2)
    counts = s.count(name="n")
    s.join(counts, lambda v, n: n, name="numbered", catch_up=1, value_type=int).to("out")
    with pytest.raises(GraphDefinitionError, match="its stream reads only what its table"):
        g.plan()
