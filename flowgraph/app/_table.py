"""`app.Table`: a dict to the agent that writes it, sharded and made exact by the runtime.

Inside an agent, the table is that agent's `TableState` on the partition of the record being
handled (found through `CURRENT`); every write carries the record's offset. Outside an agent
(a timer, a task, a notebook) it can only be read, from the partitions this worker holds:
writes there would belong to no record, so a replay could not tell whether they were made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flowgraph._delete import DELETE
from flowgraph.errors import ConfigurationError, GraphDefinitionError
from flowgraph.runtime.agent import CURRENT, WORKER
from flowgraph.runtime.table_state import TableState

if TYPE_CHECKING:
    from flowgraph.app._app import App
    from flowgraph.runtime.agent import Slot

__all__ = ["GlobalTable", "Table"]

K = TypeVar("K")
V = TypeVar("V")


class Table(Generic[K, V]):
    """A named table an agent uses as a dict: ``counts[url] += 1``."""

    def __init__(
        self,
        app: App,
        name: str,
        *,
        default: Callable[[], V] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        help: str | None = None,  # noqa: A002 - Faust's name
        where: str = "",
    ) -> None:
        self.app = app
        self.name = name
        self.default = default
        self.key_type = key_type
        self.value_type = value_type
        self.partitions = partitions
        self.help = help or ""
        self.where = where
        self.window: Any = None
        """A window spec for a windowed table (see `tumbling`), else None."""
        self.relative_to: Any = None

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of app {self.app.id!r}>"

    # -- where the data is ---------------------------------------------------------------

    def _state(self) -> TableState | None:
        """This table on the current record's partition, or None outside an agent."""
        slot = CURRENT.get()
        if slot is None:
            return None
        state = slot.tables.get(self.name)
        if state is None:
            agent = slot.op.node.id
            msg = (
                f"agent {agent!r} uses table {self.name!r}, but the table is not named in the "
                f"agent's code, so the plan gave the agent no shard of it; refer to the table "
                f"by a module-level name in the agent function"
            )
            raise GraphDefinitionError(msg)
        return state

    def _write_refused(self, what: str) -> ConfigurationError:
        msg = (
            f"table {self.name!r} can only be changed by an agent while it handles a record "
            f"({what} outside an agent); send a record to a topic an agent reads and let the "
            "agent change the table"
        )
        return ConfigurationError(msg)

    def _local(self) -> list[TableState]:
        """The shards this worker holds, for reads outside an agent."""
        worker = WORKER.get()
        if worker is None:
            msg = (
                f"table {self.name!r} is read outside a running worker; read it in an agent, "
                "a timer or a task, or after a run with RunResult.table(name)"
            )
            raise ConfigurationError(msg)
        found: list[TableState] = worker.table_states(self.name)
        return found

    # -- the dict --------------------------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        slot = CURRENT.get()
        if slot is not None:
            # the hot path, in an agent: `TableState.get` inlined
            state = slot.tables.get(self.name)
            if state.__class__ is TableState:
                e = state.cur.get(key)
                if e is None:
                    e = state._load(key)
                value = e[2]
                if value is DELETE:
                    if self.default is None:
                        raise KeyError(key)
                    return self.default()
                return value  # type: ignore[no-any-return]
        return self._get_item(key)

    def _get_item(self, key: K) -> V:
        state = self._state()
        if state is not None:
            value = state.get(key)
        else:
            value = DELETE
            for shard in self._local():
                value = shard.get(key)
                if value is not DELETE:
                    break
        if value is DELETE:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: K, value: V) -> None:
        slot = CURRENT.get()
        if slot is not None and value is not None:
            # the hot path, in an agent: `TableState.set` inlined
            state = slot.tables.get(self.name)
            rec = slot.rec
            if state.__class__ is TableState and rec is not None:
                e = state.cur.get(key)
                if e is None:
                    e = state._load(key)
                offset = rec[3]
                if offset > e[0]:
                    if e[1] == e[0]:
                        state.dirty.append(key)
                    e[1] = offset
                    e[2] = value
                    return
        self._set_item(slot, key, value)

    def _set_item(self, slot: Slot | None, key: K, value: V) -> None:
        if slot is None:
            what = f"table[{key!r}] = ..."
            raise self._write_refused(what)
        state = self._state()
        assert state is not None
        state.set(key, DELETE if value is None else value, slot.offset)

    def __delitem__(self, key: K) -> None:
        slot = CURRENT.get()
        if slot is None:
            what = f"del table[{key!r}]"
            raise self._write_refused(what)
        state = self._state()
        assert state is not None
        if state.get(key) is DELETE:
            raise KeyError(key)
        state.set(key, DELETE, slot.offset)

    def __contains__(self, key: object) -> bool:
        return any(shard.get(key) is not DELETE for shard in self._shards())

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key`, or `default` (not the table's default) when it has none."""
        for shard in self._shards():
            value = shard.get(key)
            if value is not DELETE:
                return value
        return default

    def pop(self, key: K, *default: Any) -> Any:
        """Remove `key` and return its value (or `default`)."""
        value = self.get(key, DELETE)
        if value is DELETE:
            if default:
                return default[0]
            raise KeyError(key)
        del self[key]
        return value

    def setdefault(self, key: K, default: V) -> V:
        """The value of `key`; `default` is written first when it has none."""
        if key in self:
            return self[key]
        self[key] = default
        return default

    def update(self, other: Any = (), **kwargs: V) -> None:
        """Write several keys at once, as `dict.update`."""
        pairs = other.items() if hasattr(other, "items") else other
        for k, v in pairs:
            self[k] = v
        for k, v in kwargs.items():
            self[k] = v  # type: ignore[index]

    def _shards(self) -> list[TableState]:
        state = self._state()
        return [state] if state is not None else self._local()

    def items(self) -> Iterator[tuple[K, V]]:
        """Keys and values: in an agent those of the record's partition, elsewhere those of
        every partition this worker holds."""
        for shard in self._shards():
            yield from shard.items()

    def keys(self) -> Iterator[K]:
        for k, _ in self.items():
            yield k

    def values(self) -> Iterator[V]:
        for _, v in self.items():
            yield v

    def __iter__(self) -> Iterator[K]:
        return self.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def as_ansitable(self, **kwargs: Any) -> str:
        """The table as text lines ``key: value`` (Faust draws a box; this is plainer)."""
        return "\n".join(f"{k!r}: {v!r}" for k, v in sorted(self.items(), key=repr))

    # -- windows (see _windowed.py) ---------------------------------------------------------

    def tumbling(self, size: Any, expires: Any = None) -> Any:
        """This table with one value per key and tumbling window of `size` seconds."""
        from flowgraph.app._windowed import windowed_table

        return windowed_table(self, "tumbling", size, None, expires)

    def hopping(self, size: Any, step: Any, expires: Any = None) -> Any:
        """This table with one value per key and hopping window."""
        from flowgraph.app._windowed import windowed_table

        return windowed_table(self, "hopping", size, step, expires)

    def sliding(self, size: Any, expires: Any = None) -> Any:
        """This table with one value per key and sliding window of `size` seconds."""
        from flowgraph.app._windowed import windowed_table

        return windowed_table(self, "sliding", size, None, expires)


class GlobalTable(Table[K, V]):
    """Faust's GlobalTable: written like a `Table`, and every worker holds all of it.

    The first agent (in the order the app declares them) whose code names the table writes
    it, each write going to the shard of the record's partition as for a `Table`; other
    agents, timers and tasks only read it. Every worker follows all partitions of its
    changelog into a copy of its own (`flowgraph.runtime.global_tables`): a read in the
    writing agent sees the agent's own shard, uncommitted writes included, then the copy of
    every other partition; any other read sees the copy.
    """

    writer: str | None = None
    """The agent that writes the table (set when the app is planned)."""

    def __repr__(self) -> str:
        return f"<GlobalTable {self.name!r} of app {self.app.id!r}>"

    def _state(self) -> TableState | None:
        slot = CURRENT.get()
        if slot is None:
            return None
        state = slot.tables.get(self.name)
        if state is None:
            msg = (
                f"agent {slot.op.node.id!r} writes global table {self.name!r}, which agent "
                f"{self.writer!r} writes (the first agent whose code names it); other agents "
                "only read a global table, so send what should change it to that agent's topic"
            )
            raise ConfigurationError(msg)
        return state

    def _copies(self) -> Any:
        worker = WORKER.get()
        if worker is None:
            msg = (
                f"global table {self.name!r} is read outside a running worker; read it in an "
                "agent, a timer or a task, or after a run with RunResult.table(name)"
            )
            raise ConfigurationError(msg)
        tables = worker.global_tables
        if self.name not in tables.specs:
            msg = (
                f"global table {self.name!r} is written by no agent, so no worker holds it; "
                "name it in the code of the agent that writes it"
            )
            raise ConfigurationError(msg)
        return tables

    def _own(self) -> tuple[TableState | None, int]:
        """The shard the agent handling a record writes, and its partition (-1: none)."""
        slot = CURRENT.get()
        if slot is None:
            return None, -1
        state = slot.tables.get(self.name)
        return (None, -1) if state is None else (state, slot.op.partition)

    def _lookup(self, key: Any) -> Any:
        state, partition = self._own()
        if state is not None:
            value = state.get(key)
            if value is not DELETE:
                return value
        return self._copies().get(self.name, key, skip=partition)

    def __getitem__(self, key: K) -> V:
        value = self._lookup(key)
        if value is DELETE:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not DELETE

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key`, or `default` (not the table's default) when it has none."""
        value = self._lookup(key)
        return default if value is DELETE else value

    def items(self) -> Iterator[tuple[K, V]]:
        """Every key and value of every partition (in the writing agent, its own shard as
        it is now, uncommitted writes included)."""
        state, partition = self._own()
        copies = self._copies()
        seen: set[Any] = set()
        if state is not None:
            for key, value in state.items():
                seen.add(key)
                yield key, value
        for p, store in enumerate(copies.stores.get(self.name, ())):
            if p != partition:
                for key, value in store.items():
                    if key not in seen:
                        seen.add(key)
                        yield key, value

    def _windowed_refused(self) -> ConfigurationError:
        msg = f"global table {self.name!r} cannot be windowed; use app.Table for a windowed table"
        return ConfigurationError(msg)

    def tumbling(self, size: Any, expires: Any = None) -> Any:
        """Refused: a global table holds one value per key."""
        raise self._windowed_refused()

    def hopping(self, size: Any, step: Any, expires: Any = None) -> Any:
        """Refused: a global table holds one value per key."""
        raise self._windowed_refused()

    def sliding(self, size: Any, expires: Any = None) -> Any:
        """Refused: a global table holds one value per key."""
        raise self._windowed_refused()
