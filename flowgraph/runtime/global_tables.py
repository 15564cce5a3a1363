"""Global tables: every worker holds every partition of them, for lookups from any step.

A global table is written like any table: by the tasks that own its partitions, through its
changelog. Every worker also keeps a copy of *all* its partitions: one store per changelog
partition, named ``<store>.global`` (`planner.naming.global_store`) so it never meets the
store of a shard the same worker owns. `GlobalTables.start` restores each copy from its local
position to the end of its changelog before the worker joins its group, so no record is
processed before the copies are there; a `ChangelogTailer` then keeps them up to date in the
background. Lookups read the copy: they see a write once its task committed it and the
tailer read it, as Kafka Streams' global tables do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.errors import ConfigurationError
from flowgraph.runtime.state.base import Entry, StateBackend, StorePartition
from flowgraph.runtime.tailer import ChangelogTailer
from flowgraph.runtime.transport import TP, Transport
from planner import naming
from planner.physical import PhysicalPlan, StoreSpec

__all__ = ["MISSING", "GlobalTables"]

MISSING: Any = DELETE
"""What `GlobalTables.get` returns for a key no partition holds."""

CATCH_UP_TIMEOUT = 10.0
"""Seconds `catch_up` waits on Kafka for the background tailer to reach the ends."""


class GlobalTables:
    """This worker's copies of the plan's global tables, restored at start and followed."""

    def __init__(
        self,
        plan: PhysicalPlan,
        transport: Transport,
        backend: StateBackend,
        codecs: Mapping[str, Any],
        stats: Any,
    ) -> None:
        self.plan = plan
        self.transport = transport
        self.backend = backend
        self.codecs = codecs
        self.stats = stats
        self.specs: dict[str, StoreSpec] = {s.step: s for s in plan.stores if s.is_global}
        """Per global table name (its step), its store."""
        self.stores: dict[str, list[StorePartition]] = {}
        """Per global table, its copies, one per changelog partition, in partition order."""
        self._gets: dict[str, list[Callable[[Any], Entry | None]]] = {}
        self._tailer: ChangelogTailer | None = None
        self._starting = False
        self.applied = 0
        """Changelog records applied to the copies (at start and since)."""

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _on_applied(self, n: int) -> None:
        self.applied += n
        if self._starting:
            self.stats.restored += n

    async def start(self) -> None:
        """Open a copy of every partition of every global table and restore each from its
        local position to the end of its changelog; then follow them in the background."""
        if not self.specs:
            return
        tailer = self._tailer = ChangelogTailer(
            self.transport.tail_reader, self.codecs, on_applied=self._on_applied
        )
        copies: list[tuple[TP, StorePartition]] = []
        for name, spec in self.specs.items():
            stores = [
                self.backend.open(naming.global_store(spec.name), p) for p in range(spec.partitions)
            ]
            self.stores[name] = stores
            self._gets[name] = [s.get for s in stores]
            copies += [((spec.changelog, p), s) for p, s in enumerate(stores)]
        ends = await self.transport.end_offsets([tp for tp, _ in copies])
        for tp, store in copies:
            offset = store.changelog_offset()
            if offset is not None and offset >= ends[tp]:
                # written against another broker (or a recreated topic): its offsets mean
                # nothing here, so rebuild it from the changelog, as a restore does
                store.clear()
            tailer.add(tp, store)
        self._starting = True
        try:
            await tailer.catch_up(ends)
        finally:
            self._starting = False
        tailer.start()

    def _unknown(self, name: str) -> ConfigurationError:
        known = ", ".join(map(repr, self.specs)) or "none"
        graph = self.plan.graph_id
        msg = f"graph {graph!r} has no global table {name!r}; its global tables: {known}"
        return ConfigurationError(msg)

    def get(self, name: str, key: Any, skip: int = -1) -> Any:
        """The value of `key` in table `name` (`MISSING` if none), from the lowest partition
        holding it; partition `skip` is not read (an agent reads its own shard itself)."""
        gets = self._gets.get(name)
        if gets is None:
            raise self._unknown(name)
        for p, get in enumerate(gets):
            if p != skip:
                entry = get(key)
                if entry is not None and entry[1] is not DELETE:
                    return entry[1]
        return MISSING

    def view(self, name: str) -> dict[Any, Any]:
        """Table `name` as this worker holds it: every key of every partition (a key held
        by several partitions has the value of the lowest)."""
        stores = self.stores.get(name)
        if stores is None:
            if name in self.specs:  # not started: nothing held yet
                return {}
            raise self._unknown(name)
        result: dict[Any, Any] = {}
        for store in stores:
            for key, value in store.items():
                result.setdefault(key, value)
        return result

    def lag(self) -> dict[TP, int | None]:
        """Per changelog partition, the records not applied to the copy yet (None: unknown)."""
        return {} if self._tailer is None else self._tailer.lag()

    async def catch_up(self, timeout: float = CATCH_UP_TIMEOUT) -> bool:
        """Apply what the changelogs hold now; False if that took over `timeout` seconds.

        In process the logs are read here and now (a test driver sees every commit at once);
        on Kafka the background tailer is waited for, since one reader serves both.
        """
        tailer = self._tailer
        if tailer is None:
            return True
        ends = await self.transport.end_offsets(list(tailer.following()))

        def behind() -> bool:
            return any((tailer.position(tp) or 0) < end for tp, end in ends.items())

        if self.transport.in_process:
            while behind():
                if not await tailer.poll(0.0):
                    break  # nothing more to read: the rest was compacted away
            return not behind()
        deadline = time.monotonic() + timeout
        while behind():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        """Stop following (the copies are closed with the backend)."""
        if self._tailer is not None:
            await self._tailer.stop()
