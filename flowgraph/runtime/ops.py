"""Steps compiled into push functions: a fused task is one chain of closures.

Every step becomes ``push(key, value, timestamp, offset, headers)``, which calls the user
function and pushes the result to the next steps' push functions. A batch is then one loop
over its records that calls the entry's push: no queue and no intermediate list between
stateless steps, and no await for sync functions. `offset` is the source offset of the input
record a record came from (see `aggregate.py` for why it travels).

A step built with ``context=True`` gets its own closure that also makes a `RecordContext`
(through the task's `MakeContext`, which knows the topic and partition being run) and passes
it as the function's last argument; the closures of other steps are untouched by it, so a
graph that asks for no context pays nothing for the feature.

Each push catches what its user function raises and hands that record to `fail` (the
dead-letter path) with its step id; the loop goes on with the next record, so a failing
record never takes a good one with it.

An ``async def`` step cannot run inside a sync chain: its push starts the record's call (at
most ``concurrency`` in flight, a sliding window: see `AsyncStep`), and the task emits the
results in input order after the loop, and again before each commit.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from flowgraph.errors import SerializationError
from flowgraph.runtime.transport import Push
from planner import logical as lg

__all__ = [
    "BACKLOG",
    "MAX_CONCURRENCY",
    "AsyncStep",
    "Fail",
    "MakeContext",
    "Push",
    "Rec",
    "Window",
    "fanout",
    "gather_bounded",
    "stateless_push",
    "unstorable",
]

Rec = tuple[Any, Any, float, int, Any]
Fail = Callable[[BaseException, Rec], None]
MakeContext = Callable[[Any, float, int, Any], Any]
"""``(key, timestamp, offset, headers) -> RecordContext`` for the record a task is running."""

MAX_CONCURRENCY = lg.DEFAULT_CONCURRENCY
"""How many awaits of an async aggregation's fold run at once over a batch."""


