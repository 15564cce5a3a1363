"""Kafka's default partitioner: which partition a keyed record belongs to.

Java producers, aiokafka and Kafka Streams put a keyed record in partition
``(murmur2(key_bytes) & 0x7fffffff) % partitions``; flowgraph does the same for every
topic it writes by key, so a topic another client produced by key is co-partitioned with a
flowgraph repartition topic of the same key and partition count. The key bytes are the
topic key codec's encoding of the key.

This runs on the write path of every repartition. `partition_for` uses the compiled
MurmurHash2 of the ``murmurhash2`` package (a dependency; about 0.15 µs a key) and falls back
to the pure-Python version below (about 0.8 µs) where that package cannot be installed. The
pure version is written for speed too: whole 4-byte words unpacked at once, constants
inlined, one mask per step. Writers also cache key -> partition, so a repeated key is hashed
once (see `Task._writer`).
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct

__all__ = ["COMPILED", "PARTITIONER", "murmur2", "partition_for", "partition_for_python"]

PARTITIONER = "murmur2"
"""The name `explain` and the physical plan give the partitioner of keyed topics."""

_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}
"""Per number of whole 4-byte words, the unpacker of that many little-endian words."""
_from_bytes = int.from_bytes

# The seed 0x9747B28C and multiplier 0x5BD1E995 are Kafka's (Utils.murmur2); they are
# written as literals below, as constants are cheaper to load than globals.


def _words(n: int) -> Callable[[bytes], tuple[int, ...]]:
    unpack = _WORDS[n] = Struct(f"<{n}I").unpack_from
    return unpack


def murmur2(data: bytes) -> int:
    """MurmurHash2 of `data` as Kafka's ``Utils.murmur2`` computes it, as an unsigned
    32-bit int (Java's signed int & 0xffffffff)."""
    length = len(data)
    h = 0x9747B28C ^ length
    n = length >> 2
    if n:
        for k in (_WORDS.get(n) or _words(n))(data):
            k = (k * 0x5BD1E995) & 0xFFFFFFFF
            # mod 2**32, (h*m) ^ (k*m) only needs masking once
            h = ((h * 0x5BD1E995) ^ ((k ^ (k >> 24)) * 0x5BD1E995)) & 0xFFFFFFFF
    if length & 3:  # the 1-3 trailing bytes, little-endian, as Kafka's switch xors them in
        h = ((h ^ _from_bytes(data[n << 2 :], "little")) * 0x5BD1E995) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0x5BD1E995) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_for_python(key_bytes: bytes, partitions: int) -> int:
    """`partition_for` in pure Python, where the ``murmurhash2`` wheel is missing."""
    return (murmur2(key_bytes) & 0x7FFFFFFF) % partitions


_compiled: Callable[[bytes, int], int] | None
try:
    from murmurhash2 import murmurhash2 as _compiled
except ImportError:  # pragma: no cover - the wheel exists for the common platforms
    _compiled = None

COMPILED = _compiled is not None
"""True when `partition_for` hashes with the compiled ``murmurhash2`` package."""


def _compiled_partition_for(key_bytes: bytes, partitions: int) -> int:
    """The partition of a record whose key encodes to `key_bytes`, in a topic of
    `partitions`: Kafka's default partitioner (murmur2 with Kafka's seed), as Java and
    aiokafka producers place keyed records."""
    return (_hash2(key_bytes, 0x9747B28C) & 0x7FFFFFFF) % partitions


if _compiled is not None:
    _hash2 = _compiled
    partition_for = _compiled_partition_for
else:  # pragma: no cover
    partition_for = partition_for_python
