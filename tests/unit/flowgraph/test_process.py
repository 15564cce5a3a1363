"""`stream.process`: what the builder records and refuses, and how a bad result is judged."""

from __future__ import annotations

import pytest

import flowgraph as fg
from flowgraph.runtime.aggregate import ProcessResultError, process_result
from flowgraph.testing import TestDriver
from planner.logical import Aggregate


def dedupe(seen: bool, value: int) -> tuple[bool, list[int]]:
    return True, [] if seen else [value]


def source(g: fg.Graph) -> fg.Stream:
    return g.source("in", key_type=str, value_type=int)


def test_process_records_an_aggregate_of_kind_process():
    g = fg.Graph("g")
    out = source(g).process(dedupe, False)
    node = g._node(out.step)
    assert isinstance(node, Aggregate)
    assert (node.id, node.agg, node.initial, node.context) == ("dedupe", "process", False, False)
    # types read from the `-> tuple[bool, list[int]]` annotation
    assert (node.state_type, node.value_type) == (bool, int)


def test_explicit_types_and_context():
    def tag(state: object, value: int, ctx: fg.RecordContext) -> tuple[object, list[object]]:
        return state, [(ctx.key, value)]

    g = fg.Graph("g")
    out = source(g).process(
        tag, dict, name="tagged", value_type="json", state_type="json", context=True
    )
    node = g._node(out.step)
    assert isinstance(node, Aggregate)
    assert (node.id, node.value_type, node.state_type, node.context) == (
        "tagged",
        "json",
        "json",
        True,
    )
    assert node.initial is dict


def test_explain_shows_kind_function_and_store():
    g = fg.Graph("g")
    source(g).process(dedupe, False).to("out")
    text = g.explain()
    line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["dedupe", "process"])
    assert "test_process.dedupe, store g-dedupe" in line
    assert "g-dedupe-changelog" in text


def test_key_by_before_process_is_repartitioned():
    g = fg.Graph("g")
    source(g).key_by(lambda v: v % 2, name="parity").process(dedupe, False).to("out")
    plan = g.plan()
    assert any(t.name == "g-parity-repartition" for t in plan.topics)
    assert [s.name for s in plan.stores] == ["g-dedupe"]


def test_lambda_needs_a_name():
    g = fg.Graph("g")
    s = source(g)
    with pytest.raises(fg.GraphDefinitionError, match=r"^process at .* lambda and no name="):
        s.process(lambda s, v: (s, [v]))
    s.process(lambda s, v: (s, [v]), name="ok").to("out")


def test_a_taken_function_name_needs_a_name():
    g = fg.Graph("g")
    s = source(g)
    s.process(dedupe, False).to("a")
    with pytest.raises(fg.GraphDefinitionError, match=r"already exists; .* pass name="):
        s.process(dedupe, False)


@pytest.mark.parametrize(
    ("fn", "context", "says"),
    [
        (lambda v: ([], v), False, r"calls fn\(state, value\), but it takes 1 argument \(v\)"),
        (lambda s, v: (s, [v]), True, r"calls fn\(state, value, ctx\), but it takes 2"),
        (lambda a, b, c: (a, [b]), False, r"calls fn\(state, value\), but it takes 3"),
    ],
)
def test_bad_arity_is_refused_when_the_step_is_added(fn, context, says):
    g = fg.Graph("g")
    with pytest.raises(fg.GraphDefinitionError, match=says):
        source(g).process(fn, name="p", context=context)


def test_non_callable_and_bad_context_flag():
    s = source(fg.Graph("g"))
    with pytest.raises(fg.GraphDefinitionError, match="process needs a function"):
        s.process(42, name="p")  # type: ignore[arg-type]
    with pytest.raises(fg.GraphDefinitionError, match="context= must be True or False"):
        s.process(dedupe, context="yes")  # type: ignore[arg-type]


