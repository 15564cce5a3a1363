"""`Schedule`: fetched records handed out in timestamp order across partitions, in runs."""

from __future__ import annotations

from typing import Any

import flowgraph as fg
from flowgraph.runtime.schedule import (
    Schedule,
    fed_back,
    lateness_slack,
    merged_groups,
    time_ordered,
)


def recs(*times: float, start: int = 0) -> list[Any]:
    return [(None, i, t, start + i, None) for i, t in enumerate(times)]


def caught_up(tp: Any) -> bool:
    return False


def order(schedule: Schedule, behind: Any = caught_up) -> list[tuple[str, list[float]]]:
    return [(tp[0], [m[2] for m in run]) for tp, run in schedule.runs(behind)]


def two(**settings: Any) -> Schedule:
    s = Schedule(capacity=10, **settings)
    s.assign(("a", 0), 0)
    s.assign(("b", 0), 0)
    return s


def test_runs_go_by_smallest_head_and_ties_run_together() -> None:
    s = two()
    s.add(("a", 0), recs(1, 2, 2, 5))
    s.add(("b", 0), recs(2, 3, 9))
    assert order(s) == [("a", [1, 2, 2]), ("b", [2, 3]), ("a", [5]), ("b", [9])]
    assert not s.pending()


def test_skew_makes_runs_longer() -> None:
    s = two(max_skew=3.0)
    s.add(("a", 0), recs(1, 2, 4, 5, 6))
    s.add(("b", 0), recs(2, 3))
    assert order(s) == [("a", [1, 2, 4, 5]), ("b", [2, 3]), ("a", [6])]


def test_a_partition_alone_runs_its_whole_buffer() -> None:
    s = Schedule(capacity=10)
    s.assign(("a", 0), 0)
    s.add(("a", 0), recs(5, 1, 3))
    assert order(s) == [("a", [5, 1, 3])]


def test_groups_are_merged_apart() -> None:
    s = Schedule(capacity=10)
    s.assign(("a", 0), "first")
    s.assign(("r", 0), "second")
    s.add(("a", 0), recs(5, 6))
    s.add(("r", 0), recs(1))
    assert order(s) == [("a", [5, 6]), ("r", [1])]


def test_an_empty_partition_with_more_to_fetch_holds_its_group_back_until_max_idle() -> None:
    now = [0.0]
    s = two(max_idle=1.0, clock=lambda: now[0])
    s.add(("a", 0), recs(1, 2))

    def b_behind(tp: Any) -> bool:
        return tp == ("b", 0)

    assert order(s, b_behind) == []
    now[0] = 0.5
    assert order(s, b_behind) == []
    now[0] = 1.0
    assert order(s, b_behind) == [("a", [1, 2])]


def test_a_run_that_empties_a_partition_with_more_to_fetch_stops_the_group() -> None:
    s = two()
    s.add(("a", 0), recs(1, 4))
    s.add(("b", 0), recs(2, 3))
    fetched_b = [False]

    def behind(tp: Any) -> bool:
        return tp == ("b", 0) and not fetched_b[0]

    assert order(s, behind) == [("a", [1]), ("b", [2, 3])]
    fetched_b[0] = True
    s.add(("b", 0), recs(3.5, start=2))
    assert order(s, behind) == [("b", [3.5]), ("a", [4])]


def test_a_dry_partition_lets_the_others_run_up_to_its_last_timestamp() -> None:
    """Its next record is no older than its last (a partition's records come in order), so
    records up to that time, ties included, run before the group waits for the fetch."""
    s = two()
    s.add(("a", 0), recs(1, 2))
    s.add(("b", 0), recs(2, 5))

    def behind(tp: Any) -> bool:
        return True

    assert order(s, behind) == [("a", [1, 2]), ("b", [2])]
    assert order(s, behind) == []  # still waiting for a's next records


def test_give_back_returns_the_tail_of_the_last_run() -> None:
    s = two()
    s.add(("a", 0), recs(1, 1, 1))
    for tp, run in s.runs(caught_up):
        assert (tp, len(run)) == (("a", 0), 3)
        s.give_back(tp, 2)
        break
    assert s.held(("a", 0)) == 2
    assert [m[3] for _, run in s.runs(caught_up) for m in run] == [1, 2]


