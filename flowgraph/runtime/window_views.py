"""Queries over a windowed table, as `TestDriver.table` and `Worker.table` give them.

``view[key]`` is a `WindowSet` that picks one window by time (`now`, `current`, `value`,
`delta`); `WindowedTableView.range` and `windows` list them. Views read the live state of
the tasks holding the table, so in a running worker they follow it as it changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from flowgraph.runtime.aggregate import MISSING
from flowgraph.runtime.windowed import _INF, WindowedAggregateOp
from flowgraph.windows import WindowKey, _seconds

__all__ = ["WindowSet", "WindowedTableView"]


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
        for op in self._ops:
            op._sync()  # values the hot path has not written to the windows yet
        found = [
            (wk, value)
            for op in self._ops
            for (s, e), d in list(op.windows.items())
            if lo <= s <= hi and key in d
            for wk, value in ((WindowKey(key, s, e), d[key][2]),)
        ]
        return sorted(found, key=lambda item: (item[0].start, item[0].end))

    def sessions(self, key: Any) -> list[tuple[WindowKey, Any]]:
        """The sessions of `key` held now, by start (for `fg.Session` windows)."""
        for op in self._ops:
            op._sync()
        found = [
            (WindowKey(key, s, e), op.windows[(s, e)][key][2])
            for op in self._ops
            for s, e in op.sessions.get(key, ())
        ]
        return sorted(found, key=lambda item: item[0].start)

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
