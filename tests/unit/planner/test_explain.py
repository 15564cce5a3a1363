"""`explain` text, `describe` data and its JSON form; golden files in tests/golden/explain/.

Each golden file holds a ``# title:`` line, a builder script (run as module ``app`` from file
``app.py``; it must bind the graph to ``g``) and the expected ``g.plan().explain()`` text.
``pytest --update-golden`` rewrites the expected parts from the current output.
"""

from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowgraph as fg
from planner import Stage, plan_until
from planner.describe import (
    DEFAULT_BACKEND,
    CutDescription,
    PlanDescription,
    StepDescription,
    StoreDescription,
    SubtopologyDescription,
    TaskDescription,
    TopicDescription,
    codec_name,
    describe,
)
from planner.explain import render, to_text
from planner.logical import LogicalPlan, Source
from planner.physical import PhysicalPlan

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "explain"
GRAPH_MARK = "# --- graph\n"
EXPLAIN_MARK = "# --- explain\n"
CASES = sorted(p.stem for p in GOLDEN.glob("*.txt"))


def _parts(case: str) -> tuple[str, str, str]:
    """(head with the title, builder script, expected explain text) of a golden file."""
    text = (GOLDEN / f"{case}.txt").read_text()
    head, rest = text.split(GRAPH_MARK, 1)
    script, expected = rest.split(EXPLAIN_MARK, 1)
    return head, script, expected


def build(case: str) -> fg.Graph | fg.App:
    """Run the builder script of golden case `case` and return its graph (or app) `g`."""
    _, script, _ = _parts(case)
    namespace: dict[str, object] = {"__name__": "app"}
    exec(compile(script, "app.py", "exec"), namespace)
    graph = namespace["g"]
    assert isinstance(graph, fg.Graph | fg.App)
    return graph


def test_golden_cases_are_there():
    assert set(CASES) >= {
        "already_keyed",
        "changes_to_topic",
        "lambda_filter",
        "merge_partitions",
        "one_repartition",
        "shared_repartition",
        "table_from_topic",
    }
    for case in CASES:
        head, _, _ = _parts(case)
        assert head.startswith("# title: "), case


@pytest.mark.parametrize("case", CASES)
def test_explain_golden(case, request):
    head, script, expected = _parts(case)
    actual = build(case).explain() + "\n"  # files end with a newline, the text does not
    if request.config.getoption("--update-golden"):
        (GOLDEN / f"{case}.txt").write_text(head + GRAPH_MARK + script + EXPLAIN_MARK + actual)
        return
    assert actual == expected, f"explain of {case} changed; run pytest --update-golden to accept"


# -- what the text says ------------------------------------------------------------------------


@pytest.fixture
def clicks():
    return build("one_repartition")


def test_fused_task_and_cut_reason(clicks):
    text = clicks.explain()
    assert "tasks   clicks -> parse -> drop_bots -> by_url" in text
    line = next(
        n
        for n, s in enumerate(_parts("one_repartition")[1].splitlines(), 1)
        if ".key_by(by_url)" in s
    )
    assert f"cut: key changed by 'app.by_url' at app.py:{line}" in text
    assert "clickstats-by_url-repartition  <- sub-topology 0" in text


def test_steps_show_kind_function_and_where(clicks):
    text = clicks.explain()
    for fragment in ("map     app.parse", "filter  app.drop_bots", "key_by  app.by_url"):
        assert fragment in text
    assert "app.py:" in text


def test_topics_and_stores_in_full(clicks):
    text = clicks.explain()
    assert (
        "clicks                         source       4           murmur2      str  json<Click>"
        in text
    )
    assert "clickstats-per_url-changelog   changelog    4           murmur2      str  int" in text
    assert "clickstats-dlq                 dlq          1           -" in text
    assert "cleanup.policy=compact" in text
    assert "clickstats-dlq" in text
    assert f"Stores ({DEFAULT_BACKEND})" in text
    assert "clickstats-per_url  per_url" in text


