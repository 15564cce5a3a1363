"""Fault-injection hooks: passed to the worker; only the CLI reads FLOWGRAPH_CRASH_AT."""

from __future__ import annotations

import time

import pytest

from flowgraph.runtime.faults import InjectedCrash, from_env, raise_at


def test_raise_at_raises_the_nth_time_its_point_is_passed():
    hook = raise_at("after-store", 2)
    hook("after-produce")
    hook("after-store")
    with pytest.raises(InjectedCrash, match="after-store:2"):
        hook("after-store")


def test_an_unknown_point_is_refused():
    with pytest.raises(ValueError, match="unknown crash point 'after-lunch'"):
        raise_at("after-lunch")


def test_from_env_reads_point_and_count():
    assert from_env({}) is None
    assert from_env({"FLOWGRAPH_CRASH_AT": ""}) is None
    assert callable(from_env({"FLOWGRAPH_CRASH_AT": "in-batch:3"}))
    with pytest.raises(ValueError, match="unknown crash point"):
        from_env({"FLOWGRAPH_CRASH_AT": "nowhere:1"})


def test_from_env_reads_a_slow_point_in_seconds():
    hook = from_env({"FLOWGRAPH_SLOW_AT": "in-restore:0.05"})
    assert hook is not None
    began = time.monotonic()
    hook("in-batch")
    assert time.monotonic() - began < 0.04
    hook("in-restore")
    assert time.monotonic() - began >= 0.05
    with pytest.raises(ValueError, match="unknown crash point"):
        from_env({"FLOWGRAPH_SLOW_AT": "nowhere:1"})


def test_pause_at_stops_the_process_once_at_the_nth_pass():
    """In a child process: it stops itself at the second pass only, and goes on once sent
    SIGCONT (a real SIGSTOP, so the parent sees it stopped)."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "from flowgraph.runtime.faults import from_env\n"
        "import os\n"
        "hook = from_env(os.environ)\n"
        "for _ in range(3):\n"
        "    hook('after-produce')\n"
        "print('done', flush=True)\n"
    )
    env = {**os.environ, "FLOWGRAPH_PAUSE_AT": "after-produce:2"}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    try:
        status = os.waitpid(child.pid, os.WUNTRACED)[1]
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
        assert out == b"done\n"
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_pause_at_refuses_an_unknown_point():
    with pytest.raises(ValueError, match="unknown crash point"):
        from_env({"FLOWGRAPH_PAUSE_AT": "nowhere:1"})
