"""Windowed aggregation in event time: stream time, lateness, close, emit and retention.

One `WindowedAggregateOp` runs one windowed aggregation on one partition. Semantics are in
docs/concepts/windows.md; how they are kept here:

- Every live window of the partition is in memory, ``windows[(start, end)][key] ->
  [stored position, position, value]`` (the store is written at commits and read once, when
  the task starts). Retention bounds what is live, so memory stays bounded. A record in the
  same window as the one before it finds its window in a cached span, so the tumbling path
  costs one dict lookup per record, as a plain count does.
- A heap of close times says when the next window closes. Stream time only grows; when it
  passes a close time the window is emitted (``emit="close"``) and, at ``end + grace +
  retention``, deleted: a store delete and a changelog tombstone.
- Sliding windows also keep, per key, the records that a later window may still cover.
- The store holds ``(key, start, end)`` per window, ``(key,)`` per sliding buffer and ``()``
  for the partition's stream time and the position of the last record processed. That entry
  is flushed last, so when it is durable the whole commit is: after a crash, records up to
  its position are skipped whole (they are neither re-applied nor counted late again), and
  per-window positions cover the rest, as in `AggregateOp`.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

from flowgraph.runtime.aggregate import MISSING, _initial_factory, _step
from flowgraph.runtime.ops import Fail, Push, Rec
from flowgraph.runtime.state.base import Entry, StorePartition
from flowgraph.windows import Sliding, Tumbling, WindowKey, WindowSpec, _seconds
from planner.logical import Aggregate

__all__ = ["WindowSet", "WindowedAggregateOp", "WindowedTableView"]

META: tuple[()] = ()
"""Store key of the partition's stream time and processed position."""
_INF = math.inf


def _nothing() -> None:
    pass


def event_time(t: Any) -> float:
    """A timestamp function's result as float seconds; one clear error for anything else."""
    if type(t) is float or (isinstance(t, int | float) and not isinstance(t, bool)):
        t = float(t)
    elif isinstance(t, dt.datetime):
        t = t.timestamp()
    else:
        msg = (
            f"the window timestamp is {t!r} ({type(t).__name__}); "
            "a timestamp must be seconds (int or float) or a datetime"
        )
        raise TypeError(msg)
    if not math.isfinite(t):
        msg = f"the window timestamp {t!r} is not a finite time"
        raise ValueError(msg)
    return float(t)


def _before_epoch(t: float) -> ValueError:
    return ValueError(
        f"the window timestamp {t!r} is before the epoch; windows start at 0 (1970-01-01)"
    )


