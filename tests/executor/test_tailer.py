"""ChangelogTailer: stores follow changelog partitions in the background, from their own
positions, and a removed store is written no more."""

from __future__ import annotations

import asyncio
from pathlib import Path

import flowgraph as fg
from flowgraph.runtime.codecs import topic_codecs
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.recovery import encode_position
from flowgraph.runtime.state.rocksdb import RocksDBBackend
from flowgraph.runtime.tailer import ChangelogTailer
from planner.pipeline import plan as compile_plan


def _plan():  # type: ignore[no-untyped-def]
    g = fg.Graph("tail")
    g.source("clicks", key_type=str, value_type=int, partitions=2).sum(name="total")
    return compile_plan(g)


def _changelog_records(plan, keys):  # type: ignore[no-untyped-def]
    kc, vc = topic_codecs(plan, in_process=False)["tail-total-changelog"]
    return [
        (0, kc.encode(k), vc.encode(v), 0.0, (("fg.pos", encode_position(pos)),))
        for k, v, pos in keys
    ]


def test_a_store_follows_its_changelog_and_stops_when_removed(tmp_path: Path) -> None:
    plan = _plan()
    spec = next(s for s in plan.stores)
    transport = MemoryTransport(MemoryBroker(), encoded=True)

    async def main() -> None:
        await transport.create_topics(plan.topics)
        backend = RocksDBBackend(tmp_path)
        store = backend.open(spec.name, 0)
        tailer = ChangelogTailer(transport.tail_reader, topic_codecs(plan, in_process=False))
        tp = (spec.changelog, 0)
        await transport.produce(
            spec.changelog, _changelog_records(plan, [("a", 1, 0), ("b", 2, 1)])
        )
        tailer.add(tp, store)
        assert await tailer.catch_up({tp: 2})
        assert dict(store.items()) == {"a": 1, "b": 2}
        assert store.changelog_offset() == 1
        tailer.start()
        await transport.produce(spec.changelog, _changelog_records(plan, [("a", 5, 2)]))
        for _ in range(50):
            if dict(store.items()).get("a") == 5:
                break
            await asyncio.sleep(0.02)
        assert dict(store.items()) == {"a": 5, "b": 2}
        assert tailer.lag() == {tp: 0}
        assert tailer.remove(tp) is store
        await transport.produce(spec.changelog, _changelog_records(plan, [("a", 9, 3)]))
        await asyncio.sleep(0.3)
        assert dict(store.items())["a"] == 5  # no longer followed
        await tailer.stop()
        # a new tailer resumes from the store's own position: only the tail is read
        applied: list[int] = []
        again = ChangelogTailer(
            transport.tail_reader, topic_codecs(plan, in_process=False), on_applied=applied.append
        )
        again.add(tp, store)
        assert await again.catch_up({tp: 4})
        assert applied == [1]
        assert dict(store.items()) == {"a": 9, "b": 2}
        await again.stop()
        backend.close()

    asyncio.run(main())
