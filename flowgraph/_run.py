"""`fg.run`: plan a graph and run it on a broker and a store until it is done or stopped."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import attrs

from flowgraph._graph import Graph
from flowgraph.errors import FlowgraphError, GroupStalledError
from flowgraph.runtime import open_transport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import RunStats, Worker
from planner import plan as make_plan
from planner.physical import PhysicalPlan

__all__ = ["RunResult", "run", "run_async", "run_blocking"]

T = TypeVar("T")

LOST_GRACE = 3.0
"""Seconds a run may take to stop once its cluster lost its data, before it is cut short
(its clients may wait on the broker for a whole session or request timeout)."""


@attrs.frozen
class RunResult:
    """What a finished run leaves: its counters and the final contents of its tables."""

    stats: RunStats
    tables: dict[str, Any]
    """Per table name: a dict of keys and values, or a `WindowedTableView` for a windowed one."""
    step_counts: dict[str, int]

    def table(self, name: str) -> Any:
        """The final contents of the table made by step `name` (a dict, or for a windowed
        table a `WindowedTableView`)."""
        try:
            return self.tables[name]
        except KeyError:
            known = ", ".join(map(repr, self.tables)) or "none"
            msg = f"no table {name!r} in this run; its tables: {known}"
            raise KeyError(msg) from None

    @property
    def events(self) -> int:
        """Source records processed."""
        return self.stats.events

    @property
    def dead_letters(self) -> int:
        """Records sent to the dead-letter topic."""
        return self.stats.dead_letters


async def run_async(
    graph: Graph | PhysicalPlan,
    *,
    broker: str = "memory://",
    store: str = "memory://",
    until_idle: bool | None = None,
    max_events: int | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[Worker], None] | None = None,
    on_worker: Callable[[Worker], None] | None = None,
    commit_every: int | None = None,
    commit_interval: float | None = None,
    crash_point: Callable[[str], None] | None = None,
    max_batch: int | None = None,
    max_skew: float | None = None,
    max_idle: float | None = None,
    stall_timeout: float | None = None,
    kafka_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    create_topics: bool | None = None,
) -> RunResult:
    """Async form of `run`, for callers that already have an event loop.

    `on_worker` gets the worker as soon as it exists, before it restores state (a view can
    then poll its counters, restore progress included); `on_start` gets it once started.
    `crash_point` is a fault-injection hook for tests (`flowgraph.runtime.faults`).
    """
    plan = graph if isinstance(graph, PhysicalPlan) else make_plan(graph)
    transport = open_transport(broker, kafka_config=kafka_config, create_topics=create_topics)
    backend = open_backend(store)
    commits: dict[str, Any] = {}
    if commit_every is not None:
        commits["commit_every"] = commit_every
    if commit_interval is not None:
        commits["commit_interval"] = commit_interval
    for name, value in (("max_batch", max_batch), ("max_skew", max_skew), ("max_idle", max_idle)):
        if value is not None:
            commits[name] = value
    worker = Worker(plan, transport, backend, crash_point=crash_point, **commits)
    # On memory:// nothing outside this process can write, so an idle run is a finished one.
    idle_ends = transport.in_process if until_idle is None else until_idle
    stop = asyncio.Event() if stop is None else stop
    running = asyncio.current_task()
    in_run = cancelled = False

    def lost() -> None:
        """The cluster lost its data: stop, and cut `Worker.run` short if it hangs on it."""

        def cancel() -> None:
            nonlocal cancelled
            if in_run and running is not None:
                cancelled = True
                running.cancel()

        stop.set()
        asyncio.get_running_loop().call_later(LOST_GRACE, cancel)

    if hasattr(transport, "on_failure"):  # Kafka: the cluster lost its data, stop the run
        transport.on_failure = lost
    try:
        if on_worker is not None:
            on_worker(worker)
        await worker.start()
        if on_start is not None:
            on_start(worker)
        stalled: GroupStalledError | None = None
        in_run = True
        try:
            await worker.run(
                until_idle=idle_ends, max_events=max_events, stop=stop, stall_timeout=stall_timeout
            )
        except GroupStalledError as exc:
            stalled = exc
        except (Exception, asyncio.CancelledError) as exc:
            failure = getattr(transport, "failure", None)
            check = getattr(transport, "check_lost", None)
            if failure is None and check is not None and not isinstance(exc, FlowgraphError):
                failure = await check()  # a client error: did the cluster lose its data?
            if failure is None or (isinstance(exc, asyncio.CancelledError) and not cancelled):
                raise  # not the cluster: a step failed, or the caller cancelled the run
            if cancelled and running is not None:
                running.uncancel()
            raise failure from None
        finally:
            in_run = False
        failure = getattr(transport, "failure", None)
        if failure is not None:
            raise failure
        tables = {s.step: worker.table(s.step) for s in plan.stores}
        counts = worker.step_counts()
    finally:
        await worker.stop()
    result = RunResult(stats=worker.stats, tables=tables, step_counts=counts)
    if stalled is not None:
        stalled.result = result  # what this worker did, for a summary next to the error
        raise stalled
    return result


def run(
    graph: Graph | PhysicalPlan,
    *,
    broker: str = "memory://",
    store: str = "memory://",
    until_idle: bool | None = None,
    max_events: int | None = None,
    on_start: Callable[[Worker], None] | None = None,
    on_worker: Callable[[Worker], None] | None = None,
    commit_every: int | None = None,
    commit_interval: float | None = None,
    crash_point: Callable[[str], None] | None = None,
    max_batch: int | None = None,
    max_skew: float | None = None,
    max_idle: float | None = None,
    stall_timeout: float | None = None,
    kafka_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    create_topics: bool | None = None,
) -> RunResult:
    """Run `graph` until it is idle (memory://, or `until_idle=True`), `max_events`, or a signal.

    SIGINT and SIGTERM stop it cleanly: the current batch finishes, state is flushed and
    offsets are committed. `max_batch` (records fetched per partition at a time),
    `max_skew` (seconds of timestamp a run of one partition may go past another's next
    record; 0: strict timestamp order) and `max_idle` (seconds to wait for a partition not
    read to its end) tune how records are scheduled; see docs/concepts/windows.md.
    On Kafka, idle means the whole consumer group is done: every
    partition of every input topic, repartition topics included, consumed and committed.
    When the group makes no progress for `stall_timeout` seconds (default: three session
    timeouts, at least 30 s), an until-idle run stops and raises `GroupStalledError`, which
    says what is left and holds this worker's `RunResult` in its `result`.
    `kafka_config` (a TOML file's path, or its contents as a dict) and the environment
    configure a ``kafka://`` broker (see docs/how-to/secured-cluster.md); `create_topics`
    lets the run create missing source topics instead of stopping at start.
    """

    async def main() -> RunResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signal support: run without handlers
        try:
            return await run_async(
                graph,
                broker=broker,
                store=store,
                until_idle=until_idle,
                max_events=max_events,
                stop=stop,
                on_start=on_start,
                on_worker=on_worker,
                commit_every=commit_every,
                commit_interval=commit_interval,
                crash_point=crash_point,
                max_batch=max_batch,
                max_skew=max_skew,
                max_idle=max_idle,
                stall_timeout=stall_timeout,
                kafka_config=kafka_config,
                create_topics=create_topics,
            )
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return run_blocking(main)


def run_blocking(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from sync code, even where a loop already runs (Jupyter).

    There, the coroutine runs on its own loop in a helper thread (signals are then left to
    the host), since a thread can run only one event loop at a time.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flowgraph") as pool:
        return pool.submit(asyncio.run, main()).result()
