"""`fg.App`: Faust's face (topics, agents, tables, timers) over the same logical graph.

An App is a graph builder like `fg.Graph`, written the Faust way. `to_logical` turns each
agent into planner steps: its input topic (a `Source`), the `group_by`/`through` calls its
body makes before its first record (`KeyBy` steps and repartition topics, found by
`_trace.trace`), the `Agent` step itself, and after it the tables it uses (`AgentTable`),
the topics it sends to (`Send`) and its sinks (`Sink`, fed by what it yields). Timers,
crontabs and tasks become the plan's `services`. The planner then checks, repartitions,
names and explains an app exactly as a builder graph, and `app.graph` (a `fg.Graph` with
the app's id) may hold builder steps that run in the same job.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from flowgraph import _util
from flowgraph._graph import Graph
from flowgraph.app._codecs import faust_codec
from flowgraph.app._table import GlobalTable as AppGlobalTable
from flowgraph.app._table import Table as AppTable
from flowgraph.app._trace import references, trace
from flowgraph.errors import ConfigurationError, GraphDefinitionError
from flowgraph.runtime.agent import CURRENT, WORKER
from planner import logical as lg

if TYPE_CHECKING:
    from planner.physical import PhysicalPlan

__all__ = ["Agent", "App", "Topic"]

F = TypeVar("F", bound=Callable[..., Any])

_FAUST_PORT = 9092
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    msg = f"{what} must be a positive number of seconds or a timedelta, not {value!r}"
    raise ConfigurationError(msg)


def _broker_url(broker: str | None) -> str | None:
    """Faust's ``kafka://localhost`` means port 9092; flowgraph URLs name the port."""
    if broker is None or not broker.startswith("kafka://"):
        return broker
    rest = broker[len("kafka://") :]
    hosts, sep, query = rest.partition("?")
    fixed = ",".join(h if ":" in h or not h else f"{h}:{_FAUST_PORT}" for h in hosts.split(","))
    return f"kafka://{fixed}{sep}{query}"


def _store_url(store: str | None, app_id: str) -> str | None:
    """Faust's bare ``rocksdb://`` keeps its data in ``<app id>-data``."""
    if store in ("rocksdb://", "rocksdb:"):
        return f"rocksdb://{app_id}-data"
    return store


class Topic:
    """A Kafka topic of the app (or, from `app.channel()`, one of its own)."""

    def __init__(
        self,
        app: App,
        name: str,
        *,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        key_serializer: str | None = None,
        value_serializer: str | None = None,
        internal: bool = False,
    ) -> None:
        self.app = app
        self.name = name
        self.topics = (name,)
        self.key_type = key_type
        self.value_type = value_type
        self.partitions = partitions
        self.key_serializer = key_serializer or app.conf.key_serializer
        self.value_serializer = value_serializer or app.conf.value_serializer
        self.internal = internal

    def __repr__(self) -> str:
        return f"<Topic {self.name!r}>"

    def get_topic_name(self) -> str:
        """Faust's accessor for the topic's name."""
        return self.name

    @property
    def width(self) -> int:
        """Partitions: the topic's own, else the app's ``topic_partitions``."""
        return self.partitions or self.app.conf.topic_partitions

    @property
    def key_codec(self) -> Any:
        return faust_codec(self.key_type, self.key_serializer)

    @property
    def value_codec(self) -> Any:
        return faust_codec(self.value_type, self.value_serializer)

    async def send(
        self,
        *,
        key: Any = None,
        value: Any = None,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
        force: bool = False,
    ) -> None:
        """Write one record. In an agent it is tied to the record being handled (written
        once, even when a crash replays that record); elsewhere it is written at once."""
        hdrs = tuple(headers.items()) if isinstance(headers, dict) else headers or None
        slot = CURRENT.get()
        if slot is not None:
            writer = slot.op.sends.get(self.name)
            if writer is None:
                msg = (
                    f"agent {slot.op.node.id!r} sends to topic {self.name!r}, but the topic is "
                    "not named in the agent's code, so the plan has no writer for it; refer to "
                    "the topic (or agent) by a module-level name in the agent function"
                )
                raise GraphDefinitionError(msg)
            rec = slot.rec
            ts = timestamp if timestamp is not None else (rec[2] if rec else time.time())
            slot.op.write(slot, writer, (key, value, ts, slot.offset, hdrs))
            return
        worker = WORKER.get()
        if worker is None:
            msg = (
                f"topic {self.name!r}: send() outside a running app; send from an agent, a "
                "timer or a task, or write test input with fg.testing.TestDriver"
            )
            raise ConfigurationError(msg)
        await worker.send(
            self.name, key, value, partition=partition, timestamp=timestamp, headers=hdrs
        )

    def stream(self) -> Any:
        """Faust's ``topic.stream()`` outside an agent is not supported."""
        msg = "topic.stream() is not supported; iterate a topic in an agent: @app.agent(topic)"
        raise NotImplementedError(msg)


