"""State in Python dicts: the embedded default and the test double of the RocksDB backend.

Keys and entries are kept as the Python objects written, never encoded, so this backend is as
fast as a dict. Values are stored by reference: do not mutate one after writing it (the RocksDB
backend would not see the change, so code relying on it would break there). A deleted key's
grave, ``(position, DELETE)``, is kept like any entry (`get` returns it) but left out of
`items` and `len`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from flowgraph._delete import DELETE
from flowgraph.runtime.state.base import Entry, check_address

__all__ = ["MemoryBackend", "MemoryStorePartition"]


class MemoryStorePartition:
    """One store partition as a dict ``key -> (position, value)``.

    `close()` keeps the data: it belongs to the backend, so a task restarted in the same
    process finds its state, as it would on disk.
    """

    get: Callable[[object], Entry | None]
    """The dict's own ``get``: the hot path pays for no extra Python frame."""

    def __init__(self, name: str, partition: int) -> None:
        self.name = name
        self.partition = partition
        self._data: dict[Any, Entry] = {}
        self._changelog_offset: int | None = None
        self._graves: set[Any] = set()
        """Keys whose entry is a grave ``(position, DELETE)``: deleted, not counted."""
        self.get = self._data.get

    def get_many(self, keys: Iterable[object]) -> dict[object, Entry]:
        """Return the entries of the keys found."""
        get = self._data.get
        return {key: entry for key in keys if (entry := get(key)) is not None}

    def write(
        self, updates: Mapping[Any, Entry | None], *, changelog_offset: int | None = None
    ) -> None:
        """Apply a batch; None deletes.

        Atomic in practice: the keys of a Mapping are hashable, so no step of the loop can fail.
        """
        data = self._data
        graves = self._graves
        for key, entry in updates.items():
            if entry is None:
                data.pop(key, None)
                graves.discard(key)
            else:
                data[key] = entry
                if entry[1] is DELETE:
                    graves.add(key)
                elif graves:
                    graves.discard(key)
        if changelog_offset is not None:
            self._changelog_offset = changelog_offset

    def changelog_offset(self) -> int | None:
        """Return the last changelog offset written, or None."""
        return self._changelog_offset

    def entries(self) -> Iterator[tuple[object, Entry]]:
        """Iterate over a copy, in insertion order, so writes during iteration are safe."""
        return iter(list(self._data.items()))

    def items(self) -> Iterator[tuple[object, object]]:
        """Iterate over ``(key, value)`` of a copy; deleted keys (graves) are left out."""
        return iter(
            [(key, entry[1]) for key, entry in self._data.items() if entry[1] is not DELETE]
        )

    def __len__(self) -> int:
        return len(self._data) - len(self._graves)

    def clear(self) -> None:
        """Drop data and offset; in place, so a hoisted ``get`` stays valid."""
        self._data.clear()
        self._graves.clear()
        self._changelog_offset = None

    def close(self) -> None:
        """Do nothing: the data stays with the backend for the next `open`."""


class MemoryBackend:
    """Dict-backed partitions that live as long as this object.

    `close()` and a later `open()` of the same store and partition on the same backend object
    give back the same partition and data: an embedded run that restarts a task keeps its
    state. A new backend object starts empty.
    """

    url = "memory://"

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], MemoryStorePartition] = {}

    def open(self, store: str, partition: int) -> MemoryStorePartition:
        """Return the partition, creating it empty on first use."""
        found = self._partitions.get((store, partition))
        if found is None:
            check_address(store, partition)
            found = self._partitions[store, partition] = MemoryStorePartition(store, partition)
        return found

    def close(self) -> None:
        """Do nothing: partitions outlive `close()` (see the class docstring)."""

    def __repr__(self) -> str:
        return f"MemoryBackend({len(self._partitions)} partitions)"
