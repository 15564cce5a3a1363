"""`fg.run`: plan a graph and run it on a broker and a store until it is done or stopped."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import attrs

from flowgraph._graph import Graph
from flowgraph.app import App
from flowgraph.errors import ConfigurationError, FlowgraphError, GroupStalledError, Interrupted
from flowgraph.runtime import open_transport
from flowgraph.runtime.state import RocksDBBackend, StateBackend, open_backend
from flowgraph.runtime.stats import (
    DeadLetterLimit,
    DeadLetterLimitError,
    DeadLetterLog,
    DeadLetterSummary,
)
from flowgraph.runtime.transport import Transport
from flowgraph.runtime.worker import RunStats, Worker
from planner import plan as make_plan
from planner.logical import StreamJoin
from planner.physical import PhysicalPlan

__all__ = ["RunResult", "dead_letter_file", "run", "run_async", "run_blocking"]

DEAD_LETTER_DIR = "flowgraph-dead-letters"
"""Where `flowgraph run` keeps the dead letters of a ``memory://`` broker and store."""

T = TypeVar("T")

STOP_GRACE = 3.0
"""Seconds a running worker gets after a stop request to finish its batch and commit before
it is cancelled (a worker still starting is cancelled at once)."""


@attrs.frozen
class RunResult:
    """What a finished run leaves: its counters and the final contents of its tables."""

    stats: RunStats
    tables: dict[str, Any]
    """Per table name: a dict of keys and values, or a `WindowedTableView` for a windowed one."""
    step_counts: dict[str, int]
    """Records out of each step (see docs/concepts/graph.md, "Dead letters")."""
    dead_letters_by_step: list[DeadLetterSummary] = attrs.field(factory=list)
    """The dead letters per step and error type, in the order first met, with the first
    of each kind as an example."""
    dead_letter_file: str | None = None
    """The JSON-lines file the dead letters were also written to, if any were."""

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
    graph: Graph | App | PhysicalPlan,
    *,
    broker: str | None = None,
    store: str | None = None,
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
    max_dead_letters: int | float | None = None,
    dead_letters_file: str | os.PathLike[str] | None = None,
    waiting_report: float | None = None,
    end_of_input: bool | None = None,
    kafka_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    create_topics: bool | None = None,
) -> RunResult:
    """Async form of `run`, for callers that already have an event loop.

    `on_worker` gets the worker as soon as it exists, before it restores state (a view can
    then poll its counters, restore progress included); `on_start` gets it once started.
    `crash_point` is a fault-injection hook for tests (`flowgraph.runtime.faults`).
    """
    plan = graph if isinstance(graph, PhysicalPlan) else make_plan(graph)
    # an App names its broker and store, as in Faust; the embedded ones otherwise
    broker = broker or getattr(graph, "broker", None) or "memory://"
    store = store or getattr(graph, "store", None) or "memory://"
    DeadLetterLimit.of(max_dead_letters)  # a bad limit is a usage error before anything runs
    transport = open_transport(broker, kafka_config=kafka_config, create_topics=create_topics)
    backend = open_backend(store)
    commits: dict[str, Any] = {}
    if commit_every is not None:
        commits["commit_every"] = commit_every
    if commit_interval is not None:
        commits["commit_interval"] = commit_interval
    for name, value in (
        ("max_batch", max_batch),
        ("max_skew", max_skew),
        ("max_idle", max_idle),
        ("waiting_report", waiting_report),
    ):
        if value is not None:
            commits[name] = value
    try:
        worker = Worker(plan, transport, backend, crash_point=crash_point, **commits)
    except BaseException:
        backend.close()
        raise
    path = dead_letter_file(plan.graph_id, transport, backend, dead_letters_file)
    log = DeadLetterLog(path) if path is not None else None
    if log is not None:
        worker.stats.on_dead_letters = log.write
    # On memory:// nothing outside this process can write, so an idle run is a finished one,
    # unless a timer or crontab of the app may write later.
    clocks = any(s.service != "task" for s in plan.logical.services)
    idle_ends = transport.in_process and not clocks if until_idle is None else until_idle
    close = _closes_windows(plan, idle_ends, end_of_input)
    stop = asyncio.Event() if stop is None else stop
    if hasattr(transport, "on_failure"):
        # Kafka: the cluster lost its data. Stop the run; one that hangs on the dead
        # cluster is cut after the stop grace like any other, and raises the loss.
        transport.on_failure = stop.set
    started = False

    Ended = GroupStalledError | DeadLetterLimitError | None

    async def work() -> tuple[dict[str, Any], dict[str, int], Ended]:
        nonlocal started
        if on_worker is not None:
            on_worker(worker)
        await worker.start()
        started = True
        if on_start is not None:
            on_start(worker)
        stalled: GroupStalledError | DeadLetterLimitError | None = None
        try:
            await worker.run(
                until_idle=idle_ends,
                max_events=max_events,
                stop=stop,
                stall_timeout=stall_timeout,
                max_dead_letters=max_dead_letters,
                end_of_input=close,
            )
        except (GroupStalledError, DeadLetterLimitError) as exc:
            stalled = exc
        except Exception as exc:
            failure = getattr(transport, "failure", None)
            check = getattr(transport, "check_lost", None)
            if failure is None and check is not None and not isinstance(exc, FlowgraphError):
                failure = await check()  # a client error: did the cluster lose its data?
            if failure is None:
                raise  # not the cluster: a step or a store failed
            raise failure from None
        failure = getattr(transport, "failure", None)
        if failure is not None:
            raise failure
        if worker.global_tables:  # the copies take in the last commit, for the result
            await worker.global_tables.catch_up()
        joins = {n.id for n in plan.logical.nodes if isinstance(n, StreamJoin)}
        tables = {s.step: worker.table(s.step) for s in plan.stores if s.step not in joins}
        return tables, worker.step_counts(), stalled

    task = asyncio.ensure_future(work())
    safe = [True]  # whether stop() may commit: False once a batch was cut short
    try:
        try:
            tables, counts, stalled = await _finish(task, stop, lambda: started, worker, safe)
        except _Cut as cut:
            failed: BaseException | None = None
            try:
                await worker.stop(commit=safe[0], commit_timeout=STOP_GRACE)
            except BaseException as exc:
                failed = exc
            lost = getattr(transport, "failure", None)
            if lost is not None:  # cut short on a cluster that lost its data: say so
                raise lost from None
            raise Interrupted(cut.why(safe[0], failed)) from None
        except BaseException as first:
            # The first error is what the caller sees; one from closing only goes with it.
            try:
                await worker.stop(commit=safe[0], commit_timeout=STOP_GRACE)
            except BaseException as late:  # a note on the first error, never instead of it
                first.add_note(f"while stopping after it: {type(late).__name__}: {late}")
            raise
        await worker.stop()
    finally:
        if log is not None:
            log.close()
    result = RunResult(
        stats=worker.stats,
        tables=tables,
        step_counts=counts,
        dead_letters_by_step=list(worker.stats.dead_letter_kinds.values()),
        dead_letter_file=log.path if log is not None and log.written else None,
    )
    if stalled is not None:
        stalled.result = result  # what this worker did, for a summary next to the error
        raise stalled
    return result


