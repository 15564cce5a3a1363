"""Which inputs a join with ``catch_up=`` holds back at task start, and for which.

`split_subtopologies` calls `catch_ups` for each sub-topology it makes (a join and its table
share one). It lists a `CatchUp` per join of it with ``catch_up > 0``: the topics its stream
side reads (`held`) and those its table reads (`tables`), found by walking each side's steps
back to the sub-topology's entry points (sources, repartition topics). A topic both sides read
feeds the table, so it is never held; a join whose stream reads nothing else is refused, since
it could only ever wait out the whole bound.

Example: ``orders -> by_item -> [repartition] -> priced <- price <- prices`` with
``catch_up=5`` holds ``g-by_item-repartition`` until ``prices`` is read to its end offsets
of task start, for at most 5 s.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.errors import GraphDefinitionError
from planner.logical import Join, Node, Repartition, Source
from planner.physical import CatchUp

__all__ = ["catch_ups"]


def catch_ups(steps: Sequence[Node]) -> tuple[CatchUp, ...]:
    """The catch-up waits of the joins among `steps` (one sub-topology's)."""
    joins = [s for s in steps if isinstance(s, Join) and s.catch_up > 0]
    if not joins:
        return ()
    by_id = {s.id: s for s in steps}
    waits = []
    for join in joins:
        stream, table = (_entries(by_id, u) for u in join.inputs[:2])
        held = tuple(t for t in stream if t not in table)
        if not held:
            at = f" (at {join.where})" if join.where else ""
            msg = (
                f"join {join.id!r} has catch_up= but its stream reads only what its table "
                f"{join.inputs[1]!r} reads, so it could never wait for the table{at}"
            )
            raise GraphDefinitionError(msg)
        waits.append(
            CatchUp(
                join=join.id,
                table=join.inputs[1],
                seconds=join.catch_up,
                held=held,
                tables=table,
            )
        )
    return tuple(waits)


def _entries(by_id: dict[str, Node], step: str) -> tuple[str, ...]:
    """The topics the sub-topology reads that reach `step`, in the order first met."""
    found: list[str] = []
    todo, seen = [step], set()
    while todo:
        node = by_id.get(todo.pop())
        if node is None or node.id in seen:
            continue
        seen.add(node.id)
        if isinstance(node, Source | Repartition):
            if node.topic not in found:
                found.append(node.topic)
        else:
            todo.extend(reversed(node.inputs))
    return tuple(found)
