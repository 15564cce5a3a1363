"""A naive reference interpreter of a *logical* plan: the oracle for executor tests.

It walks ``graph.to_logical()`` one input record at a time: no planner, no batching, no
partitions, no codecs. Each record is pushed through the steps in plan order (parents before
children); a merge concatenates its inputs in their declared order. Tables are dicts; what sinks
receive is recorded per sink, as ``(key, value)`` in order (a topic by its name, a callable as
``"call:<step>"``). A windowed aggregation is the brute-force model of tests/window_oracle.py
(one stream time, record by record); its table is keyed by `fg.WindowKey`, and its updates
come out as ``(WindowKey, value)`` in increasing window start.

`Guarantees` says, from the plan alone, how much of that a partitioned, batched executor must
reproduce exactly: records of one key that come from one partition of one topic keep their
order; records that reach a key through a `key_by` over several partitions, or through a
merge, may interleave differently (see `guarantees`).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

import flowgraph as fg
from flowgraph.windows import WindowKey
from planner.logical import (
    Aggregate,
    Changes,
    Filter,
    FlatMap,
    KeyBy,
    LogicalPlan,
    Map,
    Merge,
    Node,
    Peek,
    Repartition,
    Sink,
    Source,
)
from tests.window_oracle import Aggregation, Oracle

__all__ = [
    "Guarantees",
    "Result",
    "freeze",
    "guarantees",
    "interpret",
    "multiset",
    "per_key",
    "per_key_by_input",
]

Pair = tuple[Any, Any]


@attrs.frozen
class Result:
    """Final tables (step -> key -> value) and sink records (sink -> [(key, value)])."""

    tables: dict[str, dict[Any, Any]]
    outputs: dict[str, list[Pair]]
    origins: dict[str, list[int]] = attrs.field(factory=dict)
    """Per sink, the index of the input record each output came from (when known)."""


def sink_name(node: Sink) -> str:
    """How `Result.outputs` names a sink: its topic, or ``call:<step>`` for a callable."""
    return node.topic if node.topic is not None else f"call:{node.id}"


class _Interpreter:
    def __init__(self, plan: LogicalPlan) -> None:
        self.plan = plan
        self.loop = asyncio.new_event_loop()
        self.tables: dict[str, dict[Any, Any]] = {
            n.id: {} for n in plan.nodes if isinstance(n, Aggregate)
        }
        self.oracles = {
            n.id: Oracle(n.window, self.windowed_fold(n))
            for n in plan.nodes
            if isinstance(n, Aggregate) and n.window is not None
        }
        self.ts = 0.0
        """The timestamp of the input record being pushed (every record it leads to has it)."""
        self.index = -1
        """The index of the input record being pushed."""

        self.outputs: dict[str, list[Pair]] = {
            sink_name(n): [] for n in plan.nodes if isinstance(n, Sink)
        }
        self.origins: dict[str, list[int]] = {name: [] for name in self.outputs}

    def call(self, fn: Any, *args: Any) -> Any:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = self.loop.run_until_complete(result)
        return result

    def push(self, topic: str, key: Any, value: Any, ts: float = 0.0) -> None:
        self.ts = ts
        (source,) = [n for n in self.plan.nodes if isinstance(n, Source) and n.topic == topic]
        flowing: dict[str, list[Pair]] = {source.id: [(key, value)]}
        for node in self.plan.nodes:
            parts = [flowing[u] for u in node.inputs if u in flowing]
            if parts:
                flowing[node.id] = self.apply(node, [r for part in parts for r in part])

    def apply(self, node: Node, records: list[Pair]) -> list[Pair]:
        fn: Any = getattr(node, "fn", None)
        match node:
            case Map():
                return [(k, self.call(fn, v)) for k, v in records]
            case Filter():
                return [(k, v) for k, v in records if self.call(fn, v)]
            case FlatMap():
                return [(k, x) for k, v in records for x in list(self.call(fn, v))]
            case Peek():
                for _, v in records:
                    self.call(fn, v)
                return records
            case KeyBy():
                return [(self.call(fn, v), v) for _, v in records]
            case Merge() | Changes() | Repartition():
                return records
            case Aggregate() if node.window is not None:
                oracle = self.oracles[node.id]
                return [
                    (WindowKey(*w), value)
                    for k, v in records
                    for w, value in oracle.send(k, self.ts, v)
                ]
            case Aggregate():
                return [(k, self.fold(node, k, v)) for k, v in records]
            case Sink():
                self.outputs[sink_name(node)].extend(records)
                self.origins[sink_name(node)].extend([self.index] * len(records))
                return []
        msg = f"the reference does not know {type(node).__name__}"
        raise NotImplementedError(msg)

    def fold(self, node: Aggregate, key: Any, value: Any) -> Any:
        table = self.tables[node.id]
        fn: Any = node.fn
        if node.agg == "count":
            new = table.get(key, 0) + 1
        elif node.agg == "sum":
            new = table.get(key, 0) + (value if fn is None else self.call(fn, value))
        elif node.agg == "reduce":
            new = value if key not in table else self.call(fn, table[key], value)
        elif node.agg == "latest":
            new = fg.DELETE if value is None else value
        else:
            if key in table:
                acc = table[key]
            elif callable(node.initial):
                acc = node.initial()
            else:
                acc = copy.deepcopy(node.initial)
            new = self.call(fn, acc, value)
        if new is fg.DELETE:  # the key is gone; its changes carry None
            table.pop(key, None)
            return None
        table[key] = new
        return new

    def windowed_fold(self, node: Aggregate) -> Aggregation:
        """The oracle's view of `node`'s fold: an initial value and ``fold(acc, value)``."""
        if node.agg in ("count", "sum"):
            return Aggregation(node.agg, 0, lambda acc, v: self.fold_value(node, acc, v))
        return Aggregation(node.agg, _FRESH, lambda acc, v: self.fold_value(node, acc, v))

    def fold_value(self, node: Aggregate, acc: Any, value: Any) -> Any:
        """One step of `node`'s fold; `acc` is `_FRESH` before the first value."""
        fn: Any = node.fn
        if node.agg == "count":
            return acc + 1
        if node.agg == "sum":
            return acc + (value if fn is None else self.call(fn, value))
        if node.agg == "reduce":
            return value if acc is _FRESH else self.call(fn, acc, value)
        if acc is _FRESH:
            acc = node.initial() if callable(node.initial) else copy.deepcopy(node.initial)
        return self.call(fn, acc, value)


