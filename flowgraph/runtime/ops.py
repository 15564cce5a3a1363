"""Steps compiled into batch functions: one tight loop per step over a list of records.

A record in flight is the tuple ``(key, value, timestamp, offset, headers)``; `offset` is the
source offset of the input record it came from. Each sync loop is written so that an exception
from a user function sends just that record to the dead-letter path (`fail`) and the loop goes
on from the next record: no record is processed twice, none is dropped silently.

``async def`` user functions are awaited with bounded concurrency over the batch; results keep
the batch's order, so order per key is preserved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from planner import logical as lg

__all__ = ["Fail", "Rec", "gather_bounded", "stateless_op"]

Rec = tuple[Any, Any, float, int, Any]
Fail = Callable[[BaseException, Rec], None]
BatchOp = Callable[[list[Rec]], list[Rec]]
AsyncBatchOp = Callable[[list[Rec]], Awaitable[list[Rec]]]

MAX_CONCURRENCY = 64
"""How many awaits of one async step run at once over a batch."""


async def gather_bounded(fn: Callable[..., Awaitable[Any]], args: Iterable[tuple[Any, ...]],
                         limit: int = MAX_CONCURRENCY) -> list[Any]:
    """Await ``fn(*a)`` for every `a`, at most `limit` at a time; exceptions become results."""
    items = list(args)
    results: list[Any] = []
    for start in range(0, len(items), limit):
        chunk = items[start : start + limit]
        results += await asyncio.gather(*(fn(*a) for a in chunk), return_exceptions=True)
    return results


def _map(f: Callable[[Any], Any], fail: Fail) -> BatchOp:
    def run(batch: list[Rec]) -> list[Rec]:
        out: list[Rec] = []
        append = out.append
        it = iter(batch)
        while True:
            try:
                for k, v, ts, o, h in it:
                    append((k, f(v), ts, o, h))
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                continue
            return out

    return run


def _filter(f: Callable[[Any], Any], fail: Fail) -> BatchOp:
    def run(batch: list[Rec]) -> list[Rec]:
        out: list[Rec] = []
        append = out.append
        it = iter(batch)
        while True:
            try:
                for r in it:
                    if f(r[1]):
                        append(r)
            except Exception as exc:
                fail(exc, r)
                continue
            return out

    return run


def _flat_map(f: Callable[[Any], Iterable[Any]], fail: Fail) -> BatchOp:
    def run(batch: list[Rec]) -> list[Rec]:
        out: list[Rec] = []
        extend = out.extend
        it = iter(batch)
        while True:
            try:
                for k, v, ts, o, h in it:
                    # materialise first: a generator that raises halfway must not emit half
                    extend([(k, x, ts, o, h) for x in f(v)])
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                continue
            return out

    return run


def _peek(f: Callable[[Any], Any], fail: Fail) -> BatchOp:
    def run(batch: list[Rec]) -> list[Rec]:
        it = enumerate(batch)
        failed: set[int] = set()
        while True:
            try:
                for i, r in it:
                    f(r[1])
            except Exception as exc:
                fail(exc, r)
                failed.add(i)
                continue
            break
        if not failed:
            return batch
        return [r for i, r in enumerate(batch) if i not in failed]

    return run


def _key_by(f: Callable[[Any], Any], fail: Fail) -> BatchOp:
    def run(batch: list[Rec]) -> list[Rec]:
        out: list[Rec] = []
        append = out.append
        it = iter(batch)
        while True:
            try:
                for _, v, ts, o, h in it:
                    append((f(v), v, ts, o, h))
            except Exception as exc:
                fail(exc, (_, v, ts, o, h))
                continue
            return out

    return run


def _sink_fn(f: Callable[[Any, Any], Any], fail: Fail) -> BatchOp:
    def run(batch: list[Rec]) -> list[Rec]:
        it = iter(batch)
        while True:
            try:
                for k, v, _ts, _o, _h in it:
                    f(k, v)
            except Exception as exc:
                fail(exc, (k, v, _ts, _o, _h))
                continue
            return batch

    return run


def _post(kind: type[lg.Node], batch: list[Rec], results: list[Any], fail: Fail) -> list[Rec]:
    """Finish an async step: the same semantics as the sync loops, given each result."""
    out: list[Rec] = []
    for r, res in zip(batch, results, strict=True):
        if isinstance(res, BaseException):
            fail(res, r)
        elif kind is lg.Map:
            out.append((r[0], res, r[2], r[3], r[4]))
        elif kind is lg.Filter:
            if res:
                out.append(r)
        elif kind is lg.FlatMap:
            try:
                items = list(res)
            except Exception as exc:
                fail(exc, r)
                continue
            out.extend((r[0], x, r[2], r[3], r[4]) for x in items)
        elif kind is lg.KeyBy:
            out.append((res, r[1], r[2], r[3], r[4]))
        else:  # Peek, Sink: records pass unchanged
            out.append(r)
    return out


_SYNC: dict[type[lg.Node], Callable[[Any, Fail], BatchOp]] = {
    lg.Map: _map,
    lg.Filter: _filter,
    lg.FlatMap: _flat_map,
    lg.Peek: _peek,
    lg.KeyBy: _key_by,
    lg.Sink: _sink_fn,
}


def stateless_op(node: lg.Node, fail: Fail) -> tuple[bool, BatchOp | AsyncBatchOp]:
    """Compile a stateless step; returns (is_async, op)."""
    fn: Any = getattr(node, "fn", None)
    kind = type(node)
    if not getattr(node, "is_async", False):
        return False, _SYNC[kind](fn, fail)
    if kind is lg.Sink:
        def call(r: Rec) -> Awaitable[Any]:
            return fn(r[0], r[1])  # type: ignore[no-any-return]
    else:
        def call(r: Rec) -> Awaitable[Any]:
            return fn(r[1])  # type: ignore[no-any-return]

    async def run(batch: list[Rec]) -> list[Rec]:
        results = await gather_bounded(call, ((r,) for r in batch))
        return _post(kind, batch, results, fail)

    return True, run
