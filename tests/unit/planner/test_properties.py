"""Planner invariants over random valid graphs (tests/strategies.py)."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings

from planner.invariants import validate_invariants
from planner.logical import STATEFUL, Repartition
from planner.options import PlanOptions
from planner.passes import (
    assign_stores,
    assign_topics,
    fuse,
    insert_repartitions,
    split_subtopologies,
    validate,
)
from planner.passes.insert_repartitions import partitioning_of
from tests.strategies import Case, cases

OPTS = PlanOptions()
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(case=cases())
def test_passes_are_idempotent_and_keep_user_steps(case: Case):
    logical = case.graph.to_logical()
    assert validate(logical, OPTS) is logical
    partitioned = insert_repartitions(logical, OPTS)
    assert insert_repartitions(partitioned, OPTS) is partitioned
    assert validate(partitioned, OPTS) is partitioned

    user = [n.id for n in logical.nodes]
    added = [n for n in partitioned.nodes if n.id not in user]
    assert [n.id for n in partitioned.nodes if n.id in user] == user
    assert all(isinstance(n, Repartition) for n in added)
    assert len({n.topic for n in added}) == len(added)

    physical = split_subtopologies(partitioned, OPTS)
    assert split_subtopologies(partitioned, OPTS) == physical
    for physical_pass in (fuse, assign_stores, assign_topics):
        physical = physical_pass(physical, OPTS)
        assert physical_pass(physical, OPTS) is physical
    validate_invariants(physical)


@SETTINGS
@given(case=cases())
def test_every_stateful_step_reads_a_stream_partitioned_by_its_key(case: Case):
    partitioned = insert_repartitions(case.graph.to_logical(), OPTS)
    parts = partitioning_of(partitioned)
    for n in partitioned.nodes:
        if isinstance(n, STATEFUL):
            assert parts[n.inputs[0]] is not None, n.id


@SETTINGS
@given(case=cases())
def test_physical_plan_shape(case: Case):
    g = case.graph
    plan = g.plan()
    gid = g.id
    steps = {n.id for n in plan.logical.nodes}
    for sub in plan.subtopologies:
        fused = [s for t in sub.tasks for s in t.step_ids]
        assert sorted(fused) == sorted(sub.step_ids)
        position = {s: i for i, s in enumerate(sub.step_ids)}
        for task in sub.tasks:
            order = [position[s] for s in task.step_ids]
            assert order == sorted(order)
            stateful = [isinstance(sub.steps[position[s]], STATEFUL) for s in task.step_ids]
            assert task.stateful == any(stateful)
            assert not task.stateful or len(task.step_ids) == 1
        for s in sub.steps:  # topological inside the sub-topology
            assert all(position[u] < position[s.id] for u in s.inputs if u in position)
        widths = {plan.topic(t).partitions for t in sub.source_topics}
        assert sub.partitions == max(widths)
    for t in plan.topics:
        if t.role == "repartition":
            assert re.fullmatch(rf"{gid}-(.+)-repartition", t.name).group(1) in steps
        if t.role == "changelog":
            assert dict(t.configs) == {"cleanup.policy": "compact"}
    assert [s.name for s in plan.stores] == [
        f"{gid}-{n.id}" for sub in plan.subtopologies for n in sub.steps if isinstance(n, STATEFUL)
    ]
    assert {s.changelog for s in plan.stores} == {
        t.name for t in plan.topics if t.role == "changelog"
    }
