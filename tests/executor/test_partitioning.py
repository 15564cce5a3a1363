"""Where `Worker.send` puts a keyed record: Kafka's default partitioner of the topic key
codec's bytes (encoded once: never the bytes of the bytes), on both kinds of memory transport;
and where a task's writer puts one, through its bounded cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime import task as task_module
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from flowgraph.serde import AutoCodec, Codec, IntCodec

P = 5


def sent(key_type: str, encoded: bool, keys: list[Any]) -> dict[Any, int]:
    """The partition `Worker.send` wrote each key to (keys as the log holds them)."""
    app = fg.App("p", topic_partitions=P)
    t = app.topic("t", key_type=key_type, value_type=int)

    @app.agent(t)
    async def reader(stream: Any) -> None:  # a step, so the app has a plan; never run here
        async for _ in stream:
            pass

    async def main() -> dict[Any, int]:
        transport = MemoryTransport(encoded=encoded)
        worker = Worker(app.plan(), transport, open_backend("memory://"))
        await worker.start()
        try:
            for k in keys:
                await worker.send("t", k, 1)
        finally:
            await worker.stop()
        logs = transport.broker.logs["t"]
        return {r[0]: p for p, part in enumerate(logs) for r in part}

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("key_type", "codec", "keys"),
    [
        ("int", IntCodec(), list(range(30))),
        ("auto", AutoCodec(), [f"user-{i}" for i in range(30)] + [(1, "a"), 7]),
    ],
)
def test_send_places_a_key_by_its_codec_bytes_on_both_transports(
    key_type: str, codec: Codec, keys: list[Any]
) -> None:
    expected = {codec.encode(k): partition_for(codec.encode(k), P) for k in keys}
    assert len(set(expected.values())) > 1
    as_bytes = sent(key_type, True, keys)
    assert as_bytes == expected
    assert sent(key_type, False, keys) == expected  # a declared topic holds bytes there too


@pytest.mark.parametrize("cache_max", [4, 1 << 16])
def test_a_writer_places_every_key_by_murmur2_however_often_its_cache_is_cleared(
    cache_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers cache key bytes -> partition, cleared when full: a key written after a clear
    (and a record without a key, which stays on the task's own partition) lands as before."""
    monkeypatch.setattr(task_module, "_PARTITION_CACHE_MAX", cache_max)
    g = fg.Graph("w")
    g.source("in", key_type=str, value_type=int, partitions=2).to("out", partitions=3)
    transport = MemoryTransport(encoded=True)
    transport.broker.ensure("in", 2)
    keys = [None if i % 7 == 0 else f"k{i % 23}" for i in range(200)]
    for src in (0, 1):
        rows = [
            (src, None if k is None else k.encode(), b"%d" % i, 0.0, None)
            for i, k in enumerate(keys)
        ]
        transport.broker.append("in", rows)

    async def main() -> None:
        worker = Worker(g.plan(), transport, open_backend("memory://"))
        await worker.start()
        await worker.run(until_idle=True, idle_wait=0.0)
        await worker.stop()

    asyncio.run(main())
    placed = [(p, r[0]) for p, part in enumerate(transport.broker.logs["out"]) for r in part]
    assert len(placed) == 2 * len(keys)
    keyed = {(p, kb) for p, kb in placed if kb is not None}
    assert keyed == {(partition_for(kb, 3), kb) for _, kb in keyed}
    assert len({p for p, _ in keyed}) == 3
    assert sorted(p for p, kb in placed if kb is None) == [0] * 29 + [1] * 29  # 2 tasks
