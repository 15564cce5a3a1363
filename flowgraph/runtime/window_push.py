"""The hot path of a windowed aggregation: tumbling and hopping windows over one input.

`fast_push` compiles a `WindowedAggregateOp` into one closure per record, as `AggregateOp`
does for plain tables: everything the loop needs is a local or a cell, and the windows of the
current span are cached, so a record in the same window as the one before costs one dict
lookup. Everything else (multi-input, sliding, async folds) takes the op's general path.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from flowgraph.runtime.ops import Push
from flowgraph.windows import Tumbling, WindowKey

if TYPE_CHECKING:
    from flowgraph.runtime.windowed import WindowedAggregateOp

__all__ = ["event_time", "fast_push"]

_INF = math.inf


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


def fast_push(self: WindowedAggregateOp) -> Push:
    """The push of `self` for tumbling and hopping, one input, sync: the hot path, written out.

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
    # Hopping: the span's windows still open, when the first of them closes, and per key
    # its entries in those windows (`rows`); rows made since the last flush are in `made`,
    # which `sync` hands to the op's dirty list (cheaper than marking each write).
    opened: list[tuple[float, float, dict[Any, list[Any]]]] = []
    first_close = -_INF
    missed = False
    rows: dict[Any, list[list[Any]]] = {}
    made: list[tuple[Any, list[tuple[float, float, dict[Any, list[Any]]]]]] = []

    # Counting with nothing downstream: a key's records in a span are tallied once and added
    # to its windows' entries when the span, the open windows or a flush moves on.
    lazy = count and nxt is None
    tallies: dict[Any, list[Any]] = {}
    """key -> [records not yet added, last offset, highest stored position, entries]."""

    def settle() -> None:
        """Add the tallied records to their entries; the tallies stay for the span."""
        for tally in tallies.values():
            n, last = tally[0], tally[1]
            if n:
                tally[0] = 0
                for ent in tally[3]:
                    ent[2] += n
                    if last > ent[1]:
                        ent[1] = last

    def sync() -> None:
        self.st, self.pos = st, pos
        if tallies:
            settle()

    def before_flush() -> None:
        """Mark the entries of every row made since the last flush; start new rows after it
        (the positions a row compares with are those stored, which the flush moves)."""
        sync()
        if made:
            for k, windows in made:
                for s, e, _ in windows:
                    dirty((k, s, e))
            made.clear()
            rows.clear()
            tallies.clear()

    def resync() -> None:
        nonlocal st, pos, due
        st, pos, due = self.st, self.pos, self.next_due
        if wins and not one and st >= first_close:
            reopen(st)  # a tick moved stream time past a close

    self._sync, self._resync, self._before_flush = sync, resync, before_flush

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
        elif wins:
            reopen(top)
        return bool(wins)

    def reopen(now: float) -> None:
        """Which windows of the span are open at stream time `now`; forget the rows."""
        nonlocal opened, first_close, missed, rows
        opened = [(s, e, d) for s, e, close, d in wins if close > now and d is not None]
        first_close = min((c for _, _, c, d in wins if c > now and d is not None), default=_INF)
        missed = len(opened) < len(wins)
        rows = {}
        if tallies:
            settle()
            tallies.clear()

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
                        if ent[1] == -1:  # made for this record: leave no empty window
                            del d1[k]
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
            if st >= first_close:
                reopen(st)
        if lazy:
            tally = tallies.get(k)
            if tally is None:
                ents = [d.get(k) or d.setdefault(k, [-1, -1, initial()]) for _, _, d in opened]
                floor = max([ent[0] for ent in ents], default=-1)
                tally = tallies[k] = [0, -1, floor, ents]
                made.append((k, opened))
            if o > tally[2]:
                tally[0] += 1
                tally[1] = o
            else:  # a replay: some of these windows may hold this record already
                for ent in tally[3]:
                    if o > ent[0]:
                        ent[2] += 1
                        ent[1] = o
            if missed:
                late(k, v, ts, o, h)
            if st >= due:
                advance(ts, o, h)
            return
        row = rows.get(k)
        if row is None:
            row = rows[k] = [d.get(k) or d.setdefault(k, [-1, -1, initial()]) for _, _, d in opened]
            made.append((k, opened))
        if count:
            for ent in row:
                if o > ent[0]:
                    ent[2] += 1
                    ent[1] = o
        else:
            try:
                new = [step(ent[2], v) if o > ent[0] else None for ent in row]
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                for (_, _, d), ent in zip(opened, row, strict=True):
                    if ent[1] == -1:  # made for this record: leave no empty window
                        del d[k]
                del rows[k]
                return
            for ent, value in zip(row, new, strict=True):
                if o > ent[0]:
                    ent[2] = value
                    ent[1] = o
        if nxt is not None:
            for ent, (s, e, _) in zip(row, opened, strict=True):
                if ent[1] == o:
                    nxt(WindowKey(k, s, e), ent[2], ts, o, h)
        if missed:
            late(k, v, ts, o, h)
        if st >= due:
            advance(ts, o, h)

    return push_one if one else push
