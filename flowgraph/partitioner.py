"""Kafka's default partitioner: which partition a keyed record belongs to.

Java producers, aiokafka and Kafka Streams put a keyed record in partition
``(murmur2(key_bytes) & 0x7fffffff) % partitions``; flowgraph does the same for every
topic it writes by key, so a topic another client produced by key is co-partitioned with a
flowgraph repartition topic of the same key and partition count. The key bytes are the
topic key codec's encoding of the key.
"""

from __future__ import annotations

from struct import Struct

__all__ = ["PARTITIONER", "murmur2", "partition_for"]

PARTITIONER = "murmur2"
"""The name `explain` and the physical plan give the partitioner of keyed topics."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, Struct] = {}


def murmur2(data: bytes) -> int:
    """MurmurHash2 of `data` as Kafka's ``Utils.murmur2`` computes it, as an unsigned
    32-bit int (Java's signed int & 0xffffffff)."""
    length = len(data)
    h = _SEED ^ length
    n = length >> 2
    if n:
        unpack = _WORDS.get(n)
        if unpack is None:
            unpack = _WORDS[n] = Struct(f"<{n}I")
        for k in unpack.unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rest = length & 3
    if rest:
        i = length - rest
        if rest == 3:
            h ^= data[i + 2] << 16
        if rest >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key_bytes: bytes, partitions: int) -> int:
    """The partition of a record whose key encodes to `key_bytes`, in a topic of
    `partitions`: Kafka's default partitioner (murmur2), as Java and aiokafka producers."""
    return (murmur2(key_bytes) & 0x7FFFFFFF) % partitions
