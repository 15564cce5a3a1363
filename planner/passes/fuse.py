"""fuse: group each sub-topology's steps into tasks run as one loop over a batch.

Preconditions: a `PhysicalPlan` from `split_subtopologies`.
Postconditions: every step of a sub-topology is in exactly one `FusedTask`; a stateful step
is a task of its own; the stateless steps between boundaries (entry topic, stateful step)
that are connected form one task, in topological order. With ``PlanOptions(fuse=False)``
every step is its own task (for debugging). Returns the input when nothing changes.

Example: ``clicks -> parse -> drop_bots -> by_url`` is one task
``clicks -> parse -> drop_bots -> by_url``; ``count`` after a repartition is another.
"""

from __future__ import annotations

import attrs
import networkx as nx

from planner.logical import STATEFUL, Repartition, Source
from planner.options import PlanOptions
from planner.physical import FusedTask, PhysicalPlan, Subtopology

__all__ = ["fuse"]


def fuse(plan: PhysicalPlan, options: PlanOptions) -> PhysicalPlan:
    """Return `plan` with `tasks` filled in for each sub-topology."""
    subs = tuple(_fuse_one(s, options) for s in plan.subtopologies)
    if subs == plan.subtopologies:
        return plan
    return attrs.evolve(plan, subtopologies=subs)


def _last_entry(sub: Subtopology) -> dict[str, int]:
    """For each step, which part of the sub-topology it runs in.

    Entries share one part, except a repartition topic that the same sub-topology writes (a
    merge can join the two sides): what it feeds runs apart, so no task spans that boundary.
    """
    order = {s.id: i for i, s in enumerate(sub.steps)}
    home: dict[str, int] = {}
    for s in sub.steps:
        if isinstance(s, Repartition) and any(u in order for u in s.inputs):
            home[s.id] = order[s.id]  # read back from a topic this sub-topology writes
        elif isinstance(s, Source | Repartition):
            home[s.id] = -1
        else:
            home[s.id] = max((home[u] for u in s.inputs if u in home), default=-1)
    return home


def _fuse_one(sub: Subtopology, options: PlanOptions) -> Subtopology:
    order = {s.id: i for i, s in enumerate(sub.steps)}
    stateful = {s.id for s in sub.steps if isinstance(s, STATEFUL)}
    if not options.fuse:
        groups = [[s.id] for s in sub.steps]
    else:
        home = _last_entry(sub)
        links: nx.Graph[str] = nx.Graph()
        links.add_nodes_from(s.id for s in sub.steps if s.id not in stateful)
        links.add_edges_from(
            (u, s.id)
            for s in sub.steps
            for u in s.inputs
            if u in order
            and s.id not in stateful
            and u not in stateful
            and not isinstance(s, Repartition)  # entered from its topic, never by a call
            and home[u] == home[s.id]
        )
        groups = [sorted(c, key=order.__getitem__) for c in nx.connected_components(links)]
        groups += [[s] for s in stateful]
    groups.sort(key=lambda g: order[g[0]])
    tasks = tuple(FusedTask(step_ids=g, stateful=g[0] in stateful) for g in groups)
    return sub if tasks == sub.tasks else attrs.evolve(sub, tasks=tasks)
