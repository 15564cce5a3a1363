"""assign_topics: every topic with its role, partitions, types and configs."""

from __future__ import annotations

from planner.logical import (
    Aggregate,
    Changes,
    KeyBy,
    LogicalPlan,
    Repartition,
    Sink,
    Source,
)
from planner.options import PlanOptions
from planner.passes.assign_stores import assign_stores
from planner.passes.assign_topics import assign_topics
from planner.passes.split_subtopologies import split_subtopologies
from planner.physical import PhysicalPlan, TopicSpec

OPTS = PlanOptions()
COMPACT = (("cleanup.policy", "compact"),)


def by_url(v: dict) -> str:
    return v["url"]


def stored(*nodes: object) -> PhysicalPlan:
    logical = LogicalPlan(graph_id="g", nodes=nodes)
    return assign_stores(split_subtopologies(logical, OPTS), OPTS)


def topics_of(plan: PhysicalPlan) -> tuple[TopicSpec, ...]:
    result = assign_topics(plan, OPTS)
    assert assign_topics(result, OPTS) is result
    assert result.dlq == "g-dlq"
    return result.topics


DLQ = TopicSpec(name="g-dlq", partitions=1, role="dlq", value_type=bytes)
CHECKPOINTS = TopicSpec(
    name="g-checkpoints",
    partitions=1,
    role="checkpoint",
    key_type=str,
    value_type=bytes,
    configs=COMPACT,
)


def test_source_sink_and_dlq():
    plan = stored(
        Source(id="in", topic="clicks", partitions=4, key_type=str, value_type=dict),
        Sink(id="out", inputs=("in",), topic="copy", key_type=str, value_type=dict),
        Sink(id="wide", inputs=("in",), topic="wide", partitions=8),
    )
    assert topics_of(plan) == (
        TopicSpec(
            name="clicks",
            partitions=4,
            role="source",
            key_type=str,
            value_type=dict,
            partitioner="murmur2",
        ),
        TopicSpec(
            name="copy",
            partitions=4,
            role="sink",
            key_type=str,
            value_type=dict,
            partitioner="murmur2",
            key_from="in",
        ),
        TopicSpec(name="wide", partitions=8, role="sink", partitioner="murmur2", key_from="in"),
        DLQ,
        CHECKPOINTS,
    )


def test_repartition_and_compacted_changelog():
    plan = stored(
        Source(id="in", topic="clicks", partitions=4, value_type=dict),
        KeyBy(id="by_url", inputs=("in",), fn=by_url, key_type=str, value_type=dict),
        Repartition(
            id="by_url-repartition",
            inputs=("by_url",),
            topic="g-by_url-repartition",
            partitions=4,
            key_type=str,
            value_type=dict,
        ),
        Aggregate(id="per_url", inputs=("by_url-repartition",), agg="count", value_type=int),
        Changes(id="updates", inputs=("per_url",), key_type=str, value_type=int),
        Sink(id="out", inputs=("updates",), topic="per-url", key_type=str, value_type=int),
    )
    topics = topics_of(plan)
    assert topics == (
        TopicSpec(
            name="clicks", partitions=4, role="source", value_type=dict, partitioner="murmur2"
        ),
        TopicSpec(
            name="g-by_url-repartition",
            partitions=4,
            role="repartition",
            key_type=str,
            value_type=dict,
            partitioner="murmur2",
            key_from="by_url",
        ),
        TopicSpec(
            name="per-url",
            partitions=4,
            role="sink",
            key_type=str,
            value_type=int,
            partitioner="murmur2",
            key_from="updates",
        ),
        TopicSpec(
            name="g-per_url-changelog",
            partitions=4,
            role="changelog",
            key_type=str,
            value_type=int,
            configs=COMPACT,
            partitioner="murmur2",
            key_from="per_url",
        ),
        DLQ,
        CHECKPOINTS,
    )
    assert [t.internal for t in topics] == [False, True, False, True, False, True]


def test_feed_source_gets_the_feed_role():
    plan = stored(
        Source(id="nums", topic="g-nums-feed", partitions=2, feed=range(3)),
        Sink(id="out", inputs=("nums",), topic="out"),
    )
    assert topics_of(plan)[0] == TopicSpec(
        name="g-nums-feed", partitions=2, role="feed", partitioner="murmur2"
    )


def test_two_sinks_to_one_topic_list_it_once():
    plan = stored(
        Source(id="in", topic="in"),
        Sink(id="a", inputs=("in",), topic="out"),
        Sink(id="b", inputs=("in",), topic="out"),
    )
    assert [t.name for t in topics_of(plan)] == ["in", "out", "g-dlq", "g-checkpoints"]
