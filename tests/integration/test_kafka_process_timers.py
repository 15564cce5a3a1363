"""`process` timers on Kafka: a run fires a key when the partition's stream time passes its
deadline, and a second run on an empty RocksDB store restores the step's stream time from the
changelog (not only the keys' states): a record whose deadline is already behind that stream
time fires at once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import flowgraph as fg
from tests.integration.test_kafka import (
    FAST_GROUP,
    create_topic,
    partition_of,
    read_topic,
    run_async,
)
from tests.integration.test_kafka_global_tables import send
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration


def event_time(ping: str) -> float:
    return float(ping.split("@")[1])


def last_ping(state: dict, ping: str, ctx: fg.RecordContext) -> tuple[dict, list[str]]:
    return {"at": ctx.timestamp}, []


def ten_seconds_later(state: dict) -> float:
    return float(state["at"]) + 10.0


def quiet(state: dict, stream_time: float) -> tuple[None, list[str]]:
    return None, [f"quiet since {state['at']} at {stream_time}"]


def keys_of_partition_0(n: int) -> list[str]:
    """`n` keys that all land in partition 0 of 2, so they share one stream time."""
    keys = (f"d{i}" for i in range(1000))
    return [k for k in keys if partition_of(k, 2) == 0][:n]


def test_timers_fire_and_their_stream_time_is_restored_on_kafka(
    kafka: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id = f"kt-timers-{suffix}"
    pings, out = f"{graph_id}-pings", f"{graph_id}-out"
    run_async(create_topic(kafka, pings, 2))
    g = fg.Graph(graph_id)
    g.source(pings, key_type=str, value_type=str, partitions=2, timestamp=event_time).process(
        last_ping, dict, context=True, wake=ten_seconds_later, on_wake=quiet, value_type=str
    ).to(out, value_type=str)
    a, b, c = keys_of_partition_0(3)

    def run(n: int) -> fg.RunResult:
        return fg.run(
            g,
            broker=f"{kafka.url}?{FAST_GROUP}",
            store=f"rocksdb://{tmp_path / f'state-{n}'}",  # the second run restores
            until_idle=True,
        )

    def fired() -> list[tuple[str, str]]:
        return [
            (r.key.decode(), r.value.decode())
            for records in run_async(read_topic(kafka, out)).values()
            for r in records
        ]

    send(kafka, pings, [(0, a, "hi@100"), (0, b, "hi@115")])  # stream time 115: a fires
    first = run(0)
    assert fired() == [(a, "quiet since 100.0 at 115.0")]
    assert first.table("last_ping") == {b: {"at": 115.0}}
    send(kafka, pings, [(0, c, "hi@104")])  # deadline 114: behind the stored stream time
    second = run(1)
    assert fired() == [(a, "quiet since 100.0 at 115.0"), (c, "quiet since 104.0 at 115.0")]
    assert second.table("last_ping") == {b: {"at": 115.0}}
