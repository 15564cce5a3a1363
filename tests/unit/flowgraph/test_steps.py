"""Building steps: ``context=True``, functions checked against how a step calls them, a function
used by several steps, and errors that name the user's file and line."""

from __future__ import annotations

import operator
import re
import sys
from typing import Any

import attrs
import pytest

import flowgraph as fg
from flowgraph._context import RecordContext
from planner.logical import FnNode, KeyBy, LogicalPlan, Map, Sink, Source


def parse(v: bytes) -> str:
    return v.decode()


def pair(k: Any, v: Any) -> Any:
    return (k, v)


def with_ctx(v: Any, ctx: RecordContext) -> Any:
    return v


def here() -> int:
    """The caller's line number."""
    return sys._getframe(1).f_lineno


def stream() -> tuple[fg.Graph, fg.Stream[Any, Any]]:
    g = fg.Graph("g")
    return g, g.source("in", key_type=str, value_type=bytes)


# -- context=True -------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["map", "filter", "flat_map", "peek", "key_by"])
def test_context_is_on_the_logical_node_and_in_explain(op: str) -> None:
    g, s = stream()
    out = getattr(s, op)(with_ctx, context=True)
    out.to("out")
    node = g._node("with_ctx")
    assert isinstance(node, FnNode)
    assert node.context is True
    # context is part of what the step does: a plan with it differs from one without
    assert node != attrs.evolve(node, context=False)
    assert "with_ctx +context" in g.explain()


def test_function_sink_with_context() -> None:
    g, s = stream()

    def emit(k: str, v: bytes, ctx: RecordContext) -> None:
        pass

    s.to(emit, context=True)
    node = g._node("emit")
    assert isinstance(node, Sink) and node.context
    assert "emit +context" in g.explain()


def test_steps_without_context_explain_as_before() -> None:
    g, s = stream()
    s.map(parse).to("out")
    assert "+context" not in g.explain()
    assert g._node("parse").context is False  # type: ignore[attr-defined]


def test_context_on_a_topic_sink_or_not_a_bool_is_refused() -> None:
    _, s = stream()
    with pytest.raises(fg.GraphDefinitionError, match=r"context= is for a function sink"):
        s.to("out", context=True)
    with pytest.raises(fg.GraphDefinitionError, match=r"map context= must be True or False"):
        s.map(with_ctx, context="yes")  # type: ignore[arg-type]


def test_a_context_step_makes_the_source_decode_its_keys() -> None:
    g, s = stream()
    s.map(with_ctx, context=True).key_by(parse).count(name="n")
    plain, s2 = stream()
    s2.map(parse).key_by(parse).count(name="n")
    keyed = [n for n in _final_nodes(g) if isinstance(n, Source)]
    unkeyed = [n for n in _final_nodes(plain) if isinstance(n, Source)]
    assert [n.key_read for n in keyed] == [True]
    assert [n.key_read for n in unkeyed] == [False]


def _final_nodes(g: fg.Graph) -> list[Any]:
    from planner.options import PlanOptions
    from planner.passes import mark_unread_keys, validate

    logical: LogicalPlan = g.to_logical()
    opts = PlanOptions()
    return list(mark_unread_keys(validate(logical, opts), opts).nodes)


def test_record_context_hides_flowgraph_headers() -> None:
    ctx = RecordContext("k", 1.5, (("fg.o", b"\0"), ("a", b"1"), ("a", b"2")), "t", 3, 7)
    assert ctx.headers == (("a", b"1"), ("a", b"2"))
    assert ctx.header("a") == b"2"
    assert ctx.header("fg.o") is None
    assert ctx.header("b") is None
    assert RecordContext("k", 0.0, None, "t", 0, 0).headers == ()
    assert "topic='t', partition=3, offset=7" in repr(ctx)


# -- a function that cannot be called as its step calls it -----------------------------------


