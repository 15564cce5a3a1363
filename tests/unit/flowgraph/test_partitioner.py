"""The partitioner: Kafka's default partitioner (murmur2), bit for bit."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgraph.partitioner import (
    COMPILED,
    PARTITIONER,
    murmur2,
    partition_for,
    partition_for_python,
)
from planner.passes.assign_topics import PARTITIONER as PLANNED

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: Java's signed 32-bit results
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "java"), KAFKA_VECTORS)
def test_matches_kafkas_own_test_vectors(data: bytes, java: int) -> None:
    assert murmur2(data) == java & 0xFFFFFFFF


def test_matches_aiokafka_for_every_length_and_the_partition_too() -> None:
    rng = random.Random(7)
    parts = list(range(12))
    for length in range(40):
        for _ in range(25):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data)
            kafka = DefaultPartitioner()(data, parts, parts)
            assert partition_for(data, 12) == partition_for_python(data, 12) == kafka


def test_partitions_are_in_range_and_spread() -> None:
    seen = {partition_for(b"user-%d" % i, 8) for i in range(200)}
    assert seen == set(range(8))


def test_the_plan_names_this_partitioner() -> None:
    assert PLANNED == PARTITIONER == "murmur2"


def reference_murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` transliterated line by line (byte at a time, every step
    masked), to check the word-at-a-time implementation against."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        i4 = i * 4
        k = data[i4] | data[i4 + 1] << 8 | data[i4 + 2] << 16 | data[i4 + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length & ~3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@settings(deadline=None)  # no timing: a loaded machine must not fail it
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=1000))
def test_fast_murmur2_equals_the_reference_on_any_bytes(data: bytes, partitions: int) -> None:
    expected = reference_murmur2(data)
    assert murmur2(data) == expected
    partition = (expected & 0x7FFFFFFF) % partitions
    assert partition_for(data, partitions) == partition_for_python(data, partitions) == partition


def test_the_compiled_hash_is_the_one_used() -> None:
    """The ``murmurhash2`` wheel is a dependency: the pure version is only a fallback."""
    assert COMPILED
    assert partition_for is not partition_for_python


@pytest.mark.parametrize(("data", "java"), KAFKA_VECTORS)
def test_the_reference_matches_kafkas_vectors_too(data: bytes, java: int) -> None:
    assert reference_murmur2(data) == java & 0xFFFFFFFF
