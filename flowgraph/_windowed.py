"""Builder handles for windowed aggregations: `WindowedStream` and `WindowedTable`.

``stream.window(spec, timestamp=...)`` makes a `WindowedStream`; its aggregations make a
`WindowedTable`, which holds one value per key and window. Like every handle these only
record logical nodes; the semantics live in docs/concepts/windows.md and the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from flowgraph import _util
from flowgraph._graph import Table
from flowgraph.errors import GraphDefinitionError
from flowgraph.windows import Session, WindowKey, WindowSpec
from planner import logical as lg

if TYPE_CHECKING:
    from flowgraph._graph import Stream

__all__ = ["WindowedStream", "WindowedTable"]

K = TypeVar("K")
V = TypeVar("V")


@attrs.frozen
class WindowedStream(Generic[K, V]):
    """A stream to be aggregated per key and window; made by `Stream.window`."""

    stream: Stream[K, V]
    spec: WindowSpec
    timestamp: Callable[[V], Any] | None = None

    def _table(
        self,
        agg: lg.AggregateKind,
        fn: object,
        name: str | None,
        initial: object,
        vt: object,
        merge: object = None,
    ) -> WindowedTable[K, Any]:
        step = self.stream._aggregate(agg, fn, name, initial, vt, self.spec, self.timestamp, merge)
        return WindowedTable(self.stream.graph, step)

    def count(self, *, name: str | None = None) -> WindowedTable[K, int]:
        """Count records per key and window."""
        return self._table("count", None, name, 0, int)

    def sum(
        self, fn: Callable[[V], Any] | None = None, *, name: str | None = None
    ) -> WindowedTable[K, Any]:
        """Sum values (or ``fn(value)``) per key and window, starting from 0."""
        return self._table("sum", fn, name, 0, None)

    def reduce(self, fn: Callable[[V, V], V], *, name: str | None = None) -> WindowedTable[K, V]:
        """Fold values per key and window with ``fn(accumulated, value)``, in arrival order."""
        return self._table("reduce", fn, name, None, self.stream._up.value_type)

    def aggregate(
        self,
        initial: object,
        fn: Callable[[Any, V], Any],
        *,
        name: str | None = None,
        value_type: object = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> WindowedTable[K, Any]:
        """Fold values per key and window with ``fn(accumulated, value)`` from `initial`.

        Session windows also need ``merge(a, b)``: when a late record bridges two sessions,
        their values are combined with it (earlier session first).
        """
        if isinstance(self.spec, Session):
            if merge is None:
                msg = (
                    f"aggregate over session windows at {_util.call_site()} has no merge=; "
                    "a late record can join two sessions, whose accumulators must then be "
                    "combined; pass merge=lambda a, b: ..."
                )
                raise GraphDefinitionError(msg)
            if not callable(merge) or _util.is_async(merge):
                msg = f"aggregate merge= must be a plain function of (a, b), got {merge!r}"
                raise GraphDefinitionError(msg)
        elif merge is not None:
            msg = (
                f"aggregate merge= at {_util.call_site()} is only for session windows; "
                f"{self.spec.describe()} windows never merge; leave merge= out"
            )
            raise GraphDefinitionError(msg)
        vt = value_type or (type(initial) if not callable(initial) else _util.return_type(fn))
        return self._table("aggregate", fn, name, initial, vt, merge)


@attrs.frozen
class WindowedTable(Table[K, V]):
    """A table of one value per key and window; read it with `changes()` or a driver/worker."""

    def changes(self, *, name: str | None = None) -> Stream[WindowKey, V]:  # type: ignore[override]
        """Updates as ``(WindowKey(key, start, end), value)``: on every change, or once per
        window when it closes (``emit="close"``)."""
        return self._updates(name, WindowKey)

    def late(self, *, name: str | None = None) -> Stream[K, Any]:
        """The records that came too late for a window, as they reached the aggregation."""
        up = self.graph._node(self.step)
        feed = self.graph._node(up.inputs[0])
        node = lg.Late(
            id=self.graph._claim(name or f"{self.step}-late"),
            inputs=(self.step,),
            key_type=feed.key_type,
            value_type=feed.value_type,
            where=_util.call_site(),
        )
        return self.graph._add(node)
