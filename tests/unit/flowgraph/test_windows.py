"""Window specs: membership against a brute-force definition, validation, grace and retention."""

import datetime as dt
import math
from fractions import Fraction

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowgraph.errors import GraphDefinitionError
from flowgraph.windows import Hopping, Sliding, Tumbling, WindowSpec, _hopping_span

times = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
durations = st.floats(min_value=1e-3, max_value=1e5, allow_nan=False, allow_infinity=False)
# Dyadic steps (n / 2**j) so that `m * step` is exact and "step divides size" really holds.
dyadic_steps = st.builds(lambda n, j: n / 2**j, st.integers(1, 10_000), st.integers(0, 10))


def brute_force(t: float, size: float, step: float) -> list[tuple[float, float]]:
    """Every window ``[k*step, k*step + size)`` (exact bounds, rounded) that contains `t`."""
    k_max = math.floor(Fraction(t) / Fraction(step))
    # Rounded bounds can hold t for k up to ulp(t) / step away from the exact candidates.
    margin = math.ceil(Fraction(size) / Fraction(step)) + 2 * math.ceil(math.ulp(t) / step) + 3
    out = []
    for k in range(max(0, k_max - margin), k_max + margin + 1):
        start = float(k * Fraction(step))
        end = float(k * Fraction(step) + Fraction(size))
        if start <= t < end:
            out.append((start, end))
    return out


def is_multiple(start: float, step: float) -> bool:
    k = round(start / step)
    return any(float(j * Fraction(step)) == start for j in (k - 1, k, k + 1) if j >= 0)


# --- tumbling ---------------------------------------------------------------------------------


@given(t=times, size=durations)
def test_tumbling_every_time_is_in_exactly_one_window(t: float, size: float) -> None:
    windows = Tumbling(size).windows_for(t)
    assert len(windows) == 1
    ((start, end),) = windows
    assert start <= t < end
    assert is_multiple(start, size)
    assert windows == tuple(brute_force(t, size, size))


@given(k=st.integers(0, 10**6), size=durations)
def test_tumbling_windows_touch(k: int, size: float) -> None:
    (_, end) = Tumbling(size).windows_for(float(k * Fraction(size)))[0]
    next_start = float((k + 1) * Fraction(size))
    assert Tumbling(size).windows_for(next_start)[0][0] == end


def test_tumbling_boundaries() -> None:
    w = Tumbling(10)
    assert w.windows_for(0) == ((0.0, 10.0),)
    assert w.windows_for(9.999) == ((0.0, 10.0),)
    assert w.windows_for(10) == ((10.0, 20.0),)  # end is excluded
    assert w.windows_for(-0.5) == ()
    assert w.latest(25) == (20.0, 30.0)


def test_far_timestamps_and_tiny_sizes() -> None:
    # t / size = 2**55: float division is off by more than a few windows here.
    t, size = 2.0**46, 2.0**-9
    assert len(Tumbling(size).windows_for(t)) == 1
    assert list(Hopping(size, size / 2).windows_for(t)) == brute_force(t, size, size / 2)
    assert len(Tumbling(1e-10).windows_for(1e300)) == 1  # no overflow in the quotient


@pytest.mark.parametrize("spec", [Tumbling(10), Hopping(10, 5)], ids=["tumbling", "hopping"])
def test_latest_before_epoch_raises_naming_the_time(spec) -> None:
    with pytest.raises(ValueError, match=r"timestamp -1\.5 is before the epoch"):
        spec.latest(-1.5)


