"""`GlobalTable`: the handle of a table every worker holds whole, for lookups from any step.

A global table is a table like any other (sharded, with a changelog), and every worker also
follows all partitions of that changelog in the background into a copy of its own
(`flowgraph.runtime.global_tables`). A step function reads that copy with ``table[key]``,
``table.get(key, default)`` or ``key in table``: the running worker is found through the
`WORKER` context variable, so a lookup costs no more than the store reads it makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.agent import WORKER
from flowgraph.runtime.global_tables import MISSING
from planner import naming

if TYPE_CHECKING:
    from flowgraph._graph import Graph
    from flowgraph.runtime.global_tables import GlobalTables

__all__ = ["GlobalTable"]

K = TypeVar("K")
V = TypeVar("V")


@attrs.frozen
class GlobalTable(Generic[K, V]):
    """A table every worker holds completely: ``table[key]`` in any step function.

    Made by ``graph.global_table(topic, ...)`` (the last value per key of a topic) or
    ``table.to_global()``. Lookups read this worker's copy, which follows the table's
    changelog in the background: a write is seen once its task has committed it and the
    copy has read it (usually well under a second), not at once.
    """

    graph: Graph
    step: str

    @property
    def name(self) -> str:
        """The table's name, which `RunResult.table(name)` and `TestDriver.table(name)` take."""
        return self.step

    @property
    def store(self) -> str:
        """The store of the table's shards (``<graph>-<name>``), which names its changelog."""
        return naming.store_name(self.graph.id, self.step)

    def _tables(self) -> GlobalTables:
        worker = WORKER.get()
        if worker is None:
            msg = (
                f"global table {self.step!r} is read outside a running worker; look it up in "
                "a step function while the graph runs, or read RunResult.table(name) after"
            )
            raise ConfigurationError(msg)
        tables: GlobalTables = worker.global_tables
        return tables

    def __getitem__(self, key: K) -> V:
        value = self._tables().get(self.step, key)
        if value is MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def get(self, key: K, default: Any = None) -> Any:
        """The value of `key` in this worker's copy, or `default`."""
        value = self._tables().get(self.step, key)
        return default if value is MISSING else value

    def __contains__(self, key: object) -> bool:
        return self._tables().get(self.step, key) is not MISSING

    def __repr__(self) -> str:
        return f"GlobalTable({self.step!r} of graph {self.graph.id!r})"
