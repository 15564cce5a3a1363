"""SVG pictures of plans, for Jupyter and ``flowgraph explain --format svg``.

Pure string building: no graphviz, no I/O. `logical_svg` draws the steps of a logical plan
as boxes in layers by topological depth, with arrows from each step to its consumers.
`physical_svg` draws each sub-topology as a dashed box around its steps (in layers too),
topics as pills (source and repartition topics above the sub-topology that reads them, sink
topics below the one that writes them, the reason for each repartition next to its topic),
and each store as a cylinder beside its stateful step with its changelog topic.

Every step id, topic name and store name is the whole text of one ``<text>`` element, so a
test (or a reader of the SVG) can find them; function, source line and cut reason are also in
``<title>`` tooltips. Layout: a node sits at the mean position of its parents, pushed right
as little as needed to avoid overlap; legible rather than clever.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import attrs

from planner.describe import (
    PlanDescription,
    StepDescription,
    StoreDescription,
    SubtopologyDescription,
    TaskDescription,
    describe,
)
from planner.logical import LogicalPlan
from planner.physical import PhysicalPlan

__all__ = ["logical_svg", "physical_svg"]

FONT = "Menlo, Consolas, 'DejaVu Sans Mono', monospace"
CHAR = 0.6
"""Advance of one monospace character, in font sizes (12px text: 7.2px a character)."""
MARGIN = 16.0
GAP = 28.0
"""Horizontal space between neighbours in a layer."""
NODE_H = 38.0
PITCH = NODE_H + 36.0
"""Vertical distance between layers."""
PILL_H = 24.0
BOX_PAD = 14.0
BOX_LABEL = 24.0
STORE_H = 44.0

_AGGREGATES = ("count", "sum", "reduce", "aggregate", "windowed")
_COLORS = {
    "source": ("#e3f2e1", "#4f8f49"),
    "repartition": ("#f1f1f1", "#7d7d7d"),
    "key_by": ("#fdf0dc", "#c98a2b"),
    "stateful": ("#fde2d8", "#c0603a"),
    "to": ("#efe6f7", "#8a63b8"),
    "step": ("#eef3fb", "#5a7bb5"),
    "topic": ("#fff8d6", "#b59b2b"),
    "store": ("#fbe3cf", "#b0703a"),
}
# Characters XML 1.0 forbids even when escaped; user strings could hold them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _esc(text: str) -> str:
    """`text` safe inside an XML element or a double-quoted attribute."""
    text = _NOT_XML.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _width(text: str, size: float) -> float:
    return len(text) * size * CHAR


@attrs.frozen
class _Rect:
    """A placed shape: top-left corner and size."""

    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h


# -- shapes -----------------------------------------------------------------------------------


def _text(
    x: float,
    y: float,
    text: str,
    *,
    size: float = 12,
    weight: str = "",
    anchor: str = "middle",
    color: str = "#222",
    italic: bool = False,
) -> str:
    extra = f' font-weight="{weight}"' if weight else ""
    extra += ' font-style="italic"' if italic else ""
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" text-anchor="{anchor}" '
        f'fill="{color}"{extra}>{_esc(text)}</text>'
    )


def _title(text: str) -> str:
    return f"<title>{_esc(text)}</title>" if text else ""


def _category(s: StepDescription) -> str:
    if s.kind in ("source", "repartition", "key_by", "to"):
        return s.kind
    if s.kind == "send":
        return "to"
    if s.store or s.kind.startswith(_AGGREGATES):
        return "stateful"
    return "step"


def _what(s: StepDescription) -> str:
    """What a step does, in a few words: its kind, the windows of a windowed aggregation
    (``count, session gap 10s``), or how a join looks up which table (its function is in
    the tooltip)."""
    if s.window:
        return f"{s.kind.removeprefix('windowed ')}, {s.window}"
    if s.kind == "join" and ", " in s.function:
        return s.function.split(", ", 1)[1].split(" by ", 1)[0]
    return s.kind


def _step_label(s: StepDescription, *, with_topic: bool) -> str:
    """Second line of a step box: what it does, and its topic when it reads or writes one."""
    return f"{_what(s)} {s.topic}" if s.topic and with_topic else _what(s)


def _step_width(s: StepDescription, *, with_topic: bool) -> float:
    label = _step_label(s, with_topic=with_topic)
    return max(_width(s.id, 12), _width(label, 10), 56.0) + 20


def _step_svg(s: StepDescription, r: _Rect, *, with_topic: bool) -> str:
    fill, stroke = _COLORS[_category(s)]
    tip = " ".join(p for p in (s.kind, s.function, f"at {s.where}" if s.where else "") if p)
    if s.reason:
        tip += f"; {s.reason}"
    dash = ' stroke-dasharray="4 3"' if s.kind == "repartition" else ""
    return (
        f'<g class="fg-step">{_title(tip)}'
        f'<rect x="{_n(r.x)}" y="{_n(r.y)}" width="{_n(r.w)}" height="{_n(r.h)}" rx="5" '
        f'fill="{fill}" stroke="{stroke}"{dash}/>'
        + _text(r.cx, r.y + 16, s.id, weight="bold")
        + _text(r.cx, r.y + 30, _step_label(s, with_topic=with_topic), size=10, color="#555")
        + "</g>"
    )


def _pill_size(name: str) -> float:
    return _width(name, 11) + 24


def _pill_svg(name: str, r: _Rect, tip: str, *, note: str = "") -> str:
    fill, stroke = _COLORS["topic"]
    out = (
        f'<g class="fg-topic">{_title(tip)}'
        f'<rect x="{_n(r.x)}" y="{_n(r.y)}" width="{_n(r.w)}" height="{_n(r.h)}" '
        f'rx="{_n(r.h / 2)}" fill="{fill}" stroke="{stroke}"/>'
        + _text(r.cx, r.y + 16, name, size=11)
    )
    if note:
        out += _text(
            r.x + r.w + 8, r.y + 16, note, size=10, anchor="start", color="#8a5a00", italic=True
        )
    return out + "</g>"


def _store_svg(name: str, r: _Rect, tip: str) -> str:
    fill, stroke = _COLORS["store"]
    ry = 6.0
    x0, x1, top, bot = r.x, r.x + r.w, r.y + ry, r.bottom - ry
    rx = r.w / 2
    body = (
        f"M{_n(x0)},{_n(top)} L{_n(x0)},{_n(bot)} A{_n(rx)},{_n(ry)} 0 0 0 {_n(x1)},{_n(bot)} "
        f"L{_n(x1)},{_n(top)} A{_n(rx)},{_n(ry)} 0 0 0 {_n(x0)},{_n(top)} Z"
    )
    lid = f"M{_n(x0)},{_n(top)} A{_n(rx)},{_n(ry)} 0 0 0 {_n(x1)},{_n(top)}"
    return (
        f'<g class="fg-store">{_title(tip)}'
        f'<path d="{body}" fill="{fill}" stroke="{stroke}"/>'
        f'<path d="{lid}" fill="none" stroke="{stroke}"/>'
        + _text(r.cx, r.y + 24, name, size=11)
        + _text(r.cx, r.y + 37, "store", size=9, color="#7a4a20")
        + "</g>"
    )


def _edge(x1: float, y1: float, x2: float, y2: float, *, dashed: bool = False) -> str:
    """A curve from (x1, y1) down (or across) to an arrowhead at (x2, y2)."""
    bend = max(abs(y2 - y1) / 2, 12.0)
    if abs(y2 - y1) < 1:  # side by side: a straight line
        d = f"M{_n(x1)},{_n(y1)} L{_n(x2)},{_n(y2)}"
    else:
        d = (
            f"M{_n(x1)},{_n(y1)} C{_n(x1)},{_n(y1 + bend)} {_n(x2)},{_n(y2 - bend)} "
            f"{_n(x2)},{_n(y2)}"
        )
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    return f'<path d="{d}" fill="none" stroke="#666" marker-end="url(#fg-arrow)"{dash}/>'


def _document(width: float, height: float, title: str, body: Iterable[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="{_esc(FONT)}" role="img">'
        f"{_title(title)}"
        '<defs><marker id="fg-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#666"/></marker></defs>'
        f'<rect x="0" y="0" width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>'
        + _text(MARGIN, MARGIN + 6, title, size=13, weight="bold", anchor="start")
    )
    return head + "\n" + "\n".join(body) + "\n</svg>\n"


# -- layout -----------------------------------------------------------------------------------


def _layers(
    ids: Sequence[str],
    inputs: dict[str, tuple[str, ...]],
    left: dict[str, float],
    right: dict[str, float],
) -> tuple[dict[str, float], dict[str, int]]:
    """Centre x (the leftmost footprint starts at 0) and layer of each id.

    `ids` are in topological order. A node's layer is one more than its deepest parent's,
    and a node without parents sits right above its first child, so that its edges do not
    cross the layers between (and the stores drawn beside their steps there). A node is
    placed under the mean of its parents, then pushed right past its left neighbour.
    `left`/`right` are how far its footprint reaches from its centre.
    """
    depth: dict[str, int] = {}
    for i in ids:
        parents = [depth[u] for u in inputs[i] if u in depth]
        depth[i] = 1 + max(parents) if parents else 0
    for i in ids:
        children = [depth[c] for c in ids if i in inputs[c]]
        if children and not any(u in depth for u in inputs[i]):
            depth[i] = min(children) - 1
    cx: dict[str, float] = {}
    for k in range(max(depth.values(), default=-1) + 1):
        layer = [i for i in ids if depth[i] == k]
        want = {}
        for i in layer:
            ups = [cx[u] for u in inputs[i] if u in cx]
            want[i] = sum(ups) / len(ups) if ups else None
        layer.sort(key=lambda i: (want[i] is None, want[i] or 0.0))
        # Siblings that want the same spot share it: their centres straddle that spot.
        for spot in {w for w in want.values() if w is not None}:
            group = [i for i in layer if want[i] == spot]
            centres = [0.0]
            for a, b in itertools.pairwise(group):
                centres.append(centres[-1] + right[a] + GAP + left[b])
            offset = spot - centres[-1] / 2
            for i, c in zip(group, centres, strict=True):
                want[i] = offset + c
        edge = None
        for i in layer:
            w = want[i]
            if edge is None:
                cx[i] = left[i] if w is None else w
            else:
                cx[i] = edge + GAP + left[i] if w is None else max(w, edge + GAP + left[i])
            edge = cx[i] + right[i]
    shift = -min((cx[i] - left[i] for i in ids), default=0.0)
    return {i: x + shift for i, x in cx.items()}, depth


def _sweep(items: list[tuple[str, float, float]], start: float) -> dict[str, float]:
    """Left x of band items (name, wanted left x, width), in a row without overlaps."""
    out: dict[str, float] = {}
    edge = start - GAP
    for name, want, w in sorted(items, key=lambda t: t[1]):
        out[name] = max(want, edge + GAP)
        edge = out[name] + w
    return out


# -- logical ------------------------------------------------------------------------------------


def logical_svg(plan: LogicalPlan | PlanDescription) -> str:
    """The steps of a logical plan as boxes in layers, with an arrow to each consumer."""
    d = plan if isinstance(plan, PlanDescription) else describe(plan)
    ids = [s.id for s in d.steps]
    inputs = {s.id: s.inputs for s in d.steps}
    size = {s.id: _step_width(s, with_topic=True) for s in d.steps}
    half = {i: w / 2 for i, w in size.items()}
    cx, depth = _layers(ids, inputs, half, half)
    top = MARGIN + 30
    rects = {
        i: _Rect(MARGIN + cx[i] - size[i] / 2, top + depth[i] * PITCH, size[i], NODE_H) for i in ids
    }
    body = [
        _edge(rects[u].cx, rects[u].bottom, rects[s.id].cx, rects[s.id].y)
        for s in d.steps
        for u in s.inputs
        if u in rects
    ]
    body += [_step_svg(s, rects[s.id], with_topic=True) for s in d.steps]
    width = max((r.x + r.w for r in rects.values()), default=MARGIN) + MARGIN
    height = max((r.bottom for r in rects.values()), default=top) + MARGIN
    title = f"{d.graph} · {d.stage} plan"
    return _document(max(width, _width(title, 13) + 2 * MARGIN), height, title, body)


# -- physical -----------------------------------------------------------------------------------

LEGEND = (
    "dashed box: sub-topology · shaded: steps fused into one task · pill: topic · cylinder: store"
)


def _task_shades(tasks: Sequence[TaskDescription], rects: dict[str, _Rect]) -> list[str]:
    """A shaded area behind each fused task of several steps, unless it would cover another."""
    out = []
    for task in tasks:
        mine = [rects[i] for i in task.steps if i in rects]
        if len(mine) < 2:
            continue
        x0 = min(r.x for r in mine) - 7
        y0 = min(r.y for r in mine) - 7
        x1 = max(r.x + r.w for r in mine) + 7
        y1 = max(r.bottom for r in mine) + 7
        others = [r for i, r in rects.items() if i not in task.steps]
        if any(r.x < x1 and r.x + r.w > x0 and r.y < y1 and r.bottom > y0 for r in others):
            continue
        out.append(
            f'<g class="fg-task">{_title("fused task: " + " -> ".join(task.steps))}'
            f'<rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(x1 - x0)}" height="{_n(y1 - y0)}" '
            f'rx="10" fill="#e4ebf7" stroke="none"/></g>'
        )
    return out


@attrs.define
class _Canvas:
    """SVG fragments drawn so far, back to front, and how far right they reach."""

    back: list[str] = attrs.Factory(list)
    edges: list[str] = attrs.Factory(list)
    front: list[str] = attrs.Factory(list)
    right: float = 0.0
    pills: dict[str, _Rect] = attrs.Factory(dict)

    def pill_row(self, items: Sequence[tuple[str, float, str]], y: float, tips: _Tips) -> None:
        """Topic pills in a row at `y`: (name, wanted centre x, note shown to the right)."""
        band = [
            (name, cx - _pill_size(name) / 2, _pill_size(name) + 8 + _width(note, 10))
            for name, cx, note in items
        ]
        lefts = _sweep(band, MARGIN)
        for name, _, note in items:
            r = _Rect(lefts[name], y, _pill_size(name), PILL_H)
            self.pills[name] = r
            self.front.append(_pill_svg(name, r, tips(name), note=note))
            self.right = max(self.right, r.x + r.w + (8 + _width(note, 10) if note else 0))


class _Tips:
    """Tooltip text of each topic: role, partitions, codecs and configs."""

    def __init__(self, d: PlanDescription) -> None:
        self.topics = {t.name: t for t in d.topics}

    def __call__(self, name: str) -> str:
        t = self.topics.get(name)
        if t is None:
            return name
        configs = "".join(f", {k}={v}" for k, v in t.configs)
        return f"{name} [{t.role}] partitions={t.partitions} key={t.key} value={t.value}{configs}"


@attrs.frozen
class _SubLayout:
    """One sub-topology laid out on its own: step centres (x from 0) and layers."""

    sub: SubtopologyDescription
    size: dict[str, float]
    cx: dict[str, float]
    depth: dict[str, int]
    width: float
    label: str


def _layout_sub(
    sub: SubtopologyDescription, d: PlanDescription, stores: dict[str, StoreDescription]
) -> _SubLayout:
    """Steps in layers; a stateful step's footprint includes its store and changelog pill."""
    steps = [d.step(i) for i in sub.steps]
    size = {s.id: _step_width(s, with_topic=False) for s in steps}
    left = {i: w / 2 for i, w in size.items()}
    right = dict(left)
    for i, st in stores.items():
        if i in right:
            right[i] += _store_reach(st)
    cx, depth = _layers(sub.steps, {s.id: s.inputs for s in steps}, left, right)
    width = max((cx[i] + right[i] for i in sub.steps), default=0.0)
    label = f"sub-topology {sub.id} · {_partitions(sub.partitions)}"
    return _SubLayout(sub, size, cx, depth, max(width, _width(label, 11)), label)


