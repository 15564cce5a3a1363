"""The builder: `Graph`, `Stream` and `Table` handles.

Builders only record frozen logical nodes; they never create topics or stores (that is the
planner's job) and never call user functions (that is the runtime's). A `Stream` or `Table`
is a small frozen handle naming one step of its graph.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from flowgraph import _util
from flowgraph.errors import GraphDefinitionError
from flowgraph.windows import Hopping, Session, Sliding, Tumbling, WindowSpec
from planner import logical as lg
from planner import naming
from planner.logical import AggregateKind, LogicalPlan, Node
from planner.physical import PhysicalPlan

if TYPE_CHECKING:
    from flowgraph._global_table import GlobalTable
    from flowgraph._windowed import WindowedStream

__all__ = ["Graph", "Stream", "Table"]

K = TypeVar("K")
"""Key type of a stream or table."""
V = TypeVar("V")
"""Value type of a stream or table."""


class Graph:
    """A dataflow under construction; its `id` prefixes every internal topic and store.

    >>> g = Graph("clickstats")
    >>> clicks = g.source("clicks", key_type=str, value_type=bytes, partitions=4)
    >>> clicks.key_by(bytes.decode, name="by_text").count(name="per_text").name
    'per_text'
    """

    def __init__(self, id: str) -> None:  # noqa: A002 - `id` is the public, documented name
        if not isinstance(id, str) or not id or any(c in id for c in " /\\:"):
            msg = (
                f"graph id {id!r} is not usable; it prefixes topic and store names; "
                "use letters, digits, '-', '_' or '.'"
            )
            raise _error(msg)
        self.id = id
        self._nodes: list[Node] = []
        self._ids: set[str] = set()
        self._anonymous: dict[str, int] = {}

    # -- building -----------------------------------------------------------------------

    def source(
        self,
        topic: str,
        *,
        key_type: object = None,
        value_type: object = None,
        partitions: int = 1,
        name: str | None = None,
        timestamp: Callable[[Any], Any] | None = None,
    ) -> Stream[Any, Any]:
        """Read records from `topic`; keys and values are decoded by their declared types.

        `timestamp` gives a record's event time from its decoded value (seconds since the
        epoch, or a datetime), like Kafka Streams' TimestampExtractor: it replaces the
        topic's timestamp for ordering, windows and the records written downstream. A value
        it fails on goes to the dead-letter topic.
        """
        if not isinstance(topic, str) or not topic:
            msg = f"source topic must be a non-empty string, got {topic!r}"
            raise _error(msg)
        node = lg.Source(
            id=self._claim(name or topic),
            topic=topic,
            partitions=_positive(partitions, "partitions"),
            # undeclared types are raw bytes, so an untyped source passes bytes through
            key_type=bytes if key_type is None else key_type,
            value_type=bytes if value_type is None else value_type,
            where=_util.call_site(),
            **_timestamp(timestamp),
        )
        return self._add(node)

    def source_from(
        self,
        items: Iterable[Any],
        *,
        name: str,
        value_type: object = None,
        partitions: int = 1,
        timestamp: Callable[[Any], Any] | None = None,
    ) -> Stream[None, Any]:
        """A bounded source over an in-process iterable: examples, tests and backfills.

        Items become record values with no key; the iterable is read once, when the graph runs.
        `timestamp` gives an item's event time, as for `source`.
        """
        if not hasattr(items, "__iter__"):
            msg = f"source_from needs an iterable, got {type(items).__name__}"
            raise _error(msg)
        step = self._claim(name)
        node = lg.Source(
            id=step,
            topic=naming.feed_topic(self.id, step),
            partitions=_positive(partitions, "partitions"),
            feed=items,
            value_type=value_type,
            where=_util.call_site(),
            **_timestamp(timestamp),
        )
        return self._add(node)

    def global_table(
        self,
        topic: str,
        *,
        key_type: object = None,
        value_type: object = None,
        partitions: int = 1,
        name: str | None = None,
    ) -> GlobalTable[Any, Any]:
        """The last value per key of `topic`, held whole by every worker (Kafka Streams'
        ``builder.globalTable``): look it up with ``table[key]`` in any step function.

        A None value (a tombstone) deletes its key. The table (named `name`, default the
        topic) is read like ``source(topic).to_table()``, and every worker also follows all
        of its changelog in the background; see docs/concepts/global-tables.md.
        """
        table_name = name or topic
        if not isinstance(table_name, str) or not table_name:
            msg = f"global_table needs a topic name, got {topic!r}"
            raise _error(msg)
        stream = self.source(
            topic,
            key_type=key_type,
            value_type=value_type,
            partitions=partitions,
            name=f"{table_name}-source",
        )
        return stream.to_table(name=table_name).to_global()

    def to_logical(self) -> LogicalPlan:
        """The graph as a frozen logical plan (what `planner.plan` compiles)."""
        return LogicalPlan(graph_id=self.id, nodes=tuple(self._nodes))

    def plan(self) -> PhysicalPlan:
        """Compile the graph; raises `GraphValidationError` listing every problem."""
        from planner import plan

        return plan(self)

    def explain(self) -> str:
        """Text description of the physical plan (as ``flowgraph explain`` prints it)."""
        return self.plan().explain()

    def _repr_svg_(self) -> str:
        from flowgraph import viz

        return viz.logical_svg(self.to_logical())

    def __repr__(self) -> str:
        return f"Graph({self.id!r}, steps={len(self._nodes)})"

    # -- internals used by the handles ----------------------------------------------------

    def _claim(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            msg = f"step name must be a non-empty string, got {name!r}"
            raise _error(msg)
        if name in self._ids:
            other = self._node(name).where if any(n.id == name for n in self._nodes) else ""
            msg = (
                f"step {name!r} already exists in graph {self.id!r}; "
                "step names must be unique; rename one of them"
            )
            raise _error(msg, other)
        self._ids.add(name)
        return name

    def _derive(self, base: str) -> str:
        """``base-2``, ``base-3``...: the name of a later step whose function already names
        one. Only stateless steps get it, since it depends on the order steps were added."""
        n = 2
        while f"{base}-{n}" in self._ids:
            n += 1
        return self._claim(f"{base}-{n}")

    def _auto_name(self, kind: str) -> str:
        """Name for an unnamed stateless step; it never names a topic or a store."""
        while True:
            self._anonymous[kind] = self._anonymous.get(kind, 0) + 1
            candidate = f"{kind}-{self._anonymous[kind]}"
            if candidate not in self._ids:
                return self._claim(candidate)

    def _step_name(self, name: str | None, fn: object, op: str) -> tuple[str, bool]:
        """The name of a stateless step, and whether it was made up (not the user's).

        ``name=`` wins; else a named function names its step, and a function used again
        names the later steps ``parse-2``, ``parse-3``...; a lambda gives ``map-1``.
        """
        if name:
            return self._claim(name), False
        short = _util.short_name(fn)
        if short is None:
            return self._auto_name(op), True
        if short in self._ids:
            return self._derive(short), True
        return self._claim(short), False

    def _add(self, node: Node) -> Stream[Any, Any]:
        self._nodes.append(node)
        return Stream(self, node.id)

    def _node(self, step_id: str) -> Node:
        for n in self._nodes:
            if n.id == step_id:
                return n
        raise KeyError(step_id)


def _error(msg: str, other: str = "") -> GraphDefinitionError:
    """The error for a step the user is adding, naming the file:line that adds it (and
    `other`, where the step it clashes with was made)."""
    here = _util.call_site()
    notes = ([f"at {here}"] if here else []) + ([f"the other is at {other}"] if other else [])
    return GraphDefinitionError(f"{msg} ({'; '.join(notes)})" if notes else msg)


def _positive(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"{what} must be a positive integer, got {value!r}"
        raise _error(msg)
    return value


def _timestamp(fn: object) -> dict[str, Any]:
    """The `Source` fields of a source's ``timestamp=`` extractor (none if it has none)."""
    if fn is None:
        return {}
    func = _callable(fn, "source timestamp=")
    if _util.is_async(func):
        msg = "source timestamp= must be a plain function, not async def; it runs per record"
        raise _error(msg)
    _check_call(func, "source timestamp=", ("value",), "it gets the decoded value")
    return {"timestamp": fn, "timestamp_name": _util.fn_name(fn)}


def _concurrency(value: int | None, fn: Callable[..., Any], op: str) -> dict[str, Any]:
    """The node field of a step's ``concurrency=`` (none if not given); only an ``async
    def`` function has calls that can overlap, so it is an error on any other."""
    if value is None:
        return {}
    _positive(value, f"{op} concurrency=")
    if not _util.is_async(fn):
        msg = (
            f"{op} concurrency={value} needs an async def function, got {_util.fn_name(fn)}; "
            "a plain function runs one record at a time"
        )
        raise GraphDefinitionError(msg)
    return {"concurrency": value}


def _seconds(value: object, what: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        msg = f"{what} must be seconds (a finite number, not negative), got {value!r}"
        raise _error(msg)
    return float(value)


def _catch_up(value: object, *, is_global: bool) -> float:
    """A join's ``catch_up=``: seconds >= 0, and only for a table the join's task reads."""
    seconds = _seconds(value, "join catch_up=")
    if seconds and is_global:
        msg = (
            "join catch_up= is only for a table: a global table's copy is read to the end of "
            "its changelog before any record is processed, and what its input holds beyond "
            "that is written by the tasks of other workers, which a join cannot wait for"
        )
        raise _error(msg)
    return seconds


def _callable(fn: object, op: str) -> Callable[..., Any]:
    if not callable(fn):
        msg = f"{op} needs a function, got {fn!r}"
        raise _error(msg)
    return fn


def _context_flag(context: object, op: str) -> bool:
    if not isinstance(context, bool):
        msg = f"{op} context= must be True or False, got {context!r}"
        raise _error(msg)
    return context


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _check_call(
    fn: Callable[..., Any], op: str, args: tuple[str, ...], hint: str, *, context: bool = False
) -> None:
    """Refuse at build time a function that cannot be called as its step will call it.

    Defaults and ``*args`` are fine; a callable without a signature (many builtins and C
    functions) is trusted, since the runtime would dead-letter its records anyway.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args)
    except TypeError:
        pass
    else:
        return
    params = list(sig.parameters.values())
    kw_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    positional = [p.name for p in params if p.kind in _POSITIONAL]
    required = [p.name for p in params if p.kind in _POSITIONAL and p.default is p.empty]
    if kw_only:
        takes = f"the required keyword-only argument {kw_only[0]!r}"
    else:
        names = required if len(required) > len(args) else positional
        count = f"{len(names)} argument{'' if len(names) == 1 else 's'}"
        takes = f"{count} ({', '.join(names)})" if names else "no arguments"
    fn_label = _util.short_name(fn) or "fn"
    written = f"{op}({fn_label}{', context=True' if context else ''})"
    msg = f"{written} calls {fn_label}({', '.join(args)}), but it takes {takes}; {hint}"
    raise _error(msg)


def _check_timers(
    wake: object, on_wake: object, fn: Callable[..., Any]
) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
    """Refuse half a timer, a timer function of the wrong shape, and async timers.

    The timers of a step run inside its record loop, between records, so an ``async def``
    (or an async `fn` beside timers) would need the loop to wait on them: refused.
    """
    if wake is None and on_wake is None:
        return None, None
    if wake is None or on_wake is None:
        given, missing = ("wake=", "on_wake=") if on_wake is None else ("on_wake=", "wake=")
        msg = (
            f"process has {given} but no {missing}; a timer needs both: "
            "wake(state) says when, on_wake(state, stream_time) what to do then"
        )
        raise _error(msg)
    wake_fn = _callable(wake, "process wake=")
    fire_fn = _callable(on_wake, "process on_wake=")
    _check_call(wake_fn, "process wake=", ("state",), "it gets the key's state")
    _check_call(
        fire_fn,
        "process on_wake=",
        ("state", "stream_time"),
        "it gets the key's state and the stream time, and returns (new_state, outputs)",
    )
    for f, what in ((fn, "fn"), (wake_fn, "wake="), (fire_fn, "on_wake=")):
        if _util.is_async(f):
            msg = (
                f"process has timers and an async {what}; timers run "
                "between records, so fn, wake= and on_wake= must be plain functions"
            )
            raise _error(msg)
    return wake_fn, fire_fn


_CONTEXT_HINT = (
    "to read the record's key, timestamp, headers, topic, partition or offset, pass "
    "context=True and take (value, ctx)"
)


def _check_step_call(fn: Callable[..., Any], op: str, context: bool) -> None:
    """`_check_call` for a one-value step (map, filter, flat_map, peek, key_by, sum)."""
    if context:
        hint = "with context=True the record context is its second argument"
        _check_call(fn, op, ("value", "ctx"), hint, context=True)
    else:
        _check_call(fn, op, ("value",), _CONTEXT_HINT)


def _process_types(fn: Callable[..., Any]) -> tuple[object, object]:
    """``(S, X)`` from a process function annotated ``-> tuple[S, list[X]]``, else Nones."""
    hint = _util.return_type(fn)
    args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
    if len(args) != 2:
        return None, None
    return args[0], _util.element_type(args[1])


@attrs.frozen
class Stream(Generic[K, V]):
    """A stream of keyed records: the output of one step of a graph."""

    graph: Graph
    step: str

    @property
    def _up(self) -> Node:
        return self.graph._node(self.step)

    def _fn_step(
        self,
        cls: type[lg.FnNode],
        op: str,
        fn: object,
        name: str | None,
        context: object = False,
        concurrency: int | None = None,
        **fields: Any,
    ) -> Stream[Any, Any]:
        func = _callable(fn, op)
        fields.update(_concurrency(concurrency, func, op))
        with_context = _context_flag(context, op)
        _check_step_call(func, op, with_context)
        step, made_up = self.graph._step_name(name, func, op)
        if made_up and cls is lg.KeyBy:
            fields["anonymous"] = True
        up = self._up
        fields.setdefault("key_type", up.key_type)
        fields.setdefault("value_type", up.value_type)
        node = cls(
            id=step,
            inputs=(self.step,),
            fn=func,
            fn_name=_util.fn_name(func),
            is_async=_util.is_async(func),
            context=with_context,
            where=_util.call_site(),
            **fields,
        )
        return self.graph._add(node)

    def map(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        value_type: object = None,
        context: bool = False,
        concurrency: int | None = None,
    ) -> Stream[K, Any]:
        """Replace each value by ``fn(value)``; keys are kept (use `key_by` to change them).

        With ``context=True`` it is ``fn(value, ctx)``, `ctx` a `RecordContext` (key,
        timestamp, headers, topic, partition, offset); so for every step below. For an
        ``async def`` `fn`, `concurrency` bounds its calls in flight (default 64).
        """
        vt = value_type or _util.return_type(fn)
        return self._fn_step(lg.Map, "map", fn, name, context, concurrency, value_type=vt)

    map_values = map
    """Alias of `map`, for Kafka Streams users: flowgraph changes keys only in `key_by`."""

    def filter(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        context: bool = False,
        concurrency: int | None = None,
    ) -> Stream[K, V]:
        """Keep the records whose value makes ``fn(value)`` (or ``fn(value, ctx)``) true."""
        return self._fn_step(lg.Filter, "filter", fn, name, context, concurrency)

    def flat_map(
        self,
        fn: Callable[..., Iterable[Any]],
        *,
        name: str | None = None,
        value_type: object = None,
        context: bool = False,
        concurrency: int | None = None,
    ) -> Stream[K, Any]:
        """Replace each value by the values of the iterable ``fn(value)``, keeping the key."""
        vt = value_type or _util.element_type(_util.return_type(fn))
        return self._fn_step(lg.FlatMap, "flat_map", fn, name, context, concurrency, value_type=vt)

    def peek(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        context: bool = False,
        concurrency: int | None = None,
    ) -> Stream[K, V]:
        """Call ``fn(value)`` (or ``fn(value, ctx)``) for its side effect; records pass."""
        return self._fn_step(lg.Peek, "peek", fn, name, context, concurrency)

    def key_by(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        key_type: object = None,
        partitions: int | None = None,
        context: bool = False,
        concurrency: int | None = None,
    ) -> Stream[Any, V]:
        """Re-key each record by ``fn(value)`` (or ``fn(value, ctx)``, ``ctx.key`` the old key).

        The planner adds a repartition topic named after this step when a stateful step
        needs it, so a lambda here (or a function another step is already named after)
        needs ``name=``.
        """
        kt = key_type or _util.return_type(fn)
        if partitions is not None:
            _positive(partitions, "partitions")
        return self._fn_step(
            lg.KeyBy, "key_by", fn, name, context, concurrency, key_type=kt, partitions=partitions
        )

    def merge(self, *others: Stream[Any, Any], name: str | None = None) -> Stream[Any, Any]:
        """The union of this stream and `others` (all from the same graph)."""
        for o in others:
            if not isinstance(o, Stream) or o.graph is not self.graph:
                msg = f"merge needs streams of graph {self.graph.id!r}, got {o!r}"
                raise _error(msg)
        ups = [self._up, *(o._up for o in others)]
        kts = {id(u.key_type): u.key_type for u in ups}
        vts = {id(u.value_type): u.value_type for u in ups}
        node = lg.Merge(
            id=self.graph._claim(name) if name else self.graph._auto_name("merge"),
            inputs=tuple(u.id for u in ups),
            key_type=next(iter(kts.values())) if len(kts) == 1 else None,
            value_type=next(iter(vts.values())) if len(vts) == 1 else None,
            where=_util.call_site(),
        )
        return self.graph._add(node)

    def join(
        self,
        table: Table[Any, Any] | GlobalTable[Any, Any] | Stream[Any, Any],
        fn: Callable[[V, Any], Any],
        *,
        how: str = "inner",
        key: Callable[[V], Any] | None = None,
        name: str | None = None,
        value_type: object = None,
        within: float | None = None,
        grace: float | None = None,
        catch_up: float = 0,
    ) -> Stream[K, Any]:
        """Each record looks up `table`'s current value for its key; ``fn(value, table_value)``
        is the new value (Kafka Streams' KStream-KTable join).

        ``how="inner"`` drops records whose key the table lacks; ``how="left"`` keeps them
        with ``table_value`` None. A `Table` is read on the task that holds its partition, so
        the planner repartitions this stream like the table when it is not; a `GlobalTable`
        is read from every worker's copy and needs no repartition: `key` (a function of the
        value) then gives the key to look up. `catch_up` (seconds) holds the stream back when
        a task starts until the table has read its input up to where it ended then, for at
        most that long.

        With another `Stream` and ``within=`` seconds it is a windowed stream-stream join
        (Kafka Streams' KStream-KStream join): records of the two streams with the same key
        and timestamps at most `within` apart give ``fn(value, other_value)``; see
        `_stream_join`. See docs/concepts/joins.md.
        """
        from flowgraph._global_table import GlobalTable

        if isinstance(table, Stream):
            if catch_up:
                msg = (
                    "join catch_up= is only for a table: a stream-stream join buffers both "
                    "sides, so neither has to catch up with the other"
                )
                raise _error(msg)
            return self._stream_join(table, fn, how, within, grace, key, name, value_type)
        if within is not None or grace is not None:
            msg = (
                "join within= and grace= are for a join with another stream; a table join "
                "looks up the table's current value, so drop them"
            )
            raise _error(msg)
        func = _callable(fn, "join")
        if how not in ("inner", "left"):
            msg = f'join how= must be "inner" or "left", got {how!r}'
            raise _error(msg)
        if _util.is_async(func):
            msg = "join needs a plain function, not async def; it runs while the table is read"
            raise _error(msg)
        _check_call(func, "join", ("value", "table_value"), "it gets the value and the table's")
        is_global = isinstance(table, GlobalTable)
        if not isinstance(table, Table | GlobalTable) or table.graph is not self.graph:
            msg = f"join needs a table or global table of graph {self.graph.id!r}, got {table!r}"
            raise _error(msg)
        if key is not None:
            if not is_global:
                msg = (
                    "join key= is only for a global table; a table is looked up by the "
                    "record's key, so re-key the stream with key_by(...) first"
                )
                raise _error(msg)
            _callable(key, "join key=")
            _check_call(key, "join key=", ("value",), "it gets the value")
        wait = _catch_up(catch_up, is_global=is_global)
        step, _ = self.graph._step_name(name, func, "join")
        node = lg.Join(
            id=step,
            inputs=(self.step,) if is_global else (self.step, table.step),
            fn=func,
            fn_name=_util.fn_name(func),
            how="left" if how == "left" else "inner",
            global_table=table.step if is_global else "",
            key=key,
            key_name=_util.fn_name(key) if key is not None else "",
            catch_up=wait,
            key_type=self._up.key_type,
            value_type=value_type or _util.return_type(func),
            where=_util.call_site(),
        )
        return self.graph._add(node)

    def _stream_join(
        self,
        other: Stream[Any, Any],
        fn: Callable[[Any, Any], Any],
        how: str,
        within: float | None,
        grace: float | None,
        key: object,
        name: str | None,
        value_type: object,
    ) -> Stream[K, Any]:
        """A windowed stream-stream join: both sides are buffered in one store per join
        (``<graph>-<name>``) for `within` + `grace` seconds of stream time, so the step needs
        a name its store can carry. ``how="left"`` also emits ``fn(value, None)`` for each
        record of this stream that found no partner when its window closes, ``"outer"`` the
        same for both sides (``fn(None, other_value)``)."""
        func = _callable(fn, "join")
        if other.graph is not self.graph:
            msg = f"join needs a stream of graph {self.graph.id!r}, got one of {other.graph.id!r}"
            raise _error(msg)
        if how not in ("inner", "left", "outer"):
            msg = f'stream join how= must be "inner", "left" or "outer", got {how!r}'
            raise _error(msg)
        if within is None:
            msg = "a join with another stream needs within= (seconds two records may be apart)"
            raise _error(msg)
        window = _seconds(within, "join within=")
        late = 0.0 if grace is None else _seconds(grace, "join grace=")
        if key is not None:
            msg = "join key= is only for a global table; re-key a stream with key_by(...) first"
            raise _error(msg)
        if _util.is_async(func):
            msg = "join needs a plain function, not async def; it runs while the buffers are read"
            raise _error(msg)
        _check_call(func, "join", ("value", "other_value"), "it gets both records' values")
        step = name or _util.short_name(func)
        if step is None or (not name and step in self.graph._ids):
            msg = (
                f"stream join at {_util.call_site()} has "
                f"{'a lambda' if step is None else f'a function named like step {step!r}'} "
                "and no name=; its store and changelog topic are named after the step; "
                "pass name=..."
            )
            raise GraphDefinitionError(msg)
        node = lg.StreamJoin(
            id=self.graph._claim(step),
            inputs=(self.step, other.step),
            fn=func,
            fn_name=_util.fn_name(func),
            within=window,
            grace=late,
            how="left" if how == "left" else "outer" if how == "outer" else "inner",
            other=other.step,
            key_type=self._up.key_type or other._up.key_type,
            value_type=value_type or _util.return_type(func),
            where=_util.call_site(),
        )
        return self.graph._add(node)

    def to(
        self,
        target: str | Callable[..., Any],
        *,
        name: str | None = None,
        key_type: object = None,
        value_type: object = None,
        partitions: int | None = None,
        context: bool = False,
        concurrency: int | None = None,
    ) -> None:
        """Write records to topic `target`, or call ``target(key, value)`` for each record.

        With ``context=True`` a function sink is called as ``target(key, value, ctx)``. For an
        ``async def`` `target`, `concurrency` bounds its calls in flight (default 64).
        """
        up = self._up
        with_context = _context_flag(context, "to")
        if isinstance(target, str) and with_context:
            msg = (
                f"to({target!r}, context=True): context= is for a function sink; "
                "a topic sink writes each record with its headers and timestamp already"
            )
            raise _error(msg)
        if isinstance(target, str):
            if concurrency is not None:
                msg = f"to({target!r}) concurrency= needs an async def function, not a topic"
                raise GraphDefinitionError(msg)
            if name:
                step = self.graph._claim(name)
            elif f"to-{target}" not in self.graph._ids:
                step = self.graph._claim(f"to-{target}")
            else:  # another stream writes the same topic; sink names name nothing durable
                step = self.graph._auto_name(f"to-{target}")
            node = lg.Sink(
                id=step,
                inputs=(self.step,),
                topic=target,
                key_type=key_type or up.key_type,
                value_type=value_type or up.value_type,
                partitions=None if partitions is None else _positive(partitions, "partitions"),
                where=_util.call_site(),
            )
        else:
            func = _callable(target, "to")
            bound = _concurrency(concurrency, func, "to")
            if with_context:
                hint = "with context=True the record context is its third argument"
                _check_call(func, "to", ("key", "value", "ctx"), hint, context=True)
            else:
                hint = (
                    "a function sink gets each record's key and value; for its timestamp, "
                    "headers, topic, partition or offset pass context=True and take "
                    "(key, value, ctx)"
                )
                _check_call(func, "to", ("key", "value"), hint)
            step, _ = self.graph._step_name(name, func, "to")
            node = lg.Sink(
                id=step,
                inputs=(self.step,),
                fn=func,
                fn_name=_util.fn_name(func),
                is_async=_util.is_async(func),
                context=with_context,
                key_type=up.key_type,
                value_type=up.value_type,
                where=_util.call_site(),
                **bound,
            )
        self.graph._add(node)

    # -- keyed aggregations: each makes a table --------------------------------------------

    def _aggregate(
        self,
        agg: AggregateKind,
        fn: object,
        name: str | None,
        initial: object,
        value_type: object,
        window: object = None,
        timestamp: Callable[[Any], Any] | None = None,
        merge: object = None,
    ) -> str:
        """Add an aggregation step; returns its step id (the table's name)."""
        func = None if fn is None else _callable(fn, agg)
        if func is not None:
            if agg == "sum":
                _check_call(func, agg, ("value",), "it gets the value to add")
            else:
                hint = "it folds each value into the key's result so far"
                _check_call(func, agg, ("accumulated", "value"), hint)
        step_name = name or (_util.short_name(func) if func is not None else None)
        op = "to_table" if agg == "latest" else agg
        if step_name is None:
            what = "a lambda" if func is not None else "no function to name it"
            msg = (
                f"{op} at {_util.call_site()} has {what} and no name=; "
                f"its store and changelog topic are named after the step; pass name=..."
            )
            raise GraphDefinitionError(msg)
        if not name and step_name in self.graph._ids:
            msg = (
                f"{op} at {_util.call_site()} would be named {step_name!r} after its function, "
                "but a step of that name already exists; its store and changelog topic are "
                "named after the step; pass name=..."
            )
            raise GraphDefinitionError(msg)
        node = lg.Aggregate(
            id=self.graph._claim(step_name),
            inputs=(self.step,),
            agg=agg,
            fn=func,
            fn_name=_util.fn_name(func) if func is not None else "",
            is_async=_util.is_async(func) if func is not None else False,
            initial=initial,
            window=window,
            timestamp=timestamp,
            merge=merge,
            key_type=self._up.key_type,
            value_type=value_type,
            where=_util.call_site(),
        )
        self.graph._add(node)
        return node.id

    def to_table(self, *, name: str | None = None) -> Table[K, V]:
        """The latest value per key, as a table (Kafka Streams' KTable).

        A record with value None (a Kafka tombstone) deletes its key; `changes()` then
        carries ``(key, None)``, which a topic sink writes as a tombstone.
        """
        return Table(self.graph, self._aggregate("latest", None, name, None, self._up.value_type))

    def window(
        self, spec: WindowSpec, *, timestamp: Callable[[V], Any] | None = None
    ) -> WindowedStream[K, V]:
        """Aggregate this stream per key and time window (see docs/concepts/windows.md).

        `timestamp` gives a record's event time from its value (seconds or a datetime);
        without it the record's own timestamp is used.
        """
        from flowgraph._windowed import WindowedStream

        if not isinstance(spec, Tumbling | Hopping | Sliding | Session):
            msg = (
                f"window needs fg.Tumbling, fg.Hopping, fg.Sliding or fg.Session, got {spec!r}; "
                "for example .window(fg.Tumbling(60))"
            )
            raise _error(msg)
        if timestamp is not None:
            _callable(timestamp, "window timestamp=")
            if _util.is_async(timestamp):
                msg = "window timestamp= must be a plain function, not async def"
                raise _error(msg)
            _check_call(timestamp, "window timestamp=", ("value",), "it gets the value")
        return WindowedStream(self, spec, timestamp)

    def count(self, *, name: str | None = None) -> Table[K, int]:
        """Count records per key."""
        return Table(self.graph, self._aggregate("count", None, name, 0, int))

    def sum(
        self, fn: Callable[[V], Any] | None = None, *, name: str | None = None
    ) -> Table[K, Any]:
        """Sum values (or ``fn(value)``) per key, starting from 0."""
        return Table(self.graph, self._aggregate("sum", fn, name, 0, None))

    def reduce(self, fn: Callable[[V, V], V], *, name: str | None = None) -> Table[K, V]:
        """Fold values per key with ``fn(accumulated, value)``; the first value starts it.

        ``fn`` may return `fg.DELETE` to delete the key; its next value starts it again.
        """
        return Table(self.graph, self._aggregate("reduce", fn, name, None, self._up.value_type))

    def aggregate(
        self,
        initial: object,
        fn: Callable[[Any, V], Any],
        *,
        name: str | None = None,
        value_type: object = None,
    ) -> Table[K, Any]:
        """Fold values per key with ``fn(accumulated, value)`` from `initial`.

        `initial` may be a value or a zero-argument factory (e.g. ``list``); mutable values
        are copied for each new key. ``fn`` may return `fg.DELETE` to delete the key; its
        next record starts again from `initial`.
        """
        vt = value_type or (type(initial) if not callable(initial) else _util.return_type(fn))
        return Table(self.graph, self._aggregate("aggregate", fn, name, initial, vt))

    # -- process: a keyed stateful step of the user's own ----------------------------------

    def process(
        self,
        fn: Callable[..., Any],
        state: object = None,
        *,
        name: str | None = None,
        value_type: object = None,
        state_type: object = None,
        context: bool = False,
        wake: Callable[[Any], Any] | None = None,
        on_wake: Callable[[Any, float], Any] | None = None,
    ) -> Stream[K, Any]:
        """Run ``fn(state, value) -> (new_state, outputs)`` per record, with one state per key.

        `state` is a new key's state: a value or a zero-argument factory (``dict``); mutable
        values are copied per key. A `new_state` of None or `fg.DELETE` deletes the key's
        state. Each of `outputs` (a list, tuple or generator; None for none) is emitted with
        the record's key, timestamp and headers. The state is a table named `name` (default:
        the function's name), with a store and changelog like an aggregation's, so it is
        exact across crashes; `state_type` is its changelog's value type, `value_type` the
        outputs'. With ``context=True``: ``fn(state, value, ctx)``.

        Event-time timers: ``wake(state) -> float | None`` is the event time at which a key
        wants ``on_wake(state, stream_time) -> (new_state, outputs)`` called; the step fires
        it once the stream time of its partition reaches it. See docs/concepts/processors.md.
        """
        func = _callable(fn, "process")
        with_context = _context_flag(context, "process")
        if with_context:
            hint = "with context=True the record context is its third argument"
            _check_call(func, "process", ("state", "value", "ctx"), hint, context=True)
        else:
            hint = "it gets the key's state and the record's value, and returns both"
            _check_call(func, "process", ("state", "value"), hint)
        step_name = name or _util.short_name(func)
        if step_name is None:
            msg = (
                f"process at {_util.call_site()} has a lambda and no name=; "
                "its store and changelog topic are named after the step; pass name=..."
            )
            raise GraphDefinitionError(msg)
        if not name and step_name in self.graph._ids:
            msg = (
                f"process at {_util.call_site()} would be named {step_name!r} after its "
                "function, but a step of that name already exists; its store and changelog "
                "topic are named after the step; pass name=..."
            )
            raise GraphDefinitionError(msg)
        timers = _check_timers(wake, on_wake, func)
        declared = _process_types(func)
        up = self._up
        node = lg.Aggregate(
            id=self.graph._claim(step_name),
            inputs=(self.step,),
            agg="process",
            fn=func,
            fn_name=_util.fn_name(func),
            is_async=_util.is_async(func),
            context=with_context,
            initial=state,
            key_type=up.key_type,
            value_type=value_type or declared[1],
            state_type=state_type
            or declared[0]
            or (type(state) if state is not None and not callable(state) else None),
            wake=timers[0],
            on_wake=timers[1],
            wake_name=_util.fn_name(timers[0]) if timers[0] is not None else "",
            where=_util.call_site(),
        )
        return self.graph._add(node)


@attrs.frozen
class Table(Generic[K, V]):
    """A keyed table made by an aggregation; read it with `changes()` or a driver/worker."""

    graph: Graph
    step: str

    @property
    def name(self) -> str:
        """The step name, which `TestDriver.table(name)` and running workers look up."""
        return self.step

    @property
    def store(self) -> str:
        """The store name (``<graph>-<step>``), which also names the changelog topic."""
        return naming.store_name(self.graph.id, self.step)

    def to_global(self) -> GlobalTable[K, V]:
        """This table, held whole by every worker as well: look it up with ``table[key]``
        in any step function (see docs/concepts/global-tables.md).

        Its shards stay where they are; each worker also follows every partition of its
        changelog into a copy of its own. It is the same table under the same name (the
        changelog already holds all of it), so there is no name to give.
        """
        from flowgraph._global_table import GlobalTable

        graph = self.graph
        node = graph._node(self.step)
        assert isinstance(node, lg.Aggregate)
        if node.window is not None:
            msg = (
                f"table {self.step!r} is windowed; only a table of one value per key can be global"
            )
            raise _error(msg)
        if not node.is_global:
            index = graph._nodes.index(node)
            graph._nodes[index] = attrs.evolve(node, is_global=True)
        return GlobalTable(graph, self.step)

    def join(
        self,
        other: Table[Any, Any],
        fn: Callable[[Any, Any], Any],
        *,
        how: str = "inner",
        name: str | None = None,
        value_type: object = None,
    ) -> Table[K, Any]:
        """A table of ``fn(value, other_value)`` per key, updated when either side changes
        (Kafka Streams' KTable-KTable join); a key deleted from a side is deleted from the
        result unless `how` keeps it.

        ``how="inner"``: keys both tables hold; ``"left"``: keys of this table (`other_value`
        None when `other` lacks it); ``"outer"``: keys of either (the missing side None). Each
        side's updates look up the other side's current value on the same task (a
        stream-table `join`), and the two streams of results fold into a table named `name`.
        See docs/concepts/joins.md.
        """
        func = _callable(fn, "join")
        if how not in ("inner", "left", "outer"):
            msg = f'table join how= must be "inner", "left" or "outer", got {how!r}'
            raise _error(msg)
        if not isinstance(other, Table) or other.graph is not self.graph:
            msg = f"table join needs a table of graph {self.graph.id!r}, got {other!r}"
            raise _error(msg)
        if _util.is_async(func):
            msg = "join needs a plain function, not async def; it runs while the table is read"
            raise _error(msg)
        _check_call(func, "join", ("value", "other_value"), "it gets both tables' values")
        step = name or _util.short_name(func)
        if step is None:
            msg = (
                f"table join at {_util.call_site()} has a lambda and no name=; its store and "
                "changelog topic are named after the step; pass name=..."
            )
            raise GraphDefinitionError(msg)
        keep_left, keep_right = how in ("left", "outer"), how == "outer"

        def from_left(left: Any, right: Any) -> Any:
            if left is None and not (keep_right and right is not None):
                return None
            if right is None and not keep_left:
                return None
            return func(left, right)

        def from_right(right: Any, left: Any) -> Any:
            return from_left(left, right)

        for helper, label in ((from_left, "left"), (from_right, "right")):
            helper.__module__ = getattr(func, "__module__", None) or helper.__module__
            helper.__qualname__ = f"{getattr(func, '__qualname__', 'fn')}[{label}]"
        left_updates = self._updates(f"{step}-left-changes", self.graph._node(self.step).key_type)
        right_updates = other._updates(f"{step}-right-changes", left_updates._up.key_type)
        halves = [
            updates.join(table, half, how="left", name=f"{step}-{label}", value_type=value_type)
            for updates, table, half, label in (
                (left_updates, other, from_left, "left"),
                (right_updates, self, from_right, "right"),
            )
        ]
        for half_stream in halves:  # mark both halves: the planner must not repartition them
            node = half_stream._up
            assert isinstance(node, lg.Join)
            self.graph._nodes[self.graph._nodes.index(node)] = attrs.evolve(node, table_join=step)
        return halves[0].merge(halves[1], name=f"{step}-merge").to_table(name=step)

    def changes(self, *, name: str | None = None) -> Stream[K, V]:
        """The stream of updates to this table: ``(key, new value)`` on every change."""
        return self._updates(name, self.graph._node(self.step).key_type)

    def _updates(self, name: str | None, key_type: object) -> Stream[Any, V]:
        up = self.graph._node(self.step)
        node = lg.Changes(
            id=self.graph._claim(name or f"{self.step}-changes"),
            inputs=(self.step,),
            key_type=key_type,
            value_type=up.value_type,
            where=_util.call_site(),
        )
        return self.graph._add(node)
