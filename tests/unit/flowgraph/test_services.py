"""Cron schedules and timer times of `flowgraph.runtime.services`, and how plans show them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.errors import ConfigurationError
from flowgraph.runtime.services import Cron, _Entry, check_cron, zone
from planner import logical as lg
from planner.describe import PlanDescription, describe

UTC = dt.UTC
FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]

# -- an independent oracle: each field as (kind, a, b, step) items, checked value by value --

Item = tuple[str, int, int, int]


def item_text(item: Item) -> str:
    kind, a, b, step = item
    base = {"star": "*", "one": f"{a}", "range": f"{a}-{b}"}[kind]
    return (
        base if (step == 1 and kind != "one") or (kind == "one" and step == 0) else f"{base}/{step}"
    )


def item_matches(item: Item, v: int, high: int) -> bool:
    kind, a, b, step = item
    if kind == "star":
        lo, hi = a, high
    elif kind == "range":
        lo, hi = a, b
    else:
        lo, hi = a, (a if step == 0 else high)
    return lo <= v <= hi and (v - lo) % max(step, 1) == 0


@st.composite
def items(draw: st.DrawFn, low: int, high: int) -> Item:
    kind = draw(st.sampled_from(["star", "one", "range"]))
    a = draw(st.integers(low, high))
    b = draw(st.integers(a, high))
    if kind == "star":
        return ("star", low, high, draw(st.integers(1, 5)))
    if kind == "one":
        return ("one", a, a, draw(st.sampled_from([0, 0, 2, 7])))
    return ("range", a, b, draw(st.integers(1, 4)))


@st.composite
def schedules(draw: st.DrawFn) -> list[list[Item]]:
    return [draw(st.lists(items(lo, hi), min_size=1, max_size=3)) for lo, hi in FIELDS]


def field_matches(fields: list[list[Item]], i: int, v: int) -> bool:
    return any(item_matches(it, v, FIELDS[i][1]) for it in fields[i])


def oracle_day(fields: list[list[Item]], t: dt.datetime) -> bool:
    """cron(5): when both day fields are restricted a day matches either, else both."""
    dow = t.isoweekday() % 7
    dom_ok = field_matches(fields, 2, t.day)
    dow_ok = field_matches(fields, 4, dow) or (dow == 0 and field_matches(fields, 4, 7))
    dom_star = fields[2][0][0] == "star"
    dow_star = fields[4][0][0] == "star"
    day = (dom_ok and dow_ok) if dom_star or dow_star else (dom_ok or dow_ok)
    return day and field_matches(fields, 3, t.month)


def oracle_next(fields: list[list[Item]], after: float, horizon_days: int) -> float | None:
    """Minute by minute, skipping days and hours that do not match."""
    t = dt.datetime.fromtimestamp(after, UTC).replace(second=0, microsecond=0)
    t += dt.timedelta(minutes=1)
    end = t + dt.timedelta(days=horizon_days)
    while t < end:
        if not oracle_day(fields, t):
            t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0)
        elif not field_matches(fields, 1, t.hour):
            t = (t + dt.timedelta(hours=1)).replace(minute=0)
        elif not field_matches(fields, 0, t.minute):
            t += dt.timedelta(minutes=1)
        else:
            return t.timestamp()
    return None


@settings(max_examples=150, deadline=None)
@given(
    fields=schedules(),
    after=st.floats(0, 4_000_000_000, allow_nan=False).map(lambda x: round(x, 3)),
)
def test_next_time_is_the_first_minute_the_fields_name(fields, after):
    text = " ".join(",".join(item_text(it) for it in f) for f in fields)
    got = Cron(text).next_after(after)
    horizon = 800  # days: time enough for any schedule but a rare calendar day
    expected = oracle_next(fields, after, horizon)
    if expected is None:
        assert got is None or got - after > (horizon - 1) * 86400
    else:
        assert got == expected, text


@given(st.floats(0, 4_000_000_000, allow_nan=False))
def test_every_minute_runs_at_the_next_minute(after):
    got = Cron("* * * * *").next_after(after)
    assert got is not None
    assert got % 60 == 0
    assert 0 < got - after <= 60


def test_names_macros_and_sunday_as_seven():
    assert Cron("0 9 * jan-mar mon-fri").weekdays == {1, 2, 3, 4, 5}
    assert Cron("0 9 * jan-mar MON-FRI").months == {1, 2, 3}
    assert Cron("0 0 * * 7").weekdays == Cron("0 0 * * sun").weekdays == {0}
    # 2026-12-06 is a Sunday
    sunday = dt.datetime(2026, 12, 6, tzinfo=UTC).timestamp()
    assert Cron("@weekly").next_after(sunday - 1) == sunday
    assert Cron("@hourly").next_after(sunday) == sunday + 3600
    assert Cron("5/20 * * * *").minutes == [5, 25, 45]


def test_both_day_fields_restricted_means_either():
    # the 13th, or any Friday: from Thursday 2026-11-12 the next is Friday the 13th, then
    # Friday the 20th; 2026-12-13 is a Sunday and still runs
    cron = Cron("0 0 13 * fri")
    nov12 = dt.datetime(2026, 11, 12, tzinfo=UTC).timestamp()
    first = cron.next_after(nov12)
    assert first == dt.datetime(2026, 11, 13, tzinfo=UTC).timestamp()
    assert cron.next_after(first) == dt.datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    dec12 = dt.datetime(2026, 12, 12, 1, tzinfo=UTC).timestamp()
    assert cron.next_after(dec12) == dt.datetime(2026, 12, 13, tzinfo=UTC).timestamp()
    # a star in one day field: both must match (Friday the 13th only)
    star = Cron("0 0 13 * */1")
    assert star.next_after(nov12) == dt.datetime(2026, 11, 13, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("* * * *", "4 fields"),
        ("* * * * * *", "6 fields"),
        ("60 * * * *", "minute field '60' has 60, out of range 0-59"),
        ("* 24 * * *", "out of range 0-23"),
        ("* * 0 * *", "out of range 1-31"),
        ("* * * 13 *", "out of range 1-12"),
        ("* * * * 8", "out of range 0-7"),
        ("*/0 * * * *", "not a positive number"),
        ("5-1 * * * *", "goes backwards"),
        ("x * * * *", "'x', not a number"),
        ("* * * foo *", "not a number or a name"),
        ("@reboot", "use @app.task"),
        ("0 0 30 2 *", "February 30"),
    ],
)
def test_bad_schedules_say_why_in_one_sentence(schedule, words):
    with pytest.raises(ConfigurationError) as err:
        check_cron(schedule)
    text = str(err.value)
    assert words in text
    assert "\n" not in text
    assert schedule in text


def test_crontab_decorator_checks_schedule_and_zone():
    app = fg.App("cronbad")
    with pytest.raises(ConfigurationError, match="out of range 0-23"):
        app.crontab("0 25 * * *")
    with pytest.raises(ConfigurationError, match="not a known zone name"):
        app.crontab("0 1 * * *", timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="tzinfo or a zone name"):
        app.crontab("0 1 * * *", timezone=3)


def test_zones():
    assert zone(None) is UTC
    assert zone("Europe/Paris") == ZoneInfo("Europe/Paris")
    tz = dt.timezone(dt.timedelta(hours=5))
    assert zone(tz) is tz


def test_wall_time_in_a_zone_across_daylight_saving_changes():
    paris = ZoneInfo("Europe/Paris")
    cron = Cron("30 2 * * *")
    # 2026-03-29: 02:00 -> 03:00 in Paris; 02:30 does not exist: it runs just after the gap
    before = dt.datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp()
    assert cron.next_after(before, paris) == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()
    # 2026-10-25: 03:00 -> 02:00; 02:30 happens twice and runs the first time only
    before = dt.datetime(2026, 10, 24, 12, tzinfo=UTC).timestamp()
    first = cron.next_after(before, paris)
    assert first == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    assert cron.next_after(first, paris) == dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC).timestamp()
    # an ordinary day: 18:30 in Paris in winter is 17:30 UTC
    dec = dt.datetime(2026, 12, 6, tzinfo=UTC).timestamp()
    assert Cron("30 18 * * *").next_after(dec, paris) == dec + 17.5 * 3600


def _timer(interval: float) -> _Entry:
    async def fn() -> None:
        pass

    return _Entry(lg.Service(id="t", fn=fn, service="timer", interval=interval))


def test_timer_times_count_from_the_start():
    e = _timer(1.5)
    assert e.next_at(100.0, 100.0) == 101.5  # the first one interval after the start
    assert e.next_at(101.5, 100.0) == 103.0
    assert e.next_at(104.0, 100.0) == 104.5  # a run that overran skips the times it missed
    tenth = _timer(0.1)
    after = 0.0
    for _ in range(1000):  # no drift and always forward, despite float steps
        nxt = tenth.next_at(after, 0.0)
        assert nxt is not None and nxt > after
        after = nxt
    assert after == pytest.approx(100.0)


def test_function_taking_a_parameter_gets_the_app():
    app = fg.App("witharg")

    @app.timer(1.0)
    async def with_app(a):
        return a

    @app.task
    async def without():
        return None

    services = app.to_logical().services
    assert [s.arg for s in services] == [app, app]
    assert _Entry(services[0]).takes_arg and not _Entry(services[1]).takes_arg


def test_plan_description_lists_services_and_reads_back():
    app = fg.App("svcs")

    @app.timer(2.5, on_leader=True)
    async def tick():
        pass

    @app.crontab("0 * * * *", timezone="Europe/Paris")
    async def hourly():
        pass

    d = describe(app.plan())
    assert [(s.name, s.kind, s.schedule, s.on_leader) for s in d.services] == [
        ("tick", "timer", "every 2.5 s", True),
        ("hourly", "crontab", "cron 0 * * * * (Europe/Paris)", False),
    ]
    assert d.services[0].function.endswith(".tick")
    assert d.services[0].where.startswith("test_services.py:")
    back = PlanDescription.from_json(d.to_json())
    assert back == d
    assert '"services"' in d.to_json()
    text = app.explain()
    assert "2 services" in text.splitlines()[0]
    assert "tick    timer    every 2.5 s" in text


def test_faust_arguments_are_accepted():
    app = fg.App("faustargs")

    @app.timer(interval=dt.timedelta(seconds=90), name="every_90", traced=False)
    async def tick():
        pass

    @app.crontab("@daily", traced=False)
    async def daily():
        pass

    @app.task(on_leader=True, traced=False)
    async def start():
        pass

    services = app.to_logical().services
    assert [(s.id, s.service, s.interval, s.cron, s.on_leader) for s in services] == [
        ("every_90", "timer", 90.0, None, False),
        ("daily", "crontab", None, "@daily", False),
        ("start", "task", None, None, True),
    ]
