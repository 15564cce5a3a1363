"""Windowed tables, Faust style: ``app.Table('views', default=int).tumbling(60, expires=3600)``.

`windowed_table` wraps a `Table` in a `WindowWrapper`: the same table (name, default, types)
with a `flowgraph.windows` spec in ``window`` and a time source in ``relative_to``. Inside an
agent, ``views[key]`` is a `WindowSet`: ``+=`` (and the other in-place operators) change every
window containing the write's time, ``.current()``, ``.value()``, ``.now()`` and
``.delta(d)`` read one window. The state is `flowgraph.runtime.windowed_table`.

Faust's ``expires=`` becomes the spec's grace: a window takes writes until it expires and is
deleted then (retention 0), which is what a Faust user sees. Without ``expires=`` windows are
kept forever, as in Faust. Docs: docs/concepts/windows.md, "Windowed tables (Faust style)".
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterator
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.app._table import Table
from flowgraph.errors import ConfigurationError, GraphDefinitionError
from flowgraph.runtime.agent import CURRENT
from flowgraph.runtime.windowed_table import (
    FOREVER,
    WindowedTableState,
    WindowedTableView,
)
from flowgraph.runtime.windowed_table import (
    WindowSet as OutsideWindowSet,
)
from flowgraph.windows import Hopping, Sliding, Tumbling, _seconds

__all__ = ["WindowSet", "WindowWrapper", "windowed_table"]

_ADDITIVE = (operator.add, operator.sub)


def _replace(_old: Any, new: Any) -> Any:
    """The operation of ``table[key] = value``: the window's value becomes `new`."""
    return new


def windowed_table(table: Table[Any, Any], kind: str, size: Any, step: Any, expires: Any) -> Any:
    """`table` with windows of `kind` (``tumbling``, ``hopping`` or ``sliding``)."""
    if table.window is not None:
        msg = (
            f"table {table.name!r} is windowed already; call tumbling(), hopping() or "
            "sliding() once, on the table app.Table() returns"
        )
        raise GraphDefinitionError(msg)
    grace = FOREVER if expires is None else _seconds(expires)
    spec: Any
    if kind == "tumbling":
        spec = Tumbling(size, grace=grace)
    elif kind == "hopping":
        spec = Hopping(size, step, grace=grace)
    else:
        spec = Sliding(size, grace=grace)
    return WindowWrapper(table, spec, "stream")


def _as_seconds(value: Any, where: str) -> float:
    """A time from a record field: seconds, a `datetime`, or an ISO 8601 string."""
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    msg = f"{where} is {value!r}, not a time; give seconds since the epoch or a datetime"
    raise ValueError(msg)


