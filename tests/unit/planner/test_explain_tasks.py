"""The tasks section `explain` adds for a running worker."""

from __future__ import annotations

import flowgraph as fg
from planner.explain import tasks_section, to_text
from planner.pipeline import plan as compile_plan


def test_tasks_are_listed_with_their_states_and_standby_lag() -> None:
    lines = tasks_section(
        {(1, 0): ("running", None), (1, 2): ("standby", 37), (0, 1): ("standby", None)}
    )
    assert lines[1] == "Tasks on this worker: 1 running, 2 standby"
    rows = [line.split() for line in lines[3:]]
    assert rows == [
        ["0_1", "0", "1", "standby", "unknown"],
        ["1_0", "1", "0", "running"],
        ["1_2", "1", "2", "standby", "37"],
    ]


def test_the_plan_text_ends_with_the_tasks_only_when_given() -> None:
    g = fg.Graph("tasks")
    g.source("clicks", key_type=str, value_type=int, partitions=2).count(name="n")
    plan = compile_plan(g)
    assert "Tasks on this worker" not in to_text(plan)
    text = to_text(plan, tasks={})
    assert text.startswith(to_text(plan))
    assert text.endswith(
        "Tasks on this worker: none\n  task  sub-topology  partition  state  standby lag"
    )
