"""The state of a windowed agent table on one partition (Faust's ``table.tumbling(...)``).

An agent writes ``views[key] += 1`` at a time (the record's timestamp, a field of its value,
or the clock); the write goes to every window of the table's spec that contains that time.
Entries are `TableState` entries keyed by window, so the rule that makes a plain table exact
under replay holds per window:

- tumbling and hopping: one entry per key and window, store key ``(key, start, end)``;
  windows are ``[start, end)`` (`flowgraph.windows`);
- sliding: one entry per key and write time, store key ``(key, t)``, holding the sum of the
  deltas written at ``t``; the value of the window ending at ``t`` is the sum of the entries
  with a time in ``[t - size, t]`` (both ends included, as `flowgraph.windows.Sliding`).

Stream time is the highest write time the partition's table has seen. A window whose end plus
grace is not above stream time takes no more writes: they are skipped and counted (`late`).
At end plus grace plus retention it is deleted (a store delete and a changelog tombstone,
written by the same flush as `TableState`'s changes). A sliding entry at ``t`` is kept while a
write that is not late could still read it: until stream time passes ``t + size + grace +
retention``; a write at ``t`` is late once stream time passes ``t + grace``.

Besides the entries, the store holds ``()``: ``(position of the last write flushed, stream
time)``. A write whose record offset is not above that position was made before a crash and
is skipped whole, so a replay neither counts it late again nor, for a table that takes its
time from the clock, puts it into another window. Every entry of the partition is held in
memory (retention bounds them), read once when the task starts.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.runtime.ops import Fail, unstorable
from flowgraph.runtime.state.base import Entry, StorePartition
from flowgraph.runtime.table_state import TableState
from flowgraph.serde import Codec
from flowgraph.windows import Sliding, WindowKey
from planner.logical import AgentTable

__all__ = ["FOREVER", "META", "WindowSet", "WindowedTableState", "WindowedTableView"]

META: tuple[()] = ()
"""Store key of the partition's stream time and the position of the last write flushed."""
FOREVER = sys.float_info.max
"""The grace of a table without ``expires=``: its windows never close, as in Faust."""
_INF = math.inf


