"""SVG pictures of graphs and plans: well-formed XML naming every step, topic and store."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph import viz
from planner import Stage, plan_until
from planner.describe import PlanDescription, describe
from planner.draw import logical_svg, physical_svg
from planner.logical import LogicalPlan, Source

SVG = "{http://www.w3.org/2000/svg}"
REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "golden" / "explain"
CASES = sorted(p.stem for p in GOLDEN.glob("*.txt"))


def build(case: str) -> fg.Graph | fg.App:
    """The graph (or app) `g` of golden explain case `case` (see
    tests/unit/planner/test_explain.py)."""
    text = (GOLDEN / f"{case}.txt").read_text()
    script = text.split("# --- graph\n", 1)[1].split("# --- explain\n", 1)[0]
    namespace: dict[str, object] = {"__name__": "app"}
    exec(compile(script, "app.py", "exec"), namespace)
    graph = namespace["g"]
    assert isinstance(graph, fg.Graph | fg.App)
    return graph


def texts(svg: str) -> set[str]:
    """The contents of every <text> element; fails if `svg` is not well-formed SVG."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert float(root.get("width", "0")) > 0
    assert float(root.get("height", "0")) > 0
    return {t.text or "" for t in root.iter(f"{SVG}text")}


def click_graph() -> fg.Graph:
    class Click(fg.Record):
        url: str
        user: str

    def drop_bots(c: Click) -> bool:
        return not c.user.startswith("bot")

    def by_url(c: Click) -> str:
        return c.url

    g = fg.Graph("clickstats")
    clicks = g.source("clicks", key_type=str, value_type=Click, partitions=4)
    per_url = clicks.filter(drop_bots).key_by(by_url).count(name="per_url")
    per_url.changes().to("per-url-counts")
    return g


@pytest.mark.parametrize("case", CASES)
def test_logical_svg_shows_every_step(case):
    g = build(case)
    logical = g.to_logical()
    shown = texts(logical_svg(logical))
    assert {n.id for n in logical.nodes} <= shown


@pytest.mark.parametrize("case", CASES)
def test_partitioned_svg_shows_repartitions(case):
    plan = plan_until(build(case), Stage.PARTITIONED)
    assert isinstance(plan, LogicalPlan)
    assert {n.id for n in plan.nodes} <= texts(logical_svg(plan))


@pytest.mark.parametrize("case", CASES)
def test_physical_svg_shows_every_step_topic_and_store(case):
    plan = build(case).plan()
    shown = texts(physical_svg(plan))
    assert {s.id for sub in plan.subtopologies for s in sub.steps} <= shown
    assert {t.name for t in plan.topics} <= shown
    assert {s.name for s in plan.stores} <= shown
    assert {
        f"sub-topology {sub.id} · {sub.partitions} partition{'' if sub.partitions == 1 else 's'}"
        for sub in plan.subtopologies
    } <= shown


def test_physical_svg_draws_subtopology_boxes_and_cut_reasons():
    plan = build("one_repartition").plan()
    root = ET.fromstring(physical_svg(plan))
    groups = [g.get("class") for g in root.iter(f"{SVG}g")]
    assert groups.count("fg-subtopology") == 2
    assert groups.count("fg-store") == 1
    assert groups.count("fg-step") == 6
    assert "fg-task" in groups  # the fused clicks -> parse -> drop_bots -> by_url
    shown = {t.text or "" for t in root.iter(f"{SVG}text")}
    assert any(t.startswith("key changed by 'app.by_url' at app.py:") for t in shown)
    tips = {t.text or "" for t in root.iter(f"{SVG}title")}
    assert "fused task: clicks -> parse -> drop_bots -> by_url" in tips
    assert any(t.startswith("map app.parse at app.py:") for t in tips)


def text_y(svg: str) -> dict[str, float]:
    """The baseline y of each <text> element, by its text."""
    return {t.text or "": float(t.get("y", "0")) for t in ET.fromstring(svg).iter(f"{SVG}text")}


def test_physical_svg_of_a_join_reads_down_the_page():
    """The sub-topology writing a repartition topic is drawn above the one reading it; the
    repartition sits beside the table it is joined with, not above its store; the join box
    says which table it reads."""
    plan = build("stream_table_join").plan()
    svg = physical_svg(plan)
    y = text_y(svg)
    writer = next(s for s in plan.subtopologies if "item" in {n.id for n in s.steps})
    reader = next(s for s in plan.subtopologies if "priced" in {n.id for n in s.steps})
    assert writer.id != reader.id
    box = "sub-topology {} · {} partitions"
    assert y[box.format(writer.id, writer.partitions)] < y[box.format(reader.id, reader.partitions)]
    assert y["item-repartition"] == y["price"] < y["priced"]
    assert "left join on table price" in y


def test_physical_svg_names_the_windows_of_a_windowed_step():
    g = fg.Graph("w")
    g.source("clicks", key_type=str, value_type=int).window(fg.Session(10)).count(name="visits")
    shown = texts(physical_svg(g.plan()))
    assert "count, session gap 10s" in shown
    assert "sub-topology 0 · 1 partition" in shown


def test_a_fused_task_is_not_shaded_over_a_store():
    svg = physical_svg(build("stream_table_join").plan())
    tips = {t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}title")}
    assert not any(t.startswith("fused task: item-repartition") for t in tips)


def test_repr_svg_of_graph_and_plans():
    g = click_graph()
    assert {"clicks", "drop_bots", "by_url", "per_url"} <= texts(g._repr_svg_())
    assert "per_url" in texts(g.to_logical()._repr_svg_())
    shown = texts(g.plan()._repr_svg_())
    assert {"clickstats-by_url-repartition", "clickstats-per_url", "per-url-counts"} <= shown


def test_text_is_escaped():
    g = fg.Graph("esc")
    src = g.source('a<b&"c">', key_type=str, partitions=2, name="s<1>")
    src.count(name="n&m").changes().to("out&<>")
    plan = g.plan()
    shown = texts(physical_svg(plan))
    assert {"s<1>", "n&m", 'a<b&"c">', "out&<>", "esc-n&m"} <= shown
    assert {"s<1>", "n&m"} <= texts(logical_svg(g.to_logical()))


def test_control_characters_do_not_break_the_xml():
    plan = LogicalPlan(graph_id="g", nodes=[Source(id="bad\x01id", topic="t")])
    assert "bad\ufffdid" in texts(logical_svg(plan))


def test_draw_from_a_description_read_back_from_json():
    plan = click_graph().plan()
    d = PlanDescription.from_json(describe(plan).to_json())
    assert physical_svg(d) == physical_svg(plan)
    assert logical_svg(describe(plan.logical)) == logical_svg(plan.logical)


def test_viz_adapters():
    g = click_graph()
    assert viz.logical_svg(g) == viz.logical_svg(g.to_logical())
    assert viz.physical_svg(g) == physical_svg(g.plan())
    assert viz.to_text(g) == g.explain()
    assert "Stores (rocksdb://data)" in viz.to_text(g, backend="rocksdb://data")
    d = PlanDescription.from_json(viz.to_json(g, backend="memory://"))
    assert d == describe(g.plan(), backend="memory://")
    html = viz.to_html(g)
    assert html.startswith('<div class="flowgraph-plan"><svg')
    assert "clicks -&gt; drop_bots -&gt; by_url" in html
    assert viz.to_html(g.to_logical()).count("<svg") == 1


def test_planner_draw_does_not_import_flowgraph():
    code = (
        "import sys, planner.draw, planner.describe, planner.explain; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('flowgraph', 'asyncio', 'rich', 'aiokafka', 'rocksdict')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
