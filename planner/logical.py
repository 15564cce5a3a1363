"""Logical IR: *what* a graph does, as frozen nodes and edges.

A `LogicalPlan` is the value the planner starts from. Nodes are frozen attrs classes that
name their upstream steps in `inputs`; user functions sit in fields as opaque values that the
planner never calls (it compares them by identity). Output key and value types are carried
as opaque objects too, so later stages can name codecs without importing any.

Example::

    src = Source(id="clicks", topic="clicks", partitions=4)
    kb = KeyBy(id="by_url", inputs=("clicks",), fn=by_url, fn_name="app.by_url")
    plan = LogicalPlan(graph_id="clickstats", nodes=(src, kb))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import attrs
import networkx as nx

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Agent",
    "AgentTable",
    "Aggregate",
    "AggregateKind",
    "Changes",
    "Filter",
    "FlatMap",
    "FnNode",
    "Join",
    "KeyBy",
    "Late",
    "LogicalPlan",
    "Map",
    "Merge",
    "Node",
    "Peek",
    "Repartition",
    "Send",
    "Service",
    "Sink",
    "Source",
    "StreamJoin",
    "TopicDecl",
]

DEFAULT_CONCURRENCY = 64
"""Calls of an ``async def`` step in flight at once when the step sets no ``concurrency=``."""

AggregateKind = Literal["count", "sum", "reduce", "aggregate", "latest", "process"]
"""``latest`` keeps the last value per key (a table read from a topic); a None value deletes.
``process`` is a user's own keyed step (``stream.process``): its function returns the key's
new state and the values to emit, and its consumers get those values, not the state."""


def _ids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _nodes(value: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Node:
    """A step of the graph. `id` is the user's step name, unique in the graph."""

    id: str
    inputs: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    where: str = attrs.field(default="", eq=False)
    """Where the user created the step (``file.py:14``), for explanations and error messages
    only: it takes no part in plan equality."""
    key_type: object = None
    """Type of the keys this step emits, if known (`None`: unknown)."""
    value_type: object = None
    """Type of the values this step emits, if known (`None`: unknown)."""

    @property
    def kind(self) -> str:
        """Short lowercase name of the node class, used in explain output."""
        return type(self).__name__.lower()


@attrs.frozen(kw_only=True)
class FnNode(Node):
    """A step that applies one user function to each record's value."""

    fn: object = attrs.field(default=None)
    fn_name: str = attrs.field(default="", eq=False)
    """``module.qualname`` of `fn`, for explanations."""
    is_async: bool = False
    context: bool = False
    """True when `fn` also takes the record's context (key, timestamp, headers, topic,
    partition, offset) as its last argument: ``map(fn, context=True)``."""
    concurrency: int | None = None
    """For an ``async def`` step: how many calls may be in flight at once (None: the default)."""


@attrs.frozen(kw_only=True)
class Source(Node):
    """Records read from a topic; `feed` holds a bounded in-process iterable instead."""

    topic: str
    partitions: int = 1
    feed: object = attrs.field(default=None, eq=False)
    key_read: bool = True
    """False when no step reads the keys (set by the planner): they are not decoded."""
    timestamp: object = None
    """``fn(value)`` -> event time (seconds or a datetime) that becomes the record timestamp,
    or None to keep the topic's own timestamps; the planner never calls it."""
    timestamp_name: str = attrs.field(default="", eq=False)
    """``module.qualname`` of `timestamp`, for explanations."""


@attrs.frozen(kw_only=True)
class Map(FnNode):
    """value -> new value; the key is kept."""


@attrs.frozen(kw_only=True)
class FlatMap(FnNode):
    """value -> iterable of values, each with the input's key."""


@attrs.frozen(kw_only=True)
class Filter(FnNode):
    """Keep records whose value makes `fn` true."""


@attrs.frozen(kw_only=True)
class Peek(FnNode):
    """Call `fn` on each value for its side effect; records pass unchanged."""


@attrs.frozen(kw_only=True)
class KeyBy(FnNode):
    """value -> new key: the only step that changes keys, so the only source of repartitions."""

    partitions: int | None = None
    """Partitions of the repartition topic, if one is needed; default: the widest input."""
    anonymous: bool = attrs.field(default=False, eq=False)
    """True when the step's name is made up: the user gave no ``name=`` and a lambda, or a
    function an earlier step is already named after (the step is then ``by_user-2``)."""


@attrs.frozen(kw_only=True)
class Merge(Node):
    """The union of its input streams."""