_FRESH: Any = object()
"""The accumulator of a window that has seen nothing yet."""


def interpret(plan: LogicalPlan, inputs: Iterable[tuple[Any, ...]]) -> Result:
    """Run `plan` over ``(topic, key, value)`` or ``(topic, key, value, timestamp)`` records,
    one at a time, in order (the timestamp defaults to 0).

    Sink callables are not called (the executor under test calls them); what they would
    receive is in ``outputs["call:<step>"]``. A windowed table holds every window the oracle
    still holds at the end.
    """
    it = _Interpreter(plan)
    try:
        for i, record in enumerate(inputs):
            it.index = i
            it.push(*record)
    finally:
        it.loop.close()
    for name, oracle in it.oracles.items():
        it.tables[name] = {WindowKey(*w): value for w, value in oracle.held.items()}
    return Result(tables=it.tables, outputs=it.outputs, origins=it.origins)


# -- what a partitioned, batched executor must reproduce --------------------------------------


@attrs.frozen
class Guarantees:
    """Per table and per sink: how exactly a batched run must match the reference.

    ``"exact"``: the same value per key (tables) or the same sequence per key (sinks);
    ``"keys"``: the same keys (tables); ``"multiset"``: the same records in some order (sinks);
    ``"unknown"``: what depends on the interleaving (a table that deletes keys and is fed by an
    unordered stream; sinks downstream of the updates of a table fed by an unordered stream;
    windowed tables fed by one, whose records may come after their window closed).
    """

    tables: dict[str, str]
    outputs: dict[str, str]


