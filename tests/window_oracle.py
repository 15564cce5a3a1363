"""A brute-force model of windowed aggregation, written from the rules of docs/concepts/windows.md.

It follows the contract literally, one record at a time, for one partition (so one stream
time shared by every key):

* stream time is the largest timestamp seen so far, the current record included, and is
  updated *before* the lateness check;
* a window closes once stream time >= end + grace (sliding windows, which include their end:
  once stream time > end + grace, as they include their end), and is never changed again;
* tumbling/hopping windows are ``[k * step, k * step + size)``; a record is applied to each of
  its windows still open and is late if any of them is closed;
* sliding: a record at ``t`` owns the window ``(key, t - size, t)`` (both ends included). It is
  late iff that window is closed, and then makes no window; otherwise its window is made (if
  no record of equal key and time made it already) from every earlier record of the key with a
  time in ``[t - size, t]``, late ones included. Either way the record is folded into every
  open window of its key whose range holds ``t``;
* within a window, records fold in arrival order;
* ``emit="update"``: one ``(window, value)`` per window a record changed, in increasing start
  order (sliding: the record's own window first); ``emit="close"``: each window once, with its
  final value, when it closes;
* retention: a window is deleted once stream time >= end + grace + retention (sliding: >);
* session: a record at ``t`` touches its key's held sessions ``[s, e)`` with ``t < e`` and
  ``s < t + gap``. It is late iff ``[t, t + gap)`` or a touched session is closed; otherwise the
  touched sessions are replaced by one spanning them and ``[t, t + gap)``, whose value is
  theirs merged in start order (`merge`) with the record then folded in. ``emit="update"``
  gives ``(session, None)`` for each replaced session other than the result (by start), then
  the result. A session is deleted once stream time >= end + grace + max(retention, gap).

Windows are plain ``(key, start, end)`` tuples here; `window_tuple` turns a `fg.WindowKey` into
one. Nothing in this module runs flowgraph code: it is the oracle for the executor tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["AGGREGATIONS", "Aggregation", "Oracle", "Win", "window_tuple"]

Win = tuple[Any, float, float]
"""A window as ``(key, start, end)``."""


def window_tuple(wk: Any) -> Win:
    """``(key, start, end)`` of a `fg.WindowKey`."""
    return (wk.key, wk.start, wk.end)


@attrs.frozen
class Aggregation:
    """How a table folds values: its initial value and ``fold(acc, value)``."""

    name: str
    initial: Any
    fold: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any] = lambda a, b: a + b
    """How two sessions' values combine, the earlier first."""


def _reduce_fold(acc: Any, v: Any) -> Any:
    return v if acc is None else reduce_fn(acc, v)


def reduce_fn(a: int, b: int) -> int:
    """An order-sensitive reduce: the digits of the values in base 1000, mod a large prime."""
    return (a * 1000 + b) % 1_000_000_007


def append(acc: tuple[Any, ...], v: Any) -> tuple[Any, ...]:
    """The order-sensitive aggregate of the tests: every value, in the order folded."""
    return (*acc, v)


AGGREGATIONS = {
    "count": Aggregation("count", 0, lambda acc, _v: acc + 1),
    "sum": Aggregation("sum", 0, lambda acc, v: acc + v),
    "reduce": Aggregation("reduce", None, _reduce_fold, reduce_fn),
    "append": Aggregation("append", (), append),
}


def hopping_windows(t: float, size: float, step: float) -> list[tuple[float, float]]:
    """Every ``[k * step, k * step + size)`` holding `t`, ``k >= 0``, by increasing start."""
    return [
        (k * step, k * step + size)
        for k in range(math.floor(t / step) + 1)
        if k * step <= t < k * step + size
    ]


