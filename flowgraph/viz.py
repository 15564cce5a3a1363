"""Pictures and machine-readable forms of graphs and plans, for Jupyter and the CLI.

Thin adapters over the pure renderers in `planner.draw` (SVG), `planner.explain` (text) and
`planner.describe` (JSON): they accept a `Graph` as well as a plan, and let the caller name
the store backend (``memory://``, ``rocksdb://DIR``), which the planner alone cannot know.

>>> import flowgraph as fg
>>> g = fg.Graph("demo")
>>> words = g.source("words", key_type=str, value_type=str)
>>> _ = words.key_by(str.lower, name="lower").count(name="per_word")
>>> "per_word" in physical_svg(g)
True
"""

from __future__ import annotations

import html

from flowgraph._graph import Graph
from planner import draw, explain
from planner.describe import describe
from planner.logical import LogicalPlan
from planner.physical import PhysicalPlan

__all__ = ["logical_svg", "physical_svg", "to_html", "to_json", "to_text"]


def _plan(plan: Graph | PhysicalPlan | LogicalPlan) -> PhysicalPlan | LogicalPlan:
    return plan.plan() if isinstance(plan, Graph) else plan


def logical_svg(logical: Graph | LogicalPlan) -> str:
    """SVG of the steps as the user built them (what ``Graph._repr_svg_`` shows)."""
    return draw.logical_svg(logical.to_logical() if isinstance(logical, Graph) else logical)


def physical_svg(plan: Graph | PhysicalPlan, *, backend: str | None = None) -> str:
    """SVG of the physical plan: sub-topologies boxed, topics as pills, stores as cylinders."""
    return draw.physical_svg(plan.plan() if isinstance(plan, Graph) else plan, backend=backend)


def to_text(plan: Graph | PhysicalPlan | LogicalPlan, *, backend: str | None = None) -> str:
    """The ``flowgraph explain`` text of a graph's physical plan, or of the given plan."""
    return explain.to_text(_plan(plan), backend=backend)


def to_json(plan: Graph | PhysicalPlan | LogicalPlan, *, backend: str | None = None) -> str:
    """The ``flowgraph explain --format json`` form; `PlanDescription.from_json` reads it."""
    return describe(_plan(plan), backend=backend).to_json()


def to_html(plan: Graph | PhysicalPlan | LogicalPlan, *, backend: str | None = None) -> str:
    """An HTML fragment: the plan's picture above its explain text (folded)."""
    target = _plan(plan)
    svg = (
        draw.physical_svg(target, backend=backend)
        if isinstance(target, PhysicalPlan)
        else draw.logical_svg(target)
    )
    text = html.escape(explain.to_text(target, backend=backend))
    return (
        f'<div class="flowgraph-plan">{svg}'
        f"<details><summary>explain</summary><pre>{text}</pre></details></div>"
    )
