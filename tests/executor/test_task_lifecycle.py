"""The task lifecycle across rebalances, driven through the worker's rebalance callbacks on
the in-process transport in bytes mode (the callbacks Kafka's group calls; see
tests/integration/test_kafka_lifecycle.py for them on the broker).

A revoke suspends tasks whole; an assignment that gives them back resumes the same objects
without a restore, unless the group's offsets moved meanwhile (then they are built afresh
from their stores and changelogs); tasks not given back are closed, or become standbys
following their changelogs when the assignor says so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import flowgraph as fg
from flowgraph.runtime.codecs import topic_codecs
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.standby import Standbys
from flowgraph.runtime.state.rocksdb import RocksDBBackend
from flowgraph.runtime.tailer import ChangelogTailer
from flowgraph.runtime.worker import Worker

PARTITIONS = 2


def _graph() -> fg.Graph:
    g = fg.Graph("life")
    g.source("clicks", key_type=str, value_type=int, partitions=PARTITIONS).sum(name="total")
    return g


def _write(broker: MemoryBroker, plan: Any, records: list[tuple[int, str, int]]) -> None:
    kc, vc = topic_codecs(plan, in_process=False)["clicks"]
    broker.append("clicks", [(p, kc.encode(k), vc.encode(v), 0.0, None) for p, k, v in records])


async def _worker(broker: MemoryBroker, path: Path) -> tuple[Worker, Any]:
    plan = _graph().plan()
    transport = MemoryTransport(broker, encoded=True)
    backend = RocksDBBackend(path)
    worker = Worker(plan, transport, backend, commit_interval=3600.0)
    # a standby needs a group; in process the worker has none, so give it its standbys
    tailer = ChangelogTailer(transport.tail_reader, worker.codecs)
    worker._manager.standbys = Standbys(plan, backend, tailer)
    await worker.start()
    return worker, plan


def test_a_rebalance_resumes_the_tasks_given_back_and_closes_the_others(tmp_path: Path) -> None:
    broker = MemoryBroker()

    async def main() -> None:
        worker, plan = await _worker(broker, tmp_path)
        _write(broker, plan, [(0, "a", 1), (1, "b", 2), (0, "a", 3)])
        await worker.run(until_idle=True, idle_wait=0.0)
        everything = frozenset(worker.tasks)
        before = dict(worker.tasks)
        restored = worker.stats.restored
        assert set(worker.task_states().values()) == {"running"}

        await worker._on_revoked(everything)
        assert worker.tasks == {}
        assert set(worker.task_states().values()) == {"suspended"}
        await worker._on_assigned(everything)
        assert worker.tasks == before, "a task given back was rebuilt"
        assert worker.stats.restored == restored
        assert set(worker.task_states().values()) == {"running"}
        _write(broker, plan, [(1, "b", 10)])
        await worker.run(until_idle=True, idle_wait=0.0)
        assert worker.table("total") == {"a": 4, "b": 12}

        # someone else ran partition 1 meanwhile: its offset moved, its task is built afresh
        await worker._on_revoked(everything)
        consumer: Any = worker._consumer
        p1 = ("clicks", 1)
        await consumer.commit({p1: (await consumer.committed(p1)) + 1})
        await worker._on_assigned(everything)
        await worker.step()
        assert worker.tasks[("clicks", 0)] is before[("clicks", 0)]
        assert worker.tasks[p1] is not before[p1]
        assert before[p1].state == "closed"

        # partition 1 goes elsewhere, and this worker keeps a standby of its task
        sub = worker.tasks[p1].sub.id
        await worker._on_revoked(everything)
        worker.rebalancer.assignor = SimpleNamespace(standby=frozenset({(sub, 1)}))
        await worker._on_assigned(frozenset({("clicks", 0)}))
        assert worker.task_states() == {(sub, 0): "running", (sub, 1): "standby"}
        store = worker.backend.open(f"{plan.graph_id}-total", 1)
        assert dict(store.items()) == {"b": 12}
        # its changelog grows elsewhere (a record of another owner); the standby follows
        kc, vc = topic_codecs(plan, in_process=False)["life-total-changelog"]
        from flowgraph.runtime.recovery import encode_position

        changelog = "life-total-changelog"
        broker.append(
            changelog, [(1, kc.encode("b"), vc.encode(20), 0.0, (("fg.pos", encode_position(9)),))]
        )
        for _ in range(100):
            if dict(store.items()) == {"b": 20}:
                break
            await asyncio.sleep(0.01)
        assert dict(store.items()) == {"b": 20}
        assert worker.standby_lag() == {(sub, 1): 0}
        assert "1 running, 1 standby" in worker.explain()

        # promoted: built on the standby's store, nothing left to restore
        restored = worker.stats.restored
        await worker._on_revoked(frozenset({("clicks", 0)}))
        worker.rebalancer.assignor = SimpleNamespace(standby=frozenset())
        await worker._on_assigned(everything)
        await worker.step()
        assert set(worker.task_states().values()) == {"running"}
        assert worker.stats.restored == restored
        assert worker.table("total") == {"a": 4, "b": 20}
        await worker.stop()

    asyncio.run(main())
