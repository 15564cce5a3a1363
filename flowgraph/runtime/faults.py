"""Fault injection: hooks a `Worker` calls at named points of its commit and restore.

The points are ``in-batch`` (a batch processed, nothing produced), ``after-produce`` (records
and changelogs acknowledged, stores not written), ``after-store`` (stores written, offsets not
committed), ``after-commit`` and ``in-restore`` (a changelog chunk restored). A hook is passed
to the worker (``Worker(..., crash_point=hook)``); nothing here reads the environment except
`from_env`, which the CLI calls where it builds the worker for a run. Besides crashes, a hook
can make a point slow (`sleep_at`), so tests can stop a worker in the middle of a restore, or
pause the process there (`pause_at`: it stops itself with SIGSTOP until a test sends SIGCONT),
as a long garbage collection, a swapped-out process or a suspended VM would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping

__all__ = [
    "POINTS",
    "CrashHook",
    "InjectedCrash",
    "from_env",
    "kill_at",
    "pause_at",
    "raise_at",
    "sleep_at",
]

CrashHook = Callable[[str], None]
"""``hook(point)``: called each time the worker passes `point`."""
POINTS = ("in-batch", "after-produce", "after-store", "after-commit", "in-restore")
ENV = "FLOWGRAPH_CRASH_AT"
"""``<point>:<n>``: the CLI's worker kills itself with SIGKILL the n-th time it passes point."""
PAUSE_ENV = "FLOWGRAPH_PAUSE_AT"
"""``<point>:<n>``: the CLI's worker stops itself with SIGSTOP the n-th time it passes point."""
SLOW_ENV = "FLOWGRAPH_SLOW_AT"
"""``<point>:<seconds>``: the CLI's worker sleeps this long each time it passes point."""


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


def pause_at(point: str, n: int = 1) -> CrashHook:
    """A hook making the process SIGSTOP itself the n-th time it passes `point` (once): it
    stands still, heartbeats and all, until something sends it SIGCONT."""
    if point not in POINTS:
        msg = f"unknown crash point {point!r}; the points are {', '.join(POINTS)}"
        raise ValueError(msg)
    seen = [0]

    def hook(name: str) -> None:
        if name == point:
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGSTOP)

    return hook


def sleep_at(point: str, seconds: float) -> CrashHook:
    """A hook that blocks for `seconds` each time the worker passes `point`: a slow disk or
    network there. It blocks the event loop as slow synchronous work would."""
    if point not in POINTS:
        msg = f"unknown crash point {point!r}; the points are {', '.join(POINTS)}"
        raise ValueError(msg)

    def hook(name: str) -> None:
        if name == point:
            time.sleep(seconds)

    return hook


def from_env(environ: Mapping[str, str]) -> CrashHook | None:
    """The hooks that ``FLOWGRAPH_CRASH_AT=<point>:<n>`` (`kill_at`),
    ``FLOWGRAPH_PAUSE_AT=<point>:<n>`` (`pause_at`) and
    ``FLOWGRAPH_SLOW_AT=<point>:<seconds>`` (`sleep_at`) ask for, as one, or None."""
    hooks: list[CrashHook] = []
    slow = environ.get(SLOW_ENV, "")
    if slow:
        point, _, seconds = slow.partition(":")
        hooks.append(sleep_at(point, float(seconds or 1)))
    pause = environ.get(PAUSE_ENV, "")
    if pause:
        point, _, nth = pause.partition(":")
        hooks.append(pause_at(point, int(nth or 1)))
    spec = environ.get(ENV, "")
    if spec:
        point, _, nth = spec.partition(":")
        hooks.append(kill_at(point, int(nth or 1)))
    if len(hooks) < 2:
        return hooks[0] if hooks else None

    def every(name: str) -> None:
        for hook in hooks:
            hook(name)

    return every