def test_wanted_lists_partitions_below_capacity_and_drop_forgets_them() -> None:
    s = Schedule(capacity=2)
    s.assign(("a", 0), 0)
    s.assign(("a", 1), 0)
    s.add(("a", 0), recs(1, 2))
    assert s.wanted() == [("a", 1)]
    s.drop([("a", 0)])
    assert s.wanted() == [("a", 1)]
    assert not s.pending()
    s.add(("a", 0), recs(3))  # revoked since the fetch: ignored
    assert not s.pending()


def test_partitions_are_merged_where_their_order_reaches_windows() -> None:
    g = fg.Graph("chain")
    src = g.source("a", value_type=int, partitions=4)
    tally = src.key_by(str, name="first").count(name="tally")  # no windows here...
    second = tally.changes().key_by(lambda n: n % 3, name="second")
    second.window(fg.Tumbling(1)).count(name="windowed")  # ...but downstream
    src.key_by(lambda v: v % 5, name="other").count(name="plain")
    plan = g.plan()
    readers = {t: sub.id for sub in plan.subtopologies for t in sub.source_topics}
    assert time_ordered(plan) == {readers["a"], readers["chain-first-repartition"]}
    assert readers["chain-other-repartition"] not in time_ordered(plan)


def test_a_reader_of_records_from_several_places_joins_their_writers_group() -> None:
    g = fg.Graph("meet")
    a = g.source("a", value_type=int, partitions=2)
    b = g.source("b", value_type=int, partitions=2)
    rekeyed = a.key_by(lambda v: v % 5, name="rekey")
    rekeyed.window(fg.Tumbling(1)).count(name="alone")
    b.merge(rekeyed, name="both").window(fg.Tumbling(1)).count(name="merged")
    plan = g.plan()
    readers = {t: sub.id for sub in plan.subtopologies for t in sub.source_topics}
    groups = merged_groups(plan)
    assert groups[readers["a"]] == groups[readers["b"]] == groups[readers["meet-rekey-repartition"]]

    g = fg.Graph("single")  # a reader fed by one writer only: each sub-topology apart
    a = g.source("a", value_type=int, partitions=2)
    a.key_by(lambda v: v % 5, name="rekey").window(fg.Tumbling(1)).count(name="alone")
    plan = g.plan()
    assert merged_groups(plan) == {s: s for s in time_ordered(plan)}


def test_own_writes_not_fetched_yet_bound_the_group_by_the_slack() -> None:
    """A worker's own writes to a partition of the group (buffered for a flush) are fetched
    later: no record newer than the oldest of them plus `slack` runs before they are."""
    s = two()
    s.assign(("rep", 0), 0)  # read to its end, but this worker has just written to it
    s.add(("a", 0), recs(1, 2, 6, 7, 8))
    s.add(("b", 0), recs(3, 9))
    own: dict[Any, float] = {}
    s.own, s.slack = own.get, 2.0
    assert order(s) == [("a", [1, 2]), ("b", [3]), ("a", [6, 7, 8]), ("b", [9])]
    assert not s.waiting
    s.add(("a", 0), recs(10, 11, 13, start=5))
    s.add(("b", 0), recs(12, start=2))
    own[("rep", 0)] = 9.0  # written at 9, not sent: up to 11 may run
    assert order(s) == [("a", [10, 11])]
    assert s.waiting  # the worker flushes now
    del own[("rep", 0)]  # fetched
    assert order(s) == [("b", [12]), ("a", [13])]
    assert not s.waiting


def test_fed_back_topics_and_the_slack_of_a_join_of_a_rekeyed_stream() -> None:
    g = fg.Graph("fed")
    left = g.source("left", key_type=str, value_type=str, partitions=3)
    right = g.source("right", key_type=str, value_type=str, partitions=4)
    rekeyed = right.key_by(lambda v: v, name="by_key")
    joined = left.join(rekeyed, lambda a, b: a, within=5, grace=7, how="left", name="paired")
    joined.to("out", value_type=str)
    plan = g.plan()
    assert fed_back(plan) == {"fed-by_key-repartition"}
    assert lateness_slack(plan) == 7.0  # the grace, not within + grace

    g = fg.Graph("plain")  # one writer: its reader is merged apart, nothing fed back
    g.source("a", value_type=int).key_by(str, name="k").window(fg.Tumbling(5, grace=1)).count(
        name="c"
    )
    assert fed_back(g.plan()) == frozenset()
