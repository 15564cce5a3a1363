"""The pipeline: pass order, named stages and what each stage returns."""

from __future__ import annotations

import pytest

import flowgraph as fg
import planner
from planner.logical import LogicalPlan
from planner.options import PlanOptions
from planner.passes import (
    assign_stores,
    assign_topics,
    fuse,
    insert_repartitions,
    mark_unread_keys,
    split_subtopologies,
    validate,
)
from planner.physical import PhysicalPlan
from planner.pipeline import LOGICAL_PASSES, PHYSICAL_PASSES, Stage, plan_until

OPTS = PlanOptions()


def by_user(v: int) -> int:
    return v % 5


def build() -> fg.Graph:
    g = fg.Graph("g")
    src = g.source("in", key_type=int, value_type=int, partitions=3)
    users = src.map(lambda v: v + 1).key_by(by_user)
    users.count(name="per_user").changes().to("out")
    return g


def test_pass_order():
    assert list(LOGICAL_PASSES) == [validate, insert_repartitions, mark_unread_keys]
    assert list(PHYSICAL_PASSES) == [fuse, assign_stores, assign_topics]


@pytest.mark.parametrize(
    ("stage", "kind"),
    [
        (Stage.LOGICAL, LogicalPlan),
        (Stage.PARTITIONED, LogicalPlan),
        (Stage.PHYSICAL, PhysicalPlan),
    ],
)
def test_plan_until_returns_the_stage_type(stage, kind):
    assert type(planner.plan_until(build(), stage)) is kind


def test_stages_are_the_passes_in_order():
    g = build()
    logical = g.to_logical()
    assert plan_until(g, Stage.LOGICAL) == logical
    assert plan_until(logical, Stage.LOGICAL) is logical
    partitioned = mark_unread_keys(insert_repartitions(validate(logical, OPTS), OPTS), OPTS)
    assert plan_until(g, Stage.PARTITIONED) == partitioned
    physical = split_subtopologies(partitioned, OPTS)
    for physical_pass in PHYSICAL_PASSES:
        physical = physical_pass(physical, OPTS)
    assert plan_until(g, Stage.PHYSICAL) == physical
    assert planner.plan(g) == physical
    assert g.plan() == physical


def test_plan_is_deterministic_and_invariant_checks_change_nothing():
    g = build()
    first = planner.plan(g)
    assert planner.plan(g) == first
    assert planner.plan(g) is not first
    assert planner.plan(g, PlanOptions(check_invariants=True)) == first


def test_user_functions_compare_by_identity():
    """Two builds with fresh lambdas are different plans: fns are opaque values."""
    assert planner.plan(build()) != planner.plan(build())


def test_stage_values():
    assert [s.value for s in Stage] == ["logical", "partitioned", "physical"]


def test_a_plan_is_a_fixed_point_of_its_physical_passes():
    plan = planner.plan(build())
    for physical_pass in PHYSICAL_PASSES:
        assert physical_pass(plan, OPTS) is plan


def test_validation_errors_surface_from_plan():
    g = fg.Graph("g")
    g.source("in")
    g.source("other").map(lambda v: v)
    with pytest.raises(fg.GraphValidationError) as info:
        planner.plan(g)
    assert len(info.value.errors) == 2