class Oracle:
    """Windowed aggregation of one partition, record by record (see the module docstring)."""

    def __init__(self, spec: Any, agg: Aggregation) -> None:
        self.kind = type(spec).__name__.lower()
        self.size: float = spec.size
        self.step: float = getattr(spec, "step", spec.size)
        self.grace: float = spec.grace
        self.retention: float = spec.retention
        if self.kind == "session":  # a closed session stays at least `gap` past its close
            self.retention = max(self.retention, spec.gap)
        self.emit: str = spec.emit
        self.agg = agg
        self.stream_time = -math.inf
        self.held: dict[Win, Any] = {}
        """Windows made and not yet deleted, with their values."""
        self.emitted_at_close: set[Win] = set()
        self.history: list[tuple[Any, float, Any]] = []
        """Every record so far, ``(key, time, value)`` in arrival order (sliding only)."""
        self.late: list[tuple[Any, Any]] = []
        """Late records as ``(key, value)``, in arrival order."""

    def is_open(self, end: float) -> bool:
        if self.kind == "sliding":  # its end is included: open while stream time <= end + grace
            return self.stream_time <= end + self.grace
        return self.stream_time < end + self.grace

    def is_expired(self, end: float) -> bool:
        limit = end + self.grace + self.retention
        return self.stream_time > limit if self.kind == "sliding" else self.stream_time >= limit

    def send(self, key: Any, t: float, value: Any) -> list[tuple[Win, Any]]:
        """Process one record; return what ``changes()`` emits for it."""
        self.stream_time = max(self.stream_time, t)
        if self.kind == "sliding":
            changed = self._sliding(key, t, value)
        elif self.kind == "session":
            changed = self._session(key, t, value)
        else:
            changed = self._hopping(key, t, value)
        out = [(w, self.held.get(w)) for w in changed] if self.emit == "update" else []
        if self.emit == "close":
            for w in sorted(self.held, key=lambda w: (w[1], w[2], w[0])):
                if not self.is_open(w[2]) and w not in self.emitted_at_close:
                    self.emitted_at_close.add(w)
                    out.append((w, self.held[w]))
        for w in list(self.held):
            if self.is_expired(w[2]):
                del self.held[w]
        return out

    def _hopping(self, key: Any, t: float, value: Any) -> list[Win]:
        windows = [(key, s, e) for s, e in hopping_windows(t, self.size, self.step)]
        if any(not self.is_open(w[2]) for w in windows):
            self.late.append((key, value))
        changed = [w for w in windows if self.is_open(w[2])]
        for w in changed:
            self.held[w] = self.agg.fold(self.held.get(w, self.agg.initial), value)
        return changed

    def _sliding(self, key: Any, t: float, value: Any) -> list[Win]:
        own = (key, t - self.size, t)
        if not self.is_open(t):
            self.late.append((key, value))
        elif own not in self.held:
            acc = self.agg.initial
            for k, u, v in self.history:
                if k == key and t - self.size <= u <= t:
                    acc = self.agg.fold(acc, v)
            self.held[own] = acc
        self.history.append((key, t, value))
        others = sorted(
            (w for w in self.held if w[0] == key and w != own and w[1] <= t <= w[2]),
            key=lambda w: w[1],
        )
        changed = [w for w in [own, *others] if w in self.held and self.is_open(w[2])]
        for w in changed:
            self.held[w] = self.agg.fold(self.held[w], value)
        return changed

    def _session(self, key: Any, t: float, value: Any) -> list[Win]:
        gap = self.size
        touched = sorted(
            (w for w in self.held if w[0] == key and t < w[2] and w[1] < t + gap),
            key=lambda w: w[1],
        )
        if not self.is_open(t + gap) or any(not self.is_open(w[2]) for w in touched):
            self.late.append((key, value))
            return []
        merged = (
            key,
            min([t] + [w[1] for w in touched]),
            max([t + gap] + [w[2] for w in touched]),
        )
        acc = self.agg.initial
        for i, w in enumerate(touched):
            acc = self.held.pop(w) if i == 0 else self.agg.merge(acc, self.held.pop(w))
        self.held[merged] = self.agg.fold(acc, value)
        return [w for w in touched if w != merged] + [merged]