class WindowWrapper(Table[Any, Any]):
    """A windowed table (Faust's ``WindowWrapper``): ``table[key]`` is a `WindowSet`.

    ``relative_to`` names where a write's time comes from: ``"stream"`` (the record's
    timestamp, the default), ``"now"`` (the clock) or ``"field:<name>"`` (a field of the
    record's value). Each ``relative_to_*`` call returns a new wrapper of the same table.
    """

    def __init__(
        self,
        table: Table[Any, Any],
        window: Any,
        relative_to: str,
        field: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(
            table.app,
            table.name,
            default=table.default,
            key_type=table.key_type,
            value_type=table.value_type,
            partitions=table.partitions,
            help=table.help,
            where=table.where,
        )
        self.table = table
        """The table this wraps (Faust's ``wrapper.table``)."""
        self.window = window
        self.relative_to = relative_to
        self._field = field

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of app {self.app.id!r}: {self.window.describe()}>"

    # -- time -------------------------------------------------------------------------------

    def _clone(self, relative_to: str, field: Callable[[Any], Any] | None = None) -> WindowWrapper:
        return WindowWrapper(self.table, self.window, relative_to, field)

    def relative_to_stream(self) -> WindowWrapper:
        """Writes and ``value()`` use the record's timestamp (the default)."""
        return self._clone("stream")

    def relative_to_now(self) -> WindowWrapper:
        """Writes and ``value()`` use the clock (the worker's wall clock)."""
        return self._clone("now")

    def relative_to_field(self, field: Any) -> WindowWrapper:
        """Writes and ``value()`` use a field of the record's value: ``Order.ts`` (seconds,
        a datetime or an ISO 8601 string), a field name (of a record or a dict), or a
        function of the value."""
        if isinstance(field, str):
            name = field

            def get(value: Any) -> Any:
                return value[name] if isinstance(value, dict) else getattr(value, name)

        elif callable(field):
            name = str(getattr(field, "name", None) or getattr(field, "__name__", repr(field)))
            get = field
        else:
            msg = (
                f"table {self.name!r}: relative_to_field() takes a record field such as "
                f"Order.ts, not {field!r}"
            )
            raise ConfigurationError(msg)
        return self._clone(f"field:{name}", get)

    def _time(self, rec: Any, state: WindowedTableState) -> float:
        """The time of a write made while handling `rec`."""
        if self.relative_to == "stream":
            return float(rec[2])
        if self.relative_to == "now":
            return float(state.clock())
        assert self._field is not None
        where = f"field {self.relative_to[6:]!r} of the value of table {self.name!r}'s record"
        try:
            value = self._field(rec[1])
        except (AttributeError, KeyError, TypeError) as exc:
            msg = f"{where} cannot be read ({exc}); give records with that field"
            raise ValueError(msg) from exc
        return _as_seconds(value, where)

    # -- inside an agent --------------------------------------------------------------------

    def _here(self) -> tuple[Any, WindowedTableState] | None:
        """The record being handled and this table's state on its partition, or None
        outside an agent."""
        slot = CURRENT.get()
        if slot is None or slot.rec is None:
            return None
        state = self._state()
        if not isinstance(state, WindowedTableState):
            msg = (
                f"agent {slot.op.node.id!r} names table {self.name!r} both windowed and "
                "plain, and the plan made it plain; name only the windowed table in the agent"
            )
            raise GraphDefinitionError(msg)
        return slot.rec, state

    def _view(self) -> WindowedTableView:
        return WindowedTableView(self.name, self._local(), self.default)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        here = self._here()
        if here is None:
            return OutsideWindowSet(self._view(), key)
        return WindowSet(self, key, here[0], here[1])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):
            return  # ``table[key] += 1`` wrote already; Python assigns the WindowSet back
        here = self._here()
        if here is None:
            what = f"table[{key!r}] = ..."
            raise self._write_refused(what)
        rec, state = here
        if state.sliding:
            what = f"table[{key!r}] = ..."
            raise self._sliding_only(what)
        new = DELETE if value is None else value
        state.update(key, self._time(rec, state), _replace, new, None, rec[3])

    def __delitem__(self, key: Any) -> None:
        here = self._here()
        if here is None:
            what = f"del table[{key!r}]"
            raise self._write_refused(what)
        rec, state = here
        if state.sliding:
            what = f"del table[{key!r}]"
            raise self._sliding_only(what)
        state.update(key, self._time(rec, state), _replace, DELETE, None, rec[3])

    def _sliding_only(self, what: str) -> ConfigurationError:
        msg = (
            f"sliding table {self.name!r} takes only += and -= ({what} given); a sliding "
            "window's value is the sum of what was added in it, so add the change instead"
        )
        return ConfigurationError(msg)

    def _missing(self, key: Any) -> Any:
        if self.default is None:
            raise KeyError(key)
        return self.default()

    def __contains__(self, key: object) -> bool:
        here = self._here()
        if here is None:
            return key in self._view()
        rec, state = here
        return state.value_at(key, self._time(rec, state)) is not DELETE

    def keys(self) -> Iterator[Any]:
        """The keys with a window held (in an agent: on the record's partition)."""
        here = self._here()
        if here is None:
            return iter(self._view())
        return here[1].held_keys()

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Each key with its value at the table's time (outside an agent: stream time)."""
        here = self._here()
        if here is None:
            for state in self._local():
                yield from state.items()
            return
        rec, state = here
        t = self._time(rec, state)
        for key in state.held_keys():
            value = state.value_at(key, t)
            if value is not DELETE:
                yield key, value

    def values(self) -> Iterator[Any]:
        for _, v in self.items():
            yield v

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def _no_dict(self, what: str) -> ConfigurationError:
        msg = (
            f"windowed table {self.name!r} has no {what}(); read a window with "
            f"table[key].current(), .value(), .now() or .delta(seconds)"
        )
        return ConfigurationError(msg)

    def get(self, key: Any, default: Any = None) -> Any:
        what = "get"
        raise self._no_dict(what)

    def pop(self, key: Any, *default: Any) -> Any:
        what = "pop"
        raise self._no_dict(what)

    def setdefault(self, key: Any, default: Any) -> Any:
        what = "setdefault"
        raise self._no_dict(what)

    def update(self, other: Any = (), **kwargs: Any) -> None:
        what = "update"
        raise self._no_dict(what)


