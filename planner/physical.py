"""Physical IR: *where and how* a logical plan runs.

A `PhysicalPlan` lists sub-topologies (connected parts between repartition topics, each run
as one task per partition), every topic with its role, partitions, types and configs, and
every store with its changelog. The runtime executes exactly this and decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from planner.logical import LogicalPlan, Node

__all__ = [
    "CatchUp",
    "FusedTask",
    "PhysicalPlan",
    "StoreSpec",
    "Subtopology",
    "TopicRole",
    "TopicSpec",
]

TopicRole = Literal["source", "sink", "repartition", "changelog", "dlq", "feed", "checkpoint"]

INTERNAL_ROLES: frozenset[str] = frozenset({"repartition", "changelog", "feed", "checkpoint"})


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(value)


def _steps(value: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class TopicSpec:
    """A topic the plan reads or writes."""

    name: str
    partitions: int
    role: TopicRole
    key_type: object = None
    value_type: object = None
    configs: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    partitioner: str | None = None
    """How a keyed record finds its partition: "murmur2" (Kafka's default partitioner of
    the key codec's bytes) for topics flowgraph writes or reads by key; None for the
    single-partition dead-letter and checkpoint topics."""
    key_from: str | None = None
    """The step whose key the records carry (None for a source: its producer's key)."""

    @property
    def internal(self) -> bool:
        """True for topics that only flowgraph reads (repartition, changelog, feed)."""
        return self.role in INTERNAL_ROLES


@attrs.frozen(kw_only=True)
class StoreSpec:
    """The table of one stateful step: one store per partition, made durable by `changelog`."""

    name: str
    step: str
    changelog: str
    partitions: int
    key_type: object = None
    value_type: object = None
    is_global: bool = False
    """Every worker also holds all `partitions` of it, kept up to date from `changelog` in
    the background (a global table), besides the tasks' own shards."""


@attrs.frozen(kw_only=True)
class FusedTask:
    """Steps run together in one loop over a batch, in topological order."""

    step_ids: tuple[str, ...] = attrs.field(converter=_strs)
    stateful: bool = False


def _fused(value: Iterable[FusedTask]) -> tuple[FusedTask, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class CatchUp:
    """A join's bounded wait at task start (``join(..., catch_up=seconds)``).

    On each task, the partitions of `held` (the stream's input topics) are not processed
    until those of `tables` (the table's input topics) have been processed up to the end
    offsets they had when the task started, or until `seconds` have passed.
    """

    join: str
    table: str
    seconds: float
    held: tuple[str, ...] = attrs.field(converter=_strs)
    tables: tuple[str, ...] = attrs.field(converter=_strs)


def _catch_ups(value: Iterable[CatchUp]) -> tuple[CatchUp, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Subtopology:
    """A connected part of the plan between topics; runs as one task per partition.

    `steps` are in topological order; entry points are `Source` and `Repartition` nodes
    (read from their topic). `outputs` maps a step id to the repartition topics its records
    are written to. `cuts` says why each incoming topic boundary exists.
    """

    id: int
    steps: tuple[Node, ...] = attrs.field(converter=_steps)
    partitions: int
    source_topics: tuple[str, ...] = attrs.field(converter=_strs)
    outputs: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    tasks: tuple[FusedTask, ...] = attrs.field(default=(), converter=_fused)
    cuts: tuple[str, ...] = attrs.field(default=(), converter=_strs, eq=False)
    catch_up: tuple[CatchUp, ...] = attrs.field(default=(), converter=_catch_ups)
    """The bounded waits of its joins at task start (`CatchUp`), set by `planner.catch_up`."""

    @property
    def step_ids(self) -> tuple[str, ...]:
        """Ids of all steps, in order."""
        return tuple(s.id for s in self.steps)


def _subs(value: Iterable[Subtopology]) -> tuple[Subtopology, ...]:
    return tuple(value)


def _topics(value: Iterable[TopicSpec]) -> tuple[TopicSpec, ...]:
    return tuple(value)


def _stores(value: Iterable[StoreSpec]) -> tuple[StoreSpec, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class PhysicalPlan:
    """What the runtime executes: sub-topologies, topics and stores of one graph."""

    graph_id: str
    logical: LogicalPlan
    subtopologies: tuple[Subtopology, ...] = attrs.field(converter=_subs)
    topics: tuple[TopicSpec, ...] = attrs.field(default=(), converter=_topics)
    stores: tuple[StoreSpec, ...] = attrs.field(default=(), converter=_stores)
    dlq: str = ""

    def topic(self, name: str) -> TopicSpec:
        """Return the topic called `name` (KeyError if the plan has none)."""
        for t in self.topics:
            if t.name == name:
                return t
        raise KeyError(name)

    def explain(self) -> str:
        """Text description of the plan (what ``flowgraph explain`` prints)."""
        from planner.explain import to_text  # explain imports this module

        return to_text(self)

    def _repr_svg_(self) -> str:
        """Picture for Jupyter: sub-topologies boxed with their steps, topics and stores."""
        from planner.draw import physical_svg  # draw imports this module

        return physical_svg(self)

    def store_for(self, step_id: str) -> StoreSpec:
        """Return the store of stateful step `step_id`."""
        for s in self.stores:
            if s.step == step_id:
                return s
        raise KeyError(step_id)
