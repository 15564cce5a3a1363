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

An ``async def`` step cannot run inside a sync chain: its push only collects records, and the
task awaits them all at once after the loop (bounded concurrency, batch order kept, so order
per key is preserved), then pushes the results on.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from flowgraph.errors import SerializationError
from flowgraph.runtime.transport import Push
from planner import logical as lg

__all__ = [
    "MAX_CONCURRENCY",
    "AsyncStep",
    "Fail",
    "MakeContext",
    "Push",
    "Rec",
    "fanout",
    "gather_bounded",
    "stateless_push",
    "unstorable",
]

Rec = tuple[Any, Any, float, int, Any]
Fail = Callable[[BaseException, Rec], None]
MakeContext = Callable[[Any, float, int, Any], Any]
"""``(key, timestamp, offset, headers) -> RecordContext`` for the record a task is running."""

MAX_CONCURRENCY = 64
"""How many awaits of one async step run at once over a batch."""


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


class AsyncStep:
    """An ``async def`` stateless step: collects records during the loop, awaits them after."""

    def __init__(
        self,
        node: lg.Node,
        fail: Fail,
        context: MakeContext | None = None,
        cell: list[int] | None = None,
    ) -> None:
        self.node = node
        self.fail = fail
        self.cell = cell if cell is not None else [0]
        """Filter drops or flat_map outputs, as in `stateless_push`."""
        self.pending: list[Rec] = []
        self.next: Push = _noop
        self.context = context if getattr(node, "context", False) else None
        """Makes the record context a ``context=True`` step is called with, at push time."""
        self.contexts: list[Any] = []
        if self.context is not None:
            self.push = self._push_with_context  # type: ignore[method-assign]

    def push(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        """Collect a record; it is processed by `drain`."""
        self.pending.append((k, v, ts, o, h))

    def _push_with_context(self, k: Any, v: Any, ts: float, o: int, h: Any) -> None:
        """`push` for a ``context=True`` step: its context is made now, where it was read."""
        self.pending.append((k, v, ts, o, h))
        self.contexts.append(self.context(k, ts, o, h))  # type: ignore[misc]

    async def drain(self) -> bool:
        """Await the collected records and push the results on; False if there were none."""
        if not self.pending:
            return False
        batch, self.pending = self.pending, []
        f: Any = getattr(self.node, "fn", None)
        kind = type(self.node)
        if inspect.isasyncgenfunction(f):
            f = _collecting(f)
        args: Iterable[tuple[Any, ...]] = (
            ((r[0], r[1]) for r in batch) if kind is lg.Sink else ((r[1],) for r in batch)
        )
        if self.context is not None:
            contexts, self.contexts = self.contexts, []
            args = ((*a, c) for a, c in zip(args, contexts, strict=True))
        results = await gather_bounded(f, args)
        out = self.next
        for (k, v, ts, o, h), res in zip(batch, results, strict=True):
            if isinstance(res, BaseException):
                self.fail(res, (k, v, ts, o, h))
            elif kind is lg.Map:
                out(k, res, ts, o, h)
            elif kind is lg.Filter:
                if res:
                    out(k, v, ts, o, h)
                else:
                    self.cell[0] += 1
            elif kind is lg.KeyBy:
                out(res, v, ts, o, h)
            elif kind is lg.FlatMap:
                try:
                    items = list(res)
                except Exception as exc:
                    self.fail(exc, (k, v, ts, o, h))
                    continue
                self.cell[0] += len(items)
                for x in items:
                    out(k, x, ts, o, h)
            else:  # Peek, Sink
                out(k, v, ts, o, h)
        return True


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
