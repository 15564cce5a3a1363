"""Timers, crontabs and tasks of an app on a worker: under `TestDriver` (the driver's clock,
no sleeping) and in real runs on ``memory://``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import flowgraph as fg
from flowgraph._run import run_async
from flowgraph.runtime import services
from flowgraph.runtime.agent import WORKER
from flowgraph.testing import TestDriver


def ticking_app(app_id: str, interval: float = 2.0, **timer: Any) -> tuple[fg.App, list[Any]]:
    """A timer that sends ("tick", 1) to topic ``ticks``; an agent counts them per key."""
    app = fg.App(app_id, topic_partitions=2)
    ticks = app.topic("ticks", key_type=str, value_type=int)
    counts = app.Table("tick_counts", default=int)
    seen: list[Any] = []

    @app.agent(ticks)
    async def count(stream):
        async for key, n in stream.items():
            counts[key] += n

    @app.timer(interval, **timer)
    async def tick(the_app):
        seen.append((WORKER.get().clock(), the_app, counts["tick"]))
        await ticks.send(key="tick", value=1)

    return app, seen


def stats(driver: TestDriver) -> dict[str, tuple[int, int, int]]:
    return {s.name: (s.runs, s.errors, s.skipped) for s in driver._worker.services.stats}


def test_timer_first_runs_one_interval_after_the_start_then_every_interval():
    app, seen = ticking_app("timer1")
    with TestDriver(app) as d:
        assert d.table("tick_counts") == {}
        d.advance_time(1.9)
        assert seen == []
        d.advance_time(2.0)
        assert d.table("tick_counts") == {"tick": 1}
        d.advance_time(9.0)
        assert d.table("tick_counts") == {"tick": 4}
        # each run at its own time, with the app as argument, seeing what the last one sent
        assert seen == [(2.0, app, 0), (4.0, app, 1), (6.0, app, 2), (8.0, app, 3)]
        assert stats(d) == {"tick": (4, 0, 0)}
        d.advance_time(5.0)  # the clock going back runs nothing
        assert stats(d) == {"tick": (4, 0, 0)}


def test_what_a_timer_sends_carries_the_time_it_ran():
    app, _ = ticking_app("timer2", interval=1.5)
    out = app.topic("out", key_type=str, value_type=float)

    @app.agent(app.topics["ticks"])
    async def stamp(stream):
        async for event in stream.events():
            await out.send(key=event.key, value=event.message.timestamp)

    with TestDriver(app) as d:
        d.advance_time(4.6)
        assert d.output("out") == [("tick", 1.5), ("tick", 3.0), ("tick", 4.5)]


def test_task_runs_once_at_start_and_what_it_sends_is_processed():
    app, _ = ticking_app("task1")
    ticks = app.topics["ticks"]
    ran: list[int] = []

    @app.task
    async def warm_up():
        ran.append(1)
        for _ in range(3):
            await ticks.send(key="start", value=2)

    with TestDriver(app) as d:
        assert d.table("tick_counts") == {"start": 6}
        d.advance_time(4.0)
        assert ran == [1]
        assert d.table("tick_counts") == {"start": 6, "tick": 2}


def test_on_leader_runs_on_the_one_memory_worker():
    app, seen = ticking_app("leader1", on_leader=True)
    with TestDriver(app) as d:
        services = d._worker.services
        assert services._leader_tp == ("ticks", 0)
        assert services.is_leader()
        d.advance_time(6.0)
        assert len(seen) == 3
        assert stats(d) == {"tick": (3, 0, 0)}


def test_on_leader_follows_the_assignment_of_partition_zero():
    """Leadership is read at each run: a worker without partition 0 of the first source
    topic skips its on_leader runs (and counts them), and runs them again once it has it."""
    app, seen = ticking_app("leader2", on_leader=True)
    with TestDriver(app) as d:
        consumer = d._worker._consumer
        everything = consumer.assignment()
        consumer.assignment = lambda: everything - {("ticks", 0)}  # partition 0 moved away
        d.advance_time(4.0)
        assert seen == []
        assert stats(d) == {"tick": (0, 0, 2)}
        consumer.assignment = lambda: everything
        d.advance_time(6.0)
        assert len(seen) == 1
        assert stats(d) == {"tick": (1, 0, 2)}


def test_exception_is_logged_in_one_line_and_the_timer_goes_on(caplog):
    app, _ = ticking_app("boom1")
    calls = []

    @app.timer(1.0)
    async def flaky():
        calls.append(1)
        if len(calls) % 2:
            raise ValueError("odd call")

    with caplog.at_level(logging.ERROR, logger="flowgraph"), TestDriver(app) as d:
        d.advance_time(4.0)
        assert len(calls) == 4
        assert d.table("tick_counts") == {"tick": 2}  # the other timer is not disturbed
        assert stats(d)["flaky"] == (4, 2, 0)
    errors = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert len(errors) == 2
    for record in errors:
        message = record.getMessage()
        assert "ValueError: odd call" in message
        assert "it runs again at its next time" in message
        assert "\n" not in message
        assert not record.exc_info  # no traceback unless the logger is at DEBUG


def test_traceback_is_logged_at_debug(caplog):
    app = fg.App("boom2")

    @app.timer(1.0)
    async def broken():
        raise KeyError("missing")

    with caplog.at_level(logging.DEBUG, logger="flowgraph"), TestDriver(app) as d:
        d.advance_time(1.0)
    [record] = [r for r in caplog.records if "broken" in r.getMessage()]
    assert record.exc_info


def test_table_write_in_a_timer_is_refused_with_the_sentence(caplog):
    app, _ = ticking_app("write1")
    counts = app.tables["tick_counts"]

    @app.timer(1.0)
    async def sneaky():
        counts["direct"] = 5

    with caplog.at_level(logging.ERROR, logger="flowgraph"), TestDriver(app) as d:
        d.advance_time(2.0)
        assert "direct" not in d.table("tick_counts")
        assert stats(d)["sneaky"] == (2, 2, 0)
    [first, *_] = [r.getMessage() for r in caplog.records if "sneaky" in r.getMessage()]
    assert "ConfigurationError: table 'tick_counts' can only be changed by an agent" in first


def test_timer_reads_tables():
    app, _ = ticking_app("read1")
    counts = app.tables["tick_counts"]
    read: list[Any] = []

    @app.timer(3.0)
    async def reader():
        read.append((counts["tick"], dict(counts.items())))

    with TestDriver(app) as d:
        d.advance_time(6.0)
    # at 3.0 the tick of 2.0 is counted; at 6.0 both timers run before what the tick timer
    # sends then is processed, so the ticks of 2.0 and 4.0
    assert read == [(1, {"tick": 1}), (2, {"tick": 2})]


def test_failing_task_is_logged_and_ends(caplog):
    app = fg.App("task2")
    runs = []

    @app.task
    async def once():
        runs.append(1)
        raise RuntimeError("no config")

    with caplog.at_level(logging.ERROR, logger="flowgraph"), TestDriver(app) as d:
        d.advance_time(100.0)
        assert runs == [1]
        assert stats(d) == {"once": (1, 1, 0)}
    assert any("RuntimeError: no config; it ended" in r.getMessage() for r in caplog.records)


def test_crontab_runs_on_the_drivers_clock():
    app = fg.App("cron1")
    out = app.topic("out", key_type=str, value_type=float)
    times: list[float] = []

    @app.crontab("*/15 * * * *")
    async def quarter():
        times.append(WORKER.get().clock())
        await out.send(key="q", value=times[-1])

    @app.crontab("0 1 * * *", timezone="Europe/Paris")  # 01:00 in Paris is 00:00 UTC in 1970
    async def nightly():
        times.append(-WORKER.get().clock())

    with TestDriver(app) as d:
        d.advance_time(3600.0)
        assert times == [900.0, 1800.0, 2700.0, 3600.0]
        assert d.output("out") == [("q", t) for t in times]
        d.advance_time(86400.0)
        assert times[-2:] == [86400.0, -86400.0]  # at the same time: in declaration order
        assert [t for t in times if t < 0] == [-86400.0]
        assert stats(d)["quarter"][0] == 96


def test_services_only_app_sends_from_a_timer():
    app = fg.App("only1")
    out = app.topic("out", key_type=str, value_type=int)
    n = [0]

    @app.timer(1.0)
    async def tick():
        n[0] += 1
        await out.send(key="k", value=n[0])

    with TestDriver(app) as d:
        d.advance_time(3.0)
        assert d.output("out") == [("k", 1), ("k", 2), ("k", 3)]
        assert d._worker.waiting_for() is None  # reading no topic is not waiting for one


# -- the real clock ------------------------------------------------------------------------


def test_real_run_timer_feeds_an_agent_until_max_events():
    app, seen = ticking_app("real1", interval=0.05)
    workers = []
    started = time.monotonic()
    result = fg.run(app, max_events=5, on_start=workers.append)  # timers: not idle on memory://
    assert result.events == 5
    assert result.table("tick_counts") == {"tick": 5}
    assert time.monotonic() - started < 30
    [s] = workers[0].services.stats
    assert s.runs >= 5
    assert s.errors == 0
    assert [the_app for _, the_app, _ in seen] == [app] * len(seen)


def test_real_run_until_idle_waits_for_tasks_and_stops_timers():
    app, seen = ticking_app("real2", interval=3600.0)
    ticks = app.topics["ticks"]

    @app.task
    async def slow_feed():
        for _ in range(3):
            await asyncio.sleep(0.05)
            await ticks.send(key="fed", value=1)

    started = time.monotonic()
    result = fg.run(app, until_idle=True)
    assert result.table("tick_counts") == {"fed": 3}  # the run waited for the task
    assert seen == []  # the hourly timer never ran, and the run did not wait for it
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("stuck", [False, True])
def test_stopping_cancels_services_within_the_bound(stuck):
    app = fg.App(f"stop{int(stuck)}")
    out = app.topic("out", key_type=str, value_type=int)
    cancelled = []

    @app.task
    async def forever():
        try:
            while True:
                await out.send(key="k", value=1)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.append(1)
            if stuck:  # swallows the cancel and goes on: the stop gives up on it
                await asyncio.sleep(60)
            raise

    async def main() -> float:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, stop.set)
        began = time.monotonic()
        await run_async(app, stop=stop, until_idle=False)
        return time.monotonic() - began

    took = asyncio.run(main())
    assert cancelled == [1]
    assert took < 0.3 + services.STOP_WAIT + 5


def test_live_view_shows_each_service_with_runs_and_errors():
    import io

    from rich.console import Console

    from flowgraph._live import LiveView

    app, _ = ticking_app("live1")

    @app.timer(1.0)
    async def failing():
        raise OSError("disk full")

    with TestDriver(app) as d:
        d.advance_time(4.0)
        view = LiveView(d.plan, out=io.StringIO(), interactive=False)
        view._worker = d._worker
        line = view._log_line()
        out = io.StringIO()
        Console(file=out, width=120).print(view._render())
    assert "services 6 runs 4 errors" in line
    rows = {r.split()[0]: r.split()[1:] for r in out.getvalue().splitlines() if r.strip()}
    assert rows["tick"][:3] == ["timer", "2", "0"]
    assert rows["failing"][:3] == ["timer", "4", "4"]
    assert "OSError: disk full" in out.getvalue()
