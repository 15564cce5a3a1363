"""Metadata a RocksDB store partition keeps beside its data, named in one place.

It lives in its own column family, so `entries()` never sees it, and is written in the same
WriteBatch as the data it describes. Values are 8-byte big-endian signed ints, independent of
the key and value codecs, so changing a codec can never make the metadata unreadable.
"""

from __future__ import annotations

__all__ = [
    "CHANGELOG_OFFSET_KEY",
    "FORMAT_VERSION",
    "FORMAT_VERSION_KEY",
    "METADATA_COLUMN_FAMILY",
    "decode_int",
    "encode_int",
]

METADATA_COLUMN_FAMILY = "flowgraph-metadata"
"""Column family holding the keys below; the data is in RocksDB's default column family."""

CHANGELOG_OFFSET_KEY = b"changelog-offset"
"""Offset of the last changelog record the stored data corresponds to (absent: never written)."""

FORMAT_VERSION_KEY = b"format-version"
"""On-disk layout version, written when a partition is created and checked on every open."""

FORMAT_VERSION = 1
"""Version 1: key = key codec bytes; value = msgpack ``[position, value codec bytes]``.

Bump it whenever that layout changes: an older directory must then be rebuilt from its
changelog rather than be misread.
"""


def encode_int(n: int) -> bytes:
    """Encode a metadata integer (8 bytes, big-endian, signed)."""
    return n.to_bytes(8, "big", signed=True)


def decode_int(data: bytes) -> int:
    """Decode what `encode_int` wrote."""
    return int.from_bytes(data, "big", signed=True)