def guarantees(plan: LogicalPlan, *, time_ordered: bool = False) -> Guarantees:
    """Classify each table and sink of `plan` (see the module docstring).

    A stream is *ordered* when each key's records reach it from one partition of one topic
    in input order: a source is; key-keeping steps keep it; a merge is not; a `key_by` is when
    its input is ordered and comes from a single partition. A stream is *stable* when its
    multiset of records does not depend on interleaving: everything is, except the updates of
    a table fed by an unordered stream.

    `time_ordered`: the executor runs records in timestamp order across partitions wherever
    their order reaches a window, and input timestamps increase in send order; then every
    windowed table fed by a stable stream sees its records in send order, so it is exact.
    """
    by_id = plan.by_id()
    ordered: dict[str, bool] = {}
    single: dict[str, bool] = {}
    stable: dict[str, bool] = {}
    tables: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for n in plan.nodes:
        ups = [by_id[u].id for u in n.inputs]
        if isinstance(n, Source):
            ordered[n.id], single[n.id], stable[n.id] = True, n.partitions == 1, True
            continue
        up = ups[0]
        if isinstance(n, Merge):
            ordered[n.id] = False
            single[n.id] = False
            stable[n.id] = all(stable[u] for u in ups)
        elif isinstance(n, KeyBy):
            ordered[n.id] = ordered[up] and single[up]
            single[n.id] = single[up] and n.partitions in (None, 1)
            stable[n.id] = stable[up]
        elif isinstance(n, Aggregate):
            commutative = n.agg in ("count", "sum") or getattr(n.fn, "commutative", False)
            if n.window is not None:
                # Stream time is shared by the keys of a partition: records that interleave
                # differently can find a window closed, whatever the fold.
                in_order = ordered[up] or time_ordered
                tables[n.id] = "exact" if stable[up] and in_order else "unknown"
            elif stable[up] and (ordered[up] or commutative):
                tables[n.id] = "exact"
            elif getattr(n.fn, "deletes", False):
                tables[n.id] = "unknown"  # which keys are left depends on the interleaving
            else:
                tables[n.id] = "keys"
            ordered[n.id], single[n.id] = ordered[up], single[up]
            stable[n.id] = stable[up] and ordered[up]
        else:
            ordered[n.id], single[n.id], stable[n.id] = ordered[up], single[up], stable[up]
        if isinstance(n, Sink):
            if ordered[up] and stable[up]:
                outputs[sink_name(n)] = "exact"
            elif stable[up]:
                outputs[sink_name(n)] = "multiset"
            else:
                outputs[sink_name(n)] = "unknown"
    return Guarantees(tables=tables, outputs=outputs)


# -- comparing ---------------------------------------------------------------------------------


def freeze(value: Any) -> Any:
    """A hashable stand-in: lists and tuples become tuples, recursively."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def per_key(pairs: Iterable[Pair]) -> dict[Any, list[Any]]:
    """Per key, the values in order."""
    result: dict[Any, list[Any]] = {}
    for k, v in pairs:
        result.setdefault(freeze(k), []).append(freeze(v))
    return result


def per_key_by_input(pairs: Iterable[Pair], origins: Iterable[int]) -> dict[Any, list[Any]]:
    """Per key, ``(input index, values from that input)`` in order; the values of one input
    as a sorted tuple, since records one input fans out to (a `flat_map`) may cross
    partitions on their way and reach a key in either order."""
    result: dict[Any, list[Any]] = {}
    for (k, v), i in zip(pairs, origins, strict=True):
        runs = result.setdefault(freeze(k), [])
        if not runs or runs[-1][0] != i:
            runs.append((i, []))
        runs[-1][1].append(freeze(v))
    return {k: [(i, tuple(sorted(vs, key=repr))) for i, vs in runs] for k, runs in result.items()}


def multiset(pairs: Iterable[Pair]) -> Counter[Pair]:
    """The records, order ignored."""
    return Counter((freeze(k), freeze(v)) for k, v in pairs)