def test_backend_can_be_named(clicks):
    text = to_text(clicks.plan(), backend="rocksdb://.flowgraph")
    assert "Stores (rocksdb://.flowgraph)" in text


def test_explain_of_logical_and_partitioned_stages(clicks):
    logical = to_text(clicks.to_logical())
    assert logical.startswith("Graph 'clickstats': logical plan, 5 steps")
    assert "by_url     key_by  app.by_url" in logical
    assert "repartition" not in logical
    partitioned = plan_until(clicks, Stage.PARTITIONED)
    assert isinstance(partitioned, LogicalPlan)
    text = to_text(partitioned)
    assert text.startswith("Graph 'clickstats': partitioned plan, 6 steps")
    assert "by_url-repartition  repartition  topic clickstats-by_url-repartition" in text
    assert "cut: key changed by 'app.by_url'" in text


def test_merge_tasks_say_which_steps_feed_which():
    text = build("merge_partitions").explain()
    assert "tasks   cards, wires -> all_payments" in text
    assert "cut: input of 'per_account' is not partitioned by its key" in text


def test_render_of_read_back_json_is_the_same_text(clicks):
    d = describe(clicks.plan())
    assert render(PlanDescription.from_json(d.to_json())) == clicks.explain()


# -- describe ---------------------------------------------------------------------------------


def test_describe_physical(clicks):
    d = describe(clicks.plan())
    assert d.graph == "clickstats"
    assert d.stage == "physical"
    assert [s.id for s in d.subtopologies] == [0, 1]
    assert d.subtopologies[0].tasks[0] == TaskDescription(
        steps=("clicks", "parse", "drop_bots", "by_url")
    )
    cut = d.subtopologies[1].cuts[0]
    assert cut.topic == "clickstats-by_url-repartition"
    assert cut.writer == 0
    assert cut.reason.startswith("key changed by 'app.by_url' at app.py:")
    by_url = d.step("by_url")
    assert (by_url.kind, by_url.function) == ("key_by", "app.by_url")
    assert d.step("per_url").store == "clickstats-per_url"
    assert d.step("per_url").kind == "count"
    repartition = next(t for t in d.topics if t.role == "repartition")
    assert repartition.writers == ("by_url",)
    assert repartition.readers == ("by_url-repartition",)
    changelog = next(t for t in d.topics if t.role == "changelog")
    assert changelog.configs == (("cleanup.policy", "compact"),)
    assert changelog.writers == ("per_url",)
    assert d.stores == (
        StoreDescription(
            name="clickstats-per_url",
            step="per_url",
            partitions=4,
            changelog="clickstats-per_url-changelog",
            key="str",
            value="int",
        ),
    )
    assert d.dlq == "clickstats-dlq"


def test_describe_backend_and_logical(clicks):
    d = describe(clicks.plan(), backend="memory://")
    assert {s.backend for s in d.stores} == {"memory://"}
    logical = describe(clicks.to_logical())
    assert logical.stage == "logical"
    assert logical.subtopologies == logical.topics == logical.stores == ()
    assert [s.id for s in logical.steps] == ["clicks", "parse", "drop_bots", "by_url", "per_url"]


def test_describe_lambda_filter():
    d = describe(build("lambda_filter").plan())
    step = d.step("filter-1")
    assert (step.kind, step.function) == ("filter", "app.<lambda>")
    assert step.where.startswith("app.py:")


def test_describe_hand_built_plan():
    plan = LogicalPlan(graph_id="g", nodes=[Source(id="s", topic="t", partitions=2)])
    d = describe(plan)
    assert d.steps == (StepDescription(id="s", kind="source", topic="t"),)


class _Codec:
    name = "json<Thing>"


@attrs.define
class _Rec:
    x: int


class _Plain:
    pass


