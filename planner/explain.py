"""Plain-text description of a plan, in the spirit of Kafka Streams' `Topology.describe()`.

It says more than ``describe()`` does: each sub-topology lists its fused tasks
(``clicks -> parse -> drop_bots -> by_url``), why it starts at each repartition topic
(``key changed by 'app.by_url' at clicks.py:14``) and which sub-topology writes that topic;
each step shows its kind, its user function as ``module.qualname`` and where it was made;
every topic shows its full name, role, partitions, partitioner (``murmur2``: Kafka's default
partitioner of the key codec's bytes, as Java and aiokafka producers), key/value codecs and
configs; every store
its step, changelog and backend. The text is rendered from `planner.describe`, so it says
exactly what the JSON form says.

Example (abridged; tests/golden/explain/ has whole ones)::

    Graph 'clickstats': physical plan, 2 sub-topologies, 4 topics, 1 store

    Sub-topology 0 (4 partitions)
      reads   clicks
      writes  clickstats-by_url-repartition  -> sub-topology 1
      tasks   clicks -> parse -> drop_bots -> by_url
      steps   clicks     source  topic clicks     app.py:23
              parse      map     app.parse        app.py:24
              ...

    Sub-topology 1 (4 partitions)
      reads   clickstats-by_url-repartition  <- sub-topology 0
                cut: key changed by 'app.by_url' at app.py:24
      ...

    Topics
      name                          role       partitions  partitioner  key  value        ...
      clicks                        source     4           murmur2      str  json<Click>
      clickstats-per_url-changelog  changelog  4           murmur2      str  int          ...
      ...

The "where" of a step is the ``file.py:line`` that built it; the cut reason of a repartition
is the one `insert_repartitions` gave. Steps list their inputs only where they are not the
step on the line above.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from planner.describe import (
    DEFAULT_BACKEND,
    PlanDescription,
    StepDescription,
    SubtopologyDescription,
    codec_name,
    describe,
)
from planner.logical import LogicalPlan
from planner.naming import global_store
from planner.physical import PhysicalPlan

__all__ = ["TaskReport", "render", "tasks_section", "to_text", "type_name"]

type_name = codec_name
"""Former name of `planner.describe.codec_name`, kept for callers."""


TaskReport = Mapping[tuple[int, int], tuple[str, int | None]]
"""Per task ``(sub-topology, partition)`` a running worker holds: its state and, for a
standby, the changelog records it has not applied yet (None: not known yet)."""


def to_text(
    plan: PhysicalPlan | LogicalPlan,
    *,
    backend: str | None = None,
    tasks: TaskReport | None = None,
) -> str:
    """Describe `plan` as text (what ``flowgraph explain`` prints).

    Args:
        plan: a physical plan, or a logical plan (logical or partitioned stage).
        backend: the store backend, when the caller knows it (see `describe`).
        tasks: what a running worker holds (`Worker.explain`), shown after the plan.
    """
    text = render(describe(plan, backend=backend))
    return text if tasks is None else "\n".join([text, *tasks_section(tasks)])


def tasks_section(tasks: TaskReport) -> list[str]:
    """The tasks a running worker holds, with their states and standby lag."""
    states: dict[str, int] = {}
    for state, _ in tasks.values():
        states[state] = states.get(state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
    rows = [["task", "sub-topology", "partition", "state", "standby lag"]]
    for (sub, p), (state, lag) in sorted(tasks.items()):
        shown = "" if state != "standby" else ("unknown" if lag is None else str(lag))
        rows.append([f"{sub}_{p}", str(sub), str(p), state, shown])
    return ["", f"Tasks on this worker: {summary}", *_table(rows, indent="  ")]


def render(d: PlanDescription) -> str:
    """The text form of a description (also for one read back with `from_json`)."""
    if d.stage != "physical":
        lines = [f"Graph {d.graph!r}: {d.stage} plan, {_count(len(d.steps), 'step')}", ""]
        lines += ["Steps", *_steps_table(d, d.steps, physical=False)]
        lines += _services(d)
        return "\n".join(lines)
    lines = [
        f"Graph {d.graph!r}: physical plan, "
        f"{_count(len(d.subtopologies), 'sub-topology', 'sub-topologies')}, "
        f"{_count(len(d.topics), 'topic')}, {_count(len(d.stores), 'store')}"
        + (f", {_count(len(d.services), 'service')}" if d.services else "")
    ]
    for sub in d.subtopologies:
        lines += ["", *_subtopology(d, sub)]
    lines += ["", "Topics", *_topics(d)]
    lines += ["", *_stores(d)]
    lines += _services(d)
    return "\n".join(lines)


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _subtopology(d: PlanDescription, sub: SubtopologyDescription) -> list[str]:
    lines = [f"Sub-topology {sub.id} ({_count(sub.partitions, 'partition')})"]
    cut_of = {c.topic: c for c in sub.cuts}
    for i, topic in enumerate(sub.reads):
        head = "  reads   " if i == 0 else "          "
        cut = cut_of.get(topic)
        if cut is None:
            lines.append(f"{head}{topic}")
            continue
        origin = f"  <- sub-topology {cut.writer}" if cut.writer >= 0 else ""
        lines.append(f"{head}{topic}{origin}")
        if cut.reason:
            lines.append(f"            cut: {cut.reason}")
    for i, topic in enumerate(sub.writes):
        readers = [c.id for c in d.subtopologies if any(x.topic == topic for x in c.cuts)]
        to = "".join(f"  -> sub-topology {r}" for r in readers)
        lines.append(("  writes  " if i == 0 else "          ") + topic + to)
    for i, task in enumerate(sub.tasks):
        stores = [d.step(s).store for s in task.steps if d.step(s).store]
        extra = f"  [stateful: store {', '.join(stores)}]" if task.stateful and stores else ""
        lines.append(("  tasks   " if i == 0 else "          ") + _chain(d, task.steps) + extra)
    steps = [d.step(s) for s in sub.steps]
    table = _steps_table(d, steps, physical=True)
    lines += [("  steps   " if i == 0 else "          ") + row[2:] for i, row in enumerate(table)]
    return lines


def _chain(d: PlanDescription, steps: Sequence[str]) -> str:
    """Fused steps in order: ``a -> b`` where b reads a, ``a, b`` where it does not.

    A chain reads ``clicks -> parse -> by_url``; a merge ``a, b -> both -> count``.
    """
    out = steps[0] if steps else ""
    for prev, step in itertools.pairwise(steps):
        out += (" -> " if prev in d.step(step).inputs else ", ") + step
    return out


def _detail(s: StepDescription) -> str:
    """The function a step runs, or the topic or store it uses."""
    parts = [s.function] if s.function else []
    if s.concurrency:
        if s.kind == "agent":
            each = "coroutine" if s.concurrency == 1 else "coroutines"
            parts.append(f"async, {s.concurrency} {each} per partition")
        else:
            parts.append(f"async, {s.concurrency} calls in flight")
    if s.window:
        parts.append(s.window)
    if s.topic:
        parts.append(f"topic {s.topic}")
    if s.store:
        parts.append(f"store {s.store}")
    return ", ".join(parts)


def _steps_table(
    d: PlanDescription, steps: Sequence[StepDescription], *, physical: bool
) -> list[str]:
    """One aligned row per step: id, kind, function/topic/store, inputs, where."""
    previous: str | None = None
    rows: list[list[str]] = []
    reasons: dict[int, str] = {}
    for s in steps:
        # Inputs are implied for a straight chain; say them when they are not the row above.
        inputs = "" if list(s.inputs) in ([], [previous]) else "<- " + ", ".join(s.inputs)
        rows.append([s.id, s.kind, _detail(s), inputs, s.where])
        if s.reason and not physical:
            reasons[len(rows) - 1] = s.reason
        previous = s.id
    out = []
    for i, line in enumerate(_table(rows, indent="  ")):
        out.append(line)
        if i in reasons:
            out.append(f"      cut: {reasons[i]}")
    return out


def _topics(d: PlanDescription) -> list[str]:
    rows = [["name", "role", "partitions", "partitioner", "key", "value", "configs"]]
    for t in d.topics:
        configs = ", ".join(f"{k}={v}" for k, v in t.configs)
        rows.append(
            [t.name, t.role, str(t.partitions), t.partitioner or "-", t.key, t.value, configs]
        )
    return _table(rows, indent="  ")


def _stores(d: PlanDescription) -> list[str]:
    if not d.stores:
        return ["Stores", "  (none)"]
    backends = {s.backend for s in d.stores}
    shared = len(backends) == 1
    head = "Stores" + (f" ({next(iter(backends))})" if shared else f" ({DEFAULT_BACKEND})")
    rows = [["name", "step", "partitions", "key", "value", "changelog"]]
    if not shared:
        rows[0].append("backend")
    for s in d.stores:
        row = [s.name, s.step, str(s.partitions), s.key, s.value, s.changelog]
        rows.append(row if shared else [*row, s.backend])
    lines = [head, *_table(rows, indent="  ")]
    for s in d.stores:
        if s.is_global:
            lines.append(
                f"  {s.name} is global: every worker holds all {s.partitions} partitions "
                f"(store {global_store(s.name)}, following {s.changelog})"
            )
    return lines


def _services(d: PlanDescription) -> list[str]:
    """Timers, crontabs and tasks (nothing when the graph has none)."""
    if not d.services:
        return []
    rows = [["name", "kind", "schedule", "on_leader", "function", "where"]]
    for s in d.services:
        leader = "yes" if s.on_leader else "no"
        rows.append([s.name, s.kind, s.schedule, leader, s.function, s.where])
    return ["", "Services", *_table(rows, indent="  ")]


def _table(rows: list[list[str]], *, indent: str) -> list[str]:
    """Rows as left-aligned columns two spaces apart; empty trailing cells leave no blanks."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return [
        (indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]
