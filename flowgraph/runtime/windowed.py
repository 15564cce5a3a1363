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
- Session windows are windows ``(start, end)`` held by one key each, and ``sessions[key]``
  lists a key's in start order. A record that touches sessions (see `Session.place`) replaces
  them with one: their values merged, its own folded in, their entries deleted (a tombstone
  downstream with ``emit="update"``) and the merged one written. A record inside or after
  its key's latest session, the usual case, touches that one at most and skips the search
  (`_session_push`). An emptied window is forgotten when it closes. A record is late when its
  own session ``[t, t + gap)`` has closed or it touches a closed one; a closed session is kept
  at least `gap` past its close so that the second test never depends on retention. The
  merged entry takes the highest position of those it replaces, so a key's records applied
  before a crash are recognised (skipped) however their sessions merged since.
- The store holds ``(key, start, end)`` per window, ``(key,)`` per sliding buffer and ``()``
  for the partition's stream time and the position of the last record processed. That entry
  is flushed last, so when it is durable the whole commit is: after a crash, records up to
  its position are skipped whole (they are neither re-applied nor counted late again), and
  per-window positions cover the rest, as in `AggregateOp`.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.runtime.aggregate import MISSING, _initial_factory, _step
from flowgraph.runtime.ops import Fail, Push, Rec
from flowgraph.runtime.state.base import Entry, StorePartition
from flowgraph.runtime.window_push import _before_epoch, event_time, fast_push
from flowgraph.windows import Session, Sliding, Window, WindowKey, WindowSpec
from planner.logical import Aggregate

__all__ = ["WindowedAggregateOp"]

META: tuple[()] = ()
"""Store key of the partition's stream time and processed position."""
_INF = math.inf


def _nothing() -> None:
    pass


def _delete_refused(node: Aggregate) -> str:
    return (
        f"windowed {node.agg} {node.id!r} returned fg.DELETE; a window's value cannot be "
        "deleted, windows leave the table when their retention ends; return a value, or "
        "filter the records before the window"
    )


def _refusing_delete(step: Callable[[Any, Any], Any], node: Aggregate) -> Callable[[Any, Any], Any]:
    """`step` for a windowed table: `DELETE` from the user's function fails the record."""
    if node.agg not in ("aggregate", "reduce"):
        return step  # count and sum: nothing returns DELETE (a sum refuses it itself)
    msg = _delete_refused(node)

    def checked(acc: Any, v: Any) -> Any:
        value = step(acc, v)
        if value is DELETE:
            raise TypeError(msg)
        return value

    return checked


