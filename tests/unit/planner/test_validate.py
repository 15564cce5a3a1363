"""validate: every problem of a hand-built logical plan, reported at once, culprit named."""

from __future__ import annotations

import pytest

from planner.errors import GraphValidationError
from planner.logical import Aggregate, Changes, KeyBy, LogicalPlan, Map, Merge, Peek, Sink, Source
from planner.options import PlanOptions
from planner.passes.validate import validate

OPTS = PlanOptions()


def double(v: int) -> int:
    return v * 2


def parity(v: int) -> int:
    return v % 2


def errors_of(*nodes: object, graph_id: str = "g") -> tuple[str, ...]:
    plan = LogicalPlan(graph_id=graph_id, nodes=nodes)
    with pytest.raises(GraphValidationError) as info:
        validate(plan, OPTS)
    assert str(info.value)  # a readable message, never empty
    return info.value.errors


def one_error(*nodes: object) -> str:
    errors = errors_of(*nodes)
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_plan_is_returned_itself():
    plan = LogicalPlan(
        graph_id="g",
        nodes=(
            Source(id="in", topic="in", partitions=2),
            Map(id="double", inputs=("in",), fn=double),
            KeyBy(id="parity", inputs=("double",), fn=parity),
            Aggregate(id="count", inputs=("parity",), agg="count"),
            Changes(id="updates", inputs=("count",)),
            Sink(id="out", inputs=("updates",), topic="out"),
            Peek(id="look", inputs=("in",), fn=print),
        ),
    )
    assert validate(plan, OPTS) is plan
    assert validate(validate(plan, OPTS), OPTS) is plan


def test_duplicate_step_names():
    msg = one_error(
        Source(id="in", topic="in"),
        Map(id="m", inputs=("in",), fn=double),
        Map(id="m", inputs=("in",), fn=double),
        Merge(id="both", inputs=("m",)),
        Sink(id="out", inputs=("both",), topic="out"),
    )
    assert msg == (
        "step 'm' is defined 2 times in graph 'g'; step names must be unique; rename one of them"
    )


def test_unknown_input():
    msg = one_error(
        Source(id="in", topic="in"),
        Sink(id="in-out", inputs=("in",), topic="in-out"),
        Map(id="m", inputs=("nope",), fn=double),
        Sink(id="out", inputs=("m",), topic="out"),
    )
    assert msg == "step 'm' reads from 'nope', which is not a step of 'g'"


def test_self_loop_is_a_cycle():
    msg = one_error(
        Source(id="in", topic="in"),
        Merge(id="loop", inputs=("in", "loop")),
        Sink(id="out", inputs=("loop",), topic="out"),
    )
    assert msg == "graph 'g' has a cycle (loop); streams must flow one way"


def test_two_step_cycle_names_both_steps():
    errors = errors_of(
        Source(id="in", topic="in"),
        Merge(id="a", inputs=("in", "b")),
        Map(id="b", inputs=("a",), fn=double),
        Sink(id="out", inputs=("b",), topic="out"),
    )
    text = "\n".join(errors)
    assert "'a'" in text
    assert "'b'" in text


@pytest.mark.parametrize(
    "node",
    [
        Map(id="dangling", inputs=("in",), fn=double),
        KeyBy(id="dangling", inputs=("in",), fn=parity),
        Merge(id="dangling", inputs=("in",)),
    ],
    ids=lambda n: n.kind,
)
def test_step_without_consumer(node):
    msg = one_error(Source(id="in", topic="in"), node)
    assert msg.startswith(f"step 'dangling' ({node.kind}) has no consumer")
    assert ".to(topic)" in msg


def test_terminal_steps_need_no_consumer():
    plan = LogicalPlan(
        graph_id="g",
        nodes=(
            Source(id="in", topic="in"),
            Peek(id="look", inputs=("in",), fn=print),
            Aggregate(id="count", inputs=("in",), agg="count"),
            Sink(id="out", inputs=("in",), topic="out"),
        ),
    )
    assert validate(plan, OPTS) is plan


def test_changes_of_a_non_aggregate():
    msg = one_error(
        Source(id="in", topic="in"),
        Map(id="m", inputs=("in",), fn=double),
        Changes(id="ch", inputs=("m",)),
        Sink(id="out", inputs=("ch",), topic="out"),
    )
    assert msg == "changes 'ch' must read from a table (an aggregation)"