@pytest.mark.parametrize("t", [math.nan, math.inf, -math.inf])
def test_non_finite_timestamp_raises(t: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        Hopping(10, 5).windows_for(t)


# --- hopping ----------------------------------------------------------------------------------


@given(t=times, size=durations, ratio=st.floats(min_value=0.01, max_value=1.0))
def test_hopping_matches_brute_force(t: float, size: float, ratio: float) -> None:
    step = size * ratio
    windows = Hopping(size, step).windows_for(t)
    assert list(windows) == brute_force(t, size, step)
    starts = [s for s, _ in windows]
    assert starts == sorted(set(starts))
    for start, end in windows:
        assert start >= 0
        assert start <= t < end
        assert is_multiple(start, step)
        assert end == pytest.approx(start + size, rel=1e-12, abs=1e-12)


@given(step=dyadic_steps, m=st.integers(1, 20), offset=st.floats(0, 1e6))
def test_hopping_count_when_step_divides_size(step: float, m: int, offset: float) -> None:
    size = m * step
    assert Fraction(size) == m * Fraction(step)
    t = size + offset
    windows = Hopping(size, step).windows_for(t)
    assert len(windows) == m
    assert windows == Hopping(size, step).windows_for(t)  # deterministic
    assert Hopping(size, step).latest(t) == windows[-1]
    assert windows[-1][0] <= t < windows[-1][0] + step


@given(step=dyadic_steps, m=st.integers(1, 20), frac=st.floats(0, 1, exclude_max=True))
def test_hopping_fewer_windows_near_epoch(step: float, m: int, frac: float) -> None:
    size = m * step
    t = frac * size
    windows = Hopping(size, step).windows_for(t)
    # Only starts 0, step, ... up to t exist; windows that would start before 0 are not made.
    assert len(windows) == math.floor(Fraction(t) / Fraction(step)) + 1
    assert windows[0][0] == 0.0
    assert all(start >= 0 for start, _ in windows)


def test_hopping_examples() -> None:
    w = Hopping(10, 5)
    assert w.windows_for(12) == ((5.0, 15.0), (10.0, 20.0))
    assert w.windows_for(15) == ((10.0, 20.0), (15.0, 25.0))
    assert w.windows_for(3) == ((0.0, 10.0),)
    assert w.latest(12) == (10.0, 20.0)
    assert Hopping(10, 10).windows_for(12) == Tumbling(10).windows_for(12)


def test_hopping_float_step_uses_exact_multiples() -> None:
    # 3 * 0.1 is exactly 0.3000000000000000166..., above the float 0.3.
    assert Hopping(1.0, 0.1).windows_for(0.3) == ((0.0, 1.0), (0.1, 1.1), (0.2, 1.2))


# --- sliding, durations, grace ------------------------------------------------------------------


def test_sliding_range_includes_both_ends() -> None:
    assert Sliding(5).range_for(12) == (7.0, 12)
    assert Sliding(dt.timedelta(milliseconds=500)).range_for(1.0) == (0.5, 1.0)


def test_timedelta_equals_seconds() -> None:
    assert Tumbling(dt.timedelta(minutes=1)) == Tumbling(60)
    assert Hopping(dt.timedelta(seconds=10), dt.timedelta(seconds=5)) == Hopping(10.0, 5)
    assert Sliding(dt.timedelta(seconds=3), grace=dt.timedelta(seconds=1)) == Sliding(3, grace=1)
    assert Tumbling(1, retention=dt.timedelta(hours=1)).retention == 3600.0
    assert Tumbling(1, idle_timeout=dt.timedelta(seconds=30)).idle_timeout == 30.0


def test_closes_and_expires() -> None:
    w = Hopping(10, 5, grace=2, retention=dt.timedelta(seconds=60))
    assert w.closes_at(20.0) == 22.0
    assert w.expires_at(20.0) == 82.0
    assert Tumbling(10).closes_at(10.0) == Tumbling(10).expires_at(10.0) == 10.0
    assert Sliding(5, grace=1).closes_at(3.0) == 4.0


def test_specs_are_frozen_values() -> None:
    w: WindowSpec = Tumbling(10, emit="close")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        w.size = 5  # type: ignore[misc]
    assert attrs.evolve(w, grace=3) == Tumbling(10, emit="close", grace=3)
    assert len({Tumbling(10), Tumbling(10.0), Tumbling(dt.timedelta(seconds=10))}) == 1
    with pytest.raises(TypeError):
        Tumbling(10, 0)  # type: ignore[call-arg]  # grace and the rest are keyword-only


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Tumbling(0), "tumbling size 0.0 is not positive; .*; give a finite size > 0"),
        (lambda: Tumbling(-1), "tumbling size -1.0 is not positive"),
        (lambda: Tumbling(math.inf), "tumbling size inf is not positive"),
        (lambda: Sliding(dt.timedelta(0)), "sliding size 0.0 is not positive"),
        (lambda: Hopping(10, 0), "hopping step 0.0 is not positive; windows advance by step"),
        (lambda: Hopping(10, math.nan), "hopping step nan is not positive"),
        (lambda: Hopping(10, 11), "hopping step 11.0 is larger than size 10.0; .*; give a step"),
        (lambda: Tumbling(10, grace=-1), "tumbling grace -1.0 is negative"),
        (lambda: Hopping(10, 5, retention=-1), "hopping retention -1.0 is negative"),
        (
            lambda: Tumbling(10, emit="final"),  # type: ignore[arg-type]
            "tumbling emit 'final' is not a known emit mode",
        ),
        (lambda: Tumbling(10, idle_timeout=0), "tumbling idle_timeout 0.0 is not positive"),
        (
            lambda: Tumbling("10s"),  # type: ignore[arg-type]
            "window duration '10s' is not seconds or a timedelta",
        ),
        (lambda: Tumbling(True), "window duration True is not seconds"),
    ],
)
def test_validation_errors(make: object, match: str) -> None:
    assert callable(make)
    with pytest.raises(GraphDefinitionError, match=match) as info:
        make()
    assert isinstance(info.value, ValueError)
    assert str(info.value).count(";") == 2


