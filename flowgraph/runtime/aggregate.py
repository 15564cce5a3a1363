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

A `process` step with timers (``wake=``, ``on_wake=``) also keeps the stream time of its
partition (the highest record timestamp it has seen) and a heap of the keys' deadlines. The
deadlines are a pure function of the stored states, so the heap is rebuilt by scanning the
store when the task starts; the stream time and the position of the last record processed are
stored under the key ``()`` (`META`), flushed last as in `StreamJoinOp`: records up to that
position are skipped whole after a crash, so a replay fires the same timers at the same points.
Keys fire in (deadline, position of the key's last record, key) order, a pure function of the
stored entries, each at most once per record; steps without timers never reach this code.
"""

from __future__ import annotations

import copy
import heapq
import math
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

META: tuple[()] = ()
"""Store key of a timed `process` step's stream time and processed position."""
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

    timed = False
    """A `process` step with timers: it keeps stream time and fires keys' deadlines."""

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
        if node.wake is not None:
            self.timed = True
            self._init_timers()

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
        if self.timed:
            return self._push_timed(nxt)
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

    def _push_process(self, nxt: Push | None, *, timed: bool = False) -> Push:
        """The push of ``process``: the function's outputs go on, its new state stays.

        One closure for one input or several (the position is then a tuple, one offset per
        input); the other kinds never come here, so their paths are untouched. With `timed`
        (``wake=``), each new state's deadline is asked for and armed (`_arm`);
        `_push_timed` wraps this push with stream time and the firings.
        """
        cur = self.cur
        load = self._load_or_fail
        dirty = self.dirty.append
        fail = self.fail
        initial = self.initial
        fn: Any = self.node.fn
        wake = self.wake if timed else None
        arm = self._arm
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
                self.skipped += 1  # in this key's stored entry already
                if o == position and not multi and e[2] is DELETE:
                    self.replayed[k] = o  # the record that deleted the key, replayed
                return
            acc = e[2]
            deadline = None
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
                if wake is not None and state is not None and state is not DELETE:
                    deadline = wake(state)
                    if deadline is not None:
                        deadline = _deadline(deadline)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            e[2] = DELETE if state is None else state
            if e[1] == e[0]:
                dirty(k)
            e[1] = (*e[1][:i], o, *e[1][i + 1 :]) if multi else o
            if wake is not None:
                arm(k, deadline, e[1])
            if outputs:
                emitted[0] += len(outputs)
                for x in outputs:
                    out(k, x, ts, o, h)

        return push

    # -- timers (``process(..., wake=, on_wake=)``) ----------------------------------------

    def _init_timers(self) -> None:
        """Stream time and position from `META`, and the heap from every stored key's state.

        This reads the whole store partition once per task start: the price of timers that
        need no store of their own (their deadlines are a function of the states).
        """
        self.wake: Callable[[Any], Any] = self.node.wake  # type: ignore[assignment]
        self.on_wake: Callable[[Any, float], Any] = self.node.on_wake  # type: ignore[assignment]
        start: Any = -1 if self.inputs == 1 else (-1,) * self.inputs
        self.st = self.flushed_st = -math.inf
        self.done: Any = start
        self.pos: Any = start
        self.due: dict[Any, tuple[float, Any]] = {}
        """Per key with a timer: its deadline and the position it was set at (heap entries
        that do not match are stale)."""
        self.timers: list[tuple[float, Any, tuple[Any, ...], Any]] = []
        self.ended = False
        """True after `end_of_input` fired the timers, until the next record is applied."""
        for key, entry in self.store.entries():
            position, value = entry
            if key == META:
                self.done = self.pos = _position(position)
                self.st = self.flushed_st = float(value)  # type: ignore[arg-type]
            elif value is not DELETE:
                try:
                    deadline = self.wake(value)
                    if deadline is not None:
                        self._arm(key, _deadline(deadline), _position(position))
                except Exception:  # as its next record would find wake failing: the key
                    continue  # sets no timer until its state changes

    def _arm(self, k: Any, deadline: float | None, position: Any) -> None:
        if deadline is None:
            self.due.pop(k, None)
            return
        self.due[k] = (deadline, position)
        timers = self.timers
        heapq.heappush(timers, (deadline, position, _order(k), k))
        if len(timers) > 1024 + 4 * len(self.due):
            # stale entries (keys whose timer moved since) pile up while their deadlines are
            # ahead: rebuild from the live ones, amortised over the pushes that made them
            timers[:] = [(d, p, _order(key), key) for key, (d, p) in self.due.items()]
            heapq.heapify(timers)

    def _push_timed(self, nxt: Push | None) -> Push:
        """The push of a `process` step with timers: `_push_process`'s work, then stream time
        moves and the keys whose deadline it reached fire."""
        cur = self.cur
        self.out = nxt or _noop
        multi = self.inputs != 1
        apply = self._push_process(nxt, timed=True)

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            i = self.index
            if o <= (self.done[i] if multi else self.done):
                self.skipped += 1  # processed before a crash, its firings too
                if not multi:
                    e = cur.get(k)
                    if e is not None and o == e[0] and e[2] is DELETE:
                        self.replayed[k] = o
                return
            pos = self.pos
            self.pos = (*pos[:i], o, *pos[i + 1 :]) if multi else o
            self.ended = False
            if ts > self.st:
                self.st = ts
            apply(k, v, ts, o, h)
            if self.timers and self.timers[0][0] <= self.st:
                self._fire(o, self.st)

        return push

    def _fire(self, o: int, stream_time: float) -> None:
        """Fire every key whose deadline is at or before `stream_time`, once each, in
        (deadline, position, key) order. Outputs carry the key, the deadline as timestamp,
        no headers, and the origin `o` of the record that moved stream time."""
        timers = self.timers
        due = self.due
        cur = self.cur
        label = f_repr(self.on_wake)
        again: list[tuple[float, Any, tuple[Any, ...], Any]] = []
        while timers and timers[0][0] <= stream_time:
            entry = heapq.heappop(timers)
            deadline, position, _, k = entry
            if due.get(k) != (deadline, position):
                continue  # stale: the key's state changed since this timer was set
            del due[k]
            e = cur.get(k)
            if e is None:
                e = self._load(k)
            try:
                state, outputs = process_result(label, self.on_wake(e[2], stream_time))
                nd = None if state is None or state is DELETE else self.wake(state)
                if nd is not None:
                    nd = _deadline(nd)
            except Exception as exc:
                # no record to blame: the key's state as the value; it is not woken again
                # until its state changes (a record of it, or a restart)
                self.fail(exc, (k, e[2], deadline, o, None))
                continue
            e[2] = DELETE if state is None else state
            if e[1] == e[0]:
                self.dirty.append(k)
            if nd is not None:
                due[k] = (nd, e[1])
                again.append((nd, e[1], entry[2], k))
            if outputs:
                self.emitted[0] += len(outputs)
                for x in outputs:
                    self.out(k, x, deadline, o, None)
        for t in again:
            heapq.heappush(timers, t)  # due again: at the next record, not this one

    def has_open_windows(self) -> bool:
        """True while some key of a timed step waits for its deadline (until the end of the
        input has fired them all)."""
        return bool(self.due) and not self.ended

    def end_of_input(self, o: int) -> int:
        """The input has ended: fire every key with a timer once, in deadline order, with
        stream time infinity (all it waits for has happened). Stream time moves to the last
        of those deadlines, stored at the next commit. The number of keys fired."""
        if not self.due:
            return 0
        last = max(d for d, _ in self.due.values())
        fired = len(self.due)
        self._fire(o, math.inf)
        if last > self.st:
            self.st = last
        self.ended = True
        return fired

    def last_offset(self) -> int:
        """The highest input offset processed here (of any input), -1 before any."""
        return self.pos if type(self.pos) is int else max(self.pos)

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
        if self.timed:
            self._rearm(key)

    def _rearm(self, key: Any) -> None:
        """Set `key`'s timer from its stored state again (its unstorable one is gone)."""
        if key == META:
            return
        stored = self.store.get(key)
        self.due.pop(key, None)
        if stored is None or stored[1] is DELETE:
            return
        try:
            deadline = self.wake(stored[1])
            if deadline is not None:
                self._arm(key, _deadline(deadline), _position(stored[0]))
        except Exception:  # as at task start: no timer until its state changes
            return

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
        if self.timed and (changed or self.pos != self.done or self.st != self.flushed_st):
            self.done, self.flushed_st = self.pos, self.st
            changed[META] = (self.pos, self.st)  # last: when it is stored, all of it is
        return changed


def _position(position: Any) -> Any:
    """A stored position as the op keeps it (a codec may hand a tuple back as a list)."""
    return tuple(position) if isinstance(position, list) else position


def _deadline(value: Any) -> float:
    """A `wake` result as a float, or a TypeError saying what it must be."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    msg = f"wake returned {_short(value)}; it must return an event time in seconds or None"
    raise TypeError(msg)


def _order(key: Any) -> tuple[Any, ...]:
    """A key's place among keys due at the same deadline and position: deterministic, and
    comparable whatever the keys' types (a step may mix them)."""
    return (0, key) if type(key) is str else (1, type(key).__qualname__, repr(key))
