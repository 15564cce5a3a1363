"""The stream an agent iterates: ``async for value in stream`` and Faust's stream methods.

Records come from the agent's `AgentOp` queue. `group_by` and `through` were turned into
steps of the plan when the app was built (see `_trace.py`), so here the records already
arrive re-keyed: both return the stream unchanged. `filter`, `items`, `events`,
`enumerate` and `take` apply as the agent pulls records.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from flowgraph.runtime.agent import CURRENT

if TYPE_CHECKING:
    from flowgraph.runtime.agent import AgentOp, Slot
    from flowgraph.runtime.ops import Rec

__all__ = ["AgentStream", "Event", "current_event"]


class Event:
    """A record as `stream.events()` yields it: key, value and where it was read.

    ``event.message`` is the event itself, so Faust's ``event.message.offset`` works.
    """

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, rec: Rec, topic: str, partition: int) -> None:
        self.key = rec[0]
        self.value = rec[1]
        self.timestamp: float = rec[2]
        self.offset: int = rec[3]
        self.headers: dict[str, bytes] = dict(rec[4]) if rec[4] else {}
        self.topic = topic
        self.partition = partition

    @property
    def message(self) -> Event:
        """Faust's name for the record's metadata (topic, partition, offset, ...)."""
        return self

    def __repr__(self) -> str:
        return (
            f"<Event {self.topic}[{self.partition}]@{self.offset} key={self.key!r} "
            f"value={self.value!r}>"
        )


def current_event() -> Event | None:
    """The record the running agent handles (None outside an agent), as Faust's function."""
    slot = CURRENT.get()
    if slot is None or slot.rec is None:
        return None
    return Event(slot.rec, slot.op.topic(), slot.op.partition)


_VALUE, _ITEMS, _EVENTS, _ENUMERATE = 0, 1, 2, 3


class AgentStream:
    """What an agent function receives: an async iterator over its input records."""

    def __init__(
        self,
        op: AgentOp,
        slot: Slot,
        shape: int = _VALUE,
        filters: tuple[Callable[[Any], Any], ...] = (),
    ) -> None:
        self._op = op
        self._slot = slot
        self._shape = shape
        self._filters = filters
        self._count = 0
        self._pending = op.pending
        self._fast = not filters and op.instances == 1 and shape != _ENUMERATE
        """Records can be handed out straight from the queue (`__anext__`)."""

    # -- Faust's stream methods ----------------------------------------------------------

    def _derive(
        self, shape: int | None = None, filters: tuple[Callable[[Any], Any], ...] = ()
    ) -> AgentStream:
        return AgentStream(
            self._op, self._slot, self._shape if shape is None else shape, self._filters + filters
        )

    def items(self) -> AgentStream:
        """Iterate ``(key, value)`` pairs."""
        return self._derive(_ITEMS)

    def events(self) -> AgentStream:
        """Iterate `Event`s: key, value, timestamp, headers, topic, partition, offset."""
        return self._derive(_EVENTS)

    def enumerate(self, start: int = 0) -> AgentStream:
        """Iterate ``(n, value)``, counting from `start` (per partition)."""
        stream = self._derive(_ENUMERATE)
        stream._count = start
        return stream

    def filter(self, fn: Callable[[Any], Any]) -> AgentStream:
        """Only the values for which `fn` (sync or async) is true."""
        return self._derive(filters=(fn,))

    def group_by(self, key: Any, *, name: str | None = None, partitions: int | None = None) -> Any:
        """Already done: the plan re-keys the stream through a repartition topic."""
        return self

    def through(self, channel: Any) -> AgentStream:
        """Already done: the plan copies the stream through `channel`'s topic."""
        return self

    def echo(self, *channels: Any) -> AgentStream:
        """Not supported: say so rather than forward nothing."""
        msg = "stream.echo() is not supported; send each value with `await topic.send(...)`"
        raise NotImplementedError(msg)

    async def take(self, max_: int, within: float | None = None) -> AsyncIterator[list[Any]]:
        """Lists of up to `max_` values; fewer once `within` seconds have passed since the
        batch's first record (checked as records arrive) or when the worker commits.

        What the agent writes for a batch carries the offset of the batch's last record, so
        after a crash the replay hands over the batches the crashed run handled, ending each
        where it ended (`AgentOp.replay_ends`), and a commit meanwhile leaves a batch being
        gathered uncommitted (`AgentOp.held_from`) rather than cutting it short.
        """
        op, slot = self._op, self._slot
        pending = op.pending
        ends = op.replay_ends()
        while True:
            values: list[Any] = []
            held = slot.held = []
            started = 0.0
            while ends or len(values) < max_:
                if pending:
                    rec = op.take(slot) if not held else pending.popleft()
                    assert rec is not None
                    if not await self._passes(rec):
                        continue
                    held.append(rec)
                    values.append(self._shaped(rec))
                    if len(held) == 1:
                        started = time.monotonic()
                    if ends:
                        # replaying what a crashed run handled: end each batch where it
                        # ended then (its writes carry that offset), nowhere else
                        while ends and ends[-1] < rec[3]:
                            ends.pop()
                        if ends and ends[-1] == rec[3]:
                            ends.pop()
                            break
                    continue
                if (
                    values
                    and not ends
                    and (op.flushing or (within and time.monotonic() - started >= within))
                ):
                    break
                if not values:
                    op.finished(slot)
                await op.wait_input(slot)
                slot.waiting = False
            slot.batch, slot.rec, slot.held = held, held[-1], []
            yield values

    # -- iteration -----------------------------------------------------------------------

    def __aiter__(self) -> AgentStream:
        return self

    async def __anext__(self) -> Any:
        # the hot path: one coroutine, no filter, a record queued (a run's records)
        pending = self._pending
        if pending and self._fast:
            rec = self._slot.rec = pending.popleft()
            shape = self._shape
            if shape == 0:  # _VALUE
                return rec[1]
            if shape == 1:  # _ITEMS
                return rec[0], rec[1]
            return Event(rec, self._op.topic(), self._op.partition)
        return await self._next()

    async def _next(self) -> Any:
        """`__anext__` when the queue is empty, with filters or several coroutines."""
        op, slot = self._op, self._slot
        pending = op.pending
        while True:
            while not pending:
                op.finished(slot)
                await op.wait_input(slot)
                slot.waiting = False
            rec = op.take(slot)
            if rec is None:
                continue  # another coroutine took it
            slot.rec = rec
            slot.batch = None
            if self._filters and not await self._passes(rec):
                continue
            shape = self._shape
            if shape == _VALUE:
                return rec[1]
            return self._shaped(rec)

    async def _passes(self, rec: Rec) -> bool:
        value = rec[1]
        for fn in self._filters:
            ok = fn(value)
            if inspect.isawaitable(ok):
                ok = await ok
            if not ok:
                return False
        return True

    def _shaped(self, rec: Rec) -> Any:
        shape = self._shape
        if shape == _VALUE:
            return rec[1]
        if shape == _ITEMS:
            return rec[0], rec[1]
        if shape == _EVENTS:
            return Event(rec, self._op.topic(), self._op.partition)
        n = self._count
        self._count += 1
        return n, rec[1]
