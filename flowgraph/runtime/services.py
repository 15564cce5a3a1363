"""Timers, crontabs and tasks of an app (``@app.timer``, ``@app.crontab``, ``@app.task``),
run beside the records by the worker.

The plan lists them (`planner.logical.Service`); the worker's `Services` starts them once the
worker has started and its first assignment is restored (Faust starts them once the worker is
ready), and stops them (cancelled, a bounded wait) before its last commit:

- a timer runs every `interval` seconds, the first time one interval after the start, as in
  Faust; the times are fixed (start + n * interval), a run that overruns skips the times it
  missed, and a timer never runs twice at once;
- a crontab runs at the minutes its five-field schedule names (`Cron`), in its time zone
  (a tzinfo or a zone name; UTC when none is given);
- a task runs once.

Each runs in a context where `flowgraph.runtime.agent.WORKER` is the worker, so it can
``await topic.send(...)`` (`Worker.send`) and read tables; a table write raises (tables
change only in agents, at a record's offset). A function that takes a parameter is called
with `Service.arg` (the App that declared it, as Faust passes the app).

An exception is logged as one line (logger ``flowgraph``; the traceback too when that logger
is at DEBUG) and counted: a timer or crontab runs again at its next time, a task ends.

``on_leader=True``: it runs only on the group's leader, the worker assigned partition 0 of the
plan's first source topic (on ``memory://``, the one worker). Leadership is read at each run,
so it follows rebalances; a run on a worker that is not the leader is skipped (and counted).

Under `flowgraph.testing.TestDriver` the services run on the driver's clock (`manual`): no
timer sleeps; `advance_time` runs each timer and crontab due up to the new time, in order.
"""

from __future__ import annotations

import asyncio
import calendar
import contextvars
import datetime as dt
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.agent import CURRENT, WORKER
from planner import logical as lg

if TYPE_CHECKING:
    from flowgraph.runtime.worker import Worker

__all__ = ["Cron", "ServiceStats", "Services", "check_cron", "check_timezone", "zone"]

log = logging.getLogger("flowgraph")

STOP_WAIT = 2.0
"""Seconds the services get to end once cancelled when the worker stops."""
READY_POLL = 0.05
"""Seconds between two looks at whether the worker has its first assignment restored."""
SETTLE_TURNS = 1000
"""Event-loop turns `TestDriver` gives its tasks at start to finish (they do, unless they
wait on wall-clock time)."""

# -- cron schedules ----------------------------------------------------------------------------

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_MONTHS = {n.lower(): i for i, n in enumerate(calendar.month_abbr) if n}
_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FORM = "write five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'"
_SEARCH_DAYS = 50 * 366
"""How far ahead `Cron.next_after` looks (a schedule like Feb 29 on a Monday is rare)."""


