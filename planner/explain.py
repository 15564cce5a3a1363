"""Plain-text description of a plan, in the spirit of Kafka Streams' `Topology.describe()`."""

from __future__ import annotations

from planner.logical import Aggregate, FnNode, LogicalPlan, Node, Repartition, Sink, Source
from planner.physical import PhysicalPlan, TopicSpec

__all__ = ["to_text", "type_name"]


def type_name(t: object) -> str:
    """Readable name of a declared key/value type (None: unknown)."""
    if t is None:
        return "?"
    name = getattr(t, "name", None)
    if isinstance(name, str):
        return name
    return getattr(t, "__qualname__", None) or repr(t)


def _step(n: Node) -> str:
    if isinstance(n, Source):
        return f"{n.id} <- topic {n.topic!r}"
    if isinstance(n, Repartition):
        return f"{n.id} <- topic {n.topic!r}"
    if isinstance(n, Sink):
        target = f"topic {n.topic!r}" if n.topic else (n.fn_name or "callable")
        return f"{n.id} -> {target}"
    fn = f" {n.fn_name}" if isinstance(n, FnNode) and n.fn_name else ""
    if isinstance(n, Aggregate):
        return f"{n.id} ({n.agg}{fn})"
    return f"{n.id} ({n.kind}{fn})"


def _topic(t: TopicSpec) -> str:
    configs = ", ".join(f"{k}={v}" for k, v in t.configs)
    return (
        f"  {t.name}  [{t.role}]  partitions={t.partitions}  "
        f"key={type_name(t.key_type)}  value={type_name(t.value_type)}"
        + (f"  {configs}" if configs else "")
    )


def to_text(plan: PhysicalPlan | LogicalPlan) -> str:
    """Describe `plan`: sub-topologies with fused tasks and cuts, topics and stores."""
    if isinstance(plan, LogicalPlan):
        lines = [f"Graph {plan.graph_id!r} (logical)"]
        lines += [
            f"  {_step(n)}" + (f"  <- {', '.join(n.inputs)}" if n.inputs else "")
            for n in plan.nodes
        ]
        return "\n".join(lines)
    lines = [f"Graph {plan.graph_id!r}"]
    for sub in plan.subtopologies:
        lines.append(f"Sub-topology {sub.id} (partitions={sub.partitions})")
        for cut in sub.cuts:
            lines.append(f"  cut: {cut}")
        by_id = {s.id: s for s in sub.steps}
        for task in sub.tasks:
            lines.append("  task: " + " -> ".join(task.step_ids))
        for step_id in sub.step_ids:
            lines.append(f"    {_step(by_id[step_id])}")
        for step_id, topic in sub.outputs:
            lines.append(f"    {step_id} -> topic {topic!r}")
    lines.append("Topics")
    lines += [_topic(t) for t in plan.topics]
    lines.append("Stores")
    lines += [
        f"  {s.name}  step={s.step}  partitions={s.partitions}  changelog={s.changelog}"
        for s in plan.stores
    ]
    return "\n".join(lines)
