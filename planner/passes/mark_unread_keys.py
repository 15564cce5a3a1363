"""mark_unread_keys: find topic sources whose keys no step ever reads, so none are decoded.

Preconditions: a validated `LogicalPlan`.
Postconditions: ``Source.key_read`` is False when every path from the source reaches a
`key_by` (which replaces the key) before any step that reads keys (an aggregation, a
repartition, a sink, a table's changes, a step with ``context=True``). `map`, `filter`,
`flat_map`, `peek` and `merge` pass keys on without reading them. Returns the input when
nothing changes.

Example: ``clicks -> filter -> key_by(by_url) -> count`` never reads the keys of ``clicks``;
decoding them would cost a call per record for nothing.
"""

from __future__ import annotations

import attrs

from planner.logical import (
    Filter,
    FlatMap,
    FnNode,
    KeyBy,
    LogicalPlan,
    Map,
    Merge,
    Node,
    Peek,
    Source,
)
from planner.options import PlanOptions

__all__ = ["mark_unread_keys"]

_PASS_KEYS_ON = (Map, Filter, FlatMap, Peek, Merge)


def _reads_key(plan: LogicalPlan, source: Source) -> bool:
    seen: set[str] = set()
    todo = [source.id]
    while todo:
        node_id = todo.pop()
        for consumer in plan.consumers(node_id):
            if isinstance(consumer, FnNode) and consumer.context:
                return True  # its function reads the key in the record's context
            if consumer.id in seen or isinstance(consumer, KeyBy):
                continue
            if not isinstance(consumer, _PASS_KEYS_ON):
                return True
            seen.add(consumer.id)
            todo.append(consumer.id)
    return False


def mark_unread_keys(plan: LogicalPlan, options: PlanOptions) -> LogicalPlan:
    """Return `plan` with ``key_read`` set on each topic source."""
    nodes: list[Node] = []
    for n in plan.nodes:
        if isinstance(n, Source):
            read = _reads_key(plan, n)
            if read != n.key_read:
                n = attrs.evolve(n, key_read=read)
        nodes.append(n)
    if all(a is b for a, b in zip(nodes, plan.nodes, strict=True)):
        return plan
    return attrs.evolve(plan, nodes=nodes)