class Agent:
    """What ``@app.agent`` makes of an ``async def``: a step with its own input topic."""

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        channel: Topic,
        name: str,
        concurrency: int,
        sink: tuple[Any, ...],
        where: str,
    ) -> None:
        self.app = app
        self.fn = fn
        self.channel = channel
        self.name = name
        self.concurrency = concurrency
        self.sink = sink
        self.where = where
        self.__name__ = name
        self.__doc__ = fn.__doc__
        self._calls: list[tuple[str, Any, str | None, int | None]] | None = None

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} reading {self.channel.name!r}>"

    @property
    def topic(self) -> Topic:
        return self.channel

    def calls(self) -> list[tuple[str, Any, str | None, int | None]]:
        """The re-keying calls the agent makes on its stream (traced once)."""
        if self._calls is None:
            self._calls = trace(self.fn)
        return self._calls

    async def send(
        self,
        *,
        key: Any = None,
        value: Any = None,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        **_: Any,
    ) -> None:
        """Write a record to the agent's topic (see `Topic.send`)."""
        await self.channel.send(
            key=key, value=value, partition=partition, timestamp=timestamp, headers=headers
        )

    async def cast(
        self,
        value: Any = None,
        *,
        key: Any = None,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        **_: Any,
    ) -> None:
        """Faust's fire-and-forget send: the same as `send` here."""
        await self.send(
            key=key, value=value, partition=partition, timestamp=timestamp, headers=headers
        )

    async def ask(self, *args: Any, **kwargs: Any) -> Any:
        msg = (
            f"agent {self.name!r}: ask() (request and reply) is not supported; send the "
            "request with agent.send() and have the agent send its answer to a reply topic"
        )
        raise NotImplementedError(msg)


class _Conf:
    """The app's settings, under Faust's names (``app.conf.broker``, ...)."""

    id: str
    broker: str | None
    store: str | None
    topic_partitions: int
    key_serializer: str
    value_serializer: str

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"<Conf {self.__dict__!r}>"


