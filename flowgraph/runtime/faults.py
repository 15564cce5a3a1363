"""Fault injection: hooks a `Worker` calls at named points of its commit and restore.

The points are ``in-batch`` (a batch processed, nothing produced), ``after-produce`` (records
and changelogs acknowledged, stores not written), ``after-store`` (stores written, offsets not
committed), ``after-commit`` and ``in-restore`` (a changelog chunk restored). A hook is passed
to the worker (``Worker(..., crash_point=hook)``); nothing here reads the environment except
`from_env`, which the CLI calls where it builds the worker for a run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

__all__ = ["POINTS", "CrashHook", "InjectedCrash", "from_env", "kill_at", "raise_at"]

CrashHook = Callable[[str], None]
"""``hook(point)``: called each time the worker passes `point`."""
POINTS = ("in-batch", "after-produce", "after-store", "after-commit", "in-restore")
ENV = "FLOWGRAPH_CRASH_AT"
"""``<point>:<n>``: the CLI's worker kills itself with SIGKILL the n-th time it passes point."""


class InjectedCrash(Exception):
    """Raised by a `raise_at` hook; the test then abandons the worker, as after ``kill -9``."""


def _nth(point: str, n: int, act: Callable[[], None]) -> CrashHook:
    if point not in POINTS:
        msg = f"unknown crash point {point!r}; the points are {', '.join(POINTS)}"
        raise ValueError(msg)
    seen = [0]

    def hook(name: str) -> None:
        if name == point:
            seen[0] += 1
            if seen[0] >= n:
                act()

    return hook


def raise_at(point: str, n: int = 1) -> CrashHook:
    """A hook raising `InjectedCrash` the n-th time the worker passes `point`."""

    def crash() -> None:
        msg = f"injected crash at {point}:{n}"
        raise InjectedCrash(msg)

    return _nth(point, n, crash)


def kill_at(point: str, n: int = 1) -> CrashHook:
    """A hook making the process SIGKILL itself the n-th time it passes `point`: a real
    ``kill -9``, placed exactly."""
    return _nth(point, n, lambda: os.kill(os.getpid(), signal.SIGKILL))


def from_env(environ: Mapping[str, str]) -> CrashHook | None:
    """The `kill_at` hook that ``FLOWGRAPH_CRASH_AT=<point>:<n>`` asks for, or None."""
    spec = environ.get(ENV, "")
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    return kill_at(point, int(nth or 1))
