"""A plan described as plain data: what ``explain`` prints and ``--format json`` writes.

`describe(plan)` turns a `PhysicalPlan` (or a `LogicalPlan`, at the logical or partitioned
stage) into a frozen `PlanDescription` made only of strings, ints, bools and tuples. User
functions become ``module.qualname`` strings, declared types become codec names, and every
cut between sub-topologies carries the reason the planner gave for it. The text renderer
(`planner.explain`), the SVG renderer (`planner.draw`) and the JSON form all read this one
value, so they cannot disagree. ``from_json(d.to_json()) == d`` holds for every description.

Example::

    d = describe(plan)
    d.subtopologies[1].cuts[0].reason   # "key changed by 'app.by_url' at clicks.py:14"
    PlanDescription.from_json(d.to_json()) == d   # True
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from planner.logical import (
    DEFAULT_CONCURRENCY,
    Agent,
    AgentTable,
    Aggregate,
    Changes,
    Filter,
    FlatMap,
    FnNode,
    Join,
    KeyBy,
    Late,
    LogicalPlan,
    Map,
    Merge,
    Node,
    Peek,
    Repartition,
    Send,
    Service,
    Sink,
    Source,
    StreamJoin,
)
from planner.physical import PhysicalPlan, StoreSpec, Subtopology, TopicSpec

__all__ = [
    "DEFAULT_BACKEND",
    "FORMAT",
    "CutDescription",
    "PlanDescription",
    "ServiceDescription",
    "StepDescription",
    "StoreDescription",
    "SubtopologyDescription",
    "TaskDescription",
    "TopicDescription",
    "codec_name",
    "describe",
]

FORMAT = "flowgraph.plan/1"
"""Tag of the JSON form; bump it when a field changes meaning."""

DEFAULT_BACKEND = "store per partition; backend chosen at run (memory:// or rocksdb://DIR)"
"""What the planner can say about a store's backend: the runtime picks it, not the plan."""

_RAW_WHEN_UNDECLARED = frozenset({"source", "feed", "dlq"})


def codec_name(t: object, role: str = "") -> str:
    """Name of the codec for a declared key or value type, as ``explain`` shows it.

    The planner cannot import the codecs (they live in flowgraph), so this names them the
    way ``flowgraph.serde.codec_for`` picks them: a codec (anything with a str ``name``)
    by its name, a codec name as itself, ``bytes`` as "raw", ``str``/``int``/``float`` as
    themselves, a record class (an attrs class) as ``json<ClassName>``, other classes by
    qualname. An undeclared type (None) is "raw" on source, feed and dead-letter topics,
    where bytes pass as they are, and "?" elsewhere.

    >>> codec_name(int), codec_name(bytes), codec_name(None, "source"), codec_name(None)
    ('int', 'raw', 'raw', '?')
    """
    if t is None:
        return "raw" if role in _RAW_WHEN_UNDECLARED else "?"
    if isinstance(t, str):
        return t
    if isinstance(t, type):
        if t is bytes:
            return "raw"
        if t in (str, int, float):
            return t.__name__
        if hasattr(t, "__attrs_attrs__"):
            return f"json<{t.__name__}>"
        return t.__qualname__
    name = getattr(t, "name", None)
    if isinstance(name, str):
        return name
    return repr(t)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class StepDescription:
    """One step: what it does, which user function it runs, and where the user made it.

    `function` is ``module.qualname`` ("" for steps without one); `where` is ``file.py:14``.
    `topic` is the topic a source or repartition reads or a sink writes; `store` the store of
    a stateful step; `reason` why a repartition exists; `window` the windows of a windowed
    aggregation (``tumbling 10s grace 2s``).
    """

    id: str
    kind: str
    function: str = ""
    where: str = ""
    inputs: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    topic: str = ""
    store: str = ""
    reason: str = ""
    window: str = ""
    concurrency: int = 0
    """For an ``async def`` step, its calls in flight at most (0 for any other step)."""


@attrs.frozen(kw_only=True)
class TaskDescription:
    """Steps fused into one loop over a batch, in order."""

    steps: tuple[str, ...] = attrs.field(converter=_str_tuple)
    stateful: bool = False