class Cron:
    """A parsed crontab(5) schedule: ``*``, numbers, names (jan, mon), lists, ranges and
    steps in five fields. When both day fields are restricted (neither starts with ``*``), a
    day matches either, as in cron; else it must match both."""

    __slots__ = ("days", "dom_star", "dow_star", "hours", "minutes", "months", "text", "weekdays")

    def __init__(self, text: str) -> None:
        self.text = text
        spec = _MACROS.get(text.strip().lower(), text) if isinstance(text, str) else text
        fields = spec.split() if isinstance(spec, str) else None
        if fields is None or len(fields) != 5:
            got = "not a string" if fields is None else f"{len(fields)} fields"
            if isinstance(text, str) and text.strip().lower() == "@reboot":
                got = "@reboot runs at start: use @app.task instead"
            msg = f"crontab schedule {text!r} is not valid ({got}); {_FORM}"
            raise ConfigurationError(msg)
        values = [
            _field(field, name, low, high, text)
            for field, (name, low, high) in zip(fields, _FIELDS, strict=True)
        ]
        self.minutes = sorted(values[0])
        self.hours = sorted(values[1])
        self.days = frozenset(values[2])
        self.months = frozenset(values[3])
        self.weekdays = frozenset(d % 7 for d in values[4])  # 7 is Sunday too
        self.dom_star = fields[2].startswith("*")
        self.dow_star = fields[4].startswith("*")

    def __repr__(self) -> str:
        return f"Cron({self.text!r})"

    def day_matches(self, day: dt.date) -> bool:
        """Whether `day` is one of the schedule's days (its month checked apart)."""
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def next_after(self, after: float, tz: dt.tzinfo | None = None) -> float | None:
        """The first time (epoch seconds) after `after` the schedule names, read as wall
        time in `tz` (UTC if None); None if it names none in the next fifty years.

        A wall time that does not exist (the hour skipped when clocks go forward) is taken
        at the offset before the change, so it runs just after the gap; a wall time that
        happens twice (clocks go back) runs the first time only.
        """
        tz = dt.UTC if tz is None else tz
        local = dt.datetime.fromtimestamp(after, tz).replace(tzinfo=None, second=0, microsecond=0)
        start = local + dt.timedelta(minutes=1)
        day = start.date()
        last = day + dt.timedelta(days=_SEARCH_DAYS)
        while day <= last:
            if day.month not in self.months:
                day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
                continue
            if self.day_matches(day):
                first = day == start.date()
                for h in self.hours:
                    if first and h < start.hour:
                        continue
                    for m in self.minutes:
                        if first and h == start.hour and m < start.minute:
                            continue
                        ts = _aware(dt.datetime(day.year, day.month, day.day, h, m), tz)
                        if ts > after:
                            return ts
            day += dt.timedelta(days=1)
        return None


def _aware(naive: dt.datetime, tz: dt.tzinfo) -> float:
    """Epoch seconds of wall time `naive` in `tz` (pytz zones need their ``localize``)."""
    localize = getattr(tz, "localize", None)
    aware = localize(naive) if callable(localize) else naive.replace(tzinfo=tz)
    return float(aware.timestamp())


def _field(field: str, name: str, low: int, high: int, text: str) -> set[int]:
    """The values one cron field names."""
    names = _MONTHS if name == "month" else _WEEKDAYS if name == "day-of-week" else {}

    def bad(why: str) -> ConfigurationError:
        msg = f"crontab schedule {text!r}: {name} field {field!r} {why}; {_FORM}"
        return ConfigurationError(msg)

    def number(s: str) -> int:
        value = names.get(s.lower())
        if value is None:
            if not s.isdigit():
                why = f"has {s!r}, not a number" + (" or a name" if names else "")
                raise bad(why)
            value = int(s)
        if not low <= value <= high:
            why = f"has {value}, out of range {low}-{high}"
            raise bad(why)
        return value

    out: set[int] = set()
    for item in field.split(","):
        part, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                why = f"has step {step_text!r}, not a positive number"
                raise bad(why)
            step = int(step_text)
        if part == "*":
            first, end = low, high
        elif "-" in part:
            a, _, b = part.partition("-")
            first, end = number(a), number(b)
            if first > end:
                why = f"has range {part!r}, which goes backwards"
                raise bad(why)
        else:
            first = number(part)
            end = high if slash else first  # "5/15": from 5 to the end, every 15
        out.update(range(first, end + 1, step))
    return out


def check_cron(cron: str) -> None:
    """Raise ConfigurationError unless `cron` is a five-field schedule that ever runs."""
    schedule = Cron(cron)
    if schedule.next_after(0.0) is None:
        msg = f"crontab schedule {cron!r} names no time that exists (like February 30)"
        raise ConfigurationError(msg)


