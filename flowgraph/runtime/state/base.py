"""What the executor needs from a state store, whatever keeps the bytes.

Layering: a `StateBackend` (one per worker, built from a URL) opens one `StorePartition` per
store and partition; the executor coalesces a batch's updates per key and hands them to
`StorePartition.write` in one call, which applies them atomically together with the changelog
offset they correspond to (docs/concepts/planner.md, "Durability order").

Every stored value is an `Entry`: ``(position, value)``, where position is the source offset(s)
of the last input applied to the key. The store never interprets it; the executor compares it
with an input's offset to skip records already applied before a crash. An entry whose value is
`flowgraph.DELETE` is a deleted key's *grave*: it keeps the position until no replay needs it;
`get` and `entries` return it, `items` and ``len`` leave it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from flowgraph.errors import ConfigurationError

__all__ = [
    "Entry",
    "StateBackend",
    "StateCodec",
    "StorePartition",
    "check_address",
    "open_backend",
]

Entry = tuple[object, object]
"""``(position, value)``; position is an int or a tuple of ints, opaque to the store."""


class StateCodec(Protocol):
    """Turns keys or values into bytes and back, for stores that keep bytes."""

    def encode(self, obj: object, /) -> bytes:
        """Encode one key or value."""
        ...

    def decode(self, data: bytes, /) -> object:
        """Decode what `encode` wrote."""
        ...


class StorePartition(Protocol):
    """One partition of one store: keys to entries, plus the changelog offset they reflect."""

    name: str
    """Store name, e.g. ``"clickstats-per_url"``."""
    partition: int

    def get(self, key: object, /) -> Entry | None:
        """Return the entry for `key`, or None."""
        ...

    def get_many(self, keys: Iterable[object], /) -> dict[object, Entry]:
        """Return the entries of the keys found (missing keys are left out); one call per batch."""
        ...

    def write(
        self, updates: Mapping[Any, Entry | None], /, *, changelog_offset: int | None = None
    ) -> None:
        """Apply one batch atomically; None deletes the key, ``(position, DELETE)`` keeps a grave.

        `changelog_offset`, when given, is stored in the same atomic batch: the offset of the
        last changelog record these updates correspond to. Without it the stored offset stays.
        """
        ...

    def changelog_offset(self) -> int | None:
        """Return the last stored changelog offset, or None if none was ever written."""
        ...

    def entries(self) -> Iterator[tuple[object, Entry]]:
        """Iterate over ``(key, entry)`` pairs of a consistent snapshot."""
        ...

    def items(self) -> Iterator[tuple[object, object]]:
        """Iterate over ``(key, value)`` pairs, positions and graves dropped."""
        ...

    def __len__(self) -> int:
        """Return the number of keys with a value, graves not counted (may be O(n))."""
        ...

    def clear(self) -> None:
        """Drop all data and the changelog offset, before a restore from scratch."""
        ...

    def close(self) -> None:
        """Release the partition's resources; idempotent."""
        ...


class StateBackend(Protocol):
    """Opens store partitions; one per worker process."""

    url: str
    """The URL that builds an equal backend, e.g. ``"memory://"`` or ``"rocksdb://.flowgraph"``."""

    def open(self, store: str, partition: int) -> StorePartition:
        """Open a partition; opening an open one again returns the same object."""
        ...

    def close(self) -> None:
        """Close every partition this backend opened."""
        ...


def check_address(store: str, partition: int) -> None:
    """Reject store names and partitions that cannot be a directory ``<store>/<partition>``.

    Both backends check, so a name that works in memory also works on disk.
    """
    if not isinstance(store, str) or store in {"", ".", ".."} or any(c in store for c in "/\\\0"):
        msg = (
            f"store name {store!r} cannot be used as a directory name; "
            "use a non-empty name without '/', '\\' or NUL"
        )
        raise ConfigurationError(msg)
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        msg = f"store partition {partition!r} is not a partition number; use an int >= 0"
        raise ConfigurationError(msg)


def open_backend(url: str) -> StateBackend:
    """Build the backend a URL names: ``memory://`` or ``rocksdb://DIR``.

    DIR may be relative (``rocksdb://.flowgraph``) or absolute (``rocksdb:///var/lib/fg``).

    Raises:
        ConfigurationError: for anything else, in one sentence.
    """
    # Imported here: the implementations import this module.
    from flowgraph.runtime.state.memory import MemoryBackend
    from flowgraph.runtime.state.rocksdb import RocksDBBackend

    accepted = "expected 'memory://' or 'rocksdb://DIR' (absolute: 'rocksdb:///abs/path')"
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    scheme = scheme.lower()
    if sep and scheme == "memory" and not rest:
        return MemoryBackend()
    if sep and scheme == "rocksdb" and rest:
        from flowgraph.serde import AutoCodec  # keys and values of any type, round-tripped exactly

        return RocksDBBackend(rest, key_codec=AutoCodec(), value_codec=AutoCodec())
    if sep and scheme == "memory":
        msg = f"state store URL {url!r} has a path but memory stores take none; {accepted}"
    elif sep and scheme == "rocksdb":
        msg = f"state store URL {url!r} names no directory; {accepted}"
    else:
        msg = f"unsupported state store URL {url!r}; {accepted}"
    raise ConfigurationError(msg)
