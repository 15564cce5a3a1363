"""The public API: `flowgraph.__all__` is pinned; changing it is a deliberate decision."""

from __future__ import annotations

import importlib

import flowgraph as fg

PUBLIC = [
    "App",
    "ConfigurationError",
    "DELETE",
    "DeadLetterLimitError",
    "FlowgraphError",
    "GlobalTable",
    "Graph",
    "GraphDefinitionError",
    "GraphValidationError",
    "GroupStalledError",
    "Hopping",
    "Plan",
    "PlanningError",
    "Record",
    "RecordContext",
    "RunResult",
    "RuntimeFailure",
    "SerializationError",
    "Session",
    "Sliding",
    "Stream",
    "Table",
    "Tumbling",
    "WindowKey",
    "WindowSet",
    "WindowedStream",
    "WindowedTable",
    "WindowedTableView",
    "Worker",
    "current_event",
    "plan",
    "run",
    "run_async",
    "testing",
]


def test_all_is_pinned_and_sorted():
    assert fg.__all__ == PUBLIC
    assert sorted(fg.__all__) == fg.__all__


def test_every_public_name_is_importable():
    module = importlib.import_module("flowgraph")
    for name in fg.__all__:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from flowgraph import *", namespace)
    assert set(PUBLIC) <= set(namespace)


def test_testing_driver():
    assert fg.testing.TestDriver.__test__ is False
    assert "TestDriver" in fg.testing.__all__


def test_error_hierarchy():
    assert issubclass(fg.GraphValidationError, fg.GraphDefinitionError)
    assert issubclass(fg.GraphDefinitionError, fg.FlowgraphError)
    assert issubclass(fg.GraphDefinitionError, ValueError)
    assert issubclass(fg.ConfigurationError, ValueError)
    assert issubclass(fg.SerializationError, ValueError)
    for name in ("PlanningError", "RuntimeFailure", "SerializationError", "ConfigurationError"):
        assert issubclass(getattr(fg, name), fg.FlowgraphError), name


def test_planner_errors_are_the_public_ones():
    import planner

    assert planner.GraphValidationError is fg.GraphValidationError
    assert planner.Plan is fg.Plan
    assert planner.plan is fg.plan