def zone(tz: object) -> dt.tzinfo:
    """The time zone a crontab runs in: a tzinfo, a zone name (``"Europe/Paris"``) or None
    (UTC, Faust's default)."""
    if tz is None:
        return dt.UTC
    if isinstance(tz, dt.tzinfo):
        return tz
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            msg = (
                f"crontab timezone {tz!r} is not a known zone name; pass a tzinfo or a name "
                "like 'Europe/Paris' (the tzdata package supplies them where the system has none)"
            )
            raise ConfigurationError(msg) from None
    msg = f"crontab timezone must be a tzinfo or a zone name, not {tz!r}"
    raise ConfigurationError(msg)


def check_timezone(tz: object) -> None:
    """Raise ConfigurationError unless `tz` names a time zone (see `zone`)."""
    zone(tz)


# -- running them ------------------------------------------------------------------------------


class ServiceStats:
    """What one service has done so far (for the live view and tests)."""

    __slots__ = ("errors", "kind", "last_error", "name", "runs", "skipped")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.runs = 0
        """Times its function was called."""
        self.errors = 0
        """Of those, times it raised."""
        self.skipped = 0
        """Times it was due but did not run: ``on_leader`` on a worker that does not lead."""
        self.last_error = ""

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}: {self.runs} runs, {self.errors} errors>"


