"""Keyed aggregation over a batch, with per-key positions for exactly-once state.

Each stored value carries the source offset of the last input applied to it (DESIGN §4). A
record whose offset is not above its key's *stored* offset (as it was before this batch) was
applied before a crash and is skipped; records of this batch always apply, so the records a
`flat_map` makes from one input (which share its offset) all count. A sub-topology fed by
several topics keeps one offset per input topic, as a tuple.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowgraph.runtime.ops import Fail, Rec, gather_bounded
from flowgraph.runtime.state.base import Entry, StorePartition
from planner.logical import Aggregate

__all__ = ["AggregateOp"]

_MISSING: Any = object()
_IMMUTABLE = (int, float, str, bytes, bool, tuple, frozenset, type(None))


def _initial_factory(node: Aggregate) -> Callable[[], Any]:
    if node.agg == "reduce":
        return lambda: _MISSING
    initial = node.initial
    if callable(initial):
        return initial  # type: ignore[no-any-return]
    if isinstance(initial, _IMMUTABLE):
        return lambda: initial
    return lambda: copy.deepcopy(initial)


def _step(node: Aggregate) -> Callable[[Any, Any], Any]:
    fn: Any = node.fn
    if node.agg == "count":
        return lambda acc, _v: acc + 1
    if node.agg == "sum":
        if fn is None:
            return lambda acc, v: acc + v
        return lambda acc, v: acc + fn(v)
    if node.agg == "reduce":
        return lambda acc, v: v if acc is _MISSING else fn(acc, v)
    return fn  # type: ignore[no-any-return]


class AggregateOp:
    """One aggregation step over one store partition.

    `cur` holds, per key touched since the last flush, ``[stored position, position, value]``.
    """

    def __init__(self, node: Aggregate, store: StorePartition, inputs: int, fail: Fail) -> None:
        self.node = node
        self.store = store
        self.inputs = inputs
        self.fail = fail
        self.initial = _initial_factory(node)
        self.step = _step(node)
        self.cur: dict[Any, list[Any]] = {}
        self.skipped = 0
        self.is_async = node.is_async

    def _load(self, key: Any, stored: Entry | None) -> list[Any]:
        if stored is None:
            start: Any = -1 if self.inputs == 1 else (-1,) * self.inputs
            e = [start, start, self.initial()]
        else:
            e = [stored[0], stored[0], stored[1]]
        self.cur[key] = e
        return e

    def run(self, batch: list[Rec], index: int, emit: bool) -> list[Rec]:
        """Apply `batch` (all from input topic `index`); return updates if `emit`."""
        if self.inputs != 1:
            return self._run_multi(batch, index, emit)
        cur = self.cur
        get = self.store.get
        load = self._load
        out: list[Rec] = []
        append = out.append
        skipped = 0
        if self.node.agg == "count":
            for k, _v, ts, o, h in batch:
                e = cur.get(k)
                if e is None:
                    e = load(k, get(k))
                if o <= e[0]:
                    skipped += 1
                    continue
                e[1] = o
                e[2] += 1
                if emit:
                    append((k, e[2], ts, o, h))
            self.skipped += skipped
            return out
        step = self.step
        fail = self.fail
        it = iter(batch)
        while True:
            try:
                for k, v, ts, o, h in it:
                    e = cur.get(k)
                    if e is None:
                        e = load(k, get(k))
                    if o <= e[0]:
                        skipped += 1
                        continue
                    e[2] = step(e[2], v)
                    e[1] = o
                    if emit:
                        append((k, e[2], ts, o, h))
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                continue
            break
        self.skipped += skipped
        return out

    def _run_multi(self, batch: list[Rec], index: int, emit: bool) -> list[Rec]:
        out: list[Rec] = []
        for k, v, ts, o, h in batch:
            e = self.cur.get(k) or self._load(k, self.store.get(k))
            if o <= e[0][index]:
                self.skipped += 1
                continue
            try:
                e[2] = self.step(e[2], v)
            except Exception as exc:
                self.fail(exc, (k, v, ts, o, h))
                continue
            e[1] = e[1][:index] + (o,) + e[1][index + 1 :]
            if emit:
                out.append((k, e[2], ts, o, h))
        return out

    async def run_async(self, batch: list[Rec], index: int, emit: bool) -> list[Rec]:
        """Async folds: in order within a key, concurrently across keys."""
        by_key: dict[Any, list[Rec]] = {}
        for r in batch:
            by_key.setdefault(r[0], []).append(r)
        fn: Any = self.node.fn

        async def fold(key: Any, records: list[Rec]) -> list[Rec]:
            e = self.cur.get(key) or self._load(key, self.store.get(key))
            emitted: list[Rec] = []
            for r in records:
                o = r[3]
                base = e[0] if self.inputs == 1 else e[0][index]
                if o <= base:
                    self.skipped += 1
                    continue
                try:
                    if self.node.agg == "reduce" and e[2] is _MISSING:
                        value = r[1]
                    elif self.node.agg == "sum":
                        value = e[2] + await fn(r[1])
                    else:
                        value = await fn(e[2], r[1])
                except Exception as exc:
                    self.fail(exc, r)
                    continue
                e[2] = value
                e[1] = o if self.inputs == 1 else e[1][:index] + (o,) + e[1][index + 1 :]
                emitted.append((r[0], value, r[2], o, r[4]))
            return emitted

        results = await gather_bounded(fold, list(by_key.items()))
        out: list[Rec] = []
        for res in results:
            if isinstance(res, BaseException):
                raise res
            out += res
        if not emit:
            return []
        out.sort(key=lambda r: r[3])
        return out

    def flush(self) -> dict[Any, Entry]:
        """The changed entries since the last flush, one per key; forgets the rest."""
        dirty = {k: (e[1], e[2]) for k, e in self.cur.items() if e[1] != e[0]}
        self.cur.clear()
        return dirty

    def value(self, entry_value: Any) -> Any:
        """What users see for a stored value (a reduce that saw nothing has none)."""
        return None if entry_value is _MISSING else entry_value
