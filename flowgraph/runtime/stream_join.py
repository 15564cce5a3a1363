"""Stream-stream windowed join on one partition: both sides buffered, exact across replays.

One `StreamJoinOp` runs one `StreamJoin` step on one task partition. Semantics are in
docs/concepts/joins.md; how they are kept here:

- ``buffers[key] -> [stored position, position, records]`` holds, per key, the records of
  both sides whose window is still open, in arrival order; a record is
  ``[time, side, ident, value, matched]``, where `ident` (entry index, offset, sequence
  among the records of that offset) names it and orders it. The store holds ``(key,)`` per
  buffer and ``()`` for the partition's stream time and the position of the last record
  processed; that entry is flushed last, so when it is durable the whole commit is, as in
  `WindowedAggregateOp`: records up to its position are skipped whole after a crash, and
  a buffer's own position covers the rest (a key's records apply in offset order).
- Stream time is the highest timestamp the join has accepted, from either side. A record
  whose window ``[t - within, t + within]`` closed before it came (stream time past
  ``t + within + grace``) is late: counted (`late`) and dropped. A heap of close times says
  which records leave the buffers when stream time passes them; those of a kept side
  (``how="left"``: the left, ``"outer"``: both) that found no partner are emitted then,
  with None for the other side, in (close time, side, ident) order, so a replay emits them
  in the order the first run did.
- An arriving record is joined with the other side's buffered records of its key, in their
  arrival order, after stream time has moved to it and closed what it closes: each pair is
  emitted once, when its second record arrives, with the larger timestamp of the two.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from flowgraph.runtime.ops import Fail, Push
from flowgraph.runtime.state.base import Entry, StorePartition
from planner.logical import StreamJoin

__all__ = ["StreamJoinOp"]

META: tuple[()] = ()
"""Store key of the partition's stream time and processed position."""
_INF = math.inf
LEFT, RIGHT = 0, 1