class WindowedAggregateOp:
    """One windowed aggregation step over one store partition."""

    def __init__(
        self,
        node: Aggregate,
        store: StorePartition,
        inputs: int,
        fail: Fail,
        clock: Callable[[], float],
    ) -> None:
        spec: Any = node.window
        self.node = node
        self.spec: WindowSpec = spec
        self.sliding = isinstance(spec, Sliding)
        self.size: float = spec.size
        self.grace: float = spec.grace
        self.keep: float = spec.grace + spec.retention
        self.emit_close = spec.emit == "close"
        self.idle_timeout: float | None = spec.idle_timeout
        self.store = store
        self.inputs = inputs
        self.index = 0
        """Which input topic the records now pushed come from (multi-input sub-topologies)."""
        self.fail = fail
        self.clock = clock
        self.tsfn: Any = node.timestamp
        self.initial = _initial_factory(node)
        self.step = _step(node)
        self.is_async = node.is_async
        self.start_pos: Any = -1 if inputs == 1 else (-1,) * inputs
        self.windows: dict[tuple[float, float], dict[Any, list[Any]]] = {}
        self.buffers: dict[Any, list[Any]] = {}
        """Sliding only: key -> [stored position, position, [(time, value), ...]]."""
        self.closing: list[tuple[float, float, float]] = []
        self.expiring: list[tuple[float, float, float]] = []
        self.pruning: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self.next_due = _INF
        """The earliest stream time at which a window closes, expires or a buffer shrinks."""
        self.dirty: list[tuple[Any, float, float]] = []
        self.dirty_buffers: list[Any] = []
        self.deleted: list[tuple[Any, ...]] = []
        self.st = -_INF
        self.flushed_st = -_INF
        self.done: Any = self.start_pos
        self.pos: Any = self.start_pos
        self.last_o = -1
        self.late = 0
        self.skipped = 0
        self.pending: list[Rec] = []
        self._sync: Callable[[], None] = _nothing
        """Writes stream time and position from the hot path's closure to the op."""
        self._resync: Callable[[], None] = _nothing
        self.next: Push | None = None
        self.late_next: Push | None = None
        self._load()
        self._tick_pos = self.pos
        self._tick_clock = clock()
        self._tick_st = self.st

    # -- state --------------------------------------------------------------------------

    def _load(self) -> None:
        """Bring every live window (and the stream time) of this partition into memory."""
        for skey, entry in self.store.entries():
            key: Any = skey
            position, value = entry
            if key == META:
                self.done = self.pos = position
                self.st = self.flushed_st = float(value)  # type: ignore[arg-type]
            elif len(key) == 1:
                self.buffers[key[0]] = [position, position, list(value)]  # type: ignore[call-overload]
            else:
                k, s, e = key
                self.windows.setdefault((s, e), {})[k] = [position, position, value]
        for s, e in self.windows:
            if self.closes(e) > self.st:
                heapq.heappush(self.closing, (self.closes(e), s, e))
            else:
                heapq.heappush(self.expiring, (self.expires(e), s, e))
        for k, buffer in self.buffers.items():
            if buffer[2]:
                due = self.closes(min(t for t, _ in buffer[2]) + self.size)
                heapq.heappush(self.pruning, (due, next(self._seq), k))
        self._schedule()

    def closes(self, end: float) -> float:
        """Stream time at which the window ending at `end` is closed.

        ``end + grace``; a sliding window includes its end, so it closes just after that.
        """
        close = end + self.grace
        return math.nextafter(close, _INF) if self.sliding else close

    def expires(self, end: float) -> float:
        """Stream time at which the window ending at `end` is deleted."""
        gone = end + self.keep
        return math.nextafter(gone, _INF) if self.sliding else gone

    def _schedule(self) -> None:
        self.next_due = min(
            self.closing[0][0] if self.closing else _INF,
            self.expiring[0][0] if self.expiring else _INF,
            self.pruning[0][0] if self.pruning else _INF,
        )

    def _window(self, s: float, e: float) -> dict[Any, list[Any]]:
        d = self.windows.get((s, e))
        if d is None:
            d = self.windows[(s, e)] = {}
            close = self.closes(e)
            heapq.heappush(self.closing, (close, s, e))
            if close < self.next_due:
                self.next_due = close
        return d

    def flush(self) -> dict[Any, Entry | None]:
        """Changed windows and buffers, then tombstones, then stream time and position last."""
        self._sync()
        # Tombstones first: a sliding buffer emptied and then started again is written after.
        changed: dict[Any, Entry | None] = dict.fromkeys(self.deleted)
        self.deleted.clear()
        windows = self.windows
        for k, s, e in self.dirty:
            d = windows.get((s, e))
            ent = d.get(k) if d is not None else None
            if ent is not None and ent[1] != ent[0]:
                changed[(k, s, e)] = (ent[1], ent[2])
                ent[0] = ent[1]
        self.dirty.clear()
        for k in dict.fromkeys(self.dirty_buffers):
            b = self.buffers.get(k)
            if b is not None:
                changed.pop((k,), None)
                changed[(k,)] = (b[1], tuple(b[2]))
                b[0] = b[1]
        self.dirty_buffers.clear()
        if changed or self.pos != self.done or self.st != self.flushed_st:
            self.done, self.flushed_st = self.pos, self.st
            changed[META] = (self.pos, self.st)
        return changed

    # -- stream time ----------------------------------------------------------------------

    def _advance(self, ts: float, o: int, h: Any) -> None:
        """Close, emit and expire what stream time has now passed."""
        st = self.st
        closing, expiring = self.closing, self.expiring
        nxt = self.next if self.emit_close else None
        while closing and closing[0][0] <= st:
            _, s, e = heapq.heappop(closing)
            d = self.windows.get((s, e))
            if d is None:
                continue
            if nxt is not None:
                for k, ent in list(d.items()):
                    nxt(WindowKey(k, s, e), ent[2], ts, o, h)
            heapq.heappush(expiring, (self.expires(e), s, e))
        while expiring and expiring[0][0] <= st:
            _, s, e = heapq.heappop(expiring)
            d = self.windows.pop((s, e), None)
            for k, ent in (d or {}).items():
                if ent[0] != self.start_pos:  # ever stored: delete it there too
                    self.deleted.append((k, s, e))
        pruning = self.pruning
        horizon = self.size + self.grace
        while pruning and pruning[0][0] <= st:
            _, _, k = heapq.heappop(pruning)
            b = self.buffers.get(k)
            if b is None:
                continue
            kept = [r for r in b[2] if r[0] + horizon >= st]
            if len(kept) == len(b[2]):
                continue
            if kept:
                b[2] = kept
                self.dirty_buffers.append(k)
            else:
                del self.buffers[k]
                if b[0] != self.start_pos:
                    self.deleted.append((k,))
        self._schedule()

    def tick(self, now: float) -> bool:
        """Idle timeout: advance a quiet partition's stream time by clock time; True if it did."""
        self._sync()
        if self.pos != self._tick_pos:  # records came since the last tick
            self._tick_pos, self._tick_clock, self._tick_st = self.pos, now, self.st
            return False
        if self.idle_timeout is None or now - self._tick_clock < self.idle_timeout:
            return False
        st = self._tick_st + (now - self._tick_clock)
        if st <= self.st:
            return False
        self.st = st
        if st >= self.next_due:
            self._advance(st, self.pos if type(self.pos) is int else self.last_o, None)
        self._resync()
        return True

    # -- pushing records --------------------------------------------------------------------

    def make_push(self, nxt: Push | None, late: Push | None = None) -> Push:
        """The push function of this step: updates go to `nxt`, late records to `late`."""
        self.next = nxt
        self.late_next = late
        if self.is_async:
            return self._collect
        if self.inputs != 1 or self.sliding:
            return self._push_generic
        return self._fast_push()

    def _fast_push(self) -> Push:
        """Tumbling and hopping, one input, sync: the hot path, written out.

        Stream time and position live in the closure (`sync` writes them to the op before
        anything else reads them, `resync` reads them back after a tick moved stream time);
        a tumbling window needs no loop.
        """
        spec: Any = self.spec
        grace = self.grace
        tsfn = self.tsfn
        fail = self.fail
        nxt = None if self.emit_close else self.next
        late_nxt = self.late_next
        initial = self.initial
        step = self.step
        count = self.node.agg == "count"
        dirty = self.dirty.append
        done = self.done
        st, pos = self.st, self.pos
        lo, hi = _INF, -_INF
        wins: list[tuple[float, float, float, dict[Any, list[Any]] | None]] = []
        s1 = e1 = close1 = 0.0  # the one window, for tumbling
        d1: dict[Any, list[Any]] = {}
        due = self.next_due  # only windows made here lower it, and `span` re-reads it
        one = isinstance(spec, Tumbling)

        def sync() -> None:
            self.st, self.pos = st, pos

        def resync() -> None:
            nonlocal st, pos, due
            st, pos, due = self.st, self.pos, self.next_due

        self._sync, self._resync = sync, resync

        def span(t: float) -> bool:
            """Find the windows of `t`; False (and a dead letter) if it has none."""
            nonlocal lo, hi, wins, due, s1, e1, close1, d1
            lo, hi, found = spec.span(t)
            top = max(st, t)
            wins = [
                (s, e, e + grace, self._window(s, e) if e + grace > top else None) for s, e in found
            ]
            due = self.next_due
            if wins and one:
                s1, e1, close1, d = wins[0]
                d1 = d if d is not None else {}
            return bool(wins)

        def miss(k: Any, v: Any, ts: float, o: int, h: Any, t: float) -> bool:
            """`t` is outside the cached span: look it up; False if the record failed."""
            try:
                if span(t):
                    return True
                fail(_before_epoch(t), (k, v, ts, o, h))
            except ValueError as exc:
                fail(exc, (k, v, ts, o, h))
            return False

        def late(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            self.late += 1
            if late_nxt is not None:
                late_nxt(k, v, ts, o, h)

        def advance(ts: float, o: int, h: Any) -> None:
            nonlocal due
            sync()
            self._advance(ts, o, h)
            due = self.next_due

        def push_one(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            nonlocal st, pos
            if o <= done:
                self.skipped += 1
                return
            if tsfn is None:
                t = ts
            else:  # written out, not a helper: a call per record costs as much as a window
                try:
                    t = tsfn(v)
                    if type(t) is not float:
                        t = event_time(t)
                except Exception as exc:
                    fail(exc, (k, v, ts, o, h))
                    return
            if not lo <= t < hi and not miss(k, v, ts, o, h, t):
                return
            pos = o
            if t > st:
                st = t
            if st < close1:
                ent = d1.get(k)
                if ent is None:
                    ent = d1[k] = [-1, -1, initial()]
                if o > ent[0]:
                    if count:
                        ent[2] += 1
                    else:
                        try:
                            ent[2] = step(ent[2], v)
                        except Exception as exc:
                            fail(exc, (k, v, ts, o, h))
                            return
                    if ent[1] == ent[0]:
                        dirty((k, s1, e1))
                    ent[1] = o
                    if nxt is not None:
                        nxt(WindowKey(k, s1, e1), ent[2], ts, o, h)
            else:
                late(k, v, ts, o, h)
            if st >= due:
                advance(ts, o, h)

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            nonlocal st, pos
            if o <= done:
                self.skipped += 1
                return
            if tsfn is None:
                t = ts
            else:  # written out, not a helper: a call per record costs as much as a window
                try:
                    t = tsfn(v)
                    if type(t) is not float:
                        t = event_time(t)
                except Exception as exc:
                    fail(exc, (k, v, ts, o, h))
                    return
            if not lo <= t < hi and not miss(k, v, ts, o, h, t):
                return
            pos = o
            if t > st:
                st = t
            missed = False
            for s, e, close, d in wins:
                if st >= close or d is None:
                    missed = True
                    continue
                ent = d.get(k)
                if ent is None:
                    ent = d[k] = [-1, -1, initial()]
                elif o <= ent[0]:
                    continue
                if count:
                    ent[2] += 1
                else:
                    try:
                        ent[2] = step(ent[2], v)
                    except Exception as exc:
                        fail(exc, (k, v, ts, o, h))
                        return
                if ent[1] == ent[0]:
                    dirty((k, s, e))
                ent[1] = o
                if nxt is not None:
                    nxt(WindowKey(k, s, e), ent[2], ts, o, h)
            if missed:
                late(k, v, ts, o, h)
            if st >= due:
                advance(ts, o, h)

        return push_one if one else push

    def _push_generic(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        coro = self._apply(k, v, ts, o, h)
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        msg = "a windowed aggregation with a sync function awaited something"
        raise RuntimeError(msg)

    def _collect(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        self.pending.append((k, v, ts, o, h))

    async def drain(self) -> bool:
        """Apply the collected records in order, awaiting the `async def` fold."""
        if not self.pending:
            return False
        batch, self.pending = self.pending, []
        for r in batch:
            await self._apply(*r)
        return True

    async def _fold(self, acc: Any, v: Any) -> Any:
        if not self.is_async:
            return self.step(acc, v)
        agg, fn = self.node.agg, self.node.fn
        if agg == "count":
            return acc + 1
        if agg == "sum":
            return acc + (v if fn is None else await fn(v))  # type: ignore[operator]
        if agg == "reduce" and acc is MISSING:
            return v
        return await fn(acc, v)  # type: ignore[operator]

    def _seen(self, position: Any, o: int) -> bool:
        return bool(o <= (position if self.inputs == 1 else position[self.index]))

    def _moved(self, position: Any, o: int) -> Any:
        if self.inputs == 1:
            return o
        i = self.index
        return (*position[:i], o, *position[i + 1 :])

    async def _apply(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        """Any kind, any inputs, sync or async: one record through its windows."""
        rec = (k, v, ts, o, h)
        if self._seen(self.done, o):
            self.skipped += 1
            return
        try:
            t = float(ts) if self.tsfn is None else event_time(self.tsfn(v))
            if not self.sliding:
                found = self.spec.windows_for(t)  # type: ignore[union-attr]
                if not found:
                    raise _before_epoch(t)
            elif not math.isfinite(t):
                msg = f"the window timestamp {t!r} is not a finite time"
                raise ValueError(msg)
        except Exception as exc:
            self.fail(exc, rec)
            return
        self.pos = self._moved(self.pos, o)
        self.last_o = o
        self.st = max(self.st, t)
        if self.sliding:
            updates, late = await self._apply_sliding(k, v, t, o, rec)
        else:
            updates, late = await self._apply_windows(k, v, found, o, rec)
        if updates is None:
            return  # the fold failed: the record is a dead letter, nothing was applied
        nxt = None if self.emit_close else self.next
        for d, s, e, value in updates:
            ent = d.get(k)
            if ent is None:
                ent = d[k] = [self.start_pos, self.start_pos, value]
            if ent[1] == ent[0]:
                self.dirty.append((k, s, e))
            ent[1] = self._moved(ent[1], o)
            ent[2] = value
            if nxt is not None:
                nxt(WindowKey(k, s, e), value, ts, o, h)
        if late:
            self.late += 1
            if self.late_next is not None:
                self.late_next(*rec)
        if self.st >= self.next_due:
            self._advance(ts, o, h)

    async def _apply_windows(
        self, k: Any, v: Any, found: tuple[tuple[float, float], ...], o: int, rec: Rec
    ) -> tuple[list[Any] | None, bool]:
        updates: list[Any] = []
        late = False
        for s, e in found:
            if self.st >= e + self.grace:
                late = True
                continue
            d = self._window(s, e)
            ent = d.get(k)
            if ent is not None and self._seen(ent[0], o):
                continue
            try:
                acc = self.initial() if ent is None else ent[2]
                updates.append((d, s, e, await self._fold(acc, v)))
            except Exception as exc:
                self.fail(exc, rec)
                return None, False
        return updates, late

    async def _apply_sliding(
        self, k: Any, v: Any, t: float, o: int, rec: Rec
    ) -> tuple[list[Any] | None, bool]:
        st, size, grace = self.st, self.size, self.grace
        if t + size + grace < st:
            return [], True  # no window, open or to come, can cover it
        b = self.buffers.get(k)
        if b is None:
            b = self.buffers[k] = [self.start_pos, self.start_pos, []]
        if not self._seen(b[0], o):
            b[2].append((t, v))
            self.dirty_buffers.append(k)
            b[1] = self._moved(b[1], o)
            due = self.closes(t + size)
            heapq.heappush(self.pruning, (due, next(self._seq), k))
            self.next_due = min(self.next_due, due)
        updates: list[Any] = []
        late = st > t + grace
        try:
            if not late:
                s = t - size
                d = self._window(s, t)
                ent = d.get(k)
                if ent is None:
                    acc = self.initial()
                    for bt, bv in b[2]:
                        if s <= bt <= t:
                            acc = await self._fold(acc, bv)
                    updates.append((d, s, t, acc))
                elif not self._seen(ent[0], o):
                    updates.append((d, s, t, await self._fold(ent[2], v)))
            later = sorted({bt for bt, _ in b[2] if t < bt and bt - size <= t and bt + grace >= st})
            for t2 in later:
                s2 = t2 - size
                d2 = self.windows.get((s2, t2))
                ent2 = d2.get(k) if d2 is not None else None
                if ent2 is None or self._seen(ent2[0], o) or not s2 <= t:
                    continue
                updates.append((d2, s2, t2, await self._fold(ent2[2], v)))
        except Exception as exc:
            self.fail(exc, rec)
            return None, False
        return updates, late

    # -- queries ------------------------------------------------------------------------------

    def value_at(self, key: Any, t: float) -> tuple[bool, Any]:
        """``(found, value)`` of `key`'s window for time `t` (latest start for hopping)."""
        if self.sliding:
            b = self.buffers.get(key)
            if b is None:
                return False, None
            if self.is_async:
                msg = "a sliding window over an async def fold cannot be queried"
                raise TypeError(msg)
            acc, found = self.initial(), False
            for bt, bv in b[2]:
                if t - self.size <= bt <= t:
                    acc, found = self.step(acc, bv), True
            return found, acc
        found_windows = self.spec.windows_for(t) if t >= 0 else ()  # type: ignore[union-attr]
        if not found_windows:
            return False, None
        d = self.windows.get(found_windows[-1])
        ent = d.get(key) if d is not None else None
        return (False, None) if ent is None else (True, ent[2])

    def stream_time(self) -> float:
        """This partition's stream time (-inf before any record)."""
        self._sync()
        return self.st

    def holds(self, key: Any) -> bool:
        """True if `key` has a window or a buffer in this partition."""
        return key in self.buffers or any(key in d for d in self.windows.values())

    def items(self) -> Iterator[tuple[WindowKey, Any]]:
        """Every window held: ``(WindowKey, value)``."""
        for (s, e), d in list(self.windows.items()):
            for k, ent in d.items():
                yield WindowKey(k, s, e), ent[2]


class WindowSet:
    """The windows of one key, as `table[key]` gives them: pick one by time."""

    def __init__(self, view: WindowedTableView, key: Any) -> None:
        self._view = view
        self.key = key

    def now(self) -> Any:
        """The value of the window containing the clock's now."""
        return self._view._value(self.key, self._view._clock())

    def current(self) -> Any:
        """The value of the window containing stream time (of the key's partition)."""
        return self._view._value(self.key, self._view._stream_time(self.key))

    def value(self) -> Any:
        """The same as `current()`: the window of the stream time."""
        return self.current()

    def delta(self, d: float | dt.timedelta) -> Any:
        """The value of the window containing stream time minus `d` seconds."""
        return self._view._value(self.key, self._view._stream_time(self.key) - _seconds(d))

    def __repr__(self) -> str:
        return f"WindowSet(key={self.key!r})"


class WindowedTableView:
    """Queries over a windowed table: ``view[key].current()``, `range`, `windows`.

    Reads the live state of the tasks that hold the table, in a running worker or a
    `TestDriver`; where several hopping windows contain a time, the latest start wins.
    """

    def __init__(self, name: str, ops: list[WindowedAggregateOp], clock: Callable[[], float]):
        self.name = name
        self._ops = ops
        self._clock = clock

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(self, key)

    def _initial(self) -> Any:
        if not self._ops:
            return None
        value = self._ops[0].initial()
        return None if value is MISSING else value

    def _value(self, key: Any, t: float) -> Any:
        for op in self._ops:
            found, value = op.value_at(key, t)
            if found:
                return None if value is MISSING else value
        return self._initial()

    def _stream_time(self, key: Any) -> float:
        holding = [op for op in self._ops if op.holds(key)]
        times = [op.stream_time() for op in holding or self._ops]
        return max(times, default=-_INF)

    def range(self, key: Any, start: float, end: float) -> list[tuple[WindowKey, Any]]:
        """The windows of `key` held now whose start lies in ``[start, end]``, by start."""
        lo, hi = _seconds(start), _seconds(end)
        found = [
            (wk, value)
            for op in self._ops
            for (s, e), d in list(op.windows.items())
            if lo <= s <= hi and key in d
            for wk, value in ((WindowKey(key, s, e), d[key][2]),)
        ]
        return sorted(found, key=lambda item: (item[0].start, item[0].end))

    @property
    def late(self) -> int:
        """Records this table found too late for one of their windows, so far."""
        return sum(op.late for op in self._ops)

    @property
    def stream_time(self) -> float:
        """The largest stream time over the partitions held (-inf before any record)."""
        return max((op.stream_time() for op in self._ops), default=-_INF)

    def windows(self) -> dict[WindowKey, Any]:
        """Every window held now, of every key: ``{WindowKey: value}``."""
        return {wk: value for op in self._ops for wk, value in op.items()}

    def __len__(self) -> int:
        """The number of (key, window) values held."""
        return sum(len(d) for op in self._ops for d in op.windows.values())

    def __repr__(self) -> str:
        return f"WindowedTableView({self.name!r}, windows={len(self)})"
