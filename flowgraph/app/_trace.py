"""What an agent does to its stream before its first record, found when the app is built.

Faust agents re-key their input inside their body (``stream.group_by(Order.account_id)``).
For the planner to insert that repartition, and `explain` to show it, the app calls the agent
function once with a `TraceStream` and runs it up to its first ``async for`` step, recording
`group_by` and `through` calls. It stops there (the tracer raises), so no record is
processed; code before the loop does run once at build time, like a module's top level.

It also finds which tables, topics and agents the function refers to (by name, in its code
and closures), since those become the agent's tables and send targets in the plan.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["TraceStream", "references", "trace"]


class _Traced(BaseException):
    """Ends the traced call at the first record it asks for (not an Exception: a
    ``try/except Exception`` around the agent's loop must not catch it)."""


class TraceStream:
    """A stream that records the re-keying calls made on it and holds no record."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str | None, int | None]] = []

    def group_by(self, key: Any, *, name: str | None = None, partitions: int | None = None) -> Any:
        self.calls.append(("group_by", key, name, partitions))
        return self

    def through(self, channel: Any) -> Any:
        self.calls.append(("through", channel, None, None))
        return self

    def items(self) -> Any:
        return self

    def events(self) -> Any:
        return self

    def enumerate(self, start: int = 0) -> Any:
        return self

    def filter(self, fn: Callable[[Any], Any]) -> Any:
        return self

    def take(self, max_: int, within: float | None = None) -> Any:
        return self

    def __aiter__(self) -> Any:
        return self

    def __anext__(self) -> Any:
        raise _Traced

    def __getattr__(self, name: str) -> Any:
        raise _Traced


def trace(fn: Callable[[Any], Any]) -> list[tuple[str, Any, str | None, int | None]]:
    """The `group_by`/`through` calls `fn` makes on its stream before its first record."""
    stream = TraceStream()
    try:
        result = fn(stream)
    except BaseException:
        return stream.calls
    step: Any
    if inspect.isasyncgen(result):
        step = result.__anext__()
    elif inspect.iscoroutine(result):
        step = result
    else:
        return stream.calls
    try:
        step.send(None)
    except BaseException:
        return stream.calls
    step.close()  # it awaited something else before reading: what it did so far counts
    return stream.calls


def references(fn: Callable[..., Any]) -> Iterator[Any]:
    """The objects `fn` names: globals used in its code (nested functions included),
    attributes of modules it names, and its closure cells."""
    seen: set[int] = set()
    code = getattr(fn, "__code__", None)
    globs: dict[str, Any] = getattr(fn, "__globals__", {})
    names: set[str] = set()
    for c in _codes(code):
        names.update(c.co_names)
    for name in names:
        if name in globs:
            value = globs[name]
            if isinstance(value, types.ModuleType):
                for attr in names:
                    sub = getattr(value, attr, None)
                    if sub is not None and id(sub) not in seen:
                        seen.add(id(sub))
                        yield sub
            elif id(value) not in seen:
                seen.add(id(value))
                yield value
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if id(value) not in seen:
            seen.add(id(value))
            yield value


def _codes(code: types.CodeType | None) -> Iterator[types.CodeType]:
    if code is None:
        return
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)
