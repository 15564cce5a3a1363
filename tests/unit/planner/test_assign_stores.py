"""assign_stores: one store and changelog name per stateful step."""

from __future__ import annotations

from planner.logical import (
    Aggregate,
    KeyBy,
    LogicalPlan,
    Map,
    Repartition,
    Sink,
    Source,
)
from planner.options import PlanOptions
from planner.passes.assign_stores import assign_stores
from planner.passes.split_subtopologies import split_subtopologies
from planner.physical import PhysicalPlan, StoreSpec

OPTS = PlanOptions()


def parity(v: int) -> int:
    return v % 2


def physical(*nodes: object) -> PhysicalPlan:
    return split_subtopologies(LogicalPlan(graph_id="clicks", nodes=nodes), OPTS)


def stores_of(plan: PhysicalPlan) -> tuple[StoreSpec, ...]:
    result = assign_stores(plan, OPTS)
    assert assign_stores(result, OPTS) is result
    return result.stores


def test_plan_without_aggregates_is_returned_itself():
    plan = physical(Source(id="in", topic="in"), Sink(id="out", inputs=("in",), topic="out"))
    assert assign_stores(plan, OPTS) is plan


def test_one_store_per_aggregate_named_after_the_step():
    plan = physical(
        Source(id="in", topic="in", partitions=2, key_type=str, value_type=int),
        Aggregate(id="per_user", inputs=("in",), agg="count", value_type=int),
        KeyBy(id="parity", inputs=("in",), fn=parity, key_type=int, value_type=int),
        Repartition(
            id="parity-repartition",
            inputs=("parity",),
            topic="clicks-parity-repartition",
            partitions=5,
            key_type=int,
            value_type=int,
        ),
        Map(id="half", inputs=("parity-repartition",), fn=parity, key_type=int, value_type=int),
        Aggregate(id="total", inputs=("half",), agg="sum", value_type=float),
    )
    assert stores_of(plan) == (
        StoreSpec(
            name="clicks-per_user",
            step="per_user",
            changelog="clicks-per_user-changelog",
            partitions=2,
            key_type=str,
            value_type=int,
        ),
        StoreSpec(
            name="clicks-total",
            step="total",
            changelog="clicks-total-changelog",
            partitions=5,
            key_type=int,
            value_type=float,
        ),
    )


def test_store_for():
    plan = assign_stores(
        physical(
            Source(id="in", topic="in"),
            Aggregate(id="count", inputs=("in",), agg="count"),
        ),
        OPTS,
    )
    assert plan.store_for("count").name == "clicks-count"


def test_a_table_from_a_topic_gets_a_store_like_an_aggregation():
    plan = physical(
        Source(id="users", topic="users", partitions=3, key_type=str, value_type=dict),
        Aggregate(id="profile", inputs=("users",), agg="latest", value_type=dict),
    )
    assert stores_of(plan) == (
        StoreSpec(
            name="clicks-profile",
            step="profile",
            changelog="clicks-profile-changelog",
            partitions=3,
            key_type=str,
            value_type=dict,
        ),
    )
