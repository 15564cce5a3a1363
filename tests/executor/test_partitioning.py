"""Where `Worker.send` puts a keyed record: Kafka's default partitioner of the topic key
codec's bytes (encoded once: never the bytes of the bytes), on both kinds of memory transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
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