@given(t=times, size=durations, ratio=st.floats(min_value=0.01, max_value=1.0))
def test_span_is_the_largest_run_of_times_with_the_same_windows(
    t: float, size: float, ratio: float
) -> None:
    """The executor caches `span(t)` and reuses its windows for every time in [lo, hi)."""
    for spec in (Tumbling(size), Hopping(size, size * ratio)):
        lo, hi, found = spec.span(t)
        assert found == spec.windows_for(t)
        assert lo <= t < hi
        assert spec.windows_for(lo) == found
        assert spec.windows_for(math.nextafter(hi, -math.inf)) == found
        assert spec.windows_for(hi) != found  # the run ends at hi
        if lo > 0:
            assert spec.windows_for(math.nextafter(lo, -math.inf)) != found  # and starts at lo


@given(
    base=times,
    size=durations,
    ratio=st.floats(min_value=0.01, max_value=1.0),
    offsets=st.lists(st.floats(-3, 3), min_size=2, max_size=30),
)
def test_spans_kept_for_out_of_order_times_are_those_of_each_time(
    base: float, size: float, ratio: float, offsets: list[float]
) -> None:
    """Times back and forth across a few windows' bounds: the spans kept answer each exactly."""
    step = size * ratio
    for t in (max(0.0, base + d * step) for d in offsets):
        for spec in (Tumbling(size), Hopping(size, step)):
            got = spec.span(t)
            assert got == _hopping_span(t, spec.size, getattr(spec, "step", spec.size))
            assert got[0] <= t < got[1]
            assert list(spec.windows_for(t)) == list(got[2])


def test_describe_says_the_spec_in_a_few_words() -> None:
    assert (
        Hopping(60, 10, grace=5, emit="close").describe()
        == "hopping 60s step 10s grace 5s emit close"
    )
    assert (
        Tumbling(0.5, retention=30, idle_timeout=10).describe()
        == "tumbling 0.5s retention 30s idle 10s"
    )
    assert Sliding(300).describe() == "sliding 300s"


def test_a_span_is_found_once_and_reused_for_every_time_in_it() -> None:
    """The executor relies on `span` being cheap for times near each other: the second time in
    the same span gets the very tuple the first one made, from either of its ends."""
    spec = Hopping(size=3.25, step=2.5)  # bounds that no other test uses: a cold cache
    lo, hi, _ = first = spec.span(2.75)
    assert (lo, hi) == (2.5, 3.25)
    assert spec.span(3.0) is first
    assert spec.span(lo) is first
    assert spec.span(hi) != first  # the next span: [2.5, 3.25) no longer holds hi
    assert spec.span(hi)[:2] == (3.25, 5.0)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_span_of_a_time_that_is_not_finite_is_refused(bad: float) -> None:
    for spec in (Tumbling(size=10), Hopping(size=10, step=5)):
        with pytest.raises(ValueError, match="is not finite; windows are placed on the time"):
            spec.span(bad)


def test_the_span_cache_stays_bounded() -> None:
    from flowgraph import windows

    spec = Tumbling(size=0.125)
    for k in range(windows._SPANS_KEPT + 10):
        spec.span(k * 0.125)
    assert 0 < len(windows._SPANS) <= windows._SPANS_KEPT
