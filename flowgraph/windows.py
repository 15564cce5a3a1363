"""Window specs: which time windows a timestamp falls into (pure code, no runtime).

Times are float seconds since the epoch; sizes may be given as seconds or `datetime.timedelta`.

- `Tumbling(size)` and `Hopping(size, step)` windows are half-open, ``[start, start + size)``,
  aligned to the epoch, with ``start = k * step`` for an integer ``k >= 0``. Tumbling is hopping
  with ``step == size``, so every timestamp ``t >= 0`` is in exactly one tumbling window.
- `Sliding(size)` is the range ``[t - size, t]`` around each record (both ends included).
- `Session(gap)` windows are per key: records closer than ``gap`` to each other form one session
  ``[first, last + gap)``; a record that falls within ``gap`` of two sessions merges them.

Window bounds are computed exactly: ``start`` is the float nearest to ``k * step`` and ``end`` the
float nearest to ``k * step + size``, both taken over the exact values of the floats involved.
That keeps adjacent tumbling windows touching (``end`` of one is ``start`` of the next) and, when
``size`` is an exact multiple ``m`` of ``step``, puts every ``t >= size`` in exactly ``m`` hopping
windows, whatever float rounding would do. A timestamp ``t`` is in the window iff
``start <= t < end`` on the returned floats; `windows_for` returns exactly those windows.
(Only when ``step`` is below the float spacing at ``t``, e.g. a microsecond step at ``t = 1e12``,
can several windows round to the same bounds; they are still returned once per ``k``.)

Grace and retention: a window ending at ``end`` closes at ``end + grace`` (records later than that
are too late) and its state may be dropped at ``end + grace + retention``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal, TypeAlias

import attrs

from flowgraph.errors import GraphDefinitionError
from flowgraph.records import Record

__all__ = ["Hopping", "Session", "Sliding", "Tumbling", "WindowKey", "WindowSpec"]

Emit = Literal["update", "close"]
Window = tuple[float, float]
"""A window as ``(start, end)``: half-open for tumbling/hopping, closed for sliding ranges."""

_EMITS = ("update", "close")


def _seconds(value: float | dt.timedelta) -> float:
    """Seconds as a float; `timedelta` becomes its total seconds."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = (
            f"window duration {value!r} is not seconds or a timedelta; "
            "window durations are float seconds; pass a number or a datetime.timedelta"
        )
        raise GraphDefinitionError(msg)
    return float(value)


def _optional_seconds(value: float | dt.timedelta | None) -> float | None:
    return None if value is None else _seconds(value)


def _check_positive(kind: str, name: str, value: float, why: str) -> None:
    if not (math.isfinite(value) and value > 0):
        msg = f"{kind} {name} {value!r} is not positive; {why}; give a finite {name} > 0"
        raise GraphDefinitionError(msg)