@attrs.frozen(kw_only=True)
class CutDescription:
    """Why a sub-topology starts at a repartition topic, and which sub-topology writes it."""

    topic: str
    reason: str
    writer: int = -1
    """Id of the sub-topology writing `topic` (-1: none found)."""


def _tasks(value: Iterable[TaskDescription]) -> tuple[TaskDescription, ...]:
    return tuple(value)


def _cuts(value: Iterable[CutDescription]) -> tuple[CutDescription, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class SubtopologyDescription:
    """A sub-topology: its steps, fused tasks, topics read and written, and its cuts."""

    id: int
    partitions: int
    steps: tuple[str, ...] = attrs.field(converter=_str_tuple)
    tasks: tuple[TaskDescription, ...] = attrs.field(default=(), converter=_tasks)
    reads: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    writes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cuts: tuple[CutDescription, ...] = attrs.field(default=(), converter=_cuts)


def _pairs(value: Iterable[Iterable[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value)


@attrs.frozen(kw_only=True)
class TopicDescription:
    """A topic with its full name, role, partitions, codecs, configs, writers and readers."""

    name: str
    role: str
    partitions: int
    key: str = "?"
    """Key codec name (see `codec_name`)."""
    value: str = "?"
    """Value codec name."""
    configs: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    partitioner: str = ""
    """How a keyed record finds its partition ("murmur2": Kafka's default partitioner of
    the key codec's bytes); empty for the single-partition dlq and checkpoint topics."""
    key_from: str = ""
    """The step whose key the records carry; empty for a source (its producer's key)."""
    writers: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    """Step ids that write the topic (a changelog: its stateful step)."""
    readers: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    """Step ids that read it."""


@attrs.frozen(kw_only=True)
class StoreDescription:
    """The table of one stateful step: one store per partition, made durable by `changelog`."""

    name: str
    step: str
    partitions: int
    changelog: str
    backend: str = DEFAULT_BACKEND
    key: str = "?"
    value: str = "?"
    is_global: bool = False
    """A global table: every worker also holds all its partitions (see `StoreSpec`)."""


@attrs.frozen(kw_only=True)
class ServiceDescription:
    """A timer, crontab or task: a function the worker runs beside the records.

    `schedule` says when in words (``every 5 s``, ``cron */15 * * * * (Europe/Paris)``,
    ``once at start``); `on_leader` that only the group's leader runs it.
    """

    name: str
    kind: str
    schedule: str
    function: str = ""
    on_leader: bool = False
    where: str = ""


def _steps(value: Iterable[StepDescription]) -> tuple[StepDescription, ...]:
    return tuple(value)


def _subs(value: Iterable[SubtopologyDescription]) -> tuple[SubtopologyDescription, ...]:
    return tuple(value)


def _topics(value: Iterable[TopicDescription]) -> tuple[TopicDescription, ...]:
    return tuple(value)


def _stores(value: Iterable[StoreDescription]) -> tuple[StoreDescription, ...]:
    return tuple(value)


def _service_tuple(value: Iterable[ServiceDescription]) -> tuple[ServiceDescription, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class PlanDescription:
    """A whole plan as plain data.

    `stage` is "logical", "partitioned" or "physical". `steps` lists every step (plan order
    for logical plans, sub-topology order for physical ones); sub-topologies, topics and
    stores are empty before the physical stage. `dlq` is the dead-letter topic.
    """

    graph: str
    stage: str
    steps: tuple[StepDescription, ...] = attrs.field(default=(), converter=_steps)
    subtopologies: tuple[SubtopologyDescription, ...] = attrs.field(default=(), converter=_subs)
    topics: tuple[TopicDescription, ...] = attrs.field(default=(), converter=_topics)
    stores: tuple[StoreDescription, ...] = attrs.field(default=(), converter=_stores)
    dlq: str = ""
    services: tuple[ServiceDescription, ...] = attrs.field(default=(), converter=_service_tuple)
    """Timers, crontabs and tasks, in the order the app declares them."""

    def step(self, step_id: str) -> StepDescription:
        """The description of step `step_id` (KeyError if none)."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def to_json(self, *, indent: int | None = 2) -> str:
        """JSON text: objects for classes, arrays for tuples, tagged with `FORMAT`."""
        data = {"format": FORMAT, **attrs.asdict(self)}
        return json.dumps(data, indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> PlanDescription:
        """Read `to_json` output back; ValueError if it is not a flowgraph plan description."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            msg = f"not a flowgraph plan description (format {got!r}); expected {FORMAT!r}"
            raise ValueError(msg)
        try:
            return _plan_from(data)
        except (KeyError, TypeError) as exc:
            msg = f"malformed flowgraph plan description: {exc!r}"
            raise ValueError(msg) from exc


def _plan_from(data: dict[str, Any]) -> PlanDescription:
    return PlanDescription(
        graph=data["graph"],
        stage=data["stage"],
        steps=[StepDescription(**s) for s in data["steps"]],
        subtopologies=[
            SubtopologyDescription(
                **{
                    **sub,
                    "tasks": [TaskDescription(**t) for t in sub["tasks"]],
                    "cuts": [CutDescription(**c) for c in sub["cuts"]],
                }
            )
            for sub in data["subtopologies"]
        ],
        topics=[TopicDescription(**t) for t in data["topics"]],
        stores=[StoreDescription(**s) for s in data["stores"]],
        dlq=data["dlq"],
        services=[ServiceDescription(**s) for s in data.get("services", [])],
    )


# -- building a description -----------------------------------------------------------------

_KINDS: tuple[tuple[type[Node], str], ...] = (
    (Source, "source"),
    (Repartition, "repartition"),
    (KeyBy, "key_by"),
    (Map, "map"),
    (FlatMap, "flat_map"),
    (Filter, "filter"),
    (Peek, "peek"),
    (Merge, "merge"),
    (Changes, "changes"),
    (Late, "late"),
    (Agent, "agent"),
    (AgentTable, "table"),
    (Send, "send"),
    (Sink, "to"),
)


def _kind(node: Node) -> str:
    """The builder method that made `node` ("key_by", "count", ...), as users know it."""
    if isinstance(node, AgentTable) and node.window is not None:
        return "windowed table"
    if isinstance(node, Aggregate):
        return f"windowed {node.agg}" if node.window is not None else node.agg
    for cls, name in _KINDS:
        if isinstance(node, cls):
            return name
    return node.kind


def _step(node: Node, stores: dict[str, str]) -> StepDescription:
    function = ""
    concurrency = 0
    if isinstance(node, FnNode | Sink):
        function = node.fn_name
        if node.context:  # the step also reads the record's context (key, headers, offset...)
            function += " +context"
        if isinstance(node, Aggregate) and node.wake_name:  # a process with timers
            function += f", timers wake={node.wake_name}"
        if isinstance(node, Join):
            function += f", {node.how} join on {_joined(node)}"
            if node.catch_up:  # held at task start until the table caught up
                function += f", catch up <= {node.catch_up:g}s"
        if isinstance(node, StreamJoin):
            function += (
                f", within {_seconds(node.within)}, grace {_seconds(node.grace)}, "
                f"{node.how} join with {node.other or node.inputs[1]}"
            )
        if node.is_async and not isinstance(node, Aggregate):
            concurrency = node.concurrency or DEFAULT_CONCURRENCY
    elif isinstance(node, Source) and node.timestamp_name:
        function = f"timestamp {node.timestamp_name}"
    topic = ""
    if isinstance(node, Source | Repartition):
        topic = node.topic
    elif isinstance(node, Agent):
        topic = node.topic  # what it reads, for the reader of a long app
    elif isinstance(node, Sink):
        topic = node.topic or ""
    return StepDescription(
        id=node.id,
        kind=_kind(node),
        function=function,
        where=node.where,
        inputs=node.inputs,
        topic=topic,
        store=stores.get(node.id, ""),
        reason=node.reason if isinstance(node, Repartition) else "",
        window=_window(node),
        concurrency=concurrency,
    )


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _joined(node: Join) -> str:
    """What a join looks up: its table on the same task, or a global table by a key."""
    if not node.global_table:
        return f"table {node.inputs[1]}"
    by = f" by {node.key_name}" if node.key_name else ""
    return f"global table {node.global_table}{by}"


def _window(node: Node) -> str:
    """A windowed aggregation's windows in a few words; the spec says them (`describe()`)."""
    if not isinstance(node, Aggregate | AgentTable) or node.window is None:
        return ""
    describe = getattr(node.window, "describe", None)
    return str(describe()) if callable(describe) else repr(node.window)


def describe(plan: PhysicalPlan | LogicalPlan, *, backend: str | None = None) -> PlanDescription:
    """Describe `plan` as plain data.

    Args:
        plan: a physical plan, or a logical plan at the logical or partitioned stage.
        backend: the store backend, when the caller knows it (e.g. ``rocksdb://.flowgraph``);
            the planner alone cannot, so it says `DEFAULT_BACKEND`.
    """
    if isinstance(plan, LogicalPlan):
        stage = "partitioned" if any(isinstance(n, Repartition) for n in plan.nodes) else "logical"
        return PlanDescription(
            graph=plan.graph_id,
            stage=stage,
            steps=[_step(n, {}) for n in plan.nodes],
            services=[_service(s) for s in plan.services],
        )
    store_of = {s.step: s.name for s in plan.stores}
    nodes = [n for sub in plan.subtopologies for n in sub.steps]
    writer_of = {topic: sub.id for sub in plan.subtopologies for _, topic in sub.outputs}
    return PlanDescription(
        graph=plan.graph_id,
        stage="physical",
        steps=[_step(n, store_of) for n in nodes],
        subtopologies=[_subtopology(sub, plan, writer_of) for sub in plan.subtopologies],
        topics=[_topic(t, nodes, plan.stores) for t in plan.topics],
        stores=[_store(s, backend or DEFAULT_BACKEND) for s in plan.stores],
        dlq=plan.dlq,
        services=[_service(s) for s in plan.logical.services],
    )


def _service(s: Service) -> ServiceDescription:
    if s.service == "timer":
        schedule = f"every {s.interval:g} s"
    elif s.service == "crontab":
        schedule = f"cron {s.cron}"
        if s.timezone is not None:
            schedule += f" ({s.timezone})"
    else:
        schedule = "once at start"
    return ServiceDescription(
        name=s.id,
        kind=s.service,
        schedule=schedule,
        function=s.fn_name,
        on_leader=s.on_leader,
        where=s.where,
    )


def _subtopology(
    sub: Subtopology, plan: PhysicalPlan, writer_of: dict[str, int]
) -> SubtopologyDescription:
    writes = [topic for _, topic in sub.outputs]
    writes += [s.topic for s in sub.steps if isinstance(s, Sink) and s.topic is not None]
    members = set(sub.step_ids)
    writes += [s.changelog for s in plan.stores if s.step in members]
    return SubtopologyDescription(
        id=sub.id,
        partitions=sub.partitions,
        steps=sub.step_ids,
        tasks=[TaskDescription(steps=t.step_ids, stateful=t.stateful) for t in sub.tasks],
        reads=sub.source_topics,
        writes=writes,
        cuts=[
            CutDescription(topic=s.topic, reason=s.reason, writer=writer_of.get(s.topic, -1))
            for s in sub.steps
            if isinstance(s, Repartition)
        ],
    )


def _topic(t: TopicSpec, nodes: list[Node], stores: tuple[StoreSpec, ...]) -> TopicDescription:
    readers = [n.id for n in nodes if isinstance(n, Source | Repartition) and n.topic == t.name]
    writers = [n.id for n in nodes if isinstance(n, Sink) and n.topic == t.name]
    for n in nodes:
        if isinstance(n, Repartition) and n.topic == t.name:
            writers += n.inputs
    writers += [s.step for s in stores if s.changelog == t.name]
    return TopicDescription(
        name=t.name,
        role=t.role,
        partitions=t.partitions,
        key=codec_name(t.key_type, t.role),
        value=codec_name(t.value_type, t.role),
        configs=t.configs,
        partitioner=t.partitioner or "",
        key_from=t.key_from or "",
        writers=writers,
        readers=readers,
    )


def _store(s: StoreSpec, backend: str) -> StoreDescription:
    return StoreDescription(
        name=s.name,
        step=s.step,
        partitions=s.partitions,
        changelog=s.changelog,
        backend=backend,
        key=codec_name(s.key_type),
        value=codec_name(s.value_type),
        is_global=s.is_global,
    )