def test_map_with_a_two_argument_function_fails_at_build_time() -> None:
    _, s = stream()
    with pytest.raises(fg.GraphDefinitionError) as info:
        s.map(pair)
    line = here() - 1
    assert str(info.value) == (
        "map(pair) calls pair(value), but it takes 2 arguments (k, v); to read the record's "
        "key, timestamp, headers, topic, partition or offset, pass context=True and take "
        f"(value, ctx) (at test_steps.py:{line})"
    )


@pytest.mark.parametrize("op", ["filter", "flat_map", "peek", "key_by", "sum"])
def test_every_one_value_step_checks_its_function(op: str) -> None:
    _, s = stream()
    with pytest.raises(fg.GraphDefinitionError, match=rf"^{op}\(pair\) calls pair\(value\), "):
        getattr(s, op)(pair)


def test_context_true_with_a_one_argument_function() -> None:
    _, s = stream()
    with pytest.raises(fg.GraphDefinitionError) as info:
        s.map(parse, context=True)
    assert str(info.value).startswith(
        "map(parse, context=True) calls parse(value, ctx), but it takes 1 argument (v); "
        "with context=True the record context is its second argument (at test_steps.py:"
    )


def test_sinks_and_folds_check_their_functions() -> None:
    _, s = stream()
    with pytest.raises(fg.GraphDefinitionError, match=r"^to\(parse\) calls parse\(key, value\)"):
        s.to(parse)
    with pytest.raises(fg.GraphDefinitionError, match=r"takes 2 arguments \(k, v\); with context"):
        s.to(pair, context=True)
    with pytest.raises(
        fg.GraphDefinitionError, match=r"^reduce\(parse\) calls parse\(accumulated, value\)"
    ):
        s.reduce(parse)
    with pytest.raises(fg.GraphDefinitionError, match=r"^aggregate\(fn\) calls fn\("):
        s.aggregate(0, lambda acc: acc, name="a")
    with pytest.raises(fg.GraphDefinitionError, match=r"takes no arguments"):
        s.map(lambda: 1)
    with pytest.raises(fg.GraphDefinitionError, match=r"source timestamp=\(pair\) calls"):
        fg.Graph("h").source("x", timestamp=pair)
    with pytest.raises(fg.GraphDefinitionError, match=r"window timestamp=\(pair\) calls"):
        s.window(fg.Tumbling(10), timestamp=pair)


def test_required_keyword_only_argument_is_named() -> None:
    _, s = stream()

    def needs(v: bytes, *, scale: int) -> bytes:
        return v * scale

    with pytest.raises(fg.GraphDefinitionError, match="the required keyword-only argument 'scale'"):
        s.map(needs)


def test_defaults_varargs_builtins_and_callables_are_accepted() -> None:
    _, s = stream()

    def with_default(v: bytes, extra: int = 1) -> bytes:
        return v

    def anything(*args: Any, **kwargs: Any) -> Any:
        return args

    class Scale:
        def __call__(self, v: bytes) -> bytes:
            return v

    s.map(with_default).to("a")
    s.map(anything, context=True).to("b")
    s.map(len).to("c")
    s.map(bytes.decode).to("d")
    s.map(operator.itemgetter(0)).to("e")  # no signature: trusted
    s.map(Scale()).to("f")
    s.filter(bool).to("g")
    s.to(print)
    s.reduce(operator.add, name="sum_of")


# -- one function in several steps ------------------------------------------------------------


def test_a_function_used_again_names_the_later_steps_parse_2_and_parse_3() -> None:
    g, s = stream()
    s.map(parse).to("a")
    s.map(parse).to("b")
    s.filter(parse).to("c")
    ids = [n.id for n in g.to_logical().nodes]
    assert ids[:6] == ["in", "parse", "to-a", "parse-2", "to-b", "parse-3"]
    assert g._node("parse-2").fn is parse  # type: ignore[attr-defined]


