"""validate: report every problem of a logical plan at once.

Preconditions: none (any `LogicalPlan`).
Postconditions: unique step ids; every input names an earlier step; no cycles; every
non-terminal step has a consumer; a `Changes` reads an `Aggregate`; no topic is both read and
written, or read twice. Returns the input plan itself.

Each message ends with where the user made the step, when the node knows it (`Node.where`,
``(at app.py:14)``); that field is for messages only and never changes the plan.

Example: a graph with two steps named ``count`` fails with
``step 'count' is defined 2 times in graph 'g'; step names must be unique; rename one of
them (at app.py:3, app.py:9)``.
"""

from __future__ import annotations

from collections import Counter

import networkx as nx

from planner.errors import GraphValidationError
from planner.logical import (
    Agent,
    AgentTable,
    Aggregate,
    Changes,
    Join,
    Late,
    LogicalPlan,
    Node,
    Peek,
    Send,
    Sink,
    Source,
)
from planner.options import PlanOptions

__all__ = ["validate"]

_TERMINAL = (Sink, Aggregate, Peek, Agent, AgentTable)


def _at(*nodes: Node) -> str:
    """`` (at app.py:14)``: where the user made `nodes`, or "" when no node knows it."""
    wheres = [n.where for n in nodes if n.where]
    return f" (at {', '.join(wheres)})" if wheres else ""


def validate(plan: LogicalPlan, options: PlanOptions) -> LogicalPlan:
    """Raise `GraphValidationError` listing every problem, or return `plan` unchanged."""
    errors: list[str] = []
    gid = plan.graph_id
    if not plan.nodes and not plan.services:  # an app may only run timers that send
        errors.append(f"graph {gid!r} has no steps; add a source with g.source(...)")
    counts = Counter(n.id for n in plan.nodes)
    for step_id, count in counts.items():
        if count > 1:
            errors.append(
                f"step {step_id!r} is defined {count} times in graph {gid!r}; "
                "step names must be unique; rename one of them"
                + _at(*(n for n in plan.nodes if n.id == step_id))
            )
    seen: set[str] = set()
    for n in plan.nodes:
        for up in n.inputs:
            if up not in counts:
                errors.append(
                    f"step {n.id!r} reads from {up!r}, which is not a step of {gid!r}{_at(n)}"
                )
            elif up not in seen and up != n.id:
                errors.append(f"step {n.id!r} reads from {up!r}, which is defined after it{_at(n)}")
        seen.add(n.id)
        if isinstance(n, Source) and n.inputs:
            errors.append(f"source {n.id!r} cannot have inputs{_at(n)}")
        if not isinstance(n, Source) and not n.inputs:
            errors.append(f"step {n.id!r} has no input; connect it to a stream{_at(n)}")
        if isinstance(n, Source) and n.partitions < 1:
            errors.append(
                f"source {n.id!r} has {n.partitions} partitions; it needs at least 1{_at(n)}"
            )
    by_id = plan.by_id()
    for n in plan.nodes:
        if isinstance(n, Changes) and not all(
            isinstance(by_id.get(u), Aggregate) for u in n.inputs
        ):
            errors.append(f"changes {n.id!r} must read from a table (an aggregation){_at(n)}")
        if (
            isinstance(n, Join)
            and not n.global_table
            and (
                len(n.inputs) != 2
                or not isinstance(t := by_id.get(n.inputs[1]), Aggregate)
                or t.window is not None
            )
        ):
            errors.append(
                f"join {n.id!r} must read a stream and a table of one value per key{_at(n)}"
            )
        if isinstance(n, Late) and not all(
            isinstance(u := by_id.get(i), Aggregate) and u.window is not None for i in n.inputs
        ):
            errors.append(f"late {n.id!r} must read from a windowed table{_at(n)}")
        if (
            isinstance(n, AgentTable | Send)
            and not all(isinstance(by_id.get(u), Agent) for u in n.inputs)
            and (isinstance(n, AgentTable) or n.inputs)
        ):
            errors.append(f"{n.kind} {n.id!r} must read from an agent{_at(n)}")
        if isinstance(n, Aggregate | AgentTable) and n.is_global and n.window is not None:
            errors.append(
                f"table {n.id!r} is global and windowed; a global table holds one value per "
                f"key, so keep the windowed table sharded{_at(n)}"
            )
        if isinstance(n, Aggregate | AgentTable) and n.is_global and f"{n.id}.global" in by_id:
            errors.append(
                f"step {n.id}.global would share the store of global table {n.id!r}'s copy; "
                f"rename it{_at(by_id[f'{n.id}.global'])}"
            )
        if not isinstance(n, _TERMINAL) and not any(True for _ in plan.consumers(n.id)):
            errors.append(
                f"step {n.id!r} ({n.kind}) has no consumer, so its output would be dropped; "
                f"add a step such as .to(topic) after it, or remove it{_at(n)}"
            )
    graph = plan.to_digraph()
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(graph))
        errors.append(f"graph {gid!r} has a cycle ({cycle}); streams must flow one way")
    errors.extend(_topic_problems(plan))
    if errors:
        raise GraphValidationError(errors)
    return plan


def _topic_problems(plan: LogicalPlan) -> list[str]:
    read: dict[str, str] = {}
    problems: list[str] = []
    for n in plan.nodes:
        if isinstance(n, Source) and n.feed is None:
            if n.topic in read:
                first = plan.node(read[n.topic])
                problems.append(
                    f"topic {n.topic!r} is read by sources {first.id!r} and {n.id!r}; "
                    f"read it once and reuse the stream{_at(first, n)}"
                )
            read[n.topic] = n.id
    for n in plan.nodes:
        if (
            isinstance(n, Sink)
            and not isinstance(n, Send)  # an agent may feed another through a topic
            and n.topic is not None
            and n.topic in read
        ):
            problems.append(
                f"sink {n.id!r} writes to topic {n.topic!r}, which source {read[n.topic]!r} reads; "
                f"a graph may not feed its own input{_at(n)}"
            )
    return problems