class WindowSet:
    """The windows of one key while an agent handles a record (Faust's ``WindowSet``).

    ``+=``, ``-=``, ``*=`` ... change every window containing the write's time (the table's
    ``relative_to``); a sliding table takes ``+=`` and ``-=`` only. Reads:

    - ``value()``: the window of the table's time (its ``relative_to``);
    - ``current()``: the window of the record's timestamp;
    - ``now()``: the window of the clock (of a hopping table, the earliest holding it);
    - ``delta(d)``: the window of the record's timestamp minus `d` seconds.

    A hopping table reads the window with the latest start, except ``now()``, as Faust does.
    """

    def __init__(self, wrapper: WindowWrapper, key: Any, rec: Any, state: WindowedTableState):
        self.wrapper = wrapper
        self.key = key
        self._rec = rec
        self._state = state

    def apply(self, op: Callable[[Any, Any], Any], value: Any) -> WindowSet:
        """``op(window value, value)`` into every window containing the write's time."""
        state, wrapper, key = self._state, self.wrapper, self.key
        if state.sliding and op not in _ADDITIVE:
            what = f"{op.__name__}"
            raise wrapper._sliding_only(what)
        rec = self._rec
        state.update(key, wrapper._time(rec, state), op, value, wrapper._missing, rec[3])
        return self

    def _read(self, t: float, *, earliest: bool = False) -> Any:
        value = self._state.value_at(self.key, t, earliest=earliest)
        return self.wrapper._missing(self.key) if value is DELETE else value

    def value(self, event: Any = None) -> Any:
        """The value in the window of the table's time (see ``relative_to_*``)."""
        rec = self._rec if event is None else (event.key, event.value, event.timestamp)
        return self._read(self.wrapper._time(rec, self._state))

    def current(self, event: Any = None) -> Any:
        """The value in the window of the record's timestamp."""
        return self._read(self._rec[2] if event is None else event.timestamp)

    def now(self) -> Any:
        """The value in the window of the clock's now."""
        return self._read(self._state.clock(), earliest=True)

    def delta(self, d: Any, event: Any = None) -> Any:
        """The value in the window `d` seconds (or a timedelta) before the record's time."""
        t = self._rec[2] if event is None else event.timestamp
        return self._read(t - _seconds(d))

    def __getitem__(self, window: tuple[float, float]) -> Any:
        """The value of one window ``(start, end)`` (sliding: the sum in ``[start, end]``)."""
        s, e = window
        state = self._state
        value = state._sum(self.key, s, e) if state.sliding else state.window_value(self.key, s, e)
        return self.wrapper._missing(self.key) if value is DELETE else value

    def __setitem__(self, window: tuple[float, float], value: Any) -> None:
        """Set one window ``(start, end)``."""
        state = self._state
        if state.sliding:
            what = f"table[{self.key!r}][{window!r}] = ..."
            raise self.wrapper._sliding_only(what)
        rec = self._rec
        t = self.wrapper._time(rec, state)
        state.set_window(self.key, window, DELETE if value is None else value, t, rec[3])

    def __iadd__(self, other: Any) -> WindowSet:
        return self.apply(operator.add, other)

    def __isub__(self, other: Any) -> WindowSet:
        return self.apply(operator.sub, other)

    def __imul__(self, other: Any) -> WindowSet:
        return self.apply(operator.mul, other)

    def __itruediv__(self, other: Any) -> WindowSet:
        return self.apply(operator.truediv, other)

    def __ifloordiv__(self, other: Any) -> WindowSet:
        return self.apply(operator.floordiv, other)

    def __imod__(self, other: Any) -> WindowSet:
        return self.apply(operator.mod, other)

    def __ipow__(self, other: Any) -> WindowSet:
        return self.apply(operator.pow, other)

    def __ilshift__(self, other: Any) -> WindowSet:
        return self.apply(operator.lshift, other)

    def __irshift__(self, other: Any) -> WindowSet:
        return self.apply(operator.rshift, other)

    def __iand__(self, other: Any) -> WindowSet:
        return self.apply(operator.and_, other)

    def __ixor__(self, other: Any) -> WindowSet:
        return self.apply(operator.xor, other)

    def __ior__(self, other: Any) -> WindowSet:
        return self.apply(operator.or_, other)

    def __repr__(self) -> str:
        return f"<WindowSet of {self.wrapper.name!r}: key={self.key!r}>"