@pytest.mark.parametrize(
    ("t", "role", "expected"),
    [
        (str, "", "str"),
        (int, "", "int"),
        (float, "", "float"),
        (bytes, "", "raw"),
        (None, "source", "raw"),
        (None, "dlq", "raw"),
        (None, "repartition", "?"),
        (None, "", "?"),
        (_Codec(), "", "json<Thing>"),
        ("auto", "", "auto"),
        (_Rec, "", "json<_Rec>"),
        (_Plain, "", "_Plain"),
        (list[int], "", "list[int]"),
    ],
)
def test_codec_name(t, role, expected):
    assert codec_name(t, role) == expected


def test_codec_name_of_a_record():
    class Click(fg.Record):
        url: str

    assert codec_name(Click) == "json<Click>"


# -- JSON round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_json_round_trip_of_real_plans(case):
    graph = build(case)
    for plan in (graph.plan(), graph.to_logical(), plan_until(graph, Stage.PARTITIONED)):
        assert isinstance(plan, PhysicalPlan | LogicalPlan)
        d = describe(plan)
        assert PlanDescription.from_json(d.to_json()) == d


text = st.text(max_size=12)
names = st.tuples(text).map(lambda t: t[0]) | st.sampled_from(["a", "b-c", "<&>\"'"])
ints = st.integers(min_value=-(2**40), max_value=2**40)
steps = st.builds(
    StepDescription,
    id=names,
    kind=text,
    function=text,
    where=text,
    inputs=st.lists(names, max_size=3),
    topic=text,
    store=text,
    reason=text,
    concurrency=ints,
)
subtopologies = st.builds(
    SubtopologyDescription,
    id=ints,
    partitions=ints,
    steps=st.lists(names, max_size=3),
    tasks=st.lists(
        st.builds(TaskDescription, steps=st.lists(names, max_size=3), stateful=st.booleans()),
        max_size=2,
    ),
    reads=st.lists(names, max_size=2),
    writes=st.lists(names, max_size=2),
    cuts=st.lists(st.builds(CutDescription, topic=names, reason=text, writer=ints), max_size=2),
)
topics = st.builds(
    TopicDescription,
    name=names,
    role=text,
    partitions=ints,
    key=text,
    value=text,
    configs=st.lists(st.tuples(text, text), max_size=2),
    writers=st.lists(names, max_size=2),
    readers=st.lists(names, max_size=2),
)
stores = st.builds(
    StoreDescription,
    name=names,
    step=names,
    partitions=ints,
    changelog=names,
    backend=text,
    key=text,
    value=text,
)
descriptions = st.builds(
    PlanDescription,
    graph=names,
    stage=st.sampled_from(["logical", "partitioned", "physical"]),
    steps=st.lists(steps, max_size=4),
    subtopologies=st.lists(subtopologies, max_size=3),
    topics=st.lists(topics, max_size=3),
    stores=st.lists(stores, max_size=2),
    dlq=text,
)


@given(descriptions)
def test_json_round_trip(d):
    assert PlanDescription.from_json(d.to_json()) == d
    assert PlanDescription.from_json(d.to_json(indent=None)) == d


@pytest.mark.parametrize(
    "bad", ["[]", '{"format": "other"}', '{"format": "flowgraph.plan/1", "graph": "g"}']
)
def test_from_json_rejects_what_it_cannot_read(bad):
    with pytest.raises(ValueError, match="flowgraph plan description"):
        PlanDescription.from_json(bad)


def test_async_steps_show_their_calls_in_flight():
    async def enrich(v: int) -> int:
        return v

    async def save(k: object, v: object) -> None:
        return None

    g = fg.Graph("g")
    src = g.source("in", value_type=int)
    src.map(enrich, concurrency=8).map(lambda v: v, name="plain").to(save)
    d = describe(g.plan())
    assert [(s.id, s.concurrency) for s in d.steps] == [
        ("in", 0),
        ("enrich", 8),
        ("plain", 0),
        ("save", 64),
    ]
    rows = {line.split()[0]: line for line in to_text(g.plan()).splitlines()[5:9]}
    assert "async, 8 calls in flight" in rows["enrich"]
    assert "async, 64 calls in flight" in rows["save"]
    assert "calls in flight" not in rows["plain"]