def _partitions(n: int) -> str:
    return "1 partition" if n == 1 else f"{n} partitions"


def _box_svg(lay: _SubLayout, x: float, y: float, w: float, h: float) -> str:
    cuts = "; ".join(f"{c.topic}: {c.reason}" for c in lay.sub.cuts if c.reason)
    tip = "tasks: " + " | ".join(" -> ".join(t.steps) for t in lay.sub.tasks)
    tip += f"; cuts: {cuts}" if cuts else ""
    return (
        f'<g class="fg-subtopology">{_title(tip)}'
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" '
        f'rx="8" fill="#fafafa" stroke="#9a9a9a" stroke-dasharray="6 4"/>'
        + _text(x + 10, y + 16, lay.label, size=11, weight="bold", anchor="start", color="#555")
        + "</g>"
    )


def _store_reach(st: StoreDescription) -> float:
    """How far right of its step a store and its changelog pill reach."""
    return GAP + _pill_size(st.name) + GAP + _pill_size(st.changelog)


def _draw_store(canvas: _Canvas, st: StoreDescription, step: _Rect, tips: _Tips) -> None:
    """The store as a cylinder right of its step, then its changelog topic as a pill."""
    cyl = _Rect(
        step.x + step.w + GAP, step.y + (NODE_H - STORE_H) / 2, _pill_size(st.name), STORE_H
    )
    log = _Rect(
        cyl.x + cyl.w + GAP, step.y + (NODE_H - PILL_H) / 2, _pill_size(st.changelog), PILL_H
    )
    canvas.front.append(_store_svg(st.name, cyl, f"{st.name}: {st.backend}"))
    canvas.front.append(_pill_svg(st.changelog, log, tips(st.changelog)))
    canvas.pills[st.changelog] = log
    mid = step.y + NODE_H / 2
    canvas.edges.append(_edge(step.x + step.w, mid, cyl.x, mid))
    canvas.edges.append(_edge(cyl.x + cyl.w, mid, log.x, mid))
    canvas.right = max(canvas.right, log.x + log.w)


