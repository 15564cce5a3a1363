"""A brute-force model of the stream-stream join, written from docs/concepts/joins.md.

It follows the rules literally, one record at a time in arrival order, with one stream time
per partition of the join:

* stream time is the largest timestamp the join has accepted on that partition (both sides);
* a record at ``t`` is late, and dropped, when ``t + within + grace < stream time`` (before
  it); otherwise stream time moves to ``max(stream time, t)``;
* a record's window closes once stream time passes ``t + within + grace``; it is then
  forgotten, and with ``how="left"`` (left records) or ``"outer"`` (both sides) emitted as
  ``fn(value, None)`` / ``fn(None, value)`` if it never found a partner;
* an accepted record joins every record of the other side with the same key whose window is
  still open and whose timestamp is at most `within` away: one ``fn(left, right)`` per pair,
  with the larger of the two timestamps;
* at the end of the input every open window closes.

Nothing here runs flowgraph code: it is the oracle for the executor tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

Event = tuple[int, str, float, str]
"""(side: 0 left / 1 right, key, timestamp, value)."""
Output = tuple[str, str, float]
"""(key, fn(left, right) rendered by `pair`, timestamp)."""


def pair(left: Any, right: Any) -> str:
    """The join function the tests use: both values, so a result names its records."""
    return f"{left}|{right}"


def join_oracle(
    events: Iterable[Event],
    *,
    within: float,
    grace: float,
    how: str,
    partition_of: Callable[[str], int],
    end_of_input: bool = False,
) -> tuple[Counter[Output], int]:
    """The multiset of outputs of the join over `events`, and how many records were late."""
    keeps = (how in ("left", "outer"), how == "outer")
    horizon = within + grace
    stream_time: dict[int, float] = {}
    open_: dict[int, list[list[Any]]] = {}  # per partition: [t, side, key, value, matched]
    out: Counter[Output] = Counter()
    late = 0

    def close(p: int, st: float, everything: bool = False) -> None:
        kept = []
        for r in open_.get(p, []):
            if everything or r[0] + horizon < st:
                if not r[4] and keeps[r[1]]:
                    value = pair(r[3], None) if r[1] == 0 else pair(None, r[3])
                    out[(r[2], value, r[0])] += 1
            else:
                kept.append(r)
        open_[p] = kept

    for side, key, t, value in events:
        p = partition_of(key)
        st = stream_time.get(p, float("-inf"))
        if t + horizon < st:
            late += 1
            continue
        st = stream_time[p] = max(st, t)
        close(p, st)
        matched = False
        for r in open_.setdefault(p, []):
            if r[2] == key and r[1] != side and abs(r[0] - t) <= within:
                matched = r[4] = True
                left, right = (value, r[3]) if side == 0 else (r[3], value)
                out[(key, pair(left, right), max(t, r[0]))] += 1
        open_[p].append([t, side, key, value, matched])
    if end_of_input:
        for p in list(open_):
            close(p, float("inf"), everything=True)
    return out, late