def test_async_function_is_accepted():
    async def slow_dedupe(seen: bool, value: int) -> tuple[bool, list[int]]:
        return True, [] if seen else [value]

    g = fg.Graph("g")
    node = g._node(source(g).process(slow_dedupe, False).step)
    assert isinstance(node, Aggregate)
    assert node.is_async


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ((1, [2, 3]), (1, [2, 3])),
        ((1, (2, 3)), (1, [2, 3])),
        ((1, None), (1, [])),
        ([1, [2]], (1, [2])),
        ((None, []), (None, [])),
    ],
)
def test_process_result_accepts_pairs_of_state_and_iterable(result, expected):
    assert process_result("f", result) == expected


def test_process_result_materialises_a_generator():
    # made here, not in a parametrize list: a generator there is spent after one run of the
    # module's tests (mutmut runs them more than once in one process)
    assert process_result("f", (1, (x for x in (4, 5)))) == (1, [4, 5])


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ((1, "abc"), "returned outputs of type str; return a list of values"),
        ((1, b"abc"), "returned outputs of type bytes; return a list of values"),
        ((1, {"a": 1}), "returned outputs of type dict; return a list of values"),
        ((1, 7), "returned outputs of type int; return a list of values"),
        ([1], r"returned list \[1\]; it must return a pair \(new_state, outputs\)"),
        (None, r"returned NoneType None; it must return a pair"),
        ((1, 2, 3), "it must return a pair"),
    ],
)
def test_process_result_refuses_anything_else_in_one_sentence(result, says):
    with pytest.raises(ProcessResultError, match=says) as info:
        process_result("mod.f line 3", result)
    assert str(info.value).count(". ") == 0  # one sentence
    assert str(info.value).startswith("process function mod.f line 3 returned ")


def test_bad_outputs_go_to_the_dead_letter_topic_with_the_sentence():
    def chars(state: int, value: int) -> tuple[int, object]:
        return state + 1, "ab" if value == 2 else [value]

    g = fg.Graph("g")
    source(g).process(chars, 0).to("out")
    with TestDriver(g) as d:
        for v in (1, 2, 3):
            d.send("in", "k", v)
        assert d.output("out") == [("k", 1), ("k", 3)]  # never "a", "b"
        assert d.table("chars") == {"k": 2}  # the bad record left the state as it was
        (dead,) = d.dead_letters()
    assert dead.value == b"2"
    assert dead.headers["error.type"] == "ProcessResultError"
    assert "returned outputs of type str; return a list" in dead.headers["error.message"]


def test_describe_gives_kind_process_with_function_and_store():
    from planner.describe import describe

    g = fg.Graph("g")
    source(g).process(dedupe, False).to("out")
    (step,) = [s for s in describe(g.plan()).steps if s.id == "dedupe"]
    assert (step.kind, step.function, step.store) == (
        "process",
        "tests.unit.flowgraph.test_process.dedupe",
        "g-dedupe",
    )


def test_a_generator_that_raises_halfway_emits_nothing_and_keeps_the_state():
    def halfway(n: int, v: int) -> tuple[int, object]:
        def outputs():
            yield v
            if v == 2:
                raise ValueError("broke after one output")
            yield -v

        return n + 1, outputs()

    g = fg.Graph("g")
    source(g).process(halfway, 0).to("out")
    with TestDriver(g) as d:
        for v in (1, 2, 3):
            d.send("in", "k", v)
        assert d.output("out") == [("k", 1), ("k", -1), ("k", 3), ("k", -3)]
        assert d.table("halfway") == {"k": 2}
        assert [x.headers["error.message"] for x in d.dead_letters()] == ["broke after one output"]


def test_process_result_sentences_in_full():
    with pytest.raises(ProcessResultError) as info:
        process_result("m.f", (1, 7))
    assert str(info.value) == (
        "process function m.f returned outputs of type int; "
        "return a list of values to emit (or None), such as (state, [value])"
    )
    with pytest.raises(ProcessResultError) as info:
        process_result("m.f", 7)
    assert str(info.value) == (
        "process function m.f returned int 7; "
        "it must return a pair (new_state, outputs), such as (state, [value])"
    )
