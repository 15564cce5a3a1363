"""What `flowgraph run` shows while a graph runs, and the summary it prints at the end.

The view never sees a record: a task on the worker's event loop reads the worker's counters
(`Worker.stats`, `Worker.step_counts()`) every half second, between batches, so a view costs
the same whether the graph does a thousand events a second or a million. On a terminal it is a
rich `Live` panel (events/s, records per step, lag per partition, dead letters, restore, and
the worker's phase with what it waits for while it is not processing); anywhere else it is one
plain log line every two seconds, flushed, so it reads well in a log file or a CI job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from flowgraph._run import RunResult
    from flowgraph.runtime.transport import TP
    from flowgraph.runtime.worker import Worker
    from planner.physical import PhysicalPlan

__all__ = ["LiveView", "summary"]

REFRESH = 0.5
"""Seconds between two reads of the counters on a terminal."""
LOG_EVERY = 2.0
"""Seconds between two plain log lines."""
RATE_WINDOW = 3.0
"""The events/s shown is over about this many seconds (the run's average is in the summary)."""
MAX_LAG_ROWS = 8
"""Partitions listed by lag on a terminal; the rest are summed up in one line."""


class LiveView:
    """Shows a running worker; hook it into `fg.run(on_worker=..., on_start=...)`.

    Call `close()` when the run returns or fails: it draws the last numbers and gives the
    terminal back.
    """

    def __init__(
        self, plan: PhysicalPlan, *, out: TextIO | None = None, interactive: bool | None = None
    ) -> None:
        self.plan = plan
        self.out = out if out is not None else sys.stdout
        self.console = Console(file=self.out)
        self.interactive = self.console.is_terminal if interactive is None else interactive
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._lag: dict[TP, int] = {}
        self._order = {n.id: i for i, n in enumerate(plan.logical.nodes)}

    # -- hooks -------------------------------------------------------------------------------

    def attach(self, worker: Worker) -> None:
        """Start watching `worker` (`on_worker` hook: before it restores state)."""
        self._worker = worker
        self._samples.append((time.monotonic(), worker.stats.events))
        if self.interactive:
            self._live = Live(
                self._render(), console=self.console, auto_refresh=False, transient=False
            )
            self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._poll(worker))

    def started(self, worker: Worker) -> None:
        """Say what runs where (`on_start` hook: state restored, signal handlers installed)."""
        restored = worker.stats.restored
        subs, tables = len(self.plan.subtopologies), len(self.plan.stores)
        line = (
            f"running graph {self.plan.graph_id!r} on {worker.transport.url} "
            f"({_count(subs, 'sub-topology', 'sub-topologies')}, {_count(tables, 'table')}, "
            f"state in {worker.backend.url})"
            + (f", restored {restored} changelog records" if restored else "")
            + "; Ctrl-C stops after the current batch"
        )
        self._print(line)

    def close(self) -> None:
        """Stop polling, draw the final numbers, give the terminal back; idempotent."""
        if self._task is not None:
            self._task.cancel()  # asyncio.run() has usually cancelled it already
            self._task = None
        if self._live is not None:
            if self._worker is not None:
                self._lag = {}  # measured while running; the final frame would show it stale
                self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    # -- polling -----------------------------------------------------------------------------

    async def _poll(self, worker: Worker) -> None:
        every = REFRESH if self.interactive else LOG_EVERY
        try:
            while True:
                await asyncio.sleep(every)
                self._lag = await _lag(worker)
                if self._live is not None:
                    self._live.update(self._render(), refresh=True)
                else:
                    self._print(self._log_line())
        except Exception as exc:  # a display problem must never stop the run
            self._print(f"live view stopped: {type(exc).__name__}: {exc}")

    def _rate(self) -> float:
        """Events per second over the last few seconds."""
        assert self._worker is not None
        now, events = time.monotonic(), self._worker.stats.events
        samples = self._samples
        samples.append((now, events))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, before = samples[0]
        return (events - before) / (now - then) if now > then else 0.0

    def _log_line(self) -> str:
        assert self._worker is not None
        stats = self._worker.stats
        line = (
            f"processed {stats.events} events ({self._rate():.0f}/s), "
            f"dead letters {stats.dead_letters}"
        )
        if self._lag:
            line += f", lag {sum(self._lag.values())}"
        if stats.late:
            line += f", late {stats.late}"
        if stats.restored:
            line += f", restored {stats.restored} changelog records"
        services = self._worker.services.stats
        if services:
            runs, errors = sum(s.runs for s in services), sum(s.errors for s in services)
            line += f", services {runs} runs" + (f" {errors} errors" if errors else "")
        tasks = _tasks(self._worker)
        if tasks:
            line += f", tasks {tasks}"
        global_tables = self._worker.global_tables
        if global_tables:
            behind = sum(n or 0 for n in global_tables.lag().values())
            line += f", global tables lag {behind}"
        waiting = self._worker.waiting_for()
        if waiting:
            line += f"; {waiting}"
        return line

    def _render(self) -> Group:
        assert self._worker is not None
        worker = self._worker
        stats = worker.stats
        head = Text.assemble(
            (f"{self.plan.graph_id}", "bold"),
            f"  {stats.elapsed:6.1f} s  ",
            (f"{stats.events}", "bold"),
            " events  ",
            (f"{self._rate():.0f}", "bold"),
            " events/s  ",
            ("dead letters ", "red" if stats.dead_letters else ""),
            (f"{stats.dead_letters}", "bold red" if stats.dead_letters else "bold"),
        )
        parts: list[Any] = [head]
        phase, waiting = worker.phase, worker.waiting_for()
        if phase != "running" or waiting:
            style = "yellow" if phase in ("waiting", "running") else "cyan"
            parts.append(Text.assemble((phase, f"bold {style}"), f"  {waiting or ''}"))
        if stats.late:
            parts.append(Text(f"late records {stats.late} (too late for a closed window)"))
        if stats.restored:
            parts.append(Text(f"restored {stats.restored} changelog records"))
        tasks = _tasks(worker)
        if tasks:
            parts.append(Text(f"tasks {tasks}"))
        steps = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        steps.add_column("step")
        steps.add_column("records", justify="right")
        for step, n in self._ordered(worker.step_counts()):
            steps.add_row(step, str(n))
        parts.append(steps)
        if self._lag:
            lag = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            lag.add_column("partition")
            lag.add_column("lag", justify="right")
            ranked = sorted(self._lag.items(), key=lambda item: (-item[1], item[0]))
            for (topic, partition), n in ranked[:MAX_LAG_ROWS]:
                lag.add_row(f"{topic}[{partition}]", str(n))
            rest = ranked[MAX_LAG_ROWS:]
            if rest:
                lag.add_row(f"{len(rest)} more partitions", str(sum(n for _, n in rest)))
            parts.append(lag)
        if worker.services.stats:
            parts.append(_services(worker))
        return Group(*parts)

    def _ordered(self, counts: dict[str, int]) -> list[tuple[str, int]]:
        """Step counts in the order the graph defines its steps."""
        last = len(self._order)
        return sorted(counts.items(), key=lambda item: (self._order.get(item[0], last), item[0]))

    def _print(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.write(line + "\n")
            with contextlib.suppress(ValueError, OSError):  # a closed or odd stream
                self.out.flush()


def _services(worker: Worker) -> Table:
    """The app's timers, crontabs and tasks with their runs and errors so far."""
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("service")
    table.add_column("kind")
    table.add_column("runs", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("last error")
    for s in worker.services.stats:
        runs = str(s.runs) + (f" ({s.skipped} not leader)" if s.skipped else "")
        error = s.last_error if len(s.last_error) <= 60 else s.last_error[:59] + "…"
        table.add_row(s.name, s.kind, runs, str(s.errors), Text(error, style="red"))
    return table


def _tasks(worker: Worker) -> str:
    """The tasks a worker of a group holds by state, with its standbys' total lag:
    ``3 running, 2 standby (lag 120)``; empty in process (one member runs everything)."""
    if worker.transport.in_process:
        return ""
    report = worker.task_report()
    states: dict[str, int] = {}
    lag = 0
    for state, behind in report.values():
        states[state] = states.get(state, 0) + 1
        lag += behind or 0
    order = ("running", "restoring", "suspended", "standby")
    shown = ", ".join(f"{states[s]} {s}" for s in order if s in states)
    if "standby" in states:
        shown += f" (lag {lag})"
    return shown


async def _lag(worker: Worker) -> dict[TP, int]:
    """Records not yet committed, per assigned input partition.

    `RunStats.lag` when the worker fills it. Until then, in-process transports (where both
    reads are dictionary lookups) are measured here; elsewhere there is no lag to show.
    """
    if worker.stats.lag:
        return dict(worker.stats.lag)
    # Stopgap until the worker maintains RunStats.lag: the consumer is not public on Worker.
    consumer = getattr(worker, "_consumer", None)
    if consumer is None or not worker.transport.in_process:
        return {}
    lag: dict[TP, int] = {}
    for tp in list(worker.tasks):
        end = await worker.transport.end_offset(tp)
        committed = await consumer.committed(tp)
        lag[tp] = max(0, end - (committed or 0))
    return lag


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def summary(result: RunResult, plan: PhysicalPlan) -> str:
    """The end-of-run report: events, time, rate, dead letters (by step and error type, with
    an example each, and the file that keeps them), records per step, table sizes."""
    stats = result.stats
    order = {n.id: i for i, n in enumerate(plan.logical.nodes)}
    steps = sorted(
        result.step_counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])
    )
    width = max([len(s) for s, _ in steps] + [len(t) for t in result.tables] + [4])
    dead: dict[str, int] = {}
    for kind in result.dead_letters_by_step:
        dead[kind.step] = dead.get(kind.step, 0) + kind.count
    where = f"topic {plan.dlq!r}"
    if result.dead_letter_file is not None:
        where += f", also in {result.dead_letter_file}"
    lines = [
        f"summary of graph {plan.graph_id!r}",
        f"  events:       {stats.events} in {stats.elapsed:.2f} s ({stats.rate:.0f} events/s)",
        f"  dead letters: {stats.dead_letters}" + (f" ({where})" if stats.dead_letters else ""),
    ]
    lines += [f"    {kind.describe()}" for kind in result.dead_letters_by_step]
    if stats.skipped:
        lines.append(f"  skipped:      {stats.skipped} (already applied before a restart)")
    if stats.late:
        lines.append(f"  late:         {stats.late} (too late for a closed window)")
    if stats.restored:
        lines.append(f"  restored:     {stats.restored} changelog records")
    lines.append("  steps:")
    lines += [
        f"    {step:<{width}}  {n:>10}"
        + (f"  ({dead[step]} dead letters)" if dead.get(step) else "")
        for step, n in steps
    ]
    if result.tables:
        lines.append("  tables:")
        for name, table in result.tables.items():
            keys = len(table)
            unit = ("window" if keys == 1 else "windows") if hasattr(table, "windows") else None
            unit = unit or ("key" if keys == 1 else "keys")
            lines.append(f"    {name:<{width}}  {keys:>10} {unit}")
    return "\n".join(lines)
