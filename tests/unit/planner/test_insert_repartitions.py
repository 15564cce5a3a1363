"""insert_repartitions: a repartition topic exactly where a stateful step needs one."""

from __future__ import annotations

import attrs
import pytest

from planner.errors import GraphValidationError
from planner.logical import (
    Aggregate,
    Changes,
    Filter,
    KeyBy,
    LogicalPlan,
    Map,
    Merge,
    Repartition,
    Sink,
    Source,
)
from planner.options import PlanOptions
from planner.passes.insert_repartitions import (
    Partitioning,
    insert_repartitions,
    partitioning_of,
)

OPTS = PlanOptions()


def by_user(v: dict) -> str:
    return v["user"]


def shout(v: str) -> str:
    return v.upper()


def is_long(v: str) -> bool:
    return len(v) > 3


def plan_of(*nodes: object) -> LogicalPlan:
    return LogicalPlan(graph_id="g", nodes=nodes)


def rewire(node, *inputs: str):
    return attrs.evolve(node, inputs=inputs)


def repartition_after(node, partitions: int) -> Repartition:
    return Repartition(
        id=f"{node.id}-repartition",
        inputs=(node.id,),
        topic=f"g-{node.id}-repartition",
        partitions=partitions,
        key_type=node.key_type,
        value_type=node.value_type,
    )


SRC = Source(id="in", topic="in", partitions=3, key_type=bytes, value_type=dict)
KB = KeyBy(id="by_user", inputs=("in",), fn=by_user, key_type=str, value_type=dict)


def assert_fixed_point(plan: LogicalPlan) -> LogicalPlan:
    """The pass returns `plan` itself when it needs nothing, and is idempotent."""
    result = insert_repartitions(plan, OPTS)
    assert insert_repartitions(result, OPTS) is result
    return result


def test_source_already_keyed_needs_no_repartition():
    plan = plan_of(SRC, Aggregate(id="count", inputs=("in",), agg="count"))
    assert assert_fixed_point(plan) is plan


def test_key_by_then_count():
    count = Aggregate(id="count", inputs=("by_user",), agg="count")
    rep = repartition_after(KB, 3)
    assert rep.topic == "g-by_user-repartition"
    assert assert_fixed_point(plan_of(SRC, KB, count)) == plan_of(
        SRC, KB, rep, rewire(count, rep.id)
    )


def test_two_counts_share_one_repartition_topic():
    c1 = Aggregate(id="c1", inputs=("by_user",), agg="count")
    c2 = Aggregate(id="c2", inputs=("by_user",), agg="sum", fn=len)
    rep = repartition_after(KB, 3)
    result = assert_fixed_point(plan_of(SRC, KB, c1, c2))
    assert result == plan_of(SRC, KB, rep, rewire(c1, rep.id), rewire(c2, rep.id))
    assert sum(isinstance(n, Repartition) for n in result.nodes) == 1


def test_repartition_goes_right_after_key_by_through_stateless_steps():
    shouted = Map(id="shout", inputs=("by_user",), fn=shout)
    long = Filter(id="is_long", inputs=("shout",), fn=is_long)
    count = Aggregate(id="count", inputs=("is_long",), agg="count")
    rep = repartition_after(KB, 3)
    assert assert_fixed_point(plan_of(SRC, KB, shouted, long, count)) == plan_of(
        SRC, KB, rep, rewire(shouted, rep.id), long, count
    )


def test_every_consumer_of_the_key_by_reads_the_repartition():
    """A sink next to the count reads the repartitioned stream, not a second copy."""
    count = Aggregate(id="count", inputs=("by_user",), agg="count")
    sink = Sink(id="out", inputs=("by_user",), topic="out")
    rep = repartition_after(KB, 3)
    assert assert_fixed_point(plan_of(SRC, KB, count, sink)) == plan_of(
        SRC, KB, rep, rewire(count, rep.id), rewire(sink, rep.id)
    )


def test_merge_of_sources_with_different_partitions_repartitions_before_the_aggregate():
    a = Source(id="a", topic="a", partitions=2)
    b = Source(id="b", topic="b", partitions=4)
    merged = Merge(id="both", inputs=("a", "b"))
    count = Aggregate(id="count", inputs=("both",), agg="count")
    rep = Repartition(
        id="count-repartition", inputs=("both",), topic="g-count-repartition", partitions=4
    )
    assert assert_fixed_point(plan_of(a, b, merged, count)) == plan_of(
        a, b, merged, rep, rewire(count, rep.id)
    )


def test_merge_of_co_partitioned_sources_needs_no_repartition():
    plan = plan_of(
        Source(id="a", topic="a", partitions=4),
        Source(id="b", topic="b", partitions=4),
        Merge(id="both", inputs=("a", "b")),
        Aggregate(id="count", inputs=("both",), agg="count"),
    )
    assert assert_fixed_point(plan) is plan


def test_merge_of_two_key_bys_repartitions_before_the_aggregate():
    a = Source(id="a", topic="a", partitions=2)
    b = Source(id="b", topic="b", partitions=2)
    ka = KeyBy(id="ka", inputs=("a",), fn=by_user)
    kb = KeyBy(id="kb", inputs=("b",), fn=by_user)
    merged = Merge(id="both", inputs=("ka", "kb"))
    count = Aggregate(id="count", inputs=("both",), agg="count")
    rep = Repartition(
        id="count-repartition", inputs=("both",), topic="g-count-repartition", partitions=2
    )
    assert assert_fixed_point(plan_of(a, b, ka, kb, merged, count)) == plan_of(
        a, b, ka, kb, merged, rep, rewire(count, rep.id)
    )


