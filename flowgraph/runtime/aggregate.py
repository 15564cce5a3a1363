"""Keyed aggregation with per-key source offsets, so state is exact across replays.

Each stored value carries the source offset of the last input applied to it. A record whose
offset is not above its key's *stored* offset (as it was before this batch) was applied
before a crash and is skipped; records of the current batch always apply, so the
records a `flat_map` makes from one input (which share its offset) all count. A sub-topology
fed by several topics keeps one offset per input topic, as a tuple.

`cur` caches, per recently touched key, ``[stored offset, offset, value]`` across batches (a
write-back cache in front of the store, so hot keys are read from the store once, not once per
batch); `dirty` lists the keys changed since the last flush, and `flush` hands those to the
worker (one changelog record and one store write per key per batch).

Deletes (a `to_table` tombstone, `fg.DELETE` from an `aggregate` or `reduce` function) keep the
key's position. The value becomes `DELETE`, the next record of the key starts from the initial
value, and `flush` stores the key as a *grave*, ``(position, DELETE)``, whose changelog record
is a tombstone with the position in its header. Dropping the position with the key would not
be exact: a crash after the store write but before the offset commit replays the key's records
of that commit, and without a position they would apply again from the initial value, not from
the value they first applied to; a function that decides to delete from the accumulator (a
balance reaching zero) then need not delete again, and two inputs may interleave differently.
A grave is needed only until the source offsets past it are committed, so the flush after
the one that wrote it (the next commit, after this one's offsets) deletes it for good: a
tombstone without a position, and the key is gone from the store. A grave left by a crash
goes the same way one flush after a replay skips its deleting record (a table with one input;
with several, a grave's position has one offset per input), or when its key is written again.
Until then (a key never seen again) it stays in the store, hidden from reads.

A `process` step (``stream.process``) is an aggregation of its own kind: the table holds the
function's state under the same rules (positions, skips on replay, graves), but its push hands
the next step the values the function returned instead of the new state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowgraph._delete import DELETE
from flowgraph._util import f_repr
from flowgraph.runtime.ops import (
    Fail,
    MakeContext,
    Push,
    Rec,
    gather_bounded,
    unstorable,
)
from flowgraph.runtime.state.base import Entry, StorePartition
from flowgraph.serde import Codec
from planner.logical import Aggregate

__all__ = ["AggregateOp"]

MISSING: Any = object()
"""The value of a `reduce` that has seen nothing yet."""
_IMMUTABLE = (int, float, str, bytes, bool, tuple, frozenset, type(None))
CACHE_KEYS = 100_000
"""Keys an aggregation keeps in memory between batches (the store holds them all)."""


DELETES = frozenset({"aggregate", "reduce", "latest", "process"})
"""Kinds whose tables can delete keys (`count` and `sum` cannot: nothing decides to)."""


def _initial_factory(node: Aggregate) -> Callable[[], Any]:
    if node.agg == "reduce":
        return lambda: MISSING
    if node.agg == "latest":
        return lambda: DELETE  # no value until a record gives one
    initial = node.initial
    if callable(initial):
        return initial
    if isinstance(initial, _IMMUTABLE):
        return lambda: initial
    return lambda: copy.deepcopy(initial)


class ProcessResultError(TypeError):
    """A `process` function returned something other than ``(new_state, outputs)``."""


_NOT_OUTPUTS = (str, bytes, bytearray, memoryview, dict)
_NO_OUTPUTS: list[Any] = []
"""Never appended to: the outputs of a record until its function says otherwise."""


def process_result(fn_label: str, result: Any) -> tuple[Any, list[Any]]:
    """``(new_state, outputs as a list)`` from what a `process` function returned.

    The outputs are materialised before anything changes, so a generator that raises halfway
    dead-letters its record with nothing emitted and the state untouched; a str, bytes or
    dict is refused rather than iterated (a string's characters are never what was meant).
    """
    if not isinstance(result, tuple | list) or len(result) != 2:
        msg = (
            f"process function {fn_label} returned {_short(result)}; "
            "it must return a pair (new_state, outputs), such as (state, [value])"
        )
        raise ProcessResultError(msg)
    state, outputs = result
    if outputs is None:
        return state, []
    if type(outputs) is list:
        return state, outputs
    if isinstance(outputs, _NOT_OUTPUTS) or not hasattr(outputs, "__iter__"):
        msg = (
            f"process function {fn_label} returned outputs of type {type(outputs).__name__}; "
            "return a list of values to emit (or None), such as (state, [value])"
        )
        raise ProcessResultError(msg)
    return state, list(outputs)


def _noop(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
    pass


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _step(node: Aggregate) -> Callable[[Any, Any], Any]:
    fn: Any = node.fn
    if node.agg == "count":
        return lambda acc, _v: acc + 1
    if node.agg == "sum":
        if fn is None:
            return lambda acc, v: acc + v
        return lambda acc, v: acc + fn(v)
    if node.agg == "reduce":
        return lambda acc, v: v if acc is MISSING else fn(acc, v)
    if node.agg == "latest":
        return lambda _acc, v: DELETE if v is None else v
    return fn  # type: ignore[no-any-return]


class AggregateOp:
    """One aggregation step over one store partition."""

    def __init__(
        self,
        node: Aggregate,
        store: StorePartition,
        inputs: int,
        fail: Fail,
        key_codec: Codec | None = None,
        changelog: str = "",
        context: MakeContext | None = None,
    ) -> None:
        """`key_codec` encodes the changelog's keys (None when it holds Python objects): a
        key is checked once, when it enters the cache, so one its changelog cannot hold
        sends its records to the dead-letter topic instead of failing the commit. `context`
        makes the record context of a ``process(fn, context=True)`` step."""
        self.node = node
        self.key_codec = key_codec
        self.changelog = changelog
        self.store = store
        self.inputs = inputs
        self.index = 0
        """Which input topic the records now pushed come from (multi-input sub-topologies)."""
        self.fail = fail
        self.initial = _initial_factory(node)
        self.step = _step(node)
        self.deletes = node.agg in DELETES
        self.cur: dict[Any, list[Any]] = {}
        self.dirty: list[Any] = []
        self.graves: dict[Any, Any] = {}
        """Keys stored as graves, with their positions, to delete for good at the next flush."""
        self.replayed: dict[Any, Any] = {}
        """Graves of an earlier run whose deleting record this run replayed (and skipped):
        committed with this batch, so they join `graves` at the next flush."""
        self.skipped = 0
        self.is_async = node.is_async
        self.pending: list[Rec] = []
        self.next: Push | None = None
        self.context = context
        self.contexts: list[Any] = []
        """The record contexts of `pending`, for an async ``process(context=True)``."""
        self.emitted = [0]
        """Values a `process` step emitted (its records out, for the step counts)."""

    def _load(self, key: Any) -> list[Any]:
        if self.key_codec is not None:
            try:
                self.key_codec.encode(key)
            except Exception as exc:
                raise unstorable(exc, self.node.id, key, self.changelog, "key") from exc
        stored = self.store.get(key)
        if stored is None:
            start: Any = -1 if self.inputs == 1 else (-1,) * self.inputs
            e = [start, start, self.initial()]
        else:
            e = [stored[0], stored[0], stored[1]]
            if stored[1] is DELETE and not self.deletes:
                e[2] = self.initial()  # a grave under a count or sum: start afresh
        self.cur[key] = e
        return e

    def _load_or_fail(self, k: Any, v: Any, ts: float, o: int, h: Any) -> list[Any] | None:
        """`_load` for the record ``(k, v, ts, o, h)``; None, with the record dead-lettered,
        when its key cannot be stored (only keys missing from the cache come here)."""
        try:
            return self._load(k)
        except Exception as exc:
            self.fail(exc, (k, v, ts, o, h))
            return None

    def make_push(self, nxt: Push | None) -> Push:
        """The push function of this step; `nxt` receives ``(key, new value)`` updates."""
        self.next = nxt
        if self.is_async:
            if self.context is not None:
                return self._collect_with_context
            return self._collect
        if self.node.agg == "process":
            return self._push_process(nxt)
        if self.inputs != 1:
            return self._push_multi
        fail = self.fail
        cur = self.cur
        load = self._load_or_fail
        dirty = self.dirty.append
        if self.node.agg == "count":

            def push_count(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
                e = cur.get(k)
                if e is None:
                    e = load(k, v, ts, o, h)
                    if e is None:
                        return
                if o <= e[0]:
                    self.skipped += 1
                    return
                if e[1] == e[0]:
                    dirty(k)
                e[1] = o
                e[2] += 1
                if nxt is not None:
                    nxt(k, e[2], ts, o, h)

            return push_count
        step = self.step
        if self.deletes:
            return self._push_deleting(nxt)

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            e = cur.get(k)
            if e is None:
                e = load(k, v, ts, o, h)
                if e is None:
                    return
            if o <= e[0]:
                self.skipped += 1
                return
            try:
                e[2] = step(e[2], v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            if e[1] == e[0]:
                dirty(k)
            e[1] = o
            if nxt is not None:
                nxt(k, e[2], ts, o, h)

        return push

    def _push_deleting(self, nxt: Push | None) -> Push:
        """The push of a kind that can delete: `DELETE` as accumulator starts from the initial.

        Written out beside `make_push`'s closures, not sharing a helper with them: a call
        per record on this path would cost more than the lines it saves.
        """
        cur = self.cur
        load = self._load_or_fail
        dirty = self.dirty.append
        step = self.step
        fail = self.fail
        initial = self.initial

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            e = cur.get(k)
            if e is None:
                e = load(k, v, ts, o, h)
                if e is None:
                    return
            if o <= e[0]:
                self.skipped += 1
                if o == e[0] and e[2] is DELETE:
                    self.replayed[k] = o  # the record that deleted the key, replayed
                return
            acc = e[2]
            try:
                value = step(initial() if acc is DELETE else acc, v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            e[2] = value
            if e[1] == e[0]:
                dirty(k)
            e[1] = o
            if nxt is not None:
                nxt(k, None if value is DELETE else value, ts, o, h)

        return push

    def _push_process(self, nxt: Push | None) -> Push:
        """The push of ``process``: the function's outputs go on, its new state stays.

        One closure for one input or several (the position is then a tuple, one offset per
        input); the other kinds never come here, so their paths are untouched.
        """
        cur = self.cur
        load = self._load_or_fail
        dirty = self.dirty.append
        fail = self.fail
        initial = self.initial
        fn: Any = self.node.fn
        label = f_repr(fn)
        make_context = self.context
        out = nxt or _noop
        emitted = self.emitted
        multi = self.inputs != 1

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            e = cur.get(k)
            if e is None:
                e = load(k, v, ts, o, h)
                if e is None:
                    return
            if multi:
                i = self.index
                position = e[0][i]
            else:
                position = e[0]
            if o <= position:
                self.skipped += 1
                if o == position and not multi and e[2] is DELETE:
                    self.replayed[k] = o  # the record that deleted the key, replayed
                return
            acc = e[2]
            try:
                if acc is DELETE:
                    acc = initial()
                if make_context is None:
                    result = fn(acc, v)
                else:
                    result = fn(acc, v, make_context(k, ts, o, h))
                if type(result) is tuple and len(result) == 2:
                    state, outputs = result  # the common cases, without a call
                    if outputs is not None and type(outputs) is not list:
                        state, outputs = process_result(label, result)
                else:
                    state, outputs = process_result(label, result)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            e[2] = DELETE if state is None else state
            if e[1] == e[0]:
                dirty(k)
            e[1] = (*e[1][:i], o, *e[1][i + 1 :]) if multi else o
            if outputs:
                emitted[0] += len(outputs)
                for x in outputs:
                    out(k, x, ts, o, h)

        return push

    def _push_multi(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        i = self.index
        e = self.cur.get(k) or self._load_or_fail(k, v, ts, o, h)
        if e is None:
            return
        if o <= e[0][i]:
            self.skipped += 1
            return
        acc = e[2]
        try:
            value = self.step(self.initial() if acc is DELETE else acc, v)
        except Exception as exc:
            self.fail(exc, (k, v, ts, o, h))
            return
        e[2] = value
        if e[1] == e[0]:
            self.dirty.append(k)
        e[1] = (*e[1][:i], o, *e[1][i + 1 :])
        if self.next is not None:
            self.next(k, None if value is DELETE else value, ts, o, h)

    def _collect(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        self.pending.append((k, v, ts, o, h))

    def _collect_with_context(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        """`_collect`, with the record's context made now, while its input is the task's."""
        assert self.context is not None
        self.pending.append((k, v, ts, o, h))
        self.contexts.append(self.context(k, ts, o, h))

    async def drain(self) -> bool:
        """Async folds of the collected records: in order within a key, concurrent across keys."""
        if not self.pending:
            return False
        batch, self.pending = self.pending, []
        by_key: dict[Any, list[Rec]] = {}
        for r in batch:
            by_key.setdefault(r[0], []).append(r)
        fn: Any = self.node.fn
        agg = self.node.agg
        i = self.index
        contexts: dict[int, Any] = {}
        if self.contexts:
            contexts = {id(r): c for r, c in zip(batch, self.contexts, strict=True)}
            self.contexts = []
        label = f_repr(fn) if agg == "process" else ""

        async def fold(key: Any, records: list[Rec]) -> list[Rec]:
            try:
                e = self.cur.get(key) or self._load(key)
            except Exception as exc:
                for r in records:
                    self.fail(exc, r)
                return []
            emitted: list[Rec] = []
            for r in records:
                o = r[3]
                if o <= (e[0] if self.inputs == 1 else e[0][i]):
                    self.skipped += 1
                    if o == e[0] and e[2] is DELETE:
                        self.replayed[key] = o  # the record that deleted the key, replayed
                    continue
                acc = self.initial() if e[2] is DELETE else e[2]
                outputs = _NO_OUTPUTS
                try:
                    if agg == "reduce" and acc is MISSING:
                        value = r[1]
                    elif agg == "sum":
                        value = acc + await fn(r[1])
                    elif agg == "process":
                        args = (acc, r[1], contexts[id(r)]) if contexts else (acc, r[1])
                        value, outputs = process_result(label, await fn(*args))
                        if value is None:
                            value = DELETE
                    else:
                        value = await fn(acc, r[1])
                except Exception as exc:
                    self.fail(exc, r)
                    continue
                e[2] = value
                if e[1] == e[0]:
                    self.dirty.append(key)
                e[1] = o if self.inputs == 1 else (*e[1][:i], o, *e[1][i + 1 :])
                if agg == "process":
                    self.emitted[0] += len(outputs)
                    emitted.extend((r[0], x, r[2], o, r[4]) for x in outputs)
                else:
                    emitted.append((r[0], None if value is DELETE else value, r[2], o, r[4]))
            return emitted

        results = await gather_bounded(fold, list(by_key.items()))
        updates: list[Rec] = []
        for res in results:
            if isinstance(res, BaseException):
                raise res
            updates += res
        if self.next is not None:
            updates.sort(key=lambda r: r[3])
            for u in updates:
                self.next(*u)
        return True

    def read(self, key: Any) -> Any:
        """The key's value as of now (None if the table lacks it), for a join on this task:
        the cache first, then the store; nothing is loaded, so a read marks no key."""
        e = self.cur.get(key)
        if e is not None:
            v = e[2]
        else:
            stored = self.store.get(key)
            if stored is None:
                return None
            v = stored[1]
        return None if v is DELETE else v

    @property
    def has_graves(self) -> bool:
        """True while some key is stored as a grave that the next flush deletes for good."""
        return bool(self.graves or self.replayed)

    def revert(self, key: Any) -> None:
        """Forget the cached entry of `key`, so its next record starts from the stored one
        (after a commit found its value cannot be stored)."""
        self.cur.pop(key, None)

    def flush(self) -> dict[Any, Entry | None]:
        """The entries changed since the last flush, one per key; they now count as stored.

        A deleted key is written as a grave ``(position, DELETE)``; graves written by the
        previous flush (their source offsets are committed by now) are deleted for good (None).
        """
        cur = self.cur
        changed: dict[Any, Entry | None] = {}
        if self.graves:
            graves, self.graves = self.graves, {}
            for k, position in graves.items():
                e = cur.get(k)
                # unless the key changed since (a value, or a later delete with a new grave)
                if e is None or (e[2] is DELETE and e[1] == position):
                    changed[k] = None
                    cur.pop(k, None)
        if self.replayed:
            self.graves.update(self.replayed)
            self.replayed.clear()
        for k in self.dirty:
            e = cur[k]
            if e[2] is DELETE:
                self.graves[k] = e[1]
            changed[k] = (e[1], e[2])
            e[0] = e[1]
        self.dirty.clear()
        if len(cur) > CACHE_KEYS:
            cur.clear()
        return changed
