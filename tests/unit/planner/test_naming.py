"""Internal names: only from the graph id and step names, never from counters."""

from __future__ import annotations

import re

import pytest

import flowgraph as fg
from planner import naming
from planner.errors import GraphValidationError
from planner.logical import Repartition
from planner.physical import PhysicalPlan


def by_user(v: int) -> int:
    return v % 7


def by_page(v: int) -> int:
    return v % 3


def build(extra_step: bool = False) -> fg.Graph:
    g = fg.Graph("site")
    views = g.source("views", key_type=int, value_type=int, partitions=4)
    clicks = g.source("clicks", key_type=int, value_type=int, partitions=2)
    if extra_step:
        views = views.map(lambda v: v).filter(lambda v: True)
    users = views.key_by(by_user)
    users.count(name="views_per_user").changes().to("per-user")
    users.sum(name="total_per_user")
    views.merge(clicks, name="both").count(name="per_key")
    clicks.key_by(by_page, partitions=6).reduce(max, name="max_per_page")
    return g


def internal_names(plan: PhysicalPlan) -> set[str]:
    return {t.name for t in plan.topics if t.role != "source" and t.role != "sink"} | {
        s.name for s in plan.stores
    }


def test_naming_functions():
    assert naming.repartition_topic("g", "by_url") == "g-by_url-repartition"
    assert naming.store_name("g", "per_url") == "g-per_url"
    assert naming.changelog_topic("g-per_url") == "g-per_url-changelog"
    assert naming.dlq_topic("g") == "g-dlq"
    assert naming.feed_topic("g", "nums") == "g-nums-feed"


def test_every_internal_name_follows_the_rules():
    plan = build().plan()
    user_steps = {n.id for n in build().to_logical().nodes}
    reps = [n for n in plan.logical.nodes if isinstance(n, Repartition)]
    assert {r.topic for r in reps} == {
        "site-by_user-repartition",  # after a key_by, shared by its two aggregates
        "site-per_key-repartition",  # before an aggregate over a merge of 4 and 2 partitions
        "site-by_page-repartition",
    }
    for rep in reps:
        step = re.fullmatch(r"site-(.+)-repartition", rep.topic).group(1)
        assert step in user_steps
        assert rep.id == f"{step}-repartition"
    assert [(s.step, s.name, s.changelog) for s in plan.stores] == [
        (step, f"site-{step}", f"site-{step}-changelog")
        for step in ("views_per_user", "total_per_user", "per_key", "max_per_page")
    ]
    for store in plan.stores:
        changelog = plan.topic(store.changelog)
        assert changelog.role == "changelog"
        assert dict(changelog.configs) == {"cleanup.policy": "compact"}
        assert changelog.partitions == store.partitions
    assert plan.dlq == "site-dlq"
    assert plan.topic("site-by_page-repartition").partitions == 6


def test_unrelated_steps_do_not_rename_state():
    """Adding anonymous stateless steps keeps every topic and store name (KIP-372)."""
    assert internal_names(build(extra_step=True).plan()) == internal_names(build().plan())


@pytest.mark.parametrize(
    ("topic", "role"),
    [("g-count-changelog", "changelog"), ("g-dlq", "dlq"), ("g-kb-repartition", "repartition")],
)
def test_sink_may_not_write_an_internal_topic(topic, role):
    g = fg.Graph("g")
    src = g.source("in", key_type=int, value_type=int)
    src.count(name="count")
    src.key_by(by_user, name="kb").count(name="kb_count")
    src.to(topic)
    with pytest.raises(GraphValidationError) as info:
        g.plan()
    assert info.value.errors == (
        f"a sink writes topic {topic!r}, which the plan uses as its {role} topic; "
        "write to another topic",
    )