def test_function_sink_used_twice() -> None:
    g, s = stream()
    s.to(print)
    s.map(parse).to(print)
    assert {n.id for n in g.to_logical().nodes} >= {"print", "print-2"}


def test_reused_key_by_needs_a_name_only_for_a_repartition() -> None:
    g, s = stream()
    s.key_by(parse).to("a")
    s.key_by(parse).to("b")  # no repartition: its made-up name names nothing
    g.plan()
    node = g._node("parse-2")
    assert isinstance(node, KeyBy) and node.anonymous
    s.key_by(parse).count(name="per_text")
    with pytest.raises(fg.GraphValidationError, match=r"an earlier step is named after\) and no"):
        g.plan()


def test_a_reused_function_in_an_aggregation_asks_for_a_name() -> None:
    _, s = stream()

    def total(acc: int, v: bytes) -> int:
        return acc + len(v)

    s.aggregate(0, total).changes().to("a")
    with pytest.raises(fg.GraphDefinitionError) as info:
        s.aggregate(0, total)
    line = here() - 1
    assert str(info.value) == (
        f"aggregate at test_steps.py:{line} would be named 'total' after its function, but a "
        "step of that name already exists; its store and changelog topic are named after the "
        "step; pass name=..."
    )
    assert s.aggregate(0, total, name="total_b").name == "total_b"


def test_derived_names_leave_golden_names_alone() -> None:
    """A function used once still names its step by itself, without a suffix."""
    g, s = stream()
    s.map(parse).filter(bool).to("out")
    assert [n.id for n in g.to_logical().nodes] == ["in", "parse", "bool", "to-out"]


# -- errors name file:line ---------------------------------------------------------------------


def test_validation_errors_name_where_the_step_was_made() -> None:
    g, s = stream()
    s.map(parse)
    line = here() - 1
    with pytest.raises(fg.GraphValidationError) as info:
        g.plan()
    assert info.value.errors == (
        "step 'parse' (map) has no consumer, so its output would be dropped; add a step "
        f"such as .to(topic) after it, or remove it (at test_steps.py:{line})",
    )


def test_where_does_not_change_plan_equality() -> None:
    a = Map(id="m", inputs=("in",), fn=parse, where="a.py:1")
    b = Map(id="m", inputs=("in",), fn=parse, where="b.py:9")
    assert a == b


def test_duplicate_step_ids_in_a_hand_built_plan_name_both_places() -> None:
    from planner.options import PlanOptions
    from planner.passes import validate

    plan = LogicalPlan(
        graph_id="g",
        nodes=(
            Source(id="in", topic="in", where="app.py:1"),
            Map(id="m", inputs=("in",), fn=parse, where="app.py:2"),
            Map(id="m", inputs=("in",), fn=parse, where="app.py:3"),
            Sink(id="out", inputs=("m",), topic="out"),
        ),
    )
    with pytest.raises(fg.GraphValidationError) as info:
        validate(plan, PlanOptions())
    assert (
        "step 'm' is defined 2 times in graph 'g'; step names must be unique; rename one of "
        "them (at app.py:2, app.py:3)"
    ) in info.value.errors


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda g, s: s.map(3), "map needs a function, got 3"),
        (lambda g, s: s.key_by(parse, partitions=0), "partitions must be a positive integer"),
        (lambda g, s: s.merge(3), "merge needs streams of graph 'g'"),
        (lambda g, s: g.source(""), "source topic must be a non-empty string"),
        (lambda g, s: s.window(3), "window needs fg.Tumbling"),
    ],
    ids=["not-callable", "partitions", "merge", "topic", "window"],
)
def test_builder_errors_name_the_calling_line(build: Any, message: str) -> None:
    g, s = stream()
    with pytest.raises(fg.GraphDefinitionError) as info:
        build(g, s)
    text = str(info.value)
    assert text.startswith(message)
    assert re.search(r"\(at test_steps\.py:\d+\)$", text), text
