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