def _check_non_negative(kind: str, name: str, value: float, why: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        msg = f"{kind} {name} {value!r} is negative or not finite; {why}; give a finite {name} >= 0"
        raise GraphDefinitionError(msg)


def _check_common(
    kind: str, size: float, grace: float, retention: float, emit: str, idle: float | None
) -> None:
    _check_positive(kind, "size", size, "a window must cover some time")
    _check_non_negative(kind, "grace", grace, "grace is how long late records are still accepted")
    _check_non_negative(
        kind, "retention", retention, "retention is how long closed windows stay queryable"
    )
    if emit not in _EMITS:
        msg = (
            f"{kind} emit {emit!r} is not a known emit mode; "
            "results are emitted on every update or once when the window closes; "
            "give emit='update' or emit='close'"
        )
        raise GraphDefinitionError(msg)
    if idle is not None:
        _check_positive(
            kind, "idle_timeout", idle, "idle_timeout is how long a quiet key waits before closing"
        )


def _check_time(t: float) -> None:
    if not math.isfinite(t):
        msg = (
            f"timestamp {t!r} is not finite; windows are placed on the time axis; pass a real time"
        )
        raise ValueError(msg)


def _first_true(pred: Callable[[int], bool], guess: int) -> int:
    """The smallest ``k >= 0`` with `pred(k)`, for `pred` monotone (false, then true).

    Gallops from `guess` and then bisects, so a guess that is far off (rounded bounds can differ
    from exact ones by many windows once ``step`` nears the float spacing at ``t``) costs only a
    logarithmic number of steps.
    """
    guess = max(guess, 0)
    gap = 1
    if pred(guess):
        lo, hi = guess - gap, guess  # lo == -1 stands for "false before 0"
        while lo >= 0 and pred(lo):
            hi, gap = lo, gap * 2
            lo = hi - gap
        lo = max(lo, -1)
    else:
        lo, hi = guess, guess + gap
        while not pred(hi):
            lo, gap = hi, gap * 2
            hi = lo + gap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _hopping_windows(t: float, size: float, step: float) -> tuple[Window, ...]:
    """Every ``(start, end)`` with ``start = k * step``, ``k >= 0``, and ``start <= t < end``."""
    return _cached_span(t, size, step)[2]


_SPANS: dict[tuple[float, float, float], tuple[float, float, tuple[Window, ...]]] = {}
"""Recent spans by ``(size, step, t // step)``: out-of-order records go back and forth between
a few spans, each of which costs exact arithmetic to find."""
_SPANS_KEPT = 4096


def _cached_span(t: float, size: float, step: float) -> tuple[float, float, tuple[Window, ...]]:
    """`_hopping_span`, from `_SPANS` when the span kept for `t`'s step holds `t`."""
    if t - t != 0.0:  # inf or nan: the exact path says why not
        return _hopping_span(t, size, step)
    key = (size, step, t // step)  # a float: it may overflow to inf, which is fine here
    found = _SPANS.get(key)
    if found is None or not found[0] <= t < found[1]:
        found = _hopping_span(t, size, step)
        if len(_SPANS) >= _SPANS_KEPT:
            _SPANS.clear()
        _SPANS[key] = found
    return found


def _hopping_span(t: float, size: float, step: float) -> tuple[float, float, tuple[Window, ...]]:
    """``(lo, hi, windows)``: the windows of `t`, and the span ``[lo, hi)`` sharing them."""
    _check_time(t)
    exact_step, exact_size = Fraction(step), Fraction(size)

    def start(k: int) -> float:
        return float(k * exact_step)

    def end(k: int) -> float:
        return float(k * exact_step + exact_size)

    # Both bounds are monotone in k, so the windows holding t are one run of k: from the first
    # whose end is past t to the last whose start is at or before t. The exact quotients below
    # are right for unrounded bounds and only a guess for rounded ones; the searches make the
    # result match the definition on the returned floats.
    exact_t = Fraction(t)
    first = _first_true(lambda k: end(k) > t, math.floor((exact_t - exact_size) / exact_step))
    last = _first_true(lambda k: start(k) > t, math.floor(exact_t / exact_step)) - 1
    windows = tuple((start(k), end(k)) for k in range(first, last + 1))
    # The set of windows changes only where t crosses a start or an end, so every time in
    # [lo, hi) has these same windows: callers cache the answer for that whole span.
    lo = max(start(last) if last >= 0 else -math.inf, end(first - 1) if first > 0 else -math.inf)
    hi = min(start(last + 1), end(first))
    return lo, hi, windows


@attrs.frozen
class _Windowed:
    """Grace, retention, emit mode and idle timeout, shared by every window kind."""

    grace: float = attrs.field(default=0.0, converter=_seconds, kw_only=True)
    retention: float = attrs.field(default=0.0, converter=_seconds, kw_only=True)
    emit: Emit = attrs.field(default="update", kw_only=True)
    idle_timeout: float | None = attrs.field(
        default=None, converter=_optional_seconds, kw_only=True
    )

    def closes_at(self, end: float) -> float:
        """When the window ending at `end` stops accepting records: ``end + grace``."""
        return end + self.grace

    def expires_at(self, end: float) -> float:
        """When the window ending at `end` may be dropped: ``end + grace + retention``."""
        return end + self.grace + self.retention

    def describe(self) -> str:
        """A few words for plans: ``hopping 60s step 10s grace 5s emit close``."""
        kind = type(self).__name__.lower()
        if isinstance(self, Session):
            parts = [f"session gap {_short(self.gap)}"]
        else:
            parts = [f"{kind} {_short(getattr(self, 'size', 0.0))}"]
        if isinstance(self, Hopping):
            parts.append(f"step {_short(self.step)}")
        if self.grace:
            parts.append(f"grace {_short(self.grace)}")
        if self.retention:
            parts.append(f"retention {_short(self.retention)}")
        if self.emit != "update":
            parts.append(f"emit {self.emit}")
        if self.idle_timeout is not None:
            parts.append(f"idle {_short(self.idle_timeout)}")
        return " ".join(parts)


def _short(seconds: float) -> str:
    """``10s``, ``1.5s``: seconds without a trailing ``.0``."""
    return f"{seconds:g}s"


@attrs.frozen
class Tumbling(_Windowed):
    """Back-to-back windows ``[k * size, (k + 1) * size)``; each time is in exactly one."""

    size: float = attrs.field(converter=_seconds)

    def __attrs_post_init__(self) -> None:
        _check_common(
            "tumbling", self.size, self.grace, self.retention, self.emit, self.idle_timeout
        )

    def windows_for(self, t: float) -> tuple[Window, ...]:
        """The window containing `t` (one for ``t >= 0``, none before the epoch)."""
        return _hopping_windows(t, self.size, self.size)

    def span(self, t: float) -> tuple[float, float, tuple[Window, ...]]:
        """``(lo, hi, windows_for(t))`` where every time in ``[lo, hi)`` has those windows."""
        return _cached_span(t, self.size, self.size)

    def latest(self, t: float) -> Window:
        """The window containing `t`; raises `ValueError` for ``t < 0``."""
        return _latest(self.windows_for(t), t)


@attrs.frozen
class Hopping(_Windowed):
    """Overlapping windows ``[k * step, k * step + size)`` for ``k >= 0``; ``0 < step <= size``."""

    size: float = attrs.field(converter=_seconds)
    step: float = attrs.field(converter=_seconds)

    def __attrs_post_init__(self) -> None:
        _check_common(
            "hopping", self.size, self.grace, self.retention, self.emit, self.idle_timeout
        )
        _check_positive("hopping", "step", self.step, "windows advance by step seconds")
        if self.step > self.size:
            msg = (
                f"hopping step {self.step!r} is larger than size {self.size!r}; "
                "such windows would leave gaps no window covers; "
                "give a step <= size (step == size is a tumbling window)"
            )
            raise GraphDefinitionError(msg)

    def windows_for(self, t: float) -> tuple[Window, ...]:
        """Every window containing `t`, in increasing start order (fewer near the epoch)."""
        return _hopping_windows(t, self.size, self.step)

    def span(self, t: float) -> tuple[float, float, tuple[Window, ...]]:
        """``(lo, hi, windows_for(t))`` where every time in ``[lo, hi)`` has those windows."""
        return _cached_span(t, self.size, self.step)

    def latest(self, t: float) -> Window:
        """The window with the latest start that contains `t` (Faust's ``.current()``)."""
        return _latest(self.windows_for(t), t)


@attrs.frozen
class Sliding(_Windowed):
    """A window per record time `t`, covering ``[t - size, t]`` (both ends included)."""

    size: float = attrs.field(converter=_seconds)

    def __attrs_post_init__(self) -> None:
        _check_common(
            "sliding", self.size, self.grace, self.retention, self.emit, self.idle_timeout
        )

    def range_for(self, t: float) -> Window:
        """``(t - size, t)``: records with ``t - size <= time <= t``; both ends are included."""
        _check_time(t)
        return (t - self.size, t)

    def latest(self, t: float) -> Window:
        """The window a record at `t` would have: ``range_for(t)``."""
        return self.range_for(t)


@attrs.frozen
class Session(_Windowed):
    """Per key, records less than `gap` apart form one session ``[first, last + gap)``.

    Sessions of a key never overlap: the next record at least `gap` after a session's last one
    starts a new session, which begins at or after the old one's end. A record within `gap` of
    two sessions (it came late, between them) merges them into one.
    """

    gap: float = attrs.field(converter=_seconds)

    def __attrs_post_init__(self) -> None:
        _check_positive("session", "gap", self.gap, "a session lasts at least gap seconds")
        _check_common("session", self.gap, self.grace, self.retention, self.emit, None)
        if self.idle_timeout is not None:
            _check_positive(
                "session",
                "idle_timeout",
                self.idle_timeout,
                "idle_timeout is how long a quiet key waits before closing",
            )

    @property
    def size(self) -> float:
        """The shortest session (one record): `gap`."""
        return self.gap

    def place(self, held: list[Window], t: float) -> tuple[Window, list[Window]]:
        """``(session, merged)``: the session a record at `t` makes with `held`, a key's
        sessions in start order, and those of `held` it absorbs (touches: within `gap`).

        A session ``[s, e)`` is touched when ``t < e`` and ``s < t + gap``; the touched ones
        are a run of `held`, and the result spans them and ``[t, t + gap)``.
        """
        _check_time(t)
        gap = self.gap
        # Sessions are disjoint, so their ends are in start order too: walk back from the
        # last that starts before t + gap while they end after t (a bisection, not a scan).
        i = bisect.bisect_left(held, (t + gap,))
        j = i
        while j > 0 and held[j - 1][1] > t:
            j -= 1
        touched = held[j:i]
        start = min(t, touched[0][0]) if touched else t
        end = max(t + gap, touched[-1][1]) if touched else t + gap
        return (start, end), touched


def sessions_of(times: list[float], gap: float) -> list[tuple[Window, int]]:
    """The sessions records at `times` form, as ``((start, end), records)`` in start order.

    The reference definition (sort, split where two neighbours are `gap` or more apart), which
    `Session.place` reaches one record at a time, in any arrival order.
    """
    out: list[tuple[Window, int]] = []
    for t in sorted(times):
        if out and t < out[-1][0][1]:
            (s, _), n = out[-1]
            out[-1] = ((s, t + gap), n + 1)
        else:
            out.append(((t, t + gap), 1))
    return out


def _latest(windows: tuple[Window, ...], t: float) -> Window:
    if not windows:
        msg = f"timestamp {t!r} is before the epoch; windows start at 0; pass a time >= 0"
        raise ValueError(msg)
    return windows[-1]


class WindowKey(Record):
    """The key of a windowed table's records: the record key and its window's bounds.

    Tumbling and hopping windows are ``[start, end)``; a sliding window is ``[start, end]``.
    """

    key: Any
    start: float
    end: float


WindowSpec: TypeAlias = Tumbling | Hopping | Sliding | Session
"""Any window spec an aggregation accepts."""
