"""The builder: step naming, definition errors, sinks and the types that flow to topics."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph import Record
from planner.logical import Aggregate, Filter, FlatMap, KeyBy, Map, Merge, Sink, Source

HERE = Path(__file__).name


class Click(Record):
    url: str
    user: str


def parse(raw: bytes) -> Click:
    return Click(url=raw.decode(), user="u")


def by_url(c: Click) -> str:
    return c.url


def words(c: Click) -> list[str]:
    return c.url.split("/")


def chars(c: Click) -> Iterator[str]:
    yield from c.url


def size(c: Click) -> int:
    return len(c.url)


def longest(a: Click, b: Click) -> Click:
    return a if len(a.url) >= len(b.url) else b


def graph() -> tuple[fg.Graph, fg.Stream]:
    g = fg.Graph("g")
    return g, g.source("raw", key_type=str, value_type=bytes, partitions=2)


def node(g: fg.Graph, step: str):
    return g.to_logical().node(step)


# -- naming -------------------------------------------------------------------------------


def test_named_function_names_the_step():
    g, raw = graph()
    clicks = raw.map(parse)
    assert clicks.step == "parse"
    n = node(g, "parse")
    assert isinstance(n, Map)
    assert n.fn is parse
    assert n.inputs == ("raw",)
    assert n.fn_name == f"{__name__}.parse"
    assert n.where.startswith(f"{HERE}:")


def test_name_overrides_the_function_name():
    _g, raw = graph()
    assert raw.map(parse, name="decode").step == "decode"


def test_stateless_lambdas_get_kind_counters():
    _g, raw = graph()
    a = raw.map(lambda v: v)
    b = a.filter(lambda v: True)
    c = b.map(lambda v: v)
    assert (a.step, b.step, c.step) == ("map-1", "filter-1", "map-2")


def test_source_is_named_after_its_topic_unless_named():
    g = fg.Graph("g")
    assert g.source("clicks").step == "clicks"
    assert g.source("views", name="v").step == "v"
    # undeclared key and value types are raw bytes
    assert node(g, "v") == Source(id="v", topic="views", key_type=bytes, value_type=bytes)


def test_anonymous_key_by_is_marked():
    g, raw = graph()
    assert node(g, raw.key_by(lambda v: v).step).anonymous is True
    assert node(g, raw.key_by(lambda v: v, name="k").step).anonymous is False
    assert node(g, raw.map(parse).key_by(by_url).step).anonymous is False


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.sum(lambda v: v),
        lambda s: s.reduce(lambda a, b: a),
        lambda s: s.aggregate(0, lambda acc, v: acc),
        lambda s: s.sum(),
    ],
    ids=["sum", "reduce", "aggregate", "sum-no-fn"],
)
def test_aggregation_without_a_name_is_an_error(make):
    g, raw = graph()
    with pytest.raises(fg.GraphDefinitionError) as info:
        make(raw)
    msg = str(info.value)
    assert "pass name=" in msg
    assert f" at {HERE}:" in msg  # the culprit: where the user built it
    assert "store and changelog topic are named after the step" in msg
    assert len(g.to_logical().nodes) == 1  # nothing half-added


def test_count_requires_a_name():
    _g, raw = graph()
    with pytest.raises(fg.GraphDefinitionError, match="pass name="):
        raw.count()
    with pytest.raises(fg.GraphDefinitionError, match="pass name="):
        raw.count(name=None)


def test_to_table_records_a_latest_aggregate_and_needs_a_name():
    g, raw = graph()
    table = raw.to_table(name="latest")
    assert (table.name, table.store) == ("latest", "g-latest")
    assert node(g, "latest") == Aggregate(
        id="latest", inputs=("raw",), agg="latest", key_type=str, value_type=bytes
    )
    with pytest.raises(fg.GraphDefinitionError, match=r"^to_table at .* no name=; .*pass name="):
        raw.to_table()


def test_aggregations_named_by_function_or_name():
    g, raw = graph()
    clicks = raw.map(parse)
    assert clicks.sum(size).name == "size"
    assert clicks.reduce(longest).name == "longest"
    assert clicks.aggregate(0, lambda acc, c: acc + 1, name="n").name == "n"
    table = clicks.count(name="per_url")
    assert (table.name, table.store) == ("per_url", "g-per_url")
    assert node(g, "per_url") == Aggregate(
        id="per_url", inputs=("parse",), agg="count", key_type=str, value_type=int
    )


def test_duplicate_names():
    _g, raw = graph()
    first = raw.map(parse, name="p")
    with pytest.raises(fg.GraphDefinitionError) as info:
        raw.map(parse, name="p")
    line = sys._getframe().f_lineno - 1
    where = first.graph._node("p").where
    assert str(info.value) == (
        "step 'p' already exists in graph 'g'; step names must be unique; rename one of them "
        f"(at test_graph.py:{line}; the other is at {where})"
    )
    assert where == f"test_graph.py:{line - 2}"


@pytest.mark.parametrize(
    "make",
    [
        lambda g, s: g.source("raw"),
        lambda g, s: s.filter(bool, name="raw"),
        lambda g, s: s.count(name="raw"),
        lambda g, s: s.key_by(by_url, name="raw"),
        lambda g, s: s.merge(s, name="raw"),
        lambda g, s: s.to("x", name="raw"),
        lambda g, s: g.source_from([1], name="raw"),
    ],
    ids=["source", "filter", "count", "key_by", "merge", "to", "source_from"],
)
def test_every_builder_rejects_a_taken_name(make):
    g, raw = graph()
    with pytest.raises(fg.GraphDefinitionError, match=r"^step 'raw' already exists in graph 'g'; "):
        make(g, raw)


def test_table_changes_default_name():
    _g, raw = graph()
    updates = raw.count(name="c").changes()
    assert updates.step == "c-changes"
    with pytest.raises(fg.GraphDefinitionError, match="'c-changes' already exists"):
        raw.count(name="c2").changes(name="c-changes")


# -- invalid arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [0, -1, 1.5, "2", True, None])
def test_invalid_source_partitions(partitions):
    g = fg.Graph("g")
    expected = f"partitions must be a positive integer, got {partitions!r}"
    with pytest.raises(fg.GraphDefinitionError, match=re.escape(expected)):
        g.source("in", partitions=partitions)


@pytest.mark.parametrize("partitions", [0, -2, 2.0])
def test_invalid_partitions_elsewhere(partitions):
    g, raw = graph()
    with pytest.raises(fg.GraphDefinitionError, match="partitions must be a positive integer"):
        raw.key_by(by_url, partitions=partitions)
    with pytest.raises(fg.GraphDefinitionError, match="partitions must be a positive integer"):
        raw.to("out", partitions=partitions)
    with pytest.raises(fg.GraphDefinitionError, match="partitions must be a positive integer"):
        g.source_from([1], name="nums", partitions=partitions)


@pytest.mark.parametrize("graph_id", ["", "a b", "a/b", "a:b", None])
def test_invalid_graph_id(graph_id):
    with pytest.raises(fg.GraphDefinitionError, match="prefixes topic and store names"):
        fg.Graph(graph_id)


def test_non_callable_step_function():
    _g, raw = graph()
    with pytest.raises(fg.GraphDefinitionError, match="map needs a function, got 3"):
        raw.map(3)  # type: ignore[arg-type]


def test_empty_topic_and_non_iterable_feed():
    g = fg.Graph("g")
    with pytest.raises(fg.GraphDefinitionError, match="source topic must be a non-empty string"):
        g.source("")
    with pytest.raises(fg.GraphDefinitionError, match="source_from needs an iterable, got int"):
        g.source_from(3, name="n")  # type: ignore[arg-type]


def test_merge_with_a_stream_of_another_graph():
    _g, raw = graph()
    other = fg.Graph("other").source("raw")
    with pytest.raises(fg.GraphDefinitionError, match="merge needs streams of graph 'g', got"):
        raw.merge(other)
    with pytest.raises(fg.GraphDefinitionError, match="merge needs streams of graph 'g'"):
        raw.merge("raw")  # type: ignore[arg-type]


def test_merge():
    g = fg.Graph("g")
    a = g.source("a", key_type=str, value_type=int)
    b = g.source("b", key_type=str, value_type=int)
    c = g.source("c", key_type=str, value_type=bytes)
    assert node(g, a.merge(b).step) == Merge(
        id="merge-1", inputs=("a", "b"), key_type=str, value_type=int
    )
    assert node(g, a.merge(b, c, name="all").step) == Merge(
        id="all", inputs=("a", "b", "c"), key_type=str, value_type=None
    )


# -- sinks ------------------------------------------------------------------------------------


def test_to_topic():
    g, raw = graph()
    assert raw.to("copy") is None
    raw.to("wide", name="w", partitions=8, value_type=str)
    assert node(g, "to-copy") == Sink(
        id="to-copy", inputs=("raw",), topic="copy", key_type=str, value_type=bytes
    )
    assert node(g, "w") == Sink(
        id="w", inputs=("raw",), topic="wide", key_type=str, value_type=str, partitions=8
    )


def test_to_callable():
    g, raw = graph()
    seen: list[tuple[object, object]] = []

    def collect(key: object, value: object) -> None:
        seen.append((key, value))

    raw.to(collect)
    raw.to(lambda k, v: None)
    raw.to(print, name="show")
    n = node(g, "collect")
    assert isinstance(n, Sink)
    assert (n.topic, n.fn, n.is_async) == (None, collect, False)
    assert node(g, "to-1").topic is None
    assert node(g, "show").fn is print
    assert {t.role for t in g.plan().topics} == {"source", "dlq", "checkpoint"}


def test_async_functions_are_flagged():
    g, raw = graph()

    async def enrich(v: bytes) -> bytes:
        return v

    async def sink(k: object, v: object) -> None:
        return None

    raw.map(enrich).to(sink)
    assert node(g, "enrich").is_async is True
    assert node(g, "sink").is_async is True
    assert node(g, "raw").key_type is str
    assert node(g, "enrich").concurrency is None  # the runtime's default


def test_concurrency_is_set_per_async_step():
    g, raw = graph()

    async def enrich(v: bytes) -> bytes:
        return v

    async def keep(v: bytes) -> bool:
        return True

    async def save(k: object, v: object) -> None:
        return None

    s = raw.map(enrich, concurrency=8).filter(keep, concurrency=1)
    s.flat_map(enrich, name="each", concurrency=2).peek(enrich, name="look", concurrency=3)
    s.key_by(enrich, name="by", concurrency=4).to(save, concurrency=5)
    got = {n: node(g, n).concurrency for n in ("enrich", "keep", "each", "look", "by", "save")}
    assert got == {"enrich": 8, "keep": 1, "each": 2, "look": 3, "by": 4, "save": 5}


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "8"])
def test_concurrency_must_be_a_positive_int(bad):
    g, raw = graph()

    async def enrich(v: bytes) -> bytes:
        return v

    with pytest.raises(fg.GraphDefinitionError, match="concurrency= must be a positive integer"):
        raw.map(enrich, concurrency=bad)
    assert "enrich" not in g._ids  # nothing was added


def test_concurrency_needs_an_async_function():
    _, raw = graph()
    with pytest.raises(fg.GraphDefinitionError, match="needs an async def function"):
        raw.map(bytes.upper, concurrency=4)
    with pytest.raises(fg.GraphDefinitionError, match="needs an async def function"):
        raw.to(lambda k, v: None, concurrency=4)
    with pytest.raises(fg.GraphDefinitionError, match="not a topic"):
        raw.to("out", concurrency=4)


# -- types -----------------------------------------------------------------------------------


def test_types_from_annotations_flow_to_topics():
    g, raw = graph()
    clicks = raw.map(parse)
    clicks.to("clicks")
    keyed = clicks.key_by(by_url)
    keyed.to("by-url")
    clicks.flat_map(words).to("words")
    clicks.flat_map(chars).to("chars")
    keyed.count(name="per_url").changes().to("per-url")
    keyed.map(size).sum(name="total").changes().to("total")
    keyed.aggregate(0, lambda acc, c: acc + 1, name="n").changes().to("n")
    keyed.reduce(longest).changes().to("longest-out")
    keyed.map(lambda c: c.url).to("untyped")
    plan = g.plan()

    def types(topic: str) -> tuple[object, object]:
        spec = plan.topic(topic)
        return spec.key_type, spec.value_type

    assert types("raw") == (str, bytes)
    assert types("clicks") == (str, Click)
    assert types("by-url") == (str, Click)
    assert types("g-by_url-repartition") == (str, Click)
    assert types("words") == (str, str)
    assert types("chars") == (str, str)
    assert types("per-url") == (str, int)
    assert types("g-per_url-changelog") == (str, int)
    assert types("total") == (str, None)
    assert types("n") == (str, int)
    assert types("longest-out") == (str, Click)
    assert types("untyped") == (str, None)


def test_explicit_types_win_over_annotations():
    g, raw = graph()
    raw.map(parse, value_type=dict).key_by(by_url, key_type=bytes).to("out")
    assert node(g, "parse").value_type is dict
    assert g.plan().topic("out").key_type is bytes


def test_builders_record_only_nodes():
    """Building calls no user function and makes no topic or store (that is the planner's job)."""
    g, raw = graph()

    def explode(*args: object) -> object:
        raise AssertionError("called while building")

    (
        raw.map(explode, name="m")
        .filter(explode, name="f")
        .flat_map(explode, name="fm")
        .key_by(explode, name="k")
        .aggregate(0, explode, name="c")
    )
    kinds = [type(n) for n in g.to_logical().nodes]
    assert kinds == [Source, Map, Filter, FlatMap, KeyBy, Aggregate]
    assert repr(g) == "Graph('g', steps=6)"
