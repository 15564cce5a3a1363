"""Session window math: `Session.place`, one record at a time in any order, against sorting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.errors import GraphDefinitionError
from flowgraph.windows import Window, sessions_of


def _place_all(spec: fg.Session, times: list[float]) -> list[tuple[Window, int]]:
    held: dict[Window, int] = {}
    for t in times:
        (s, e), merged = spec.place(sorted(held), t)
        n = 1 + sum(held.pop(w) for w in merged)
        held[(s, e)] = n
    return sorted(held.items())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 200), max_size=40),
    st.integers(1, 30),
)
def test_sessions_in_any_order_match_sorting(ticks: list[int], gap: int) -> None:
    times = [t / 4 for t in ticks]  # quarter seconds: many ties and exact-gap neighbours
    spec = fg.Session(gap / 4)
    assert _place_all(spec, times) == sessions_of(times, gap / 4)


def test_a_late_record_bridges_two_sessions() -> None:
    spec = fg.Session(10)
    (s, e), merged = spec.place([(0.0, 10.0), (15.0, 25.0)], 7.0)
    assert (s, e) == (0.0, 25.0)
    assert merged == [(0.0, 10.0), (15.0, 25.0)]


def test_records_exactly_gap_apart_are_two_sessions() -> None:
    assert sessions_of([0.0, 10.0], 10.0) == [((0.0, 10.0), 1), ((10.0, 20.0), 1)]
    assert sessions_of([0.0, 9.5], 10.0) == [((0.0, 19.5), 2)]


@pytest.mark.parametrize("gap", [0, -1, float("inf")])
def test_a_gap_must_be_positive(gap: float) -> None:
    with pytest.raises(GraphDefinitionError, match="session gap"):
        fg.Session(gap)


def test_describe() -> None:
    assert fg.Session(30, grace=5, emit="close").describe() == "session gap 30s grace 5s emit close"