class WindowedTableState(TableState):
    """One windowed agent table on one store partition."""

    def __init__(
        self,
        node: AgentTable,
        store: StorePartition,
        fail: Fail,
        clock: Callable[[], float],
        key_codec: Codec | None = None,
        changelog: str = "",
    ) -> None:
        super().__init__(node, store, fail, key_codec, changelog)
        spec: Any = node.window
        self.spec = spec
        self.sliding = isinstance(spec, Sliding)
        self.size: float = spec.size
        self.grace: float = spec.grace
        self.keep: float = spec.grace + spec.retention
        self.clock = clock
        """Wall-clock seconds (the TestDriver's own clock in tests)."""
        self.st = -_INF
        """Stream time: the highest write time seen on this partition."""
        self.flushed_st = -_INF
        self.done = -1
        """Position of the last write flushed: writes at or below it are replays."""
        self.pos = -1
        self.late = 0
        """Writes skipped because (one of) their windows had closed."""
        self.expiring: list[tuple[float, int, Any]] = []
        """Heap of (stream time at which the entry goes, sequence, store key); the sequence
        keeps store keys, which need not be comparable, out of the comparisons."""
        self._seq = itertools.count()
        self.expired: list[Any] = []
        """Store keys of stored entries deleted since the last flush."""
        self.live: dict[Any, list[Any]] = {}
        """Per key, its windows ``(start, end)`` held (sliding: its write times, sorted)."""
        self._span: tuple[float, float, tuple[tuple[float, float], ...]] = (0.0, -1.0, ())
        for skey, entry in store.entries():
            key: Any = skey
            position, value = entry
            if key == META:
                self.done = self.pos = position
                self.st = self.flushed_st = float(value)  # type: ignore[arg-type]
            else:
                self._track(key)
                self.cur[key] = [position, position, value]

    # -- entries ----------------------------------------------------------------------------

    def _due(self, skey: Any) -> float:
        """Stream time at which the entry `skey` is deleted."""
        if self.sliding:
            return math.nextafter(skey[1] + self.size + self.keep, _INF)
        return float(skey[2] + self.keep)

    def _track(self, skey: Any) -> None:
        """Index the new entry `skey` by key and by the time it goes."""
        due = self._due(skey)
        if due < FOREVER:
            heapq.heappush(self.expiring, (due, next(self._seq), skey))
        windows = self.live.setdefault(skey[0], [])
        if self.sliding:
            bisect.insort(windows, skey[1])
        else:
            windows.append(skey[1:])

    def _entry(self, skey: Any) -> list[Any]:
        e = self.cur.get(skey)
        if e is None:
            if self.key_codec is not None:
                try:
                    self.key_codec.encode(skey)
                except Exception as exc:
                    raise unstorable(exc, self.node.id, skey, self.changelog, "key") from exc
            e = self.cur[skey] = [-1, -1, DELETE]
            self._track(skey)
        return e

    def _admit(self, t: float, offset: int) -> bool:
        """Advance stream time to `t`; False when the write at `offset` is a replay."""
        if offset <= self.done:
            self.skipped += 1
            return False
        if offset > self.pos:
            self.pos = offset
        if t > self.st:
            self.st = t
            if self.expiring and self.expiring[0][0] <= t:
                self._expire()
        return True

    def _expire(self) -> None:
        st, expiring, cur = self.st, self.expiring, self.cur
        while expiring and expiring[0][0] <= st:
            _, _, skey = heapq.heappop(expiring)
            e = cur.pop(skey, None)
            if e is None:
                continue
            if e[0] != -1:
                self.expired.append(skey)
            windows = self.live.get(skey[0])
            if windows is not None:
                windows.remove(skey[1] if self.sliding else skey[1:])
                if not windows:
                    del self.live[skey[0]]

    def windows_for(self, t: float) -> tuple[tuple[float, float], ...]:
        """The tumbling or hopping windows containing `t` (cached per span of times)."""
        lo, hi, windows = self._span
        if lo <= t < hi:
            return windows
        self._span = span = self.spec.span(t)
        found: tuple[tuple[float, float], ...] = span[2]
        return found

    # -- writes -----------------------------------------------------------------------------

    def update(
        self,
        key: Any,
        t: float,
        op: Callable[[Any, Any], Any],
        value: Any,
        missing: Callable[[Any], Any] | None,
        offset: int,
    ) -> None:
        """Set every window of `key` holding `t` to ``op(its value, value)`` on behalf of the
        record at `offset`; a window without a value starts from ``missing(key)`` (None
        without `missing`). Late windows are left alone."""
        if offset <= self.done:
            self.skipped += 1  # flushed before a crash: this is a replay
            return
        if offset > self.pos:
            self.pos = offset
        if not -_INF < t < _INF:
            msg = f"table {self.node.id!r} got a write at time {t!r}; give a finite time"
            raise ValueError(msg)
        if t > self.st:
            self.st = t
            if self.expiring and self.expiring[0][0] <= t:
                self._expire()
        cur = self.cur
        if self.sliding:
            if t + self.grace < self.st:
                self.late += 1
                return
            skeys: Any = ((key, t),)
        else:
            lo, hi, windows = self._span
            if not lo <= t < hi:
                windows = self.windows_for(t)
                if not windows:
                    msg = (
                        f"table {self.node.id!r} got a write at time {t!r}, before the epoch; "
                        "windows start at 0, so give times in seconds since the epoch"
                    )
                    raise ValueError(msg)
            st, grace = self.st, self.grace
            if len(windows) == 1:
                start, end = windows[0]
                if end + grace <= st:
                    self.late += 1
                    return
                skeys = ((key, start, end),)
            else:
                skeys = [(key, s, end) for s, end in windows if end + grace > st]
                if len(skeys) < len(windows):
                    self.late += 1
        entries = [cur.get(k) or self._entry(k) for k in skeys]
        # every new value first: an op that raises writes no window
        values = [
            op((None if missing is None else missing(key)) if e[2] is DELETE else e[2], value)
            for e in entries
        ]
        dirty = self.dirty
        for skey, e, v in zip(skeys, entries, values, strict=True):
            if offset <= e[0]:
                self.skipped += 1
                continue
            if e[1] == e[0]:
                dirty.append(skey)
            e[1] = offset
            e[2] = v

    def set_window(
        self, key: Any, window: tuple[float, float], value: Any, t: float, offset: int
    ) -> None:
        """Set one window ``(start, end)`` of `key` (``table[key][window] = value``) on behalf
        of the record at `offset`, whose time is `t`."""
        s, e = (float(x) for x in window)
        if not self._admit(t, offset):
            return
        if e + self.grace <= self.st:
            self.late += 1
            return
        skey = (key, s, e)
        ent = self._entry(skey)
        if offset <= ent[0]:
            self.skipped += 1
            return
        if ent[1] == ent[0]:
            self.dirty.append(skey)
        ent[1] = offset
        ent[2] = value

    # -- reads ------------------------------------------------------------------------------

    def value_at(self, key: Any, t: float, *, earliest: bool = False) -> Any:
        """The value of `key` in the window of time `t` (`DELETE` when it has none).

        Tumbling and hopping: the window containing `t` with the latest start (the earliest
        with `earliest`). Sliding: the sum of the deltas in ``[t - size, t]``.
        """
        if self.sliding:
            return self._sum(key, t - self.size, t)
        if not math.isfinite(t):
            return DELETE
        windows = self.windows_for(t)
        if not windows:
            return DELETE
        s, e = windows[0] if earliest else windows[-1]
        return self.window_value(key, s, e)

    def window_value(self, key: Any, s: float, e: float) -> Any:
        """The value of `key` in window ``[s, e)`` (`DELETE` when it has none)."""
        ent = self.cur.get((key, s, e))
        return DELETE if ent is None else ent[2]

    def _sum(self, key: Any, lo: float, hi: float) -> Any:
        times = self.live.get(key)
        if not times:
            return DELETE
        acc: Any = DELETE
        cur = self.cur
        for t in times[bisect.bisect_left(times, lo) : bisect.bisect_right(times, hi)]:
            v = cur[(key, t)][2]
            if v is not DELETE:
                acc = v if acc is DELETE else acc + v
        return acc

    def holds(self, key: Any) -> bool:
        """True when some window of `key` is held here."""
        return key in self.live

    def held_keys(self) -> Iterator[Any]:
        """The keys with some window held."""
        return iter(list(self.live))

    def windows(self) -> Iterator[tuple[WindowKey, Any]]:
        """Every window held, with its value.

        Sliding: one window per write time ``t`` held, ``[t - size, t]``, with its sum.
        """
        for key, held in list(self.live.items()):
            if self.sliding:
                for t in held:
                    value = self._sum(key, t - self.size, t)
                    if value is not DELETE:
                        yield WindowKey(key, t - self.size, t), value
            else:
                for s, e in held:
                    value = self.window_value(key, s, e)
                    if value is not DELETE:
                        yield WindowKey(key, s, e), value

    def get(self, key: Any) -> Any:
        """A windowed table has no value per key alone: the value of its latest window."""
        return self.value_at(key, self.st)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Each key with its value at stream time."""
        for key in self.held_keys():
            value = self.value_at(key, self.st)
            if value is not DELETE:
                yield key, value

    # -- commit -----------------------------------------------------------------------------

    def flush(self) -> dict[Any, Entry | None]:
        """Tombstones of expired windows, the changed windows (as `TableState`), and last the
        stream time with the position of the last write."""
        changed: dict[Any, Entry | None] = dict.fromkeys(self.expired)
        self.expired.clear()
        cur = self.cur
        if self.graves:
            graves, self.graves = self.graves, {}
            for k, position in graves.items():
                e = cur.get(k)
                if e is None or (e[2] is DELETE and e[1] == position):
                    changed[k] = None
                    cur.pop(k, None)
                    self._untrack(k)
        for k in self.dirty:
            e = cur.get(k)
            if e is None:
                continue  # expired before its first flush
            if e[2] is DELETE:
                self.graves[k] = e[1]
            changed[k] = (e[1], e[2])
            e[0] = e[1]
        self.dirty.clear()
        if changed or self.pos != self.done or self.st != self.flushed_st:
            changed.pop(META, None)
            changed[META] = (self.pos, self.st)
            self.done, self.flushed_st = self.pos, self.st
        return changed

    def _untrack(self, skey: Any) -> None:
        if skey == META:
            return
        windows = self.live.get(skey[0])
        if windows is None:
            return
        item = skey[1] if self.sliding else skey[1:]
        if item in windows:
            windows.remove(item)
            if not windows:
                del self.live[skey[0]]

    def revert(self, key: Any) -> None:
        """Put the entry at store key `key` back to its stored value (it cannot be stored)."""
        stored = self.store.get(key)
        if stored is None:
            self.cur.pop(key, None)
            self._untrack(key)
        else:
            self.cur[key] = [stored[0], stored[0], stored[1]]


def _seconds(d: Any) -> float:
    import datetime as dt

    if isinstance(d, dt.timedelta):
        return d.total_seconds()
    return float(d)


class WindowSet:
    """The windows of one key, read outside an agent (a timer, a task, after a run).

    ``current()`` and ``value()`` read the window of the stream time of the partition holding
    the key, ``now()`` the window of the clock, ``delta(d)`` that of stream time minus `d`.
    """

    def __init__(self, view: WindowedTableView, key: Any) -> None:
        self._view = view
        self.key = key

    def now(self) -> Any:
        """The value in the window of the clock's now (for hopping: the earliest)."""
        state = self._view._holder(self.key)
        if state is None:
            return self._view._missing(self.key)
        return self._view._found(self.key, state.value_at(self.key, state.clock(), earliest=True))

    def current(self, event: Any = None) -> Any:
        """The value in the window of stream time (for hopping: the latest)."""
        return self.delta(0.0) if event is None else self._at(event.timestamp)

    def value(self, event: Any = None) -> Any:
        """As `current()`."""
        return self.current(event)

    def delta(self, d: Any, event: Any = None) -> Any:
        """The value in the window of stream time minus `d` seconds (or a timedelta)."""
        if event is not None:
            return self._at(event.timestamp - _seconds(d))
        state = self._view._holder(self.key)
        if state is None:
            return self._view._missing(self.key)
        return self._view._found(self.key, state.value_at(self.key, state.st - _seconds(d)))

    def _at(self, t: float) -> Any:
        state = self._view._holder(self.key)
        if state is None:
            return self._view._missing(self.key)
        return self._view._found(self.key, state.value_at(self.key, t))

    def __getitem__(self, window: tuple[float, float]) -> Any:
        """The value of one window ``(start, end)``."""
        state = self._view._holder(self.key)
        if state is None or state.sliding:
            value = DELETE if state is None else state._sum(self.key, *window)
        else:
            value = state.window_value(self.key, *window)
        return self._view._found(self.key, value)

    def __repr__(self) -> str:
        return f"<WindowSet of {self._view.name!r}: key={self.key!r}>"