def dead_letter_file(
    graph_id: str,
    transport: Transport,
    backend: StateBackend,
    given: str | os.PathLike[str] | None,
) -> str | None:
    """Where a run also writes its dead letters as JSON lines, or None for nowhere.

    `given` if set; else, on an in-process broker (whose dead-letter topic ends with the
    process), ``<graph>-dead-letters.jsonl`` in a ``rocksdb://`` store's directory; else
    nowhere (on Kafka the topic keeps them; `flowgraph run` names a file for a ``memory://``
    store itself, see `DEAD_LETTER_DIR`).
    """
    if given is not None:
        return os.fspath(given)
    if transport.in_process and isinstance(backend, RocksDBBackend):
        return os.path.join(backend.directory, f"{graph_id}-dead-letters.jsonl")
    return None


async def _finish(
    task: asyncio.Future[T],
    stop: asyncio.Event | None,
    started: Callable[[], bool],
    worker: Worker,
    safe: list[bool],
) -> T:
    """The result of `task` (a run's body), racing it against `stop`.

    Once `stop` is set, a worker that has started gets `STOP_GRACE` seconds to finish its
    batch (or a rebalance: a commit, a restore), commit and return by itself (`Worker.run`
    checks `stop`); one still starting (connecting, joining) is cancelled at once. Then
    `_Cut` is raised. Cancelling this coroutine (a second signal) cancels the task at once too.
    `safe[0]` then says whether committing what was processed is still safe: not if the
    task was cut inside a batch or a commit.
    """
    try:
        if stop is not None and not task.done():
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if started() and not task.done():
                await asyncio.wait([task], timeout=STOP_GRACE)
            if not task.done():
                cut = _Cut(started(), started() and _rebalancing(worker))
                await _cut(task, worker, safe)
                raise cut
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await _cut(task, worker, safe)
        raise


def _rebalancing(worker: Worker) -> bool:
    """True while a rebalance holds the worker (committing for it, or restoring state for
    an assignment), which the run loop waits for: a stop that cuts it says so."""
    if worker.phase == "restoring":
        return True
    return not worker.transport.in_process and not worker._joined and worker._lock.locked()


async def _cut(task: asyncio.Future[Any], worker: Worker, safe: list[bool]) -> None:
    """Cancel `task` and wait for it to end, noting whether it was inside a batch or a commit
    (the worker holds its lock there): then nothing is committed, as after a crash."""
    if task.done():
        return
    safe[0] = not worker._lock.locked()  # held by a batch, a commit or an assignment
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


