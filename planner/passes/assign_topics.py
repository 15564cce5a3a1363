"""assign_topics: list every topic the plan reads or writes, with partitions and configs.

Preconditions: a `PhysicalPlan` after `assign_stores`.
Postconditions: one `TopicSpec` per source, feed, repartition, changelog (compacted), sink
topic, the dead-letter topic ``<graph>-dlq``, and the compacted ``<graph>-checkpoints``
topic tasks use to write nothing twice after a crash (every task may write dead letters). A
sink topic gets the partitions the user gave, else those of its sub-topology. Returns the
input when the topics are already there.

A sink writing a topic the plan makes for itself (a changelog, a repartition topic, the
dead-letter topic) is a `GraphValidationError`.

Example: a graph reading ``clicks`` (4 partitions) with one ``count`` after a ``key_by`` lists
``clicks`` (source), ``g-by_url-repartition`` (4), ``g-per_url-changelog`` (4, compacted) and
``g-dlq``.
"""

from __future__ import annotations

import attrs

from planner import naming
from planner.errors import GraphValidationError
from planner.logical import Repartition, Send, Sink, Source
from planner.options import PlanOptions
from planner.physical import PhysicalPlan, Subtopology, TopicSpec

PARTITIONER = "murmur2"
"""Kafka's default partitioner (the Java client's and aiokafka's), for every keyed topic."""

__all__ = ["assign_topics"]

COMPACTED = (("cleanup.policy", "compact"),)


def assign_topics(plan: PhysicalPlan, options: PlanOptions) -> PhysicalPlan:
    """Return `plan` with `topics` and `dlq` filled in."""
    topics: dict[str, TopicSpec] = {}
    clashes: list[str] = []

    def add(spec: TopicSpec) -> None:
        known = topics.get(spec.name)
        if known is not None and spec.name in sent and "source" in (known.role, spec.role):
            # an agent sends to a topic the plan reads: it is that source
            topics[spec.name] = known if known.role == "source" else spec
            return
        known = topics.setdefault(spec.name, spec)
        if known.role != spec.role and "sink" in (known.role, spec.role):
            other = spec.role if known.role == "sink" else known.role
            clashes.append(
                f"a sink writes topic {spec.name!r}, which the plan uses as its {other} topic; "
                "write to another topic"
            )

    sent = {n.topic for n in plan.logical.nodes if isinstance(n, Send) and n.topic is not None}
    sent |= {d.name for d in plan.logical.topics}
    for sub in plan.subtopologies:
        for step in sub.steps:
            if isinstance(step, Source):
                add(
                    TopicSpec(
                        name=step.topic,
                        partitions=step.partitions,
                        role="source" if step.feed is None else "feed",
                        key_type=step.key_type,
                        value_type=step.value_type,
                        partitioner=PARTITIONER,
                    )
                )
            elif isinstance(step, Repartition):
                add(
                    TopicSpec(
                        name=step.topic,
                        partitions=step.partitions,
                        role="repartition",
                        key_type=_shared_key_type(plan, step) or step.key_type,
                        value_type=step.value_type,
                        partitioner=PARTITIONER,
                        key_from=step.inputs[0] if step.inputs else None,
                    )
                )
            elif isinstance(step, Sink) and step.topic is not None:
                add(
                    TopicSpec(
                        name=step.topic,
                        partitions=step.partitions or sub.partitions,
                        role="sink",
                        key_type=step.key_type,
                        value_type=step.value_type,
                        partitioner=PARTITIONER,
                        key_from=step.inputs[0] if step.inputs else None,
                    )
                )
    for decl in plan.logical.topics:
        add(
            TopicSpec(
                name=decl.name,
                partitions=decl.partitions,
                role="sink",
                key_type=decl.key_type,
                value_type=decl.value_type,
                partitioner=PARTITIONER,
            )
        )
    for store in plan.stores:
        add(
            TopicSpec(
                name=store.changelog,
                partitions=store.partitions,
                role="changelog",
                key_type=store.key_type,
                value_type=store.value_type,
                configs=COMPACTED,
                partitioner=PARTITIONER,
                key_from=store.step,
            )
        )
    dlq = naming.dlq_topic(plan.graph_id)
    add(TopicSpec(name=dlq, partitions=1, role="dlq", value_type=bytes))
    add(
        TopicSpec(
            name=naming.checkpoint_topic(plan.graph_id),
            partitions=1,
            role="checkpoint",
            key_type=str,
            value_type=bytes,
            configs=COMPACTED,
        )
    )
    if clashes:
        raise GraphValidationError(clashes)
    result = tuple(topics.values())
    if result == plan.topics and dlq == plan.dlq:
        return plan
    return attrs.evolve(plan, topics=result, dlq=dlq)


def _shared_key_type(plan: PhysicalPlan, step: Repartition) -> object:
    """The key type a repartition topic without one of its own must encode its keys with.

    A keyed record's partition is murmur2 of its key codec's bytes, so a repartition topic
    read in the same sub-topology as a source topic with a declared key type must encode its
    keys with that type: otherwise one key (say int 7, b"7" on the source, MessagePack on the
    repartition topic) would land in two partitions and two stores. None when no declared
    source type applies (or the sources disagree).
    """
    if step.key_type is not None:
        return None
    reader: Subtopology | None = next(
        (s for s in plan.subtopologies if any(n is step for n in s.steps)), None
    )
    if reader is None:
        return None
    declared = {
        n.key_type for n in reader.steps if isinstance(n, Source) and n.key_type is not None
    }
    return declared.pop() if len(declared) == 1 else None