@attrs.frozen(kw_only=True)
class Aggregate(FnNode):
    """Keyed aggregation into a table: count, sum, reduce, aggregate(initial, fn) or latest.

    ``latest`` (``stream.to_table()``) has no function: the table holds each key's last value.
    """

    agg: AggregateKind = "count"
    initial: object = attrs.field(default=None, eq=False)
    window: object = None
    """A window spec (opaque here): the table then holds one value per key and window."""
    timestamp: object = None
    """For a windowed aggregation: value -> event time; None uses the record timestamp."""
    merge: object = attrs.field(default=None, eq=False)
    """For `aggregate` over session windows: ``merge(a, b)`` combines two sessions' values."""
    is_global: bool = False
    """Every worker also holds the whole table (all partitions of its changelog), for
    lookups from any step: ``graph.global_table(...)`` or ``table.to_global()``."""
    state_type: object = None
    """For ``process``: the type of the state the table holds (its changelog's values);
    `value_type` is then the type of the values it emits."""
    wake: object = attrs.field(default=None, eq=False)
    """For ``process``: ``wake(state) -> float | None``, the event time at which the key
    wants `on_wake` called (None: never). A step with timers keeps stream time in its store."""
    on_wake: object = attrs.field(default=None, eq=False)
    """For ``process``: ``on_wake(state, stream_time) -> (new_state, outputs)``."""
    wake_name: str = ""
    """``module.qualname`` of `wake`, for explanations ("" without timers)."""


@attrs.frozen(kw_only=True)
class Join(FnNode):
    """A stream joined with a table: ``fn(value, table_value)`` per stream record.

    Its inputs are the stream, then the table (an `Aggregate`) that the stream looks up on
    the same task, so the planner co-partitions them. A join with a global table has only
    the stream as input and names the table in `global_table`; `key` gives the lookup key
    from the value (None: the record's key). ``how="inner"`` drops records whose key the
    table lacks; ``"left"`` calls `fn` with None for them.
    """

    how: Literal["inner", "left"] = "inner"
    global_table: str = ""
    key: object = None
    key_name: str = attrs.field(default="", eq=False)
    table_join: str = ""
    """Set on the two halves of a table-table join (the name of its table): the stream is
    the changes of the other table, and both tables must already be co-partitioned."""
    catch_up: float = 0.0
    """Seconds the stream may be held at task start while the table reads its input up to
    the end offsets it had then (0: no wait, the table as of processing)."""


@attrs.frozen(kw_only=True)
class StreamJoin(FnNode):
    """Two streams joined in a window: ``fn(value, other_value)`` per pair of records of the
    same key whose timestamps are at most `within` seconds apart (Kafka Streams'
    KStream-KStream join).

    Its inputs are the left stream, then the right one; both are buffered in its store
    (stateful), so the planner co-partitions them. A record whose window has closed (stream
    time past its timestamp + `within` + `grace`) is late. ``how="left"`` also emits the
    left records that found no partner, with None, when their window closes; ``"outer"``
    those of both sides.
    """

    within: float = 0.0
    grace: float = 0.0
    how: Literal["inner", "left", "outer"] = "inner"
    other: str = attrs.field(default="", eq=False)
    """The right stream's step as the user named it (its input may become a repartition)."""

    @property
    def kind(self) -> str:
        """``join`` in explanations, like a stream-table join."""
        return "join"


@attrs.frozen(kw_only=True)
class Changes(Node):
    """The stream of updates of the table made by its one input (an `Aggregate`).

    The updates of a windowed table are keyed by window, not by the table's key, so they are
    not partitioned by their own key.
    """


@attrs.frozen(kw_only=True)
class Late(Node):
    """The records a windowed `Aggregate` (its one input) found too late for a window."""


@attrs.frozen(kw_only=True)
class Sink(Node):
    """Records written to a topic, or handed to a callable `fn(key, value)`."""

    topic: str | None = None
    fn: object = None
    fn_name: str = attrs.field(default="", eq=False)
    is_async: bool = False
    context: bool = False
    """True when `fn` is called as ``fn(key, value, context)`` (see `FnNode.context`)."""
    concurrency: int | None = None
    """For an ``async def`` callable: how many calls may be in flight (None: the default)."""
    partitions: int | None = None


@attrs.frozen(kw_only=True)
class Repartition(Node):
    """Records re-keyed upstream are written to `topic` and read back partitioned by key.

    Inserted by the planner, never by users. `reason` says why, for explanations.
    """

    topic: str
    partitions: int
    reason: str = attrs.field(default="", eq=False)