class _Entry:
    """One service with its schedule state."""

    __slots__ = ("cron", "due", "fn", "service", "stats", "takes_arg", "tz")

    def __init__(self, service: lg.Service) -> None:
        self.service = service
        self.fn: Callable[..., Any] = service.fn  # type: ignore[assignment]
        try:
            self.takes_arg = bool(inspect.signature(self.fn).parameters)
        except (TypeError, ValueError):
            self.takes_arg = False
        self.stats = ServiceStats(service.id, service.service)
        self.cron = Cron(service.cron) if service.service == "crontab" and service.cron else None
        self.tz = zone(service.timezone) if self.cron is not None else None
        self.due: float | None = None
        """Manual clock: when it runs next (None: never again)."""

    def next_at(self, after: float, anchor: float) -> float | None:
        """Its first time after `after`: timers count intervals from `anchor`."""
        if self.cron is not None:
            return self.cron.next_after(after, self.tz)
        interval = self.service.interval or 0.0
        if interval <= 0:
            return None
        n = int((after - anchor) // interval) + 1
        due = anchor + n * interval
        while due <= after:  # float rounding
            n += 1
            due = anchor + n * interval
        return due

    def call(self) -> Coroutine[Any, Any, Any]:
        result = self.fn(self.service.arg) if self.takes_arg else self.fn()
        if not inspect.isawaitable(result):
            msg = (
                f"@app.{self.service.service} {self.service.fn_name or self.service.id} "
                "returned no awaitable; define it with async def"
            )
            raise ConfigurationError(msg)
        return result  # type: ignore[return-value]


class Services:
    """The timers, crontabs and tasks of `worker`'s plan, started with it and stopped
    before its last commit (see the module's docstring)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.manual = False
        """Set by `TestDriver` before the start: run on the worker's clock, fired by `fire`."""
        self._entries = [_Entry(s) for s in worker.plan.logical.services]
        self._tasks: list[tuple[_Entry, asyncio.Task[None]]] = []
        self._ctx: contextvars.Context | None = None
        self._anchor = 0.0
        plan = worker.plan
        sources = [t.name for t in plan.topics if t.role == "source"]
        entries = [t for sub in plan.subtopologies for t in sub.source_topics]
        first = (sources or entries)[:1]
        self._leader_tp = (first[0], 0) if first else None

    @property
    def stats(self) -> list[ServiceStats]:
        """Per service, in declaration order: runs, errors, skips."""
        return [e.stats for e in self._entries]

    def is_leader(self) -> bool:
        """Whether this worker leads the group now: it is assigned partition 0 of the plan's
        first source topic (with no topic to read, each worker leads itself)."""
        consumer = self.worker._consumer
        if consumer is None:
            return False
        if self._leader_tp is None:
            return True
        return self._leader_tp in consumer.assignment()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start every service (the worker has started). Under a manual clock only the
        tasks start; `next_due` and `fire` run the rest."""
        if not self._entries:
            return
        ctx = contextvars.copy_context()
        ctx.run(WORKER.set, self.worker)
        ctx.run(CURRENT.set, None)
        self._ctx = ctx
        loop = asyncio.get_running_loop()
        if self.manual:
            self._anchor = self.worker.clock()
            for e in self._entries:
                if e.service.service == "task":
                    self._tasks.append((e, loop.create_task(self._run(e), context=ctx)))
                else:
                    e.due = e.next_at(self._anchor, self._anchor)
            return
        for e in self._entries:
            task = loop.create_task(self._loop(e), context=ctx)
            task.set_name(f"{e.service.service} {e.service.id}")
            self._tasks.append((e, task))

    async def stop(self, timeout: float = STOP_WAIT) -> None:
        """Cancel every service and wait for them to end, `timeout` seconds at most."""
        tasks = [t for _, t in self._tasks]
        self._tasks = []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("flowgraph service ended with %s", _one_line(exc))
        if pending:
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.warning(
                "flowgraph: %d services did not end within %.0f s of being cancelled (%s)",
                len(pending),
                timeout,
                names,
            )

    def tasks_done(self) -> bool:
        """Whether every ``@app.task`` has ended: an until-idle run waits for them (timers
        never end). Under a manual clock the driver decides, so always True."""
        if self.manual:
            return True
        return all(t.done() for e, t in self._tasks if e.service.service == "task")

    # -- real clock ----------------------------------------------------------------------

    async def _ready(self) -> None:
        """Wait until the worker has joined its group and restored its first assignment."""
        manager = self.worker._manager
        while not manager.joined or manager.pending:
            await asyncio.sleep(READY_POLL)

    async def _loop(self, e: _Entry) -> None:
        await self._ready()
        if e.service.service == "task":
            await self._run(e)
            return
        # timers on the monotonic clock (immune to clock changes), crontabs on wall time
        clock: Callable[[], float] = time.monotonic if e.cron is None else time.time
        after = anchor = clock()
        while True:
            due = e.next_at(after, anchor)
            if due is None:
                return
            while (now := clock()) < due:
                await asyncio.sleep(min(due - now, 60.0))  # wall time may jump: look again
            await self._run(e)
            after = max(due, clock())

    # -- manual clock (TestDriver) --------------------------------------------------------

    async def settle(self) -> None:
        """Let the tasks run until they end (at most `SETTLE_TURNS` loop turns: one that
        waits on wall-clock time goes on in the background)."""
        for _ in range(SETTLE_TURNS):
            if all(t.done() for _, t in self._tasks):
                return
            await asyncio.sleep(0)

    def next_due(self, until: float) -> float | None:
        """The earliest time a timer or crontab is due, if it is at most `until`."""
        dues = [e.due for e in self._entries if e.due is not None]
        first = min(dues, default=None)
        return first if first is not None and first <= until else None

    async def fire(self, at: float) -> None:
        """Run, in declaration order, each timer and crontab due at `at` (the worker's
        clock reads `at`), then schedule its next time."""
        assert self._ctx is not None, "start() first"
        loop = asyncio.get_running_loop()
        for e in self._entries:
            if e.due is not None and e.due <= at:
                await loop.create_task(self._run(e), context=self._ctx)
                e.due = e.next_at(at, self._anchor)

    # -- one run -------------------------------------------------------------------------

    async def _run(self, e: _Entry) -> None:
        """Call the service's function once (if it may run here), logging what it raises."""
        s = e.service
        stats = e.stats
        if s.on_leader and not self.is_leader():
            stats.skipped += 1
            return
        stats.runs += 1
        try:
            await e.call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stats.errors += 1
            stats.last_error = _one_line(exc)
            after = "it ended" if s.service == "task" else "it runs again at its next time"
            log.error(
                "flowgraph %s %r failed: %s; %s",
                s.service,
                s.fn_name or s.id,
                stats.last_error,
                after,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