class StreamJoinOp:
    """One stream-stream join step over one store partition."""

    def __init__(self, node: StreamJoin, store: StorePartition, inputs: int, fail: Fail) -> None:
        self.node = node
        self.store = store
        self.inputs = inputs
        self.index = 0
        """Which input topic the records now pushed come from (multi-input sub-topologies)."""
        self.fail = fail
        self.fn: Callable[[Any, Any], Any] = node.fn  # type: ignore[assignment]
        self.within = float(node.within)
        self.horizon = float(node.within) + float(node.grace)
        self.keeps = (node.how in ("left", "outer"), node.how == "outer")
        """Per side, whether its records that found no partner are emitted at their close."""
        self.start_pos: Any = -1 if inputs == 1 else (-1,) * inputs
        self.buffers: dict[Any, list[Any]] = {}
        self.closing: list[tuple[float, int, tuple[int, int, int], Any]] = []
        self.dirty: list[Any] = []
        self.deleted: list[Any] = []
        self.st = -_INF
        self.flushed_st = -_INF
        self.done: Any = self.start_pos
        self.pos: Any = self.start_pos
        self.last_o = -1
        self._last: tuple[int, int] = (-1, -1)
        self._n = 0
        self.late = 0
        """Records dropped because their window had closed."""
        self.skipped = 0
        """Records skipped as already applied before a crash."""
        self.next: Push | None = None
        self._load()

    # -- state --------------------------------------------------------------------------

    def _load(self) -> None:
        """Bring every buffer (and the stream time) of this partition into memory."""
        for skey, entry in self.store.entries():
            key: Any = skey
            position, value = entry
            if key == META:
                self.done = self.pos = _position(position)
                self.st = self.flushed_st = float(value)  # type: ignore[arg-type]
            else:
                self._put(key[0], position, value)

    def _put(self, k: Any, position: Any, value: Any) -> None:
        """Buffer `k` as stored: its records, and their close times in the heap."""
        position = _position(position)
        records = [[float(t), side, tuple(ident), v, bool(m)] for t, side, ident, v, m in value]
        self.buffers[k] = [position, position, records]
        for r in records:
            heapq.heappush(self.closing, (r[0] + self.horizon, r[1], r[2], k))

    def revert(self, skey: Any) -> None:
        """Put the buffer at store key `skey` back to its stored state (after a commit found
        a value it cannot store)."""
        if skey == META:
            return
        self.buffers.pop(skey[0], None)
        stored = self.store.get(skey)
        if stored is not None:
            self._put(skey[0], stored[0], stored[1])

    def flush(self) -> dict[Any, Entry | None]:
        """Tombstones of emptied buffers, changed buffers, then stream time and position last."""
        changed: dict[Any, Entry | None] = {(k,): None for k in self.deleted}
        self.deleted.clear()
        for k in dict.fromkeys(self.dirty):
            b = self.buffers.get(k)
            if b is not None:
                changed.pop((k,), None)
                changed[(k,)] = (b[1], tuple(tuple(r) for r in b[2]))
                b[0] = b[1]
        self.dirty.clear()
        if changed or self.pos != self.done or self.st != self.flushed_st:
            self.done, self.flushed_st = self.pos, self.st
            changed[META] = (self.pos, self.st)
        return changed

    # -- pushing records ----------------------------------------------------------------

    def make_push(self, side: int) -> Push:
        """The push function of one side (`LEFT` or `RIGHT`)."""

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            self._apply(side, k, v, ts, o, h)

        return push

    def _apply(self, side: int, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        index = self.index
        single = self.inputs == 1
        if o <= (self.done if single else self.done[index]):
            self.skipped += 1
            return
        if self._last == (index, o):
            self._n += 1  # another record of the same input record (a flat_map's)
        else:
            self._last, self._n = (index, o), 0
        ident = (index, o, self._n)
        t = float(ts)
        pos = self.pos
        self.pos = o if single else (*pos[:index], o, *pos[index + 1 :])
        self.last_o = o
        if t + self.horizon < self.st:
            self.late += 1
            return
        if t > self.st:
            self.st = t
            if self.closing and self.closing[0][0] < t:
                self._close(t, o, h)
        b = self.buffers.get(k)
        if b is None:
            b = self.buffers[k] = [self.start_pos, self.start_pos, []]
        elif o <= (b[0] if single else b[0][index]):
            self.skipped += 1  # in this key's stored buffer already: applied before a crash
            return
        matched = False
        nxt = self.next
        within = self.within
        fn = self.fn
        for r in b[2]:
            if r[1] == side or abs(r[0] - t) > within:
                continue
            matched = r[4] = True
            try:
                value = fn(v, r[3]) if side == LEFT else fn(r[3], v)
            except Exception as exc:
                self.fail(exc, (k, v, ts, o, h))
                continue
            if nxt is not None:
                nxt(k, value, max(t, r[0]), o, h)
        b[2].append([t, side, ident, v, matched])
        if single:
            b[1] = o
        else:
            bp = b[1]
            b[1] = (*bp[:index], o, *bp[index + 1 :])
        self.dirty.append(k)
        heapq.heappush(self.closing, (t + self.horizon, side, ident, k))

    def _close(self, st: float, o: int, h: Any) -> None:
        """Drop the records whose window stream time `st` has passed, emitting the unmatched
        ones of a kept side; what is emitted carries the origin `o` of the record that moved
        stream time."""
        closing = self.closing
        nxt = self.next
        while closing and closing[0][0] < st:
            _, side, ident, k = heapq.heappop(closing)
            b = self.buffers.get(k)
            if b is None:
                continue
            records = b[2]
            for i, r in enumerate(records):
                if r[2] == ident and r[1] == side:
                    del records[i]
                    break
            else:
                continue  # gone already (a reverted buffer's heap entries stay behind)
            if not r[4] and self.keeps[side] and nxt is not None:
                try:
                    value = self.fn(r[3], None) if side == LEFT else self.fn(None, r[3])
                except Exception as exc:
                    self.fail(exc, (k, r[3], r[0], o, h))
                else:
                    nxt(k, value, r[0], o, h)
            if records:
                self.dirty.append(k)
            else:
                del self.buffers[k]
                if b[0] != self.start_pos:
                    self.deleted.append(k)

    # -- the end of a bounded input -------------------------------------------------------

    def has_open_windows(self) -> bool:
        """True while some record is buffered (its window not closed yet)."""
        return bool(self.buffers)

    def end_of_input(self, o: int) -> int:
        """The input has ended: close every buffered record's window, as stream time passing
        it would (unmatched records of a kept side are emitted). Stream time moves to the
        last of those closes, not to infinity, and is stored at the next commit, so a
        restart does not reopen them. `o` is the offset the emitted records carry. The number
        of records closed."""
        if not self.closing:
            return 0
        target = max(c[0] for c in self.closing)
        closed = sum(len(b[2]) for b in self.buffers.values())
        if target > self.st:
            self.st = target
        self._close(_INF, o, None)
        return closed

    def last_offset(self) -> int:
        """The highest input offset applied here (of any input), -1 before any."""
        return self.pos if type(self.pos) is int else max(self.pos)


def _position(position: Any) -> Any:
    """A stored position as the op keeps it (a codec may hand a tuple back as a list)."""
    return tuple(position) if isinstance(position, list) else position