def test_two_sources_on_one_topic():
    msg = one_error(
        Source(id="a", topic="in"),
        Source(id="b", topic="in"),
        Sink(id="out", inputs=("a",), topic="out"),
        Sink(id="out2", inputs=("b",), topic="out2"),
    )
    assert msg.startswith("topic 'in' is read by sources 'a' and 'b'")


def test_sink_writing_a_source_topic():
    msg = one_error(
        Source(id="a", topic="in"),
        Map(id="m", inputs=("a",), fn=double),
        Sink(id="back", inputs=("m",), topic="in"),
    )
    assert msg.startswith("sink 'back' writes to topic 'in', which source 'a' reads")


def test_feed_sources_may_share_nothing_with_topics():
    """A bounded in-process source reads no topic, so a sink may write its feed name."""
    plan = LogicalPlan(
        graph_id="g",
        nodes=(
            Source(id="a", topic="g-a-feed", feed=[1, 2]),
            Sink(id="out", inputs=("a",), topic="out"),
        ),
    )
    assert validate(plan, OPTS) is plan


@pytest.mark.parametrize("partitions", [0, -3])
def test_source_partitions_must_be_positive(partitions):
    msg = one_error(
        Source(id="in", topic="in", partitions=partitions),
        Sink(id="out", inputs=("in",), topic="out"),
    )
    assert msg == f"source 'in' has {partitions} partitions; it needs at least 1"


def test_step_without_input_and_source_with_inputs():
    errors = errors_of(
        Source(id="in", topic="in"),
        Source(id="in2", topic="in2", inputs=("in",)),
        Map(id="m", fn=double),
        Sink(id="out", inputs=("m",), topic="out"),
        Sink(id="out2", inputs=("in2",), topic="out2"),
    )
    assert "source 'in2' cannot have inputs" in errors
    assert "step 'm' has no input; connect it to a stream" in errors


def test_empty_graph():
    assert errors_of(graph_id="empty") == (
        "graph 'empty' has no steps; add a source with g.source(...)",
    )


def _every_problem() -> list[object]:
    return [
        Source(id="a", topic="in"),
        Source(id="b", topic="in"),  # two sources on one topic
        Map(id="dup", inputs=("a",), fn=double),
        Map(id="dup", inputs=("a",), fn=double),  # duplicate name
        Merge(id="joined", inputs=("dup", "b")),
        Sink(id="out", inputs=("joined",), topic="out"),
        Map(id="lost", inputs=("nope",), fn=double),  # unknown input
        Sink(id="lost-out", inputs=("lost",), topic="lost"),
        Map(id="dangling", inputs=("a",), fn=double),  # no consumer
        Changes(id="ch", inputs=("joined",)),  # changes of a non-aggregate
        Sink(id="ch-out", inputs=("ch",), topic="ch"),
        Sink(id="back", inputs=("a",), topic="in"),  # writes a source topic
    ]


def _culprits(errors: tuple[str, ...]) -> dict[str, str]:
    """Map each expected problem to the one message that reports it."""
    probes = {
        "duplicate": "step 'dup' is defined 2 times",
        "unknown": "step 'lost' reads from 'nope'",
        "dangling": "step 'dangling' (map) has no consumer",
        "changes": "changes 'ch' must read from a table",
        "two sources": "topic 'in' is read by sources 'a' and 'b'",
        "sink to source": "sink 'back' writes to topic 'in'",
        "cycle": "has a cycle (loop)",
    }
    return {what: next((e for e in errors if probe in e), "") for what, probe in probes.items()}


def test_every_problem_reported_together():
    with pytest.raises(GraphValidationError) as info:
        validate(LogicalPlan(graph_id="g", nodes=_every_problem()), OPTS)
    found = _culprits(info.value.errors)
    del found["cycle"]
    assert all(found.values()), (found, info.value.errors)
    assert len(info.value.errors) == 6
    assert str(info.value).startswith("6 problems in the graph:\n  - ")


def test_cycle_reported_together_with_other_problems():
    nodes = [
        *_every_problem(),
        Merge(id="loop", inputs=("a", "loop")),
        Sink(id="loop-out", inputs=("loop",), topic="loop"),
    ]
    with pytest.raises(GraphValidationError) as info:
        validate(LogicalPlan(graph_id="g", nodes=nodes), OPTS)
    found = _culprits(info.value.errors)
    assert all(found.values()), (found, info.value.errors)
    assert len(info.value.errors) == 7