class _Cut(Exception):
    """`_finish` cancelled the run's body after a stop request; `why` says what that left."""

    def __init__(self, started: bool, rebalancing: bool) -> None:
        super().__init__()
        self.started = started
        self.rebalancing = rebalancing

    def why(self, safe: bool, failed: BaseException | None) -> str:
        """One sentence: where the run was cut and what is committed (`failed`: what
        stopping raised, e.g. a commit to a broker that went away)."""
        if not self.started:
            return "stopped before the worker started; nothing was processed"
        if self.rebalancing:
            return (
                "stopped in a rebalance (restoring state, or committing before partitions "
                "move); the next run goes on from what is committed and restored"
            )
        if not safe:
            return (
                "stopped in the middle of a batch or a commit; what it processed since its "
                "last commit is processed again by the next run"
            )
        if failed is not None:
            reason = " ".join(str(failed).split()) or type(failed).__name__
            return (
                f"stopped while it was running, but committing what it processed failed "
                f"({reason}); that is processed again by the next run"
            )
        return "stopped while it was running; everything it processed is committed"


def run(
    graph: Graph | App | PhysicalPlan,
    *,
    broker: str | None = None,
    store: str | None = None,
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
    max_dead_letters: int | float | None = None,
    dead_letters_file: str | os.PathLike[str] | None = None,
    waiting_report: float | None = None,
    end_of_input: bool | None = None,
    kafka_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    create_topics: bool | None = None,
) -> RunResult:
    """Run `graph` until it is idle (memory://, or `until_idle=True`), `max_events`, or a signal.

    `broker` and `store` default to an App's own ``broker=`` and ``store=``, else to the
    embedded ``memory://``.

    On memory:// an app with a timer or a crontab is not done when idle (they may send more),
    so it runs until `max_events` or a signal unless `until_idle=True`; an until-idle run
    waits for the app's tasks to end (docs/concepts/services.md).

    SIGINT and SIGTERM stop it cleanly: the current batch finishes, state is flushed and
    offsets are committed. A worker still starting (connecting, joining) stops at once, and
    one that has not stopped `STOP_GRACE` seconds after the signal (a batch or a restore
    that goes on), or gets a second one, is cut short; both raise `Interrupted`. Kafka
    clients and stores are closed on every way out.

    `max_batch` (records fetched per partition at a time), `max_skew` (seconds of timestamp
    a run of one partition may go past another's next record; 0: strict timestamp order)
    and `max_idle` (seconds to wait for a partition not read to its end) tune how records
    are scheduled; see docs/concepts/windows.md.
    On Kafka, idle means the whole consumer group is done: every
    partition of every input topic, repartition topics included, consumed and committed.
    When the group makes no progress for `stall_timeout` seconds (default: three session
    timeouts, at least 30 s), an until-idle run stops and raises `GroupStalledError`, which
    says what is left and holds this worker's `RunResult` in its `result`.

    `max_dead_letters` stops the run once its dead letters exceed a count (an int), or a
    fraction of the source records processed (a float below 1, judged once 1,000 source
    records are in): everything processed is committed, then `DeadLetterLimitError` is
    raised, with this worker's `RunResult` in its `result`. Each dead letter is also
    appended as a JSON line to `dead_letters_file`; by default, with the embedded broker
    and a ``rocksdb://DIR`` store, to ``DIR/<graph>-dead-letters.jsonl``.

    A worker that has no partition, or no progress, for `waiting_report` seconds (default
    30) logs what it waits for (logger ``flowgraph``; see `Worker.waiting_for`).

    `end_of_input`: when the run is idle, its input has ended: every open window is closed
    (and, with ``emit="close"``, emitted) before the run stops, as at the end of a bounded
    source. The default is on for a graph whose sources are all `source_from`, off for one
    that reads topics; it needs an until-idle run. See docs/concepts/windows.md.

    `kafka_config` (a TOML file's path, or its contents as a dict) and the environment
    configure a ``kafka://`` broker (see docs/how-to/secured-cluster.md); `create_topics`
    lets the run create missing source topics instead of stopping at start.
    """

    async def main() -> RunResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        this = asyncio.current_task()
        forced = [False]

        def on_signal() -> None:
            if not stop.is_set():
                stop.set()  # finish the batch, commit, return (see `_finish`)
            elif this is not None:
                forced[0] = True
                this.cancel()  # a second signal: stop now

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
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
                max_dead_letters=max_dead_letters,
                dead_letters_file=dead_letters_file,
                waiting_report=waiting_report,
                end_of_input=end_of_input,
                kafka_config=kafka_config,
                create_topics=create_topics,
            )
        except asyncio.CancelledError:
            if not forced[0]:
                raise
            msg = "stopped at once by a second signal; what it processed since its last commit "
            msg += "is processed again by the next run"
            raise Interrupted(msg) from None
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return run_blocking(main)


def _closes_windows(plan: PhysicalPlan, until_idle: bool, end_of_input: bool | None) -> bool:
    """Whether an idle run closes its windows: asked for, or by default when every source is
    a bounded `source_from` feed (a topic may get more records after the run)."""
    if end_of_input is None:
        return until_idle and not any(t.role == "source" for t in plan.topics)
    if end_of_input and not until_idle:
        msg = (
            "end_of_input=True closes windows when an until-idle run finds its input ended; "
            "pass until_idle=True too"
        )
        raise ConfigurationError(msg)
    return end_of_input


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
