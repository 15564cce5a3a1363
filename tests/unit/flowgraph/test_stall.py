"""`Stall`: noticing that the event loop stood still (no heartbeat could go out)."""

from __future__ import annotations

import asyncio
import time

from flowgraph.runtime.commit import STALL_TICK, Stall


def test_a_blocked_loop_is_a_stall_and_a_running_one_is_not():
    async def scenario() -> tuple[bool, bool, bool]:
        stall = Stall(limit=0.3)
        stall.watch()
        began = time.monotonic()
        await asyncio.sleep(STALL_TICK * 3)  # the loop runs: ticks every STALL_TICK
        quiet = stall.since(began)
        time.sleep(0.5)  # blocked, as SIGSTOP or a long synchronous call would leave it
        during = stall.since(began)  # no tick since: it stands still now
        await asyncio.sleep(STALL_TICK * 2)
        after = stall.since(began)  # a tick saw the gap
        return quiet, during, after

    quiet, during, after = asyncio.run(scenario())
    assert not quiet
    assert during
    assert after


def test_a_stall_before_the_moment_asked_about_does_not_count():
    async def scenario() -> bool:
        stall = Stall(limit=0.3)
        stall.watch()
        await asyncio.sleep(STALL_TICK)
        time.sleep(0.5)
        await asyncio.sleep(STALL_TICK * 2)
        checked = time.monotonic()  # the worker asked the group after the stall
        await asyncio.sleep(STALL_TICK * 2)
        return stall.since(checked)

    assert not asyncio.run(scenario())