class App:
    """A Faust-style application: ``app = fg.App("myapp", broker="kafka://...")``."""

    def __init__(
        self,
        id: str,  # noqa: A002 - Faust's name
        *,
        broker: str | None = None,
        store: str | None = None,
        topic_partitions: int = 8,
        key_serializer: str = "raw",
        value_serializer: str = "json",
        **options: Any,
    ) -> None:
        if not isinstance(id, str) or not _NAME.match(id):
            msg = f"app id {id!r} must be letters, digits, '.', '_' or '-'; it prefixes topics"
            raise ConfigurationError(msg)
        if not isinstance(topic_partitions, int) or topic_partitions < 1:
            msg = f"topic_partitions must be a positive int, not {topic_partitions!r}"
            raise ConfigurationError(msg)
        self.id = id
        self.conf = _Conf(
            id=id,
            broker=_broker_url(broker),
            store=_store_url(store, id),
            topic_partitions=topic_partitions,
            key_serializer=key_serializer,
            value_serializer=value_serializer,
            **options,
        )
        self.graph = Graph(id)
        """Builder steps that run in the same job as the agents (``app.graph.source(...)``)."""
        self.topics: dict[str, Topic] = {}
        self.agents: dict[str, Agent] = {}
        self.tables: dict[str, AppTable[Any, Any]] = {}
        self._services: list[lg.Service] = []
        self._channels = itertools.count()

    def __repr__(self) -> str:
        return f"<App {self.id!r}: {len(self.agents)} agents, {len(self.tables)} tables>"

    @property
    def broker(self) -> str | None:
        """The broker URL the app names (None: the embedded ``memory://``)."""
        return self.conf.broker

    @property
    def store(self) -> str | None:
        return self.conf.store

    # -- declaring -----------------------------------------------------------------------

    def topic(
        self,
        *topics: str,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        key_serializer: str | None = None,
        value_serializer: str | None = None,
        internal: bool = False,
        **_faust_only: Any,
    ) -> Topic:
        """A topic, described by the types of its keys and values (Faust's arguments;
        retention, replicas and the like are the cluster's business here and ignored)."""
        if len(topics) != 1 or not isinstance(topics[0], str) or not topics[0]:
            msg = f"app.topic() takes one topic name, got {topics!r}; declare one topic per call"
            raise ConfigurationError(msg)
        name = topics[0]
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            msg = f"topic {name!r}: partitions must be a positive int, not {partitions!r}"
            raise ConfigurationError(msg)
        known = self.topics.get(name)
        topic = Topic(
            self,
            name,
            key_type=key_type,
            value_type=value_type,
            partitions=partitions,
            key_serializer=key_serializer,
            value_serializer=value_serializer,
            internal=internal,
        )
        if known is not None and (known.key_type, known.value_type, known.partitions) != (
            key_type,
            value_type,
            partitions,
        ):
            msg = (
                f"topic {name!r} is declared twice with different types or partitions; "
                "declare it once and reuse the object"
            )
            raise ConfigurationError(msg)
        self.topics.setdefault(name, topic)
        return self.topics[name]

    def channel(self, *, key_type: Any = None, value_type: Any = None, **_: Any) -> Topic:
        """An app-internal stream: a one-partition topic ``<app>-channel-<n>``."""
        name = f"{self.id}-channel-{next(self._channels)}"
        return self.topic(name, key_type=key_type, value_type=value_type, partitions=1)

    def agent(
        self,
        channel: Topic | str | None = None,
        *,
        name: str | None = None,
        concurrency: int = 1,
        sink: Iterable[Any] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        **_faust_only: Any,
    ) -> Callable[[Callable[..., Any]], Agent]:
        """Decorate ``async def fn(stream)``: an agent reading `channel` (default: a topic
        of its own, ``<app>-<name>``)."""
        if not isinstance(concurrency, int) or concurrency < 1:
            msg = f"agent concurrency must be a positive int, not {concurrency!r}"
            raise ConfigurationError(msg)
        where = _util.call_site()

        def decorate(fn: Callable[..., Any]) -> Agent:
            if not _util.is_async(fn):
                msg = (
                    f"@app.agent needs an async def function, got {_util.fn_name(fn)}"
                    f" (at {where}); write `async def {getattr(fn, '__name__', 'agent')}(stream)`"
                )
                raise GraphDefinitionError(msg)
            agent_name = name or fn.__name__
            if agent_name in self.agents:
                msg = f"app {self.id!r} already has an agent {agent_name!r}; pass name=..."
                raise GraphDefinitionError(msg)
            if isinstance(channel, Topic):
                topic = channel
            elif isinstance(channel, str):
                topic = self.topic(channel, key_type=key_type, value_type=value_type)
            elif channel is None:
                topic = self.topic(
                    f"{self.id}-{agent_name}", key_type=key_type, value_type=value_type
                )
            else:
                msg = f"@app.agent reads a topic or channel, not {channel!r}"
                raise GraphDefinitionError(msg)
            agent = Agent(self, fn, topic, agent_name, concurrency, tuple(sink or ()), where)
            self.agents[agent_name] = agent
            return agent

        return decorate

    def Table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        help: str | None = None,  # noqa: A002 - Faust's name
        **_faust_only: Any,
    ) -> AppTable[Any, Any]:
        """A table: a dict an agent reads and writes, made durable by a changelog topic."""
        return self._table(AppTable, name, default, key_type, value_type, partitions, help)

    def GlobalTable(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        help: str | None = None,  # noqa: A002 - Faust's name
        **_faust_only: Any,
    ) -> AppGlobalTable[Any, Any]:
        """A table every worker holds whole: written by one agent like a `Table`, read by
        any agent, timer or task (see docs/concepts/global-tables.md)."""
        table = self._table(AppGlobalTable, name, default, key_type, value_type, partitions, help)
        assert isinstance(table, AppGlobalTable)
        return table

    def _table(
        self,
        cls: type[AppTable[Any, Any]],
        name: str,
        default: Callable[[], Any] | None,
        key_type: Any,
        value_type: Any,
        partitions: int | None,
        help: str | None,  # noqa: A002 - Faust's name
    ) -> AppTable[Any, Any]:
        if name in self.tables:
            msg = f"app {self.id!r} already has a table {name!r}; table names must be unique"
            raise GraphDefinitionError(msg)
        if default is not None and not callable(default):
            msg = f"table {name!r}: default must be callable (like int or list), not {default!r}"
            raise ConfigurationError(msg)
        table: AppTable[Any, Any] = cls(
            self,
            name,
            default=default,
            key_type=key_type,
            value_type=value_type,
            partitions=partitions,
            help=help,
            where=_util.call_site(),
        )
        self.tables[name] = table
        return table

    # -- services ------------------------------------------------------------------------

    def timer(
        self,
        interval: Any,
        *,
        on_leader: bool = False,
        name: str | None = None,
        **_faust_only: Any,
    ) -> Callable[[F], F]:
        """Run ``async def fn()`` (or ``fn(app)``) every `interval` seconds while the worker
        runs, the first time one interval after it starts (docs/concepts/services.md).
        Faust's `traced` and `max_drift_correction` are accepted and ignored."""
        seconds = _seconds(interval, "timer interval")
        return self._service("timer", name, on_leader=on_leader, interval=seconds)

    def crontab(
        self,
        cron_format: str,
        *,
        timezone: Any = None,
        on_leader: bool = False,
        **_faust_only: Any,
    ) -> Callable[[F], F]:
        """Run ``async def fn()`` on a cron schedule (five fields, as crontab(5)), in
        `timezone` (a tzinfo or a zone name; UTC if None)."""
        from flowgraph.runtime.services import check_cron, check_timezone

        check_cron(cron_format)
        check_timezone(timezone)
        return self._service(
            "crontab", None, on_leader=on_leader, cron=cron_format, timezone=timezone
        )

    def task(self, fn: F | None = None, *, on_leader: bool = False, **_faust_only: Any) -> Any:
        """Run ``async def fn()`` (or ``fn(app)``) once when the worker starts."""
        decorate = self._service("task", None, on_leader=on_leader)
        return decorate if fn is None else decorate(fn)

    def _service(self, kind: Any, name: str | None, **fields: Any) -> Callable[[F], F]:
        where = _util.call_site()

        def decorate(fn: F) -> F:
            if not _util.is_async(fn):
                msg = f"@app.{kind} needs an async def function, got {_util.fn_name(fn)}"
                raise GraphDefinitionError(msg)
            self._services.append(
                lg.Service(
                    id=name or getattr(fn, "__name__", kind),
                    fn=fn,
                    fn_name=_util.fn_name(fn),
                    service=kind,
                    where=where,
                    arg=self,
                    **fields,
                )
            )
            return fn

        return decorate

    # -- the graph -----------------------------------------------------------------------

    def to_logical(self) -> lg.LogicalPlan:
        """The app as a logical plan: its builder steps, then each agent's steps."""
        builder = self.graph.to_logical()
        nodes: list[lg.Node] = list(builder.nodes)
        sources = {n.topic: n.id for n in nodes if isinstance(n, lg.Source) and n.feed is None}
        owner: dict[str, str] = {}
        for agent in self.agents.values():
            nodes += self._agent_nodes(agent, sources, owner)
        written = {n.topic for n in nodes if isinstance(n, lg.Sink | lg.Repartition) and n.topic}
        extra = [
            lg.TopicDecl(
                name=t.name,
                partitions=t.width,
                key_type=t.key_codec,
                value_type=t.value_codec,
            )
            for t in self.topics.values()
            if t.name not in sources and t.name not in written
        ]
        return lg.LogicalPlan(graph_id=self.id, nodes=nodes, services=self._services, topics=extra)

    def _agent_nodes(
        self, agent: Agent, sources: dict[str, str], owner: dict[str, str]
    ) -> list[lg.Node]:
        nodes: list[lg.Node] = []
        topic = agent.channel
        up = sources.get(topic.name)
        if up is None:
            up = sources[topic.name] = topic.name
            nodes.append(
                lg.Source(
                    id=up,
                    topic=topic.name,
                    partitions=topic.width,
                    key_type=topic.key_codec,
                    value_type=topic.value_codec,
                    where=agent.where,
                )
            )
        for i, (call, arg, name, partitions) in enumerate(agent.calls()):
            if call == "group_by":
                step = name or getattr(arg, "__name__", None)
                if not step or step == "<lambda>":
                    msg = (
                        f"agent {agent.name!r}: stream.group_by() with a function needs name=, "
                        "which names its repartition topic"
                    )
                    raise GraphDefinitionError(msg)
                node: lg.Node = lg.KeyBy(
                    id=f"{agent.name}-{step}",
                    inputs=(up,),
                    fn=arg,
                    fn_name=_util.fn_name(arg),
                    partitions=partitions,
                    where=agent.where,
                    value_type=topic.value_type,
                )
            else:
                target = arg.channel if isinstance(arg, Agent) else arg
                if isinstance(target, str):
                    target = self.topic(target)
                if not isinstance(target, Topic):
                    msg = f"agent {agent.name!r}: stream.through() takes a topic, not {arg!r}"
                    raise GraphDefinitionError(msg)
                node = lg.Repartition(
                    id=f"{agent.name}-through-{i}",
                    inputs=(up,),
                    topic=target.name,
                    partitions=target.width,
                    reason=f"through({target.name!r})",
                    where=agent.where,
                )
            nodes.append(node)
            up = node.id
        nodes.append(
            lg.Agent(
                id=agent.name,
                inputs=(up,),
                fn=agent.fn,
                fn_name=_util.fn_name(agent.fn),
                is_async=True,
                concurrency=agent.concurrency,
                topic=topic.name,
                where=agent.where,
            )
        )
        tables, sends = self._used_by(agent)
        passed = {n.topic for n in nodes if isinstance(n, lg.Repartition)}
        sends = [t for t in sends if t.name not in passed]  # through(topic): the plan's copy
        for table in tables:
            is_global = isinstance(table, AppGlobalTable)
            if is_global and table.name in owner:
                continue  # another agent writes it; this one reads every worker's copy
            if table.name in owner:
                msg = (
                    f"table {table.name!r} is used by agents {owner[table.name]!r} and "
                    f"{agent.name!r}; a table belongs to the one agent whose partitions shard "
                    "it, so send what the other agent needs to that agent's topic"
                )
                raise GraphDefinitionError(msg)
            if agent.concurrency > 1:
                msg = (
                    f"agent {agent.name!r} has concurrency={agent.concurrency} and writes table "
                    f"{table.name!r}; concurrent coroutines finish records out of order, which "
                    "a table's exactly-once rule cannot follow, so use concurrency=1"
                )
                raise GraphDefinitionError(msg)
            owner[table.name] = agent.name
            if isinstance(table, AppGlobalTable):
                table.writer = agent.name
            nodes.append(
                lg.AgentTable(
                    id=table.name,
                    inputs=(agent.name,),
                    default=table.default,
                    partitions=table.partitions,
                    window=table.window,
                    relative_to=table.relative_to,
                    key_type=table.key_type,
                    value_type=table.value_type,
                    where=table.where,
                    is_global=is_global,
                )
            )
        for target in sends:
            nodes.append(_send(agent, target, f"{agent.name}->{target.name}", yields=False))
        for i, sink in enumerate(agent.sink):
            target = sink.channel if isinstance(sink, Agent) else sink
            if isinstance(target, Topic):
                # a Send: the topic may be another agent's input
                nodes.append(_send(agent, target, f"{agent.name}->sink-{target.name}", yields=True))
            elif callable(target):
                nodes.append(
                    lg.Sink(
                        id=f"{agent.name}->sink-{i}",
                        inputs=(agent.name,),
                        fn=_sink_call(target),
                        fn_name=_util.fn_name(target),
                        is_async=_util.is_async(target),
                        where=agent.where,
                    )
                )
            else:
                msg = (
                    f"agent {agent.name!r}: a sink is an agent, a topic or a callable, not {sink!r}"
                )
                raise GraphDefinitionError(msg)
        return nodes

    def _used_by(self, agent: Agent) -> tuple[list[AppTable[Any, Any]], list[Topic]]:
        """The app's tables and topics the agent's code names (an agent names its topic)."""
        tables: dict[str, AppTable[Any, Any]] = {}
        topics: dict[str, Topic] = {}
        for obj in references(agent.fn):
            if isinstance(obj, AppTable) and obj.app is self:
                # a table and its windowed wrappers share a name: the windowed one holds it
                known = tables.get(obj.name)
                if known is None or (known.window is None and obj.window is not None):
                    tables[obj.name] = obj
            elif isinstance(obj, Topic) and obj.app is self:
                topics[obj.name] = obj
            elif isinstance(obj, Agent) and obj.app is self:
                topics[obj.channel.name] = obj.channel
        return list(tables.values()), list(topics.values())

    def plan(self) -> PhysicalPlan:
        """The physical plan: what `fg.run` executes."""
        from planner import plan

        return plan(self)

    def explain(self) -> str:
        """The plan as text, like ``flowgraph explain``."""
        from planner import to_text

        return to_text(self.plan())

    def _repr_svg_(self) -> str:
        from flowgraph import viz

        return viz.physical_svg(self.plan())

    def main(self) -> None:
        """Faust's ``app.main()``: run this app with the ``flowgraph`` command's options."""
        import sys

        from flowgraph.cli import main as cli_main

        raise SystemExit(cli_main(["run", _self_target(self), *_faust_args(sys.argv[1:])]))


