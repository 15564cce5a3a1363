"""Deterministic names for everything the planner creates.

Names come only from the graph id and user step names, never from counters, so that a
topic or store keeps its name when unrelated steps are added or removed (as in Kafka
Streams after KIP-372). Renaming a stateful step therefore renames its state: see
docs/concepts/naming.md.
"""

from __future__ import annotations

__all__ = [
    "changelog_topic",
    "checkpoint_topic",
    "dlq_topic",
    "feed_topic",
    "global_store",
    "repartition_topic",
    "store_name",
]


def repartition_topic(graph_id: str, step_id: str) -> str:
    """Topic that re-partitions the output of `step_id` by its new key."""
    return f"{graph_id}-{step_id}-repartition"


def store_name(graph_id: str, step_id: str) -> str:
    """Store that holds the table of the stateful step `step_id`."""
    return f"{graph_id}-{step_id}"


def global_store(store: str) -> str:
    """Where a worker keeps its copy of every partition of the global table `store`.

    It differs from the store of the table's own shards (``<graph>-<step>``), which the same
    worker may hold too; validation refuses a step named ``<step>.global`` beside it.
    """
    return f"{store}.global"


def changelog_topic(store: str) -> str:
    """Compacted topic that makes `store` durable (store names already carry the graph id)."""
    return f"{store}-changelog"


def dlq_topic(graph_id: str) -> str:
    """Dead-letter topic for records that fail to decode or make a step raise."""
    return f"{graph_id}-dlq"


def checkpoint_topic(graph_id: str) -> str:
    """Compacted topic where each task notes, per commit, where its next writes will land.

    After a crash, a task scans its output topics from there to learn which of the records it
    is about to replay were already written, and does not write them twice.
    """
    return f"{graph_id}-checkpoints"


def feed_topic(graph_id: str, step_id: str) -> str:
    """Topic that carries the records of a bounded in-process source."""
    return f"{graph_id}-{step_id}-feed"
