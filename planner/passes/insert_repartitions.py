"""insert_repartitions: add a repartition topic only where a stateful step needs one.

Preconditions: a validated `LogicalPlan`.
Postconditions: every `Aggregate` reads a stream partitioned by its own key. A topic source is
partitioned by its key (a bounded in-process source of several partitions is not: it spreads
records round-robin); a repartition topic too; `map`, `filter`, `flat_map` and `peek` keep the
partitioning (they never change keys); `key_by` loses it, and so do a windowed table's changes
(keyed by window); a `merge` keeps it only when all its inputs are partitioned by key over the
same number of partitions (co-partitioned).

A stream-table `Join` reads its stream partitioned like its table (same key, same count): the
stream is repartitioned to the table's partition count when it is not, never the table.

A `StreamJoin` reads its two streams co-partitioned: a side not partitioned by key is
repartitioned to the other side's count (both: to the widest input); two sides partitioned by
key over different counts get the right side repartitioned to the left side's count.

Where an aggregation is fed, through key-keeping steps, by a `key_by`, the repartition goes
right after that `key_by` and is shared by all of its consumers, so two aggregations over one
`key_by` share one topic (``<graph>-<key_by>-repartition``). Otherwise (a merge of streams that
are not co-partitioned) it goes right before the aggregation (``<graph>-<agg>-repartition``).

Example: ``source -> key_by(by_url) -> count`` becomes
``source -> key_by(by_url) -> by_url-repartition -> count``; ``source -> count`` is unchanged.
"""

from __future__ import annotations

import attrs

from planner import naming
from planner.errors import GraphValidationError, PlannerInternalError
from planner.logical import (
    STATEFUL,
    Agent,
    AgentTable,
    Aggregate,
    Changes,
    Filter,
    FlatMap,
    Join,
    KeyBy,
    LogicalPlan,
    Map,
    Merge,
    Node,
    Peek,
    Repartition,
    Source,
    StreamJoin,
)
from planner.options import PlanOptions

__all__ = ["Partitioning", "insert_repartitions", "partitioning_of"]

_KEEPS_KEY = (Map, Filter, FlatMap, Peek, Agent, Join)
_MAX_ROUNDS = 1000


@attrs.frozen
class Partitioning:
    """How a stream is spread over partitions: by its key over `partitions`, or not (None)."""

    partitions: int


def partitioning_of(plan: LogicalPlan) -> dict[str, Partitioning | None]:
    """For each step, the partitioning of its output stream (None: not by the current key)."""
    result: dict[str, Partitioning | None] = {}
    by_id = plan.by_id()
    for n in plan.nodes:
        if isinstance(n, Source):
            # a bounded in-process source spreads records round-robin, not by key
            by_key = n.feed is None or n.partitions == 1
            result[n.id] = Partitioning(n.partitions) if by_key else None
        elif isinstance(n, Repartition):
            result[n.id] = Partitioning(n.partitions)
        elif isinstance(n, KeyBy):
            result[n.id] = None
        elif isinstance(n, Changes) and any(
            isinstance(u, Aggregate) and u.window is not None
            for u in (by_id.get(i) for i in n.inputs)
        ):
            result[n.id] = None  # keyed by window: partitioned by the key inside, not by it
        elif isinstance(n, Merge):
            ups = {result.get(u) for u in n.inputs}
            result[n.id] = ups.pop() if len(ups) == 1 else None
        else:
            result[n.id] = result.get(n.inputs[0]) if n.inputs else None
    return result


def _width(plan: LogicalPlan) -> dict[str, int]:
    """The widest partition count feeding each step (the default for new topics)."""
    width: dict[str, int] = {}
    for n in plan.nodes:
        if isinstance(n, Source | Repartition):
            width[n.id] = n.partitions
        else:
            width[n.id] = max((width.get(u, 1) for u in n.inputs), default=1)
    return width


def _key_changer(plan: LogicalPlan, node_id: str) -> KeyBy | None:
    """The `key_by` reached upstream through single-input key-keeping steps, if any."""
    by_id = plan.by_id()
    node: Node = by_id[node_id]
    while True:
        if isinstance(node, KeyBy):
            return node
        if not isinstance(node, _KEEPS_KEY):
            return None
        node = by_id[node.inputs[0]]


def insert_repartitions(plan: LogicalPlan, options: PlanOptions) -> LogicalPlan:
    """Return `plan` with the repartition nodes it needs, or `plan` itself if none."""
    current = plan
    for _ in range(_MAX_ROUNDS):
        step = _insert_one(current)
        if step is None:
            _check_tables(current)
            return current
        current = step
    msg = "insert_repartitions does not converge; please report this graph"
    raise PlannerInternalError(msg)