def _run_sync(coro: Any) -> Any:
    """The result of a coroutine that awaits nothing (a fold over sync functions)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    msg = "a sync fold awaited something"
    raise RuntimeError(msg)


def _highest(a: Any, b: Any) -> Any:
    """The later of two positions (one offset, or one per input)."""
    if type(a) is int:
        return max(a, b)
    return tuple(map(max, a, b))


def _merge_factory(node: Aggregate) -> Callable[[Any, Any], Any]:
    """``async merge(a, b)`` of two sessions' values: ``+`` for counts and sums, the reduce
    function itself, or the `merge=` an aggregate over sessions must have."""
    fn: Any = node.merge if node.agg == "aggregate" else node.fn
    is_async = node.is_async and node.agg == "reduce"

    async def merge(a: Any, b: Any) -> Any:
        if node.agg in ("count", "sum"):
            return a + b
        value = await fn(a, b) if is_async else fn(a, b)
        if value is DELETE:
            raise TypeError(_delete_refused(node))
        return value

    return merge


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
        self.session = isinstance(spec, Session)
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
        self.tsfn: Any = node.timestamp
        self.initial = _initial_factory(node)
        self.step = _refusing_delete(_step(node), node)
        self.is_async = node.is_async
        self.counting = node.agg == "count"
        self.start_pos: Any = -1 if inputs == 1 else (-1,) * inputs
        self.windows: dict[tuple[float, float], dict[Any, list[Any]]] = {}
        self.buffers: dict[Any, list[Any]] = {}
        self.sessions: dict[Any, list[Window]] = {}
        """Session only: key -> its sessions ``(start, end)`` held, in start order."""
        self.merge: Any = _merge_factory(node) if self.session else None
        """Sliding only: key -> [stored position, position, [(time, value), ...] in arrival
        order, their times sorted]. Records too old for any window leave from the front."""
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
        self._before_flush: Callable[[], None] = _nothing
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
                records: list[tuple[float, Any]] = list(value)  # type: ignore[call-overload]
                times = sorted(t for t, _ in records)
                self.buffers[key[0]] = [position, position, records, times]
            else:
                k, s, e = key
                self.windows.setdefault((s, e), {})[k] = [position, position, value]
                if self.session:
                    self.sessions.setdefault(k, []).append((s, e))
        for held in self.sessions.values():
            held.sort()
        for s, e in self.windows:
            if self.closes(e) > self.st:
                heapq.heappush(self.closing, (self.closes(e), s, e))
            else:
                heapq.heappush(self.expiring, (self.expires(e), s, e))
        for k, buffer in self.buffers.items():
            if buffer[2]:
                due = self.closes(buffer[3][0] + self.size)
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
        if self.session:  # kept while a record on time could still touch it
            return end + self.grace + max(self.keep - self.grace, self.size)
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

    def revert(self, skey: Any) -> None:
        """Put the window or buffer at store key `skey` back to its stored state (after a
        commit found its value cannot be stored)."""
        stored = self.store.get(skey)
        if len(skey) == 3:
            k, s, e = skey
            d = self.windows.get((s, e))
            if d is None:
                return
            if stored is None:
                if d.pop(k, None) is not None and self.session:
                    held = self.sessions[k]
                    held.remove((s, e))
                    if not held:
                        del self.sessions[k]
            else:
                d[k] = [stored[0], stored[0], stored[1]]
        elif len(skey) == 1:
            if stored is None:
                self.buffers.pop(skey[0], None)
            else:
                records: list[tuple[float, Any]] = list(stored[1])  # type: ignore[call-overload]
                times = sorted(t for t, _ in records)
                self.buffers[skey[0]] = [stored[0], stored[0], records, times]

    def flush(self) -> dict[Any, Entry | None]:
        """Changed windows and buffers, then tombstones, then stream time and position last."""
        self._before_flush()
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

    def _advance(self, ts: float, o: int, h: Any, *, expire: bool = True) -> None:
        """Close, emit and expire what stream time has now passed (`expire` False: only
        close; what is due to go waits for the next record)."""
        if self.session:
            self._advance_sessions(ts, o, h, expire)
            return
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
            gone = self.expires(e)
            if gone <= st and expire:  # no retention left: delete now, not through the heap
                self._expire(s, e)
            else:
                heapq.heappush(expiring, (gone, s, e))
        if not expire:
            self._schedule()
            return
        while expiring and expiring[0][0] <= st:
            _, s, e = heapq.heappop(expiring)
            self._expire(s, e)
        pruning = self.pruning
        horizon = self.size + self.grace
        while pruning and pruning[0][0] <= st:
            _, _, k = heapq.heappop(pruning)
            b = self.buffers.get(k)
            if b is None:
                continue
            # Only from the front: an older record further in (it came out of order) is out of
            # every window's range, so it may stay until it reaches the front.
            records, times = b[2], b[3]
            i = 0
            while i < len(records) and records[i][0] + horizon < st:
                i += 1
            j = 0
            while j < len(times) and times[j] + horizon < st:
                j += 1
            if not i and not j:
                continue
            del records[:i], times[:j]
            if records:
                self.dirty_buffers.append(k)
            else:
                del self.buffers[k]
                if b[0] != self.start_pos:
                    self.deleted.append((k,))
        self._schedule()

    def _advance_sessions(self, ts: float, o: int, h: Any, expire: bool) -> None:
        """`_advance` for sessions, written out: most windows closing here were emptied when
        their session grew or merged (they go at once), and a session is deleted `gap` or
        `retention`, whichever is longer, after its close."""
        st, grace, start = self.st, self.grace, self.start_pos
        after = max(self.keep - grace, self.size)  # `expires`, as it adds it
        closing, expiring, windows = self.closing, self.expiring, self.windows
        heappop, heappush = heapq.heappop, heapq.heappush
        nxt = self.next if self.emit_close else None
        while closing and closing[0][0] <= st:
            _, s, e = heappop(closing)
            d = windows.get((s, e))
            if not d:
                if d is not None:  # emptied by a merge or a longer session: forget it
                    del windows[(s, e)]
                continue
            if nxt is not None:
                for k, ent in list(d.items()):
                    nxt(WindowKey(k, s, e), ent[2], ts, o, h)
            gone = e + grace + after
            if gone <= st and expire:  # no retention left: delete now, not through the heap
                self._expire(s, e)
            else:
                heappush(expiring, (gone, s, e))
        if expire:
            deleted, sessions = self.deleted.append, self.sessions
            while expiring and expiring[0][0] <= st:
                _, s, e = heappop(expiring)
                d = windows.pop((s, e), None)
                if not d:
                    continue
                for k, ent in d.items():
                    if ent[0] != start:
                        deleted((k, s, e))
                    held = sessions[k]
                    if held[0] == (s, e):  # mostly the key's oldest
                        del held[0]
                    else:
                        held.remove((s, e))
                    if not held:
                        del sessions[k]
        self._schedule()

    def _expire(self, s: float, e: float) -> None:
        """Forget window ``[s, e)``; keys that were ever stored get a tombstone."""
        d = self.windows.pop((s, e), None)
        for k, ent in (d or {}).items():
            if ent[0] != self.start_pos:
                self.deleted.append((k, s, e))
            if self.session:
                held = self.sessions[k]
                held.remove((s, e))
                if not held:
                    del self.sessions[k]

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

    def has_open_windows(self) -> bool:
        """True when some window of this partition is not closed yet."""
        windows = self.windows
        return any((s, e) in windows for _, s, e in self.closing)

    def end_of_input(self, o: int) -> int:
        """The input has ended: close every open window, as stream time passing its close would.

        Stream time moves to the last open window's close (not to infinity: a later run's
        records for windows after those are on time), so the closing is stored with the
        stream time at the next commit and a restart does not reopen what was closed. With
        ``emit="close"`` each window's final value goes downstream now. Closed windows stay
        in the table (retention starts counting at the next record), so a bounded run ends
        with every window's final value queryable. `o` is the offset the emitted records
        carry (see `Task.end_of_input`). The number of windows closed.
        """
        self._sync()
        live = [c for c in self.closing if c[1:] in self.windows]
        if not live:
            return 0
        target = max(c for c, _, _ in live)
        if target > self.st:
            self.st = target
        self._advance(self.st, o, None, expire=False)
        self._resync()
        return len(live)

    # -- pushing records --------------------------------------------------------------------

    def make_push(self, nxt: Push | None, late: Push | None = None) -> Push:
        """The push function of this step: updates go to `nxt`, late records to `late`."""
        self.next = nxt
        self.late_next = late
        if self.is_async:
            return self._collect
        if self.session and self.inputs == 1:
            return self._session_push()
        if self.inputs != 1 or self.sliding or self.session:
            return self._push_generic
        return fast_push(self)

    def _session_push(self) -> Push:
        """The push of a session window over one input, sync: the common cases written out.

        A record inside its key's latest session, or after it (a new session), touches no
        other session, so it needs no `Session.place` and no merge: it updates the entry in
        place, or moves it to the longer window, or starts one. A record before the key's
        latest session (it came out of order: it may bridge two) takes `_apply_at`, the
        general path. Either way the store, the emitted updates and retractions and what is
        late are the same.
        """
        windows, sessions, closing = self.windows, self.sessions, self.closing
        gap, grace = self.size, self.grace
        tsfn, fail, step, initial = self.tsfn, self.fail, self.step, self.initial
        count = self.counting
        dirty, deleted = self.dirty.append, self.deleted.append
        nxt = None if self.emit_close else self.next
        done = self.done
        start = self.start_pos
        heappush = heapq.heappush

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            if o <= done:
                self.skipped += 1
                return
            try:
                t = ts if tsfn is None else tsfn(v)
                if type(t) is not float:
                    t = event_time(t)
                elif t - t != 0.0:  # inf or nan (cheaper than isfinite)
                    msg = f"the window timestamp {t!r} is not a finite time"
                    raise ValueError(msg)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            held = sessions.get(k)
            if held:
                w = held[-1]
                s, e = w
                if t < s:  # before the latest session: it may touch or bridge earlier ones
                    _run_sync(self._apply_at(k, v, ts, o, h, t, ()))
                    return
            else:
                s = e = -_INF
            self.pos = self.last_o = o
            if t > self.st:
                self.st = t
            end = t + gap
            if t < e:  # inside the latest session: in place, or it grows to `end`
                d = windows[w]
                ent = d[k]
                if o > ent[0]:  # else applied before a restart: nothing to do
                    if (end if end < e else e) + grace <= self.st:
                        self._late(k, v, ts, o, h)
                    else:
                        try:
                            value = ent[2] + 1 if count else step(ent[2], v)
                        except Exception as exc:
                            fail(exc, (k, v, ts, o, h))
                            return
                        if end <= e:
                            if ent[1] == ent[0]:
                                dirty((k, s, e))
                        else:
                            del d[k]  # the emptied window goes when it closes
                            if ent[0] != start:
                                deleted((k, s, e))
                            if nxt is not None:
                                nxt(WindowKey(k, s, e), None, ts, o, h)
                            e = end
                            w = held[-1] = (s, e)  # type: ignore[index]
                            d = windows.get(w)  # type: ignore[assignment]
                            if d is None:
                                d = windows[w] = {}
                                heappush(closing, (e + grace, s, e))
                                if e + grace < self.next_due:
                                    self.next_due = e + grace
                            d[k] = ent
                            dirty((k, s, e))
                        ent[1] = o
                        ent[2] = value
                        if nxt is not None:
                            nxt(WindowKey(k, s, e), value, ts, o, h)
            elif end + grace <= self.st:  # a new session, already closed
                self._late(k, v, ts, o, h)
            else:  # a new session, after the key's others
                try:
                    value = step(initial(), v)
                except Exception as exc:
                    fail(exc, (k, v, ts, o, h))
                    return
                w = (t, end)
                d = windows.get(w)  # type: ignore[assignment]
                if d is None:
                    d = windows[w] = {}
                    heappush(closing, (end + grace, t, end))
                    if end + grace < self.next_due:
                        self.next_due = end + grace
                d[k] = [start, o, value]
                dirty((k, t, end))
                if held:
                    held.append(w)
                else:
                    sessions[k] = [w]
                if nxt is not None:
                    nxt(WindowKey(k, t, end), value, ts, o, h)
            if self.st >= self.next_due:
                self._advance(ts, o, h)

        return push

    def _late(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        self.late += 1
        if self.late_next is not None:
            self.late_next(k, v, ts, o, h)

    def _push_generic(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        _run_sync(self._apply(k, v, ts, o, h))

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

    async def _fold_range(self, buffer: list[Any], s: float, e: float) -> Any:
        """The fold, in arrival order, of the buffered records with a time in ``[s, e]``.

        A count needs no order: two bisections of the sorted times give it.
        """
        records, times = buffer[2], buffer[3]
        acc = self.initial()
        if self.counting and not self.is_async:
            return acc + bisect.bisect_right(times, e) - bisect.bisect_left(times, s)
        if self.is_async:
            for t, v in records:
                if s <= t <= e:
                    acc = await self._afold(acc, v)
        else:
            step = self.step
            for t, v in records:
                if s <= t <= e:
                    acc = step(acc, v)
        return acc

    async def _afold(self, acc: Any, v: Any) -> Any:
        """One step of an `async def` fold (sync folds call `self.step`, no coroutine)."""
        agg, fn = self.node.agg, self.node.fn
        if agg == "count":
            return acc + 1
        if agg == "sum":
            return acc + (v if fn is None else await fn(v))  # type: ignore[operator]
        if agg == "reduce" and acc is MISSING:
            return v
        value = await fn(acc, v)  # type: ignore[operator]
        if value is DELETE:
            raise TypeError(_delete_refused(self.node))
        return value

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
        found: tuple[tuple[float, float], ...] = ()
        try:
            t = float(ts) if self.tsfn is None else event_time(self.tsfn(v))
            if not self.sliding and not self.session:
                found = self.spec.windows_for(t)  # type: ignore[union-attr]
                if not found:
                    raise _before_epoch(t)
            elif not math.isfinite(t):
                msg = f"the window timestamp {t!r} is not a finite time"
                raise ValueError(msg)
        except Exception as exc:
            self.fail(exc, rec)
            return
        await self._apply_at(k, v, ts, o, h, t, found)

    async def _apply_at(
        self, k: Any, v: Any, ts: float, o: int, h: Any, t: float, found: Any
    ) -> None:
        """`_apply` once the record is new and its event time `t` (and for tumbling and
        hopping its windows, `found`) are known."""
        rec = (k, v, ts, o, h)
        self.pos = self._moved(self.pos, o)
        self.last_o = o
        self.st = max(self.st, t)
        if self.sliding:
            updates, late = await self._apply_sliding(k, v, t, o, rec)
        elif self.session:
            updates, late = await self._apply_session(k, v, t, o, rec)
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
                value = await self._afold(acc, v) if self.is_async else self.step(acc, v)
                updates.append((d, s, e, value))
            except Exception as exc:
                self.fail(exc, rec)
                return None, False
        return updates, late

    async def _apply_session(
        self, k: Any, v: Any, t: float, o: int, rec: Rec
    ) -> tuple[list[Any] | None, bool]:
        """`k`'s sessions touched by a record at `t` become one, with the record folded in."""
        held = self.sessions.get(k, [])
        windows = self.windows
        spec: Session = self.spec  # type: ignore[assignment]
        (s, e), touched = spec.place(held, t)
        # A key's records apply in offset order, so a session of the key stored at a later
        # position means this record came before; if it was applied, it is in a touched one.
        if any(self._seen(windows[w][k][0], o) for w in touched):
            return [], False
        st = self.st
        if self.closes(t + self.size) <= st or any(self.closes(w[1]) <= st for w in touched):
            return [], True
        ents = [windows[w][k] for w in touched]
        try:
            acc = self.initial()
            for i, ent in enumerate(ents):
                acc = ent[2] if i == 0 else await self.merge(acc, ent[2])
            value = await self._afold(acc, v) if self.is_async else self.step(acc, v)
        except Exception as exc:
            self.fail(exc, rec)
            return None, False
        stored = pos = self.start_pos
        nxt = None if self.emit_close else self.next
        for w, ent in zip(touched, ents, strict=True):
            stored, pos = _highest(stored, ent[0]), _highest(pos, ent[1])
            if w == (s, e):
                continue  # the record falls inside this session: it is updated in place
            del windows[w][k]  # an emptied window stays until it closes: it is in the heap
            held.remove(w)
            if ent[0] != self.start_pos:
                self.deleted.append((k, *w))
            if nxt is not None:
                nxt(WindowKey(k, *w), None, rec[2], o, rec[4])
        d = self._window(s, e)
        if k not in d:
            d[k] = [stored, pos, value]
            bisect.insort(held, (s, e))
            self.sessions[k] = held
        self.dirty.append((k, s, e))
        return [(d, s, e, value)], False

    async def _apply_sliding(
        self, k: Any, v: Any, t: float, o: int, rec: Rec
    ) -> tuple[list[Any] | None, bool]:
        st, size, grace = self.st, self.size, self.grace
        if t + size + grace < st:
            return [], True  # no window, open or to come, can cover it
        b = self.buffers.get(k)
        if b is None:
            b = self.buffers[k] = [self.start_pos, self.start_pos, [], []]
        times: list[float] = b[3]
        added = not self._seen(b[0], o)
        if added:
            b[2].append((t, None if self.counting else v))  # a count needs no values
            if not times or t >= times[-1]:
                times.append(t)
            else:
                bisect.insort(times, t)
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
                    updates.append((d, s, t, await self._fold_range(b, s, t)))
                elif not self._seen(ent[0], o):
                    acc = ent[2]
                    value = await self._afold(acc, v) if self.is_async else self.step(acc, v)
                    updates.append((d, s, t, value))
            if t >= times[-1]:
                return updates, late  # in order: no window of a later record covers it
            nearby = times[bisect.bisect_right(times, t) : bisect.bisect_right(times, t + size)]
            later = sorted({bt for bt in nearby if bt - size <= t and bt + grace >= st})
            for t2 in later:
                s2 = t2 - size
                d2 = self.windows.get((s2, t2))
                ent2 = d2.get(k) if d2 is not None else None
                if ent2 is None or self._seen(ent2[0], o) or not s2 <= t:
                    continue
                acc = ent2[2]
                value = await self._afold(acc, v) if self.is_async else self.step(acc, v)
                updates.append((d2, s2, t2, value))
        except Exception as exc:
            if added:  # a dead letter: no later window may fold it (and fail again)
                b[2].pop()  # the record appended above (a key's records apply one by one)
                del times[bisect.bisect_left(times, t)]
            self.fail(exc, rec)
            return None, False
        return updates, late

    # -- queries ------------------------------------------------------------------------------

    def value_at(self, key: Any, t: float) -> tuple[bool, Any]:
        """``(found, value)`` of `key`'s window for time `t` (latest start for hopping)."""
        self._sync()
        if self.sliding:
            b = self.buffers.get(key)
            if b is None:
                return False, None
            if self.is_async:
                msg = "a sliding window over an async def fold cannot be queried"
                raise TypeError(msg)
            s = t - self.size
            times = b[3]
            if bisect.bisect_right(times, t) == bisect.bisect_left(times, s):
                return False, None
            return True, _run_sync(self._fold_range(b, s, t))
        if self.session:
            for s, e in self.sessions.get(key, ()):
                if s <= t < e:
                    return True, self.windows[(s, e)][key][2]
            return False, None
        found_windows = self.spec.windows_for(t) if t >= 0 else ()  # type: ignore[union-attr]
        if not found_windows:
            return False, None
        d = self.windows.get(found_windows[-1])
        ent = d.get(key) if d is not None else None
        return (False, None) if ent is None else (True, ent[2])

    def last_offset(self) -> int:
        """The highest input offset applied here (of any input), -1 before any."""
        self._sync()
        return self.pos if type(self.pos) is int else max(self.pos)

    def stream_time(self) -> float:
        """This partition's stream time (-inf before any record)."""
        self._sync()
        return self.st

    def holds(self, key: Any) -> bool:
        """True if `key` has a window or a buffer in this partition."""
        return key in self.buffers or any(key in d for d in self.windows.values())

    def items(self) -> Iterator[tuple[WindowKey, Any]]:
        """Every window held: ``(WindowKey, value)``."""
        self._sync()
        for (s, e), d in list(self.windows.items()):
            for k, ent in d.items():
                yield WindowKey(k, s, e), ent[2]
