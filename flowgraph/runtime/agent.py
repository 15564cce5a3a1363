"""Agents: a Faust-style ``async def agent(stream)`` run as a step of a task.

An agent is user code that pulls records with ``async for``, so the task cannot push records
through it like through a `map`. Instead each task runs the agent function as a coroutine
(``concurrency`` of them) in its own asyncio task, and feeds it: `AgentOp.push` queues the
records of a run, `drain` wakes the coroutines and waits until every one asks for a record
the queue no longer holds. While records are queued, ``__anext__`` of the agent's stream
returns without touching the event loop, so a batch costs two loop turns, not one per record.

What the agent does while it handles a record is tied to that record, through the context
variable `CURRENT` (each coroutine runs in its own context, so a timer or another agent
never sees it):

- table writes (`TableState`) carry the record's offset, so a replay after a crash applies
  no record twice (the rule of `aggregate.py`, per key);
- ``await topic.send()`` and what the agent yields are written with the record's origin, so
  a replay writes nothing twice;
- an exception sends the record (all of a ``take()`` batch) to the dead-letter topic, and
  the agent starts again on the next record.

With ``concurrency`` above 1 the coroutines finish records out of order; what each record
makes is held and written in input order (`Slot.out`), so the origins still increase.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flowgraph.errors import (
    ConfigurationError,
    GraphDefinitionError,
    RuntimeFailure,
    StorageError,
)
from flowgraph.runtime.ops import Fail, Push, Rec
from flowgraph.runtime.table_state import TableState
from planner.logical import Agent

__all__ = ["CURRENT", "WORKER", "AgentOp", "Slot"]

CURRENT: contextvars.ContextVar[Slot | None] = contextvars.ContextVar(
    "flowgraph_agent", default=None
)
"""The coroutine of an agent running in this context, and the record it handles."""

WORKER: contextvars.ContextVar[Any] = contextvars.ContextVar("flowgraph_worker", default=None)
"""The worker running this context's timers and tasks (and agents), for reading tables and
sending records outside an agent."""


_FATAL = (StorageError, GraphDefinitionError, ConfigurationError)
"""Errors an agent raises that stop the run instead of dead-lettering its record."""


def _before_reading(agent: str, exc: Exception) -> RuntimeFailure:
    failure = RuntimeFailure(agent, exc)
    failure.args = (
        f"agent {agent!r} raised {type(exc).__name__}: {exc} before reading a record, so "
        "there is no record to dead-letter and starting it again would fail again; fix the "
        "code before its `async for` loop",
    )
    return failure


class Slot:
    """One coroutine of an agent on one task: the record it handles and what it made."""

    __slots__ = ("batch", "held", "op", "out", "rec", "seq", "tables", "waiting")

    def __init__(self, op: AgentOp) -> None:
        self.op = op
        self.rec: Rec | None = None
        """The record being handled (the last one of a ``take()`` batch)."""
        self.batch: list[Rec] | None = None
        """The records of the last ``take()`` batch, for dead letters: all of them are
        dead-lettered while `rec` is its last record."""
        self.held: list[Rec] = []
        """Records taken into a ``take()`` batch not yet handed to the agent."""
        self.tables = op.tables
        self.out: list[tuple[Push, Rec]] | None = None
        """With concurrency above 1: what the current record made, written in input order."""
        self.seq = -1
        self.waiting = False

    @property
    def offset(self) -> int:
        rec = self.rec
        return -1 if rec is None else rec[3]


class AgentOp:
    """The agent `node` on one task: its coroutines, tables and writers."""

    def __init__(
        self,
        node: Agent,
        tables: dict[str, TableState],
        sends: dict[str, Push],
        fail: Fail,
        partition: int,
        topic: Callable[[], str],
    ) -> None:
        self.node = node
        self.fn: Any = node.fn
        self.tables = tables
        """Per table name, its state on this task's partition."""
        self.sends = sends
        """Per topic the agent sends to, a writer tagging records with their origin."""
        self.fail = fail
        self.partition = partition
        self.topic = topic
        """The input topic of the record being handled (for events and dead letters)."""
        self.next: Push | None = None
        """Where yielded values go (the agent's sinks)."""
        self.pending: deque[Rec] = deque()
        self.instances = node.concurrency or 1
        self.slots: list[Slot] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._idle: asyncio.Future[None] | None = None
        self.flushing = False
        """Set by `settle`: a ``take()`` hands over a partial batch instead of waiting."""
        self.error: BaseException | None = None
        self.is_async = True
        self.failed = 0
        # ordered output with several coroutines
        self._next_seq = 0
        self._taken = 0
        self._done: dict[int, list[tuple[Push, Rec]]] = {}
        self.closed = False
        self._ends: list[int] | None = None
        self.marks: Callable[[], list[int]] = list
        self.fail_at: Callable[[BaseException, Rec, int], None] = lambda e, r, o: fail(e, r)
        """Dead-letter a record with the origin offset given (set by the task)."""
        """Offsets of the origin marks a crashed run left for this task (set by the task)."""
        # set by the task (`Task._bind`): its origin sequence while this agent writes
        self.capture: Callable[[], Any] = lambda: None
        self.enter: Callable[[Any], None] = lambda ctx: None
        self.leave: Callable[[], None] = lambda: None

    # -- feeding -------------------------------------------------------------------------

    def make_push(self) -> Push:
        """The push of this step: records wait in `pending` for the next `drain`."""
        append = self.pending.append

        def push(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            append((k, v, ts, o, h))

        return push

    async def drain(self) -> bool:
        """Hand the queued records to the coroutines; return once all wait for more."""
        if not self.pending:
            return False
        await self._run_until_idle()
        return True

    async def settle(self) -> bool:
        """Before a commit: let a ``take()`` holding a partial batch hand it over, so every
        record whose offset the commit covers has been handled."""
        if not any(s.held for s in self.slots) and not self.pending:
            return False
        self.flushing = True
        try:
            await self._run_until_idle()
        finally:
            self.flushing = False
        return True

    async def _run_until_idle(self) -> None:
        if not self.tasks:
            self._start()
        loop = asyncio.get_running_loop()
        self._idle = loop.create_future()
        self.enter(self.capture())
        self._wake()
        try:
            await self._idle
        finally:
            self._idle = None
            self.leave()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def wait_input(self, slot: Slot) -> asyncio.Future[None]:
        """A future the coroutine of `slot` awaits until there are records (or a flush)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        slot.waiting = True
        if self._idle is not None and not self._idle.done() and all(s.waiting for s in self.slots):
            self._idle.set_result(None)
        return fut

    def _start(self) -> None:
        for _ in range(self.instances):
            slot = Slot(self)
            self.slots.append(slot)
            ctx = contextvars.copy_context()
            ctx.run(CURRENT.set, slot)
            task = asyncio.get_running_loop().create_task(self._run(slot), context=ctx)
            self.tasks.append(task)

    def close(self) -> None:
        """Stop the coroutines (the task is dropped or the worker stops)."""
        self.closed = True
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    # -- running the user's function -----------------------------------------------------

    async def _run(self, slot: Slot) -> None:
        from flowgraph.app._stream import AgentStream  # the user-facing stream

        while not self.closed:
            stream = AgentStream(self, slot)
            slot.rec = slot.batch = None  # what an earlier start handled is done
            try:
                result = self.fn(stream)
                if inspect.isasyncgen(result):
                    emit = self._emitter(slot)
                    async for value in result:
                        emit(value)
                elif inspect.isawaitable(result):
                    await result
                else:
                    msg = (
                        f"agent {self.node.id!r} is not an async def function (it returned "
                        f"{type(result).__name__}); define it with async def and iterate its "
                        "stream with async for"
                    )
                    raise ConfigurationError(msg)
                if slot.rec is None and not slot.held:
                    msg = (
                        f"agent {self.node.id!r} returned without reading its stream; an agent "
                        "must iterate it with `async for value in stream`"
                    )
                    raise ConfigurationError(msg)
                # the agent returned: start it again for the records still to come
            except asyncio.CancelledError:
                raise
            except _FATAL as exc:
                self._stop(exc)  # a store failed, or the graph is wrong: stop the run
                return
            except Exception as exc:
                if slot.rec is None and not slot.held:
                    # raised before its first record: restarting would raise again forever
                    self._stop(_before_reading(self.node.id, exc))
                    return
                self._failed(slot, exc)
            finally:
                slot.waiting = False

    def _failed(self, slot: Slot, exc: Exception) -> None:
        """The agent raised: its record (or ``take()`` batch) is a dead letter."""
        batch, rec = slot.batch, slot.rec
        records = [rec] if rec is not None else []
        if batch and batch[-1] is rec:  # the agent was handling this take() list
            records = batch
        records = records + slot.held
        slot.held = []
        if len(records) > 1:
            # a batch's dead letters carry its last offset as their origin, like its other
            # writes, so a replay ends its batches there too (see `replay_ends`)
            end = records[-1][3]
            for rec in records:
                self.fail_at(exc, rec, end)
        else:
            for rec in records:
                self.fail(exc, rec)
        slot.rec = None
        slot.batch = None
        self.finished(slot)

    def _stop(self, exc: BaseException) -> None:
        self.error = exc
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _emitter(self, slot: Slot) -> Callable[[Any], None]:
        def emit(value: Any) -> None:
            rec = slot.rec
            if rec is None or self.next is None:
                return
            self.write(slot, self.next, (None, value, rec[2], rec[3], None))

        return emit

    # -- what the agent makes ------------------------------------------------------------

    def write(self, slot: Slot, writer: Push, rec: Rec) -> None:
        """Write `rec` now (one coroutine) or once the records before it are done."""
        if slot.out is None:
            writer(*rec)
        else:
            slot.out.append((writer, rec))

    def held_from(self) -> int | None:
        """The offset of the first record queued or gathered into a batch but not handed
        to the agent yet (a commit must not cover it), or None."""
        first = [slot.held[0][3] for slot in self.slots if slot.held]
        if self.pending:
            first.append(self.pending[0][3])
        return min(first) if first else None

    def replay_ends(self) -> list[int]:
        """Offsets where a batch of the run before a crash ended, descending (the caller
        pops the passed ones from the end): every position stored in this agent's tables
        (a key's last write covers every batch before it) and the origin offset of every
        record its task wrote since its checkpoint. Read once, by `take()`."""
        if self._ends is None:
            ends: set[int] = set(self.marks())
            for table in self.tables.values():
                for _, entry in table.store.entries():
                    if isinstance(entry[0], int):
                        ends.add(entry[0])
            self._ends = sorted(ends, reverse=True)
        return self._ends

    def take(self, slot: Slot) -> Rec | None:
        """The next queued record for `slot`, or None when the queue is empty."""
        if not self.pending:
            return None
        rec = self.pending.popleft()
        if self.instances > 1:
            self.finished(slot)
            slot.seq = self._taken
            self._taken += 1
            slot.out = []
        return rec

    def finished(self, slot: Slot) -> None:
        """`slot` is done with its record: write what it made once those before are done."""
        if slot.out is None or slot.seq < 0:
            return
        self._done[slot.seq] = slot.out
        slot.out = None
        slot.seq = -1
        while self._next_seq in self._done:
            for writer, rec in self._done.pop(self._next_seq):
                writer(*rec)
            self._next_seq += 1

    def monotonic(self) -> float:
        return time.monotonic()