def _insert_one(plan: LogicalPlan) -> LogicalPlan | None:
    parts = partitioning_of(plan)
    for n in plan.nodes:
        if isinstance(n, Agent):
            # an agent after a group_by reads the re-keyed stream from a repartition topic,
            # as in Faust, whether or not it has tables
            if parts[n.inputs[0]] is None and (changer := _key_changer(plan, n.inputs[0])):
                return _add_after(plan, changer, reason=f"group_by {_describe(changer)}")
            continue
        if isinstance(n, Join):
            if not n.global_table and (fixed := _co_partition(plan, n, parts)) is not None:
                return fixed
            continue
        if isinstance(n, StreamJoin):
            if (fixed := _co_partition_streams(plan, n, parts)) is not None:
                return fixed
            continue
        if not isinstance(n, STATEFUL) or parts[n.inputs[0]] is not None:
            continue
        changer = _key_changer(plan, n.inputs[0])
        if changer is not None:
            return _add_after(plan, changer, reason=f"key changed by {_describe(changer)}")
        if isinstance(n, AgentTable):
            raise GraphValidationError([_unsharded(plan, n)])
        return _add_before(plan, n)
    return None


def _co_partition(
    plan: LogicalPlan, join: Join, parts: dict[str, Partitioning | None]
) -> LogicalPlan | None:
    """Repartition a join's stream (never its table) to the table's key and partitions."""
    table = parts[join.inputs[1]]
    have = parts[join.inputs[0]]
    if table is None or have == table:
        return None
    if join.table_join:
        ours = plan.by_id()[join.inputs[0]].inputs[0]
        counts = "not partitioned by key" if have is None else _partitions(have.partitions)
        msg = (
            f"table join {join.table_join!r} joins table {ours!r} ({counts}) with table "
            f"{join.inputs[1]!r} ({_partitions(table.partitions)}); both are read on one task, "
            "so give their inputs the same partitions"
        )
        raise GraphValidationError([msg])
    # keys the stream does not type are read back as the table's keys, so lookups match
    key_type = plan.by_id()[join.inputs[1]].key_type
    reason = f"join {join.id!r} on table {join.inputs[1]!r} of {table.partitions} partitions"
    changer = _key_changer(plan, join.inputs[0])
    if have is None and changer is not None:
        if changer.partitions is not None and changer.partitions != table.partitions:
            msg = (
                f"join {join.id!r} looks up table {join.inputs[1]!r} of {table.partitions} "
                f"partitions, but key_by {changer.id!r} asks for {changer.partitions}; a stream "
                f"is joined on the table's partitions, so give key_by partitions="
                f"{table.partitions}"
            )
            raise GraphValidationError([msg])
        return _add_after(
            plan,
            changer,
            reason=f"key changed by {_describe(changer)}, for {reason}",
            width=table.partitions,
            key_type=changer.key_type or key_type,
        )
    upstream = plan.by_id()[join.inputs[0]]
    rep = attrs.evolve(
        _repartition(plan, join, table.partitions, ""),
        inputs=(upstream.id,),
        key_type=upstream.key_type or key_type,
        value_type=upstream.value_type,
        reason=reason,
    )
    nodes: list[Node] = []
    for n in plan.nodes:
        if n.id == join.id:
            nodes.append(rep)
            n = attrs.evolve(n, inputs=(rep.id, *n.inputs[1:]))
        nodes.append(n)
    return attrs.evolve(plan, nodes=nodes)


def _co_partition_streams(
    plan: LogicalPlan, join: StreamJoin, parts: dict[str, Partitioning | None]
) -> LogicalPlan | None:
    """Repartition one side of a stream-stream join so that both sides are co-partitioned."""
    left, right = parts[join.inputs[0]], parts[join.inputs[1]]
    if left is not None and left == right:
        return None
    if left is None and right is None:
        asked = [c.partitions for u in join.inputs if (c := _key_changer(plan, u))]
        width = next((n for n in asked if n is not None), _width(plan)[join.id])
        side = 0
    elif left is None:
        assert right is not None
        width, side = right.partitions, 0
    else:
        width, side = left.partitions, 1
    label = "left" if side == 0 else "right"
    reason = f"stream join {join.id!r} ({label} side) on {_partitions(width)}"
    upstream = plan.by_id()[join.inputs[side]]
    # keys one side does not type are read back as the other side's, so that they match
    other_keys = plan.by_id()[join.inputs[1 - side]].key_type
    changer = _key_changer(plan, upstream.id) if parts[upstream.id] is None else None
    if changer is not None:
        if changer.partitions is not None and changer.partitions != width:
            msg = (
                f"stream join {join.id!r} reads its other side on {_partitions(width)}, but "
                f"key_by {changer.id!r} asks for {changer.partitions}; both sides of a join "
                f"are read on one task, so give key_by partitions={width}"
            )
            raise GraphValidationError([msg])
        return _add_after(
            plan,
            changer,
            reason=f"key changed by {_describe(changer)}, for {reason}",
            width=width,
            key_type=changer.key_type or other_keys,
        )
    rep = attrs.evolve(
        _repartition(plan, join, width, ""),
        id=f"{join.id}-{label}-repartition",
        topic=naming.repartition_topic(plan.graph_id, f"{join.id}-{label}"),
        inputs=(upstream.id,),
        key_type=upstream.key_type or other_keys,
        value_type=upstream.value_type,
        reason=reason,
    )
    if rep.id in plan.by_id():
        msg = f"step {rep.id!r} has the name of a repartition the planner adds; rename it"
        raise GraphValidationError([msg])
    nodes: list[Node] = []
    for n in plan.nodes:
        if n.id == join.id:
            nodes.append(rep)
            ins = list(n.inputs)
            ins[side] = rep.id
            n = attrs.evolve(n, inputs=tuple(ins))
        nodes.append(n)
    return attrs.evolve(plan, nodes=nodes)