class WindowedTableView:
    """A windowed agent table over the partitions a worker holds: ``view[key].current()``,
    `windows`, `range`, `late`. It reads the live state, so it follows a running worker."""

    def __init__(self, name: str, states: list[WindowedTableState], default: Any = None):
        self.name = name
        self._states = states
        self._default = default

    def _holder(self, key: Any) -> WindowedTableState | None:
        return next((s for s in self._states if s.holds(key)), None)

    def _missing(self, key: Any) -> Any:
        if self._default is None:
            raise KeyError(key)
        return self._default()

    def _found(self, key: Any, value: Any) -> Any:
        return self._missing(key) if value is DELETE else value

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(self, key)

    def __contains__(self, key: object) -> bool:
        return self._holder(key) is not None

    def keys(self) -> list[Any]:
        """The keys with some window held."""
        return [k for s in self._states for k in s.held_keys()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def windows(self) -> dict[WindowKey, Any]:
        """Every window held, of every key: ``{WindowKey: value}`` (see
        `WindowedTableState.windows` for sliding tables)."""
        return {wk: v for s in self._states for wk, v in s.windows()}

    def range(self, key: Any, start: float, end: float) -> list[tuple[WindowKey, Any]]:
        """The windows of `key` held whose start lies in ``[start, end]``, by start."""
        lo, hi = _seconds(start), _seconds(end)
        found = [
            (wk, v) for wk, v in self.windows().items() if wk.key == key and lo <= wk.start <= hi
        ]
        return sorted(found, key=lambda item: (item[0].start, item[0].end))

    @property
    def late(self) -> int:
        """Writes skipped so far because their window had closed."""
        return sum(s.late for s in self._states)

    @property
    def stream_time(self) -> float:
        """The largest stream time over the partitions held (-inf before any write)."""
        return max((s.st for s in self._states), default=-_INF)

    def __len__(self) -> int:
        """The number of (key, window) values held."""
        return len(self.windows())

    def __repr__(self) -> str:
        return f"WindowedTableView({self.name!r}, windows={len(self)})"