def fanout(targets: list[Push]) -> Push | None:
    """One push that feeds every consumer of a step (None when it has none)."""
    if not targets:
        return None
    if len(targets) == 1:
        return targets[0]
    if len(targets) == 2:
        a, b = targets

        def both(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            a(k, v, ts, o, h)
            b(k, v, ts, o, h)

        return both
    pushes = tuple(targets)

    def each(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        for p in pushes:
            p(k, v, ts, o, h)

    return each


def _noop(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
    return None


def join_push(
    node: lg.Join, nxt: Push | None, fail: Fail, cell: list[int], read: list[Callable[[Any], Any]]
) -> Push:
    """The push function of a join: ``fn(value, table_value)`` with the table's value read
    through ``read[0]`` (bound once the task has built the table's step). `cell[0]` counts
    what the join emits (an inner join drops the records the table lacks)."""
    f: Any = node.fn
    key_fn: Any = node.key
    out = nxt or _noop
    inner = node.how == "inner"

    def push_join(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        try:
            t = read[0](k if key_fn is None else key_fn(v))
            if t is None and inner:
                return
            r = f(v, t)
        except Exception as exc:
            fail(exc, (k, v, ts, o, h))
            return
        cell[0] += 1
        out(k, r, ts, o, h)

    return push_join


def stateless_push(
    node: lg.Node,
    nxt: Push | None,
    fail: Fail,
    context: MakeContext | None = None,
    cell: list[int] | None = None,
) -> Push:
    """The push function of a sync stateless step (map, filter, flat_map, peek, key_by, sink fn).

    A step built with ``context=True`` gets `context`'s record context as its last argument;
    its push is a separate closure, so the others stay exactly as they were. `cell[0]` counts
    what a filter drops and what a flat_map emits, the only steps whose records out do not
    follow from their records in and dead letters (see `Task.tally`).
    """
    f: Any = getattr(node, "fn", None)
    tally = cell if cell is not None else [0]
    out = nxt or _noop
    kind = type(node)
    if getattr(node, "context", False):
        if context is None:
            msg = f"step {node.id!r} takes a record context, but its task gives none"
            raise TypeError(msg)
        return _context_push(kind, f, out, fail, context, tally)
    if kind is lg.Map:

        def push_map(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                r = f(v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            out(k, r, ts, o, h)

        return push_map
    if kind is lg.Filter:

        def push_filter(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                keep = f(v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            if keep:
                out(k, v, ts, o, h)
            else:
                tally[0] += 1

        return push_filter
    if kind is lg.KeyBy:

        def push_key_by(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                key = f(v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            out(key, v, ts, o, h)

        return push_key_by
    if kind is lg.FlatMap:

        def push_flat_map(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                # materialise first: a generator that raises halfway must emit nothing
                items = list(f(v))
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            tally[0] += len(items)
            for x in items:
                out(k, x, ts, o, h)

        return push_flat_map
    if kind is lg.Peek:

        def push_peek(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                f(v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            out(k, v, ts, o, h)

        return push_peek
    if kind is lg.Sink:

        def push_sink(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                f(k, v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            out(k, v, ts, o, h)

        return push_sink
    msg = f"no push function for {kind.__name__}"
    raise TypeError(msg)


def _context_push(
    kind: type, f: Any, out: Push, fail: Fail, ctx: MakeContext, tally: list[int]
) -> Push:
    """`stateless_push` for a step that also takes the record's context."""
    if kind is lg.Sink:

        def push_sink_ctx(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                f(k, v, ctx(k, ts, o, h))
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            out(k, v, ts, o, h)

        return push_sink_ctx

    def push_ctx(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        try:
            r = f(v, ctx(k, ts, o, h))
            if kind is lg.FlatMap:
                r = list(r)  # a generator that raises halfway must emit nothing
        except Exception as exc:
            fail(exc, (k, v, ts, o, h))
            return
        _emit(kind, out, r, k, v, ts, o, h, tally)

    return push_ctx


def _emit(
    kind: type, out: Push, r: Any, k: Any, v: Any, ts: float, o: int, h: Any, tally: list[int]
) -> None:
    """Push on what step `kind` makes of its input record, given its function's result `r`
    (`tally` counts filter drops and flat_map outputs, as in `stateless_push`)."""
    if kind is lg.Map:
        out(k, r, ts, o, h)
    elif kind is lg.Filter:
        if r:
            out(k, v, ts, o, h)
        else:
            tally[0] += 1
    elif kind is lg.KeyBy:
        out(r, v, ts, o, h)
    elif kind is lg.FlatMap:
        tally[0] += len(r)
        for x in r:
            out(k, x, ts, o, h)
    else:  # Peek, Sink
        out(k, v, ts, o, h)


async def gather_bounded(
    fn: Callable[..., Awaitable[Any]], args: Iterable[tuple[Any, ...]], limit: int = MAX_CONCURRENCY
) -> list[Any]:
    """Await ``fn(*a)`` for every `a`, at most `limit` at a time; exceptions become results."""
    items = list(args)
    results: list[Any] = []
    for start in range(0, len(items), limit):
        chunk = items[start : start + limit]
        results += await asyncio.gather(*(fn(*a) for a in chunk), return_exceptions=True)
    return results


def _collecting(agen_fn: Callable[..., Any]) -> Callable[..., Awaitable[list[Any]]]:
    """An ``async def`` returning the list an async generator function yields."""

    async def collect(*args: Any) -> list[Any]:
        return [x async for x in agen_fn(*args)]

    return collect


BACKLOG = 64
"""Records an async step may hold per call slot (running, waiting to start, or done and
waiting for an earlier one) before the task stops taking more: bounds the memory a slow call
ties up while the calls after it go on."""


class _Slot:
    """One record in an async step: its fields, where it came from, and its call."""

    __slots__ = ("ctx", "fut", "h", "k", "o", "rc", "ts", "v")

    def __init__(self, k: Any, v: Any, ts: float, o: int, h: Any, ctx: Any) -> None:
        self.k, self.v, self.ts, self.o, self.h, self.ctx = k, v, ts, o, h, ctx
        self.fut: asyncio.Future[Any] | None = None
        self.rc: Any = None
        """The record context of a ``context=True`` step, made when the record was read."""


class CallCancelledError(Exception):
    """A user call that raised `asyncio.CancelledError` without being cancelled itself."""


async def _guarded(step: AsyncStep, slot: _Slot) -> Any:
    """Make and await a user call; a cancellation that comes from inside it is the call's
    failure (a dead letter), so that only a cancellation of the call from outside, as when
    the loop shuts down under an abandoned worker, leaves the call cancelled. The call is
    made here, in its task, so a task cancelled before it starts leaves nothing unawaited."""
    try:
        return await step.call(slot)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        msg = "the call raised CancelledError"
        raise CallCancelledError(msg) from exc


class Window:
    """The calls in flight of one async step, shared by its tasks in a worker: at most
    `limit` run at once, and each call that finishes starts the oldest waiting one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting: deque[tuple[AsyncStep, _Slot]] = deque()
        """Records whose call has not started (the window was full), oldest first."""
        self.closed = False
        self._turn: asyncio.Future[None] | None = None
        self.order: deque[tuple[AsyncStep, _Slot]] | None = None
        """With `keep_order`: every record of the step's tasks not emitted yet, in the order
        the tasks took them, across tasks."""

    def keep_order(self) -> None:
        """Emit the records of all the step's tasks in the order they were taken: the tasks
        run in timestamp order together, and their outputs meet in one repartition topic."""
        if self.order is None:
            self.order = deque()

    def forget(self, step: AsyncStep) -> None:
        """Drop the records of `step` (its task is dropped) from the order across tasks."""
        if self.order is not None:
            self.order = deque(x for x in self.order if x[0] is not step)

    def pump(self) -> bool:
        """Emit the finished records at the head of `order`, each by its own task's step, and
        stop at the first one not finished; True if any."""
        order = self.order
        assert order is not None
        emitted = False
        while order:
            step, slot = order[0]
            fut = slot.fut
            if fut is None or not fut.done():
                break
            order.popleft()
            step.queue.popleft()  # its oldest: each task's queue is in the same order
            if not fut.cancelled():
                step.emit(slot, fut)
            emitted = True
        return emitted

    def submit(self, step: AsyncStep, slot: _Slot) -> None:
        """Start the call of `slot` now if a slot is free, else when one frees up."""
        if self.running < self.limit:
            self._start(step, slot)
        else:
            self.waiting.append((step, slot))

    def _start(self, step: AsyncStep, slot: _Slot) -> None:
        self.running += 1
        fut = asyncio.ensure_future(_guarded(step, slot))
        slot.fut = fut
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        """A call finished: start the next waiting record's call in its slot."""
        self.running -= 1
        if fut.cancelled():  # the loop is shutting down (a worker abandoned mid-flight)
            self.closed = True
        else:
            fut.exception()  # retrieved here, so an abandoned failure is not logged
            if self.waiting and not self.closed:
                self._start(*self.waiting.popleft())
        turn = self._turn
        if turn is not None and not turn.done():
            turn.set_result(None)

    async def turn(self) -> None:
        """Wait until some call of this window finishes."""
        if self._turn is None or self._turn.done():
            self._turn = asyncio.get_running_loop().create_future()
        await self._turn


class AsyncStep:
    """An ``async def`` stateless step of one task: its calls run in a sliding `window` of at
    most ``concurrency`` calls in flight (shared by the step's tasks in a worker).

    `push` (called from the sync chain) starts the record's call at once if the window has a
    free slot, else queues it; each call that finishes starts the next queued one, so a slow
    call holds one slot and never the others. Results leave in input order: `pump` emits
    the finished records at the head of the task's queue (with `Window.keep_order`, of the
    order across the step's tasks) and stops at the first one not finished. Emitting in
    input order keeps order per key, keeps a downstream aggregation's offsets increasing,
    and keeps the origins of written records increasing, which the replay after a crash
    relies on to skip what was written (see `Task.note_written`).

    Emitting happens only when a task pumps (in `Task.process` and `Task.settle`; with
    `Window.keep_order` a task may emit the records of the step's other tasks, each in its
    own task's context), never from a call's completion, so outputs are never made in the
    middle of a commit. The
    task's context of each record (input topic and entry) is captured at `push` and restored
    around its emission by `enter` and `leave`, which the task sets.
    """

    def __init__(
        self,
        node: lg.Node,
        fail: Fail,
        window: Window | None = None,
        context: MakeContext | None = None,
        cell: list[int] | None = None,
    ) -> None:
        self.node = node
        self.fail = fail
        self.cell = cell if cell is not None else [0]
        """Filter drops or flat_map outputs, as in `stateless_push`."""
        self.context = context if getattr(node, "context", False) else None
        """Makes the record context a ``context=True`` step is called with, at push time."""
        self.next: Push = _noop
        limit = getattr(node, "concurrency", None) or lg.DEFAULT_CONCURRENCY
        self.window = window or Window(limit)
        self.backlog = self.window.limit * BACKLOG
        self.queue: deque[_Slot] = deque()
        """Every record of this task not emitted yet, in input order."""
        self.capture: Callable[[], Any] = _nothing
        self.enter: Callable[[Any], None] = _ignore
        self.leave: Callable[[], None] = _nothing
        f: Any = getattr(node, "fn", None)
        self._fn = _collecting(f) if inspect.isasyncgenfunction(f) else f
        self._two_args = isinstance(node, lg.Sink)
        self.split = False
        """Stop each `pump` where the context changes: set when an async aggregation of
        several inputs follows, whose fold reads the entry of its records when it runs."""

    @property
    def over(self) -> bool:
        """True when the step holds more records than its backlog allows."""
        return len(self.queue) > self.backlog

    def push(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        """Take a record: its call starts now if the window has room, else when it has."""
        slot = _Slot(k, v, ts, o, h, self.capture())
        if self.context is not None:
            slot.rc = self.context(k, ts, o, h)
        self.queue.append(slot)
        order = self.window.order
        if order is not None:
            order.append((self, slot))
        self.window.submit(self, slot)

    def call(self, slot: _Slot) -> Awaitable[Any]:
        """The user function's awaitable for `slot`."""
        if self.context is not None:
            rc = slot.rc
            return self._fn(slot.k, slot.v, rc) if self._two_args else self._fn(slot.v, rc)
        return self._fn(slot.k, slot.v) if self._two_args else self._fn(slot.v)

    async def wait_head(self) -> None:
        """Wait until the oldest record not emitted has its result (across tasks, when the
        window keeps their order)."""
        order = self.window.order
        if order is not None:
            head = order[0][1].fut if order else None
        else:
            head = self.queue[0].fut if self.queue else None
        if head is None:  # not started: the window is full, or a finished call's
            await self.window.turn()  # callback starts it on the next turn of the loop
        else:
            await asyncio.wait((head,))

    def emit(self, slot: _Slot, fut: asyncio.Future[Any]) -> None:
        """Push on what this step made of `slot`, in its task's context (`Window.pump`)."""
        k, v, ts, o, h = slot.k, slot.v, slot.ts, slot.o, slot.h
        kind = type(self.node)
        out = self.next
        self.enter(slot.ctx)
        exc = fut.exception()
        if exc is not None:
            self.fail(exc, (k, v, ts, o, h))
        elif kind is lg.Map:
            out(k, fut.result(), ts, o, h)
        elif kind is lg.Filter:
            if fut.result():
                out(k, v, ts, o, h)
            else:
                self.cell[0] += 1
        elif kind is lg.KeyBy:
            out(fut.result(), v, ts, o, h)
        elif kind is lg.FlatMap:
            try:
                items = list(fut.result())
            except Exception as err:
                self.fail(err, (k, v, ts, o, h))
            else:
                self.cell[0] += len(items)
                for x in items:
                    out(k, x, ts, o, h)
        else:  # Peek, Sink
            out(k, v, ts, o, h)
        self.leave()

    def pump(self) -> bool:
        """Emit the finished records at the head of the queue, in order; True if any."""
        if self.window.order is not None:
            return self.window.pump()
        queue = self.queue
        if not queue:
            return False
        fut = queue[0].fut
        if fut is None or not fut.done():
            return False
        while queue:
            slot = queue[0]
            fut = slot.fut
            if fut is None or not fut.done():
                break
            queue.popleft()
            if fut.cancelled():
                continue
            self.emit(slot, fut)
            if self.split and queue and queue[0].ctx != slot.ctx:
                break
        return True


def _nothing() -> None:
    return None


def _ignore(ctx: Any) -> None:
    return None


def unstorable(
    exc: BaseException, step: str, key: Any, changelog: str, part: str, *, reverted: bool = False
) -> SerializationError:
    """The error of a table key or value its changelog's codec cannot encode."""
    reason = exc.reason if isinstance(exc, SerializationError) else str(exc)
    then = (
        "the key keeps its stored value, without the updates since the last commit"
        if reverted
        else "the record is not applied"
    )
    err = SerializationError(
        f"{reason} (key {key!r} of table {step!r}); a table keeps only what its changelog "
        f"can encode, so {then}; give records a key of the table's key type and make the "
        "step return a value of its value type",
        topic=changelog,
        part=part,
        action="encode",
    )
    err.__cause__ = exc
    return err