def _send(agent: Agent, target: Topic, step: str, *, yields: bool) -> lg.Send:
    """The step writing `target` for `agent`: what it sends, or (`yields`) what it yields."""
    return lg.Send(
        id=step,
        inputs=(agent.name,),
        topic=target.name,
        partitions=target.width,
        key_type=target.key_codec,
        value_type=target.value_codec,
        where=agent.where,
        yields=yields,
    )


def _sink_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A callable sink gets the yielded value, as in Faust (a builder sink gets key, value)."""
    if _util.is_async(fn):

        async def call_async(key: Any, value: Any) -> Any:
            return await fn(value)

        call_async.__name__ = getattr(fn, "__name__", "sink")
        return call_async

    def call(key: Any, value: Any) -> Any:
        return fn(value)

    call.__name__ = getattr(fn, "__name__", "sink")
    return call


def _faust_args(argv: list[str]) -> list[str]:
    """Faust's ``python app.py worker -l info`` as ``flowgraph run`` options: the
    ``worker`` command and its log level are dropped (the run logs to stderr itself)."""
    args = argv[1:] if argv[:1] == ["worker"] else list(argv)
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-l", "--loglevel"):
            skip = True
        elif not arg.startswith(("--loglevel=", "-l=")):
            out.append(arg)
    return out


def _self_target(app: App) -> str:
    import __main__

    path = getattr(__main__, "__file__", None)
    for name, value in vars(__main__).items():
        if value is app and path:
            return f"{path}:{name}"
    msg = "app.main() runs an app defined in the script being run; use `flowgraph run module:app`"
    raise ConfigurationError(msg)