def test_anonymous_key_by_that_needs_a_repartition_is_an_error():
    kb = KeyBy(id="key_by-1", inputs=("in",), fn=lambda v: v, anonymous=True, where="app.py:7")
    plan = plan_of(SRC, kb, Aggregate(id="count", inputs=("key_by-1",), agg="count"))
    with pytest.raises(GraphValidationError) as info:
        insert_repartitions(plan, OPTS)
    (msg,) = info.value.errors
    assert msg.startswith("key_by at app.py:7 needs a repartition topic")
    assert "pass name=" in msg


def test_anonymous_key_by_feeding_only_a_sink_is_fine():
    kb = KeyBy(id="key_by-1", inputs=("in",), fn=lambda v: v, anonymous=True)
    plan = plan_of(SRC, kb, Sink(id="out", inputs=("key_by-1",), topic="out"))
    assert assert_fixed_point(plan) is plan


def test_key_by_feeding_only_a_sink_needs_no_repartition():
    plan = plan_of(
        SRC,
        KB,
        Map(id="shout", inputs=("by_user",), fn=shout),
        Sink(id="out", inputs=("shout",), topic="out"),
    )
    assert assert_fixed_point(plan) is plan


def test_key_by_partitions_sets_the_repartition_width():
    kb = attrs.evolve(KB, partitions=8)
    count = Aggregate(id="count", inputs=("by_user",), agg="count")
    result = assert_fixed_point(plan_of(SRC, kb, count))
    assert result.node("by_user-repartition") == repartition_after(kb, 8)


def test_repartition_width_defaults_to_the_widest_input():
    a = Source(id="a", topic="a", partitions=2)
    b = Source(id="b", topic="b", partitions=5)
    merged = Merge(id="both", inputs=("a", "b"))
    kb = KeyBy(id="kb", inputs=("both",), fn=by_user)
    count = Aggregate(id="count", inputs=("kb",), agg="count")
    result = assert_fixed_point(plan_of(a, b, merged, kb, count))
    assert result.node("kb-repartition").partitions == 5


def test_only_the_last_key_by_before_an_aggregate_repartitions():
    again = KeyBy(id="again", inputs=("by_user",), fn=shout, key_type=str, value_type=dict)
    count = Aggregate(id="count", inputs=("again",), agg="count")
    rep = repartition_after(again, 3)
    assert assert_fixed_point(plan_of(SRC, KB, again, count)) == plan_of(
        SRC, KB, again, rep, rewire(count, rep.id)
    )


def test_key_by_over_a_table_changes_stream():
    count = Aggregate(id="count", inputs=("in",), agg="count")
    updates = Changes(id="updates", inputs=("count",))
    kb = KeyBy(id="by_count", inputs=("updates",), fn=str)
    total = Aggregate(id="total", inputs=("by_count",), agg="count")
    rep = repartition_after(kb, 3)
    assert assert_fixed_point(plan_of(SRC, count, updates, kb, total)) == plan_of(
        SRC, count, updates, kb, rep, rewire(total, rep.id)
    )


def test_partitioning_of():
    a = Source(id="a", topic="a", partitions=2)
    b = Source(id="b", topic="b", partitions=2)
    c = Source(id="c", topic="c", partitions=3)
    plan = plan_of(
        a,
        b,
        c,
        Map(id="m", inputs=("a",), fn=shout),
        KeyBy(id="k", inputs=("m",), fn=shout),
        Filter(id="f", inputs=("k",), fn=is_long),
        Merge(id="ab", inputs=("a", "b")),
        Merge(id="ac", inputs=("a", "c")),
        Repartition(id="r", inputs=("k",), topic="g-k-repartition", partitions=6),
    )
    assert partitioning_of(plan) == {
        "a": Partitioning(2),
        "b": Partitioning(2),
        "c": Partitioning(3),
        "m": Partitioning(2),
        "k": None,
        "f": None,
        "ab": Partitioning(2),
        "ac": None,
        "r": Partitioning(6),
    }


def test_repartition_id_clashing_with_a_user_step_is_a_clear_error():
    clash = Map(id="by_user-repartition", inputs=("by_user",), fn=shout)
    logical = plan_of(
        SRC,
        KB,
        clash,
        Sink(id="out", inputs=("by_user-repartition",), topic="out"),
        Aggregate(id="count", inputs=("by_user",), agg="count"),
    )
    with pytest.raises(GraphValidationError) as info:
        insert_repartitions(logical, OPTS)
    assert info.value.errors == (
        "step 'by_user-repartition' has the name of the repartition the planner adds after "
        "'by_user'; rename one of them",
    )


def test_a_table_from_a_keyed_topic_needs_no_repartition():
    plan = plan_of(SRC, Aggregate(id="latest", inputs=("in",), agg="latest"))
    assert assert_fixed_point(plan) is plan


def test_a_table_after_key_by_reads_a_repartition():
    table = Aggregate(id="latest", inputs=("is_long",), agg="latest")
    long = Filter(id="is_long", inputs=("by_user",), fn=is_long)
    rep = repartition_after(KB, 3)
    assert assert_fixed_point(plan_of(SRC, KB, long, table)) == plan_of(
        SRC, KB, rep, rewire(long, rep.id), table
    )