@attrs.frozen(kw_only=True)
class Agent(FnNode):
    """A Faust-style agent: ``async def fn(stream)`` iterating its input with ``async for``.

    The function runs as one coroutine per input partition (``concurrency`` of them). What
    it yields goes to its `Sink` consumers; the tables it writes are its `AgentTable`
    consumers and the topics it sends to its `Send` consumers, so the plan shows both. Its
    output is partitioned like its input: the tables it writes are sharded by input
    partition, as in Faust.
    """

    topic: str = ""
    """The input topic, for explanations (the input step is in `inputs`)."""


@attrs.frozen(kw_only=True)
class AgentTable(Node):
    """A table an agent reads and writes as a dict (one input: that agent).

    Sharded like the agent's input: the store partition written while the agent handles a
    record is the record's partition. `window` (opaque) makes it a windowed table.
    """

    default: object = attrs.field(default=None, eq=False)
    partitions: int | None = None
    window: object = None
    relative_to: object = attrs.field(default=None, eq=False)
    """How a windowed table finds the time of a write (opaque; the runtime's business)."""
    is_global: bool = False
    """Faust's GlobalTable: written like any agent table, and every worker also holds all
    of it (all partitions of its changelog)."""

    @property
    def kind(self) -> str:
        """``table`` in explanations."""
        return "table"


@attrs.frozen(kw_only=True)
class Send(Sink):
    """Records an agent writes with ``await topic.send(...)`` (its one input: that agent).

    Unlike a `Sink`, it may write a topic the graph reads (one agent feeding another
    through a topic). It is fed the agent's yields only with `yields` (a ``sink=`` topic).
    """

    yields: bool = False
    """True for a ``sink=`` topic or agent of the agent: fed what the agent yields, with no
    key; False for the topics its code sends to with ``await topic.send(...)``."""

    @property
    def kind(self) -> str:
        """``send`` in explanations."""
        return "send"


@attrs.frozen(kw_only=True)
class Service(Node):
    """A function the worker runs beside the records: a timer, a crontab or a task.

    Not a step: it has no input or output stream, but it is part of the plan so that
    explanations and the live view show it. `fn` is opaque to the planner.
    """

    fn: object = attrs.field(default=None)
    fn_name: str = attrs.field(default="", eq=False)
    service: Literal["timer", "crontab", "task"] = "task"
    interval: float | None = None
    """A timer's period in seconds."""
    cron: str | None = None
    """A crontab's schedule (five fields)."""
    timezone: object = attrs.field(default=None, eq=False)
    on_leader: bool = False
    """Run only on the worker that leads the group (see the runtime's services)."""
    arg: object = attrs.field(default=None, eq=False)
    """What `fn` is called with when it takes a parameter (the App that declared it, as
    Faust passes the app); opaque to the planner, like `fn`."""


@attrs.frozen(kw_only=True)
class TopicDecl:
    """A topic the graph writes outside any step (from a timer or a task)."""

    name: str
    partitions: int = 1
    key_type: object = None
    value_type: object = None


def _services(value: Iterable[Service]) -> tuple[Service, ...]:
    return tuple(value)


def _decls(value: Iterable[TopicDecl]) -> tuple[TopicDecl, ...]:
    return tuple(value)


STATEFUL: tuple[type[Node], ...] = (Aggregate, AgentTable, StreamJoin)


@attrs.frozen(kw_only=True)
class LogicalPlan:
    """A graph as a value: nodes in creation order (parents before children)."""

    graph_id: str
    nodes: tuple[Node, ...] = attrs.field(converter=_nodes)
    services: tuple[Service, ...] = attrs.field(default=(), converter=_services)
    """Timers, crontabs and tasks run beside the steps (not nodes of the graph)."""
    topics: tuple[TopicDecl, ...] = attrs.field(default=(), converter=_decls)
    """Topics written outside any step (by services), so the plan creates them."""

    def node(self, node_id: str) -> Node:
        """Return the node named `node_id` (KeyError if none)."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def by_id(self) -> dict[str, Node]:
        """Map of step id -> node (the last wins on duplicates; validate reports them)."""
        return {n.id: n for n in self.nodes}

    def consumers(self, node_id: str) -> Iterator[Node]:
        """Nodes that read from `node_id`, in plan order."""
        return (n for n in self.nodes if node_id in n.inputs)

    def _repr_svg_(self) -> str:
        """Picture for Jupyter: the steps in layers, with an arrow to each consumer."""
        from planner.draw import logical_svg  # draw imports this module

        return logical_svg(self)

    def to_digraph(self) -> nx.DiGraph[str]:
        """A fresh networkx view for analysis (topological order, components, cycles)."""
        g: nx.DiGraph[str] = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id)
        for n in self.nodes:
            for up in n.inputs:
                g.add_edge(up, n.id)
        return g