def _partitions(n: int) -> str:
    return f"{n} partition{'' if n == 1 else 's'}"


def _unsharded(plan: LogicalPlan, table: AgentTable) -> str:
    agent = plan.by_id()[table.inputs[0]]
    at = f" (at {agent.where})" if agent.where else ""
    return (
        f"table {table.id!r} is written by agent {agent.id!r}, whose input is not partitioned "
        f"by key{at}; a table is sharded like its agent's input, so read a keyed topic or "
        "re-key the stream with stream.group_by(...)"
    )


def _check_tables(plan: LogicalPlan) -> None:
    """A table declared with its own partitions must match its agent's input."""
    parts = partitioning_of(plan)
    errors = []
    for n in plan.nodes:
        if not isinstance(n, AgentTable) or n.partitions is None:
            continue
        have = parts.get(n.inputs[0])
        if have is not None and have.partitions != n.partitions:
            agent = plan.by_id()[n.inputs[0]]
            errors.append(
                f"table {n.id!r} has {n.partitions} partitions but agent {agent.id!r} reads a "
                f"stream of {have.partitions}; a table is sharded like its agent's input, so "
                f"give them the same partitions, or re-key the stream with "
                f"stream.group_by(..., partitions={n.partitions})"
            )
    if errors:
        raise GraphValidationError(errors)


def _describe(node: Node) -> str:
    fn_name = getattr(node, "fn_name", "") or node.id
    return f"{fn_name!r}" + (f" at {node.where}" if node.where else "")


def _repartition(plan: LogicalPlan, after: Node, width: int, reason: str) -> Repartition:
    node_id = f"{after.id}-repartition"
    if any(n.id == node_id for n in plan.nodes):
        msg = (
            f"step {node_id!r} has the name of the repartition the planner adds after "
            f"{after.id!r}; rename one of them"
        )
        raise GraphValidationError([msg])
    return Repartition(
        id=node_id,
        inputs=(after.id,),
        topic=naming.repartition_topic(plan.graph_id, after.id),
        partitions=width,
        reason=reason,
        key_type=after.key_type,
        value_type=after.value_type,
        where=after.where,
    )


def _add_after(
    plan: LogicalPlan,
    changer: KeyBy,
    reason: str,
    width: int | None = None,
    key_type: object = None,
) -> LogicalPlan:
    if changer.anonymous:
        at = f" at {changer.where}" if changer.where else ""
        msg = (
            f"key_by{at} needs a repartition topic, which is named after the step, but it has "
            "a lambda (or a function an earlier step is named after) and no name=; "
            "pass name=..."
        )
        raise GraphValidationError([msg])
    rep = _repartition(
        plan, changer, width or changer.partitions or _width(plan)[changer.id], reason
    )
    if key_type is not None:
        rep = attrs.evolve(rep, key_type=key_type)
    nodes: list[Node] = []
    for n in plan.nodes:
        if changer.id in n.inputs:
            n = attrs.evolve(n, inputs=tuple(rep.id if u == changer.id else u for u in n.inputs))
        nodes.append(n)
        if n.id == changer.id:
            nodes.append(rep)
    return attrs.evolve(plan, nodes=nodes)


def _add_before(plan: LogicalPlan, stateful: Node) -> LogicalPlan:
    upstream = plan.by_id()[stateful.inputs[0]]
    rep = attrs.evolve(
        _repartition(plan, stateful, _width(plan)[stateful.id], ""),
        inputs=(upstream.id,),
        key_type=upstream.key_type,
        value_type=upstream.value_type,
        reason=f"input of {stateful.id!r} is not partitioned by its key",
    )
    nodes: list[Node] = []
    for n in plan.nodes:
        if n.id == stateful.id:
            nodes.append(rep)
            n = attrs.evolve(n, inputs=(rep.id,))
        nodes.append(n)
    return attrs.evolve(plan, nodes=nodes)