def _upstream_first(d: PlanDescription) -> list[SubtopologyDescription]:
    """Sub-topologies in plan order, except that one writing a repartition topic comes before
    those reading it: the dashed arrow to a repartition topic then points down the page."""
    home = {step: sub.id for sub in d.subtopologies for step in sub.steps}
    steps = {s.id: s for s in d.steps}
    writers = {
        sub.id: {
            home[u]
            for i in sub.steps
            if steps[i].kind == "repartition"
            for u in steps[i].inputs
            if u in home and home[u] != sub.id
        }
        for sub in d.subtopologies
    }
    todo = list(d.subtopologies)
    done: list[SubtopologyDescription] = []
    while todo:
        placed = {sub.id for sub in done}
        ready = next((s for s in todo if writers[s.id] <= placed), todo[0])
        todo.remove(ready)
        done.append(ready)
    return done


def physical_svg(plan: PhysicalPlan | PlanDescription, *, backend: str | None = None) -> str:
    """Sub-topologies boxed with their steps, topics as pills, stores as cylinders."""
    d = plan if isinstance(plan, PlanDescription) else describe(plan, backend=backend)
    steps = {s.id: s for s in d.steps}
    stores = {s.step: s for s in d.stores}
    tips = _Tips(d)
    layouts = [_layout_sub(sub, d, stores) for sub in _upstream_first(d)]
    inner = max((lay.width for lay in layouts), default=100.0)
    canvas = _Canvas(right=MARGIN + inner + 2 * BOX_PAD)
    rects: dict[str, _Rect] = {}
    y = MARGIN + 30
    for lay in layouts:
        sub = lay.sub
        entries = [i for i in sub.steps if steps[i].kind in ("source", "repartition")]
        box_top = y + (PILL_H + 30 if entries else 0)
        x0 = MARGIN + BOX_PAD + (inner - lay.width) / 2
        for i, c in lay.cx.items():
            top = box_top + BOX_LABEL + 8 + lay.depth[i] * PITCH
            rects[i] = _Rect(x0 + c - lay.size[i] / 2, top, lay.size[i], NODE_H)
        # Topics read (sources, repartitions, with the reason for the cut) above the box.
        cut = {c.topic: c.reason for c in sub.cuts}
        canvas.pill_row(
            [(steps[i].topic, rects[i].cx, cut.get(steps[i].topic, "")) for i in entries], y, tips
        )
        canvas.edges += [
            _edge(canvas.pills[steps[i].topic].cx, y + PILL_H, rects[i].cx, rects[i].y)
            for i in entries
        ]
        layers = max(lay.depth.values(), default=0) + 1
        box_h = BOX_LABEL + 8 + (layers - 1) * PITCH + NODE_H + BOX_PAD
        canvas.back.append(_box_svg(lay, MARGIN, box_top, inner + 2 * BOX_PAD, box_h))
        # A step's footprint includes the store and changelog drawn to its right.
        footprints = {
            i: attrs.evolve(r, w=r.w + _store_reach(stores[i])) if i in stores else r
            for i, r in rects.items()
        }
        canvas.back += _task_shades(sub.tasks, footprints)
        for i in sub.steps:
            canvas.front.append(_step_svg(steps[i], rects[i], with_topic=False))
            canvas.edges += [
                _edge(rects[u].cx, rects[u].bottom, rects[i].cx, rects[i].y)
                for u in steps[i].inputs
                if u in lay.cx
            ]
            if i in stores:
                _draw_store(canvas, stores[i], rects[i], tips)
        y = box_top + box_h + 24
        # Topics written by sinks below the box.
        sinks = [i for i in sub.steps if steps[i].kind in ("to", "send") and steps[i].topic]
        if sinks:
            canvas.pill_row([(steps[i].topic, rects[i].cx, "") for i in sinks], y, tips)
            canvas.edges += [
                _edge(rects[i].cx, rects[i].bottom, canvas.pills[steps[i].topic].cx, y)
                for i in sinks
            ]
            y += PILL_H + 24
    # A repartition topic is written in one box and read in a later one.
    canvas.edges += [
        _edge(
            rects[u].cx,
            rects[u].bottom,
            canvas.pills[s.topic].cx,
            canvas.pills[s.topic].y,
            dashed=True,
        )
        for s in d.steps
        if s.kind == "repartition" and s.topic in canvas.pills
        for u in s.inputs
        if u in rects
    ]
    bottom = [(d.dlq, "dead letters of every step")] if d.dlq else []
    bottom += [
        (t.name, "where each task's writes resume after a crash")
        for t in d.topics
        if t.role == "checkpoint"
    ]
    if bottom:
        x = MARGIN
        row = []
        for name, tip in bottom:
            row.append((name, x + _pill_size(name) / 2, tip))
            x += _pill_size(name) + 16
        canvas.pill_row(row, y, tips)
        y += PILL_H + 8
    canvas.front.append(_text(MARGIN, y + 18, LEGEND, size=10, anchor="start", color="#666"))
    canvas.right = max(canvas.right, MARGIN + _width(LEGEND, 10))
    title = f"{d.graph} · physical plan"
    width = max(canvas.right + MARGIN, _width(title, 13) + 2 * MARGIN)
    return _document(width, y + 22 + MARGIN, title, [*canvas.back, *canvas.edges, *canvas.front])
