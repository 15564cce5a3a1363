"""Small helpers shared by the builder and the runtime."""

from __future__ import annotations

import inspect
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def f_repr(fn: object) -> str:
    """Show a user callable as ``module.qualname line N``, the way error messages name it."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    code = getattr(fn, "__code__", None)
    line = f" line {code.co_firstlineno}" if code is not None else ""
    return f"{module}.{qualname}{line}"


def fn_name(fn: object) -> str:
    """``module.qualname`` of a callable, for explanations."""
    from flowgraph.records import Field

    if isinstance(fn, Field):  # Click.url used as a key function
        return f"{fn.record.__module__}.{fn.record.__qualname__}.{fn.name}"
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


def short_name(fn: object) -> str | None:
    """The name a named function gives to a step, or None for lambdas and callables."""
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>" or not name.isidentifier():
        return None
    return name


def call_site() -> str:
    """``file.py:LINE`` of the first frame outside flowgraph: where the user built the step."""
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(
        os.path.abspath(frame.f_code.co_filename)
    ).startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def is_async(fn: object) -> bool:
    """True for ``async def`` functions and async generators (or a ``__call__`` that is one)."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def return_type(fn: Callable[..., Any]) -> object:
    """The return annotation of `fn`, resolved, or None when absent or unresolvable."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    hint = hints.get("return")
    if hint is None:
        return None
    origin = typing.get_origin(hint)
    if origin is not None and inspect.iscoroutinefunction(fn) and origin is typing.Coroutine:
        return None
    return hint


def element_type(hint: object) -> object:
    """X for an ``Iterable[X]``-like annotation, else None."""
    args = typing.get_args(hint)
    return args[0] if len(args) == 1 else None
