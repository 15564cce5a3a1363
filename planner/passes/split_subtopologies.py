"""split_subtopologies: cut the logical plan at repartition topics into sub-topologies.

Preconditions: a `LogicalPlan` after `insert_repartitions`.
Postconditions: a `PhysicalPlan` (without topics, stores or fused tasks yet) whose
sub-topologies are the weakly connected components left after removing every edge into a
`Repartition` node. Each lists its steps in topological order, its source topics, its width
(the widest source) and the repartition topics it writes (`outputs`).

Example: ``clicks -> by_url -> [by_url-repartition] -> count`` gives sub-topology 0
(``clicks, by_url``; writes ``g-by_url-repartition``) and 1 (``by_url-repartition, count``).
"""

from __future__ import annotations

import networkx as nx

from planner.catch_up import catch_ups
from planner.logical import LogicalPlan, Repartition, Source
from planner.options import PlanOptions
from planner.physical import PhysicalPlan, Subtopology

__all__ = ["split_subtopologies"]


def split_subtopologies(plan: LogicalPlan, options: PlanOptions) -> PhysicalPlan:
    """Group steps into sub-topologies joined only through topics."""
    by_id = plan.by_id()
    graph = plan.to_digraph()
    order = {
        node_id: i
        for i, node_id in enumerate(
            nx.lexicographical_topological_sort(graph, key=lambda s: _position(plan, s))
        )
    }
    cut: nx.Graph[str] = nx.Graph()
    cut.add_nodes_from(graph.nodes)
    cut.add_edges_from((u, v) for u, v in graph.edges if not isinstance(by_id[v], Repartition))
    components = sorted(
        (sorted(c, key=order.__getitem__) for c in nx.connected_components(cut)),
        key=lambda c: order[c[0]],
    )
    subtopologies = []
    for index, members in enumerate(components):
        steps = tuple(by_id[m] for m in members)
        entries = [s for s in steps if isinstance(s, Source | Repartition)]
        outputs = tuple(
            (u, node.topic)
            for u in members
            for v in graph.successors(u)
            if isinstance(node := by_id[v], Repartition)
        )
        subtopologies.append(
            Subtopology(
                id=index,
                steps=steps,
                partitions=max((e.partitions for e in entries), default=1),
                source_topics=tuple(e.topic for e in entries),
                outputs=outputs,
                cuts=tuple(e.reason for e in entries if isinstance(e, Repartition)),
                catch_up=catch_ups(steps),
            )
        )
    return PhysicalPlan(graph_id=plan.graph_id, logical=plan, subtopologies=subtopologies)


def _position(plan: LogicalPlan, node_id: str) -> int:
    """Creation order breaks ties, so the order of steps is stable and readable."""
    for i, n in enumerate(plan.nodes):
        if n.id == node_id:
            return i
    return len(plan.nodes)
