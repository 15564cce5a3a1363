"""Stream-stream join arguments and planning: each mistake refused in one sentence."""

from __future__ import annotations

from typing import Any

import pytest

import flowgraph as fg
from planner import logical as lg


def pair(left: Any, right: Any) -> str:
    return f"{left}|{right}"


def streams() -> tuple[fg.Graph, fg.Stream[Any, Any], fg.Stream[Any, Any]]:
    g = fg.Graph("sj")
    left = g.source("left", key_type=str, value_type=str, partitions=2)
    right = g.source("right", key_type=str, value_type=str, partitions=2)
    return g, left, right


def one_sentence(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "a join with another stream needs within="),
        ({"within": 5, "how": "full"}, 'stream join how= must be "inner", "left" or "outer"'),
        ({"within": -1}, "join within= must be seconds"),
        ({"within": float("inf")}, "join within= must be seconds"),
        ({"within": "5s"}, "join within= must be seconds"),
        ({"within": 5, "grace": -0.5}, "join grace= must be seconds"),
        ({"within": 5, "key": str}, "join key= is only for a global table"),
    ],
)
def test_bad_stream_join_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    _, left, right = streams()
    with pytest.raises(fg.GraphDefinitionError) as exc:
        left.join(right, pair, name="paired", **kwargs)
    assert message in one_sentence(exc)


def test_within_with_a_table_is_refused() -> None:
    _, left, right = streams()
    table = right.to_table(name="latest")
    for kwargs in ({"within": 5.0}, {"grace": 1.0}):
        with pytest.raises(fg.GraphDefinitionError) as exc:
            left.join(table, pair, name="looked", **kwargs)
        assert "within= and grace= are for a join with another stream" in one_sentence(exc)


def test_a_stream_of_another_graph_is_refused() -> None:
    _, left, _ = streams()
    other = fg.Graph("other").source("right", key_type=str, value_type=str)
    with pytest.raises(fg.GraphDefinitionError) as exc:
        left.join(other, pair, within=5, name="paired")
    assert "join needs a stream of graph 'sj', got one of 'other'" in one_sentence(exc)


def test_a_lambda_without_a_name_is_refused_since_the_store_is_named_after_the_step() -> None:
    _, left, right = streams()
    with pytest.raises(fg.GraphDefinitionError) as exc:
        left.join(right, lambda a, b: a, within=5)
    assert "pass name=" in one_sentence(exc)


def test_an_async_or_one_argument_function_is_refused() -> None:
    _, left, right = streams()

    async def slow(a: Any, b: Any) -> Any:
        return a

    with pytest.raises(fg.GraphDefinitionError, match="plain function"):
        left.join(right, slow, within=5, name="j1")
    with pytest.raises(fg.GraphDefinitionError, match="calls fn"):
        left.join(right, lambda a: a, within=5, name="j2")


def test_the_step_carries_window_grace_and_how() -> None:
    g, left, right = streams()
    left.join(right, pair, within=5, grace=1.5, how="outer", name="paired").to("out")
    node = g.plan().logical.node("paired")
    assert isinstance(node, lg.StreamJoin)
    assert (node.within, node.grace, node.how, node.inputs) == (
        5.0,
        1.5,
        "outer",
        ("left", "right"),
    )
    assert [s.name for s in g.plan().stores] == ["sj-paired"]


def test_co_partitioned_streams_are_not_repartitioned() -> None:
    g, left, right = streams()
    left.join(right, pair, within=5, name="paired").to("out")
    assert not [t for t in g.plan().topics if t.role == "repartition"]


def test_a_rekeyed_side_follows_the_other_sides_partitions() -> None:
    g, left, right = streams()
    wide = g.source("wide", key_type=str, value_type=str, partitions=5)
    left.join(wide.key_by(pair_key, name="by_key"), pair, within=5, name="paired").to("out")
    right.to("copy")
    (rep,) = [t for t in g.plan().topics if t.role == "repartition"]
    assert (rep.name, rep.partitions) == ("sj-by_key-repartition", 2)


def test_a_key_by_asking_for_other_partitions_is_refused() -> None:
    g, left, right = streams()
    left.join(right.key_by(pair_key, name="by_key", partitions=3), pair, within=5, name="j").to(
        "out"
    )
    with pytest.raises(fg.GraphDefinitionError) as exc:
        g.plan()
    assert "give key_by partitions=2" in str(exc.value)


def pair_key(value: str) -> str:
    return value.split(":")[0]
