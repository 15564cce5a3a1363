"""The state of an agent's table on one partition: a dict whose writes carry offsets.

An agent reads and writes its table like a dict while it handles a record. Each write
carries that record's offset, and the entry keeps the offset of the last record that wrote
it, exactly like an aggregation's (see `aggregate.py`, whose cache, flush and graves this
class reuses): a record whose offset is not above the key's *stored* offset was applied
before a crash, so its write is skipped, and ``counts[url] += n`` replayed after a crash
adds nothing twice. Writes by records of the current batch always apply, so one record may
write a key many times.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.runtime.aggregate import AggregateOp
from flowgraph.runtime.ops import Fail
from flowgraph.runtime.state.base import StorePartition
from flowgraph.serde import Codec
from planner.logical import AgentTable

__all__ = ["MISSING", "TableState"]

MISSING: Any = DELETE
"""What `TableState.get` returns for a key the table does not hold."""


def _absent() -> Any:
    return DELETE


class TableState(AggregateOp):
    """One agent table on one store partition (an `AggregateOp` without a fold)."""

    def __init__(
        self,
        node: AgentTable,
        store: StorePartition,
        fail: Fail,
        key_codec: Codec | None = None,
        changelog: str = "",
    ) -> None:
        # not AggregateOp.__init__: there is no fold, and every key may be deleted
        self.node = node  # type: ignore[assignment]
        self.key_codec = key_codec
        self.changelog = changelog
        self.store = store
        self.inputs = 1
        self.index = 0
        self.fail = fail
        self.initial = _absent
        self.deletes = True
        self.cur: dict[Any, list[Any]] = {}
        self.dirty: list[Any] = []
        self.graves: dict[Any, Any] = {}
        self.replayed: dict[Any, Any] = {}
        self.skipped = 0
        self.is_async = False
        self.pending = []
        self.next = None

    def get(self, key: Any) -> Any:
        """The value of `key`, or `MISSING`."""
        e = self.cur.get(key)
        if e is None:
            e = self._load(key)
        return e[2]

    def set(self, key: Any, value: Any, offset: int) -> None:
        """Write `value` for `key` on behalf of the record at `offset`."""
        e = self.cur.get(key)
        if e is None:
            e = self._load(key)
        if offset <= e[0]:
            self.skipped += 1  # applied before a crash: this is a replay
            if offset == e[0] and e[2] is DELETE and value is DELETE:
                self.replayed[key] = offset
            return
        if e[1] == e[0]:
            self.dirty.append(key)
        e[1] = offset
        e[2] = value

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every key and value held, the changes not yet committed included."""
        seen = set()
        for k, e in self.cur.items():
            seen.add(k)
            if e[2] is not DELETE:
                yield k, e[2]
        for k, v in self.store.items():
            if k not in seen and v is not DELETE:
                yield k, v
