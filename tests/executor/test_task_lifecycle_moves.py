"""A task that moved away and came back, driven through the worker's rebalance callbacks on
the in-process transport in bytes mode (as in test_task_lifecycle.py), with a second worker
on the same logs standing for the member that ran it meanwhile.

The offset a suspended task resumes at belongs to the tasks this worker ran: a task built
afresh for a partition starts at the group's committed offset, and so must the resume of
that task after a later rebalance, whatever this worker committed for the partition in an
earlier ownership. Resumed at that older offset, it replays input another member already
processed, without the origin marks that would skip its writes: every sink or repartition
record of that input is written again (downstream tables count it twice).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import flowgraph as fg
from flowgraph.runtime.codecs import topic_codecs
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.rocksdb import RocksDBBackend
from flowgraph.runtime.worker import Worker

P0, P1 = ("clicks", 0), ("clicks", 1)


def _graph() -> fg.Graph:
    g = fg.Graph("moves")
    g.source("clicks", key_type=str, value_type=int, partitions=2).to("out", value_type=int)
    return g


def _write(broker: MemoryBroker, plan: Any, records: list[tuple[int, str, int]]) -> None:
    kc, vc = topic_codecs(plan, in_process=False)["clicks"]
    broker.append("clicks", [(p, kc.encode(k), vc.encode(v), 0.0, None) for p, k, v in records])


def _out(broker: MemoryBroker, plan: Any) -> list[int]:
    _kc, vc = topic_codecs(plan, in_process=False)["out"]
    assert vc is not None
    return sorted(vc.decode(m[1]) for m in broker.records("out"))


async def _worker(broker: MemoryBroker, path: Path) -> Worker:
    worker = Worker(
        _graph().plan(),
        MemoryTransport(broker, encoded=True),
        RocksDBBackend(path),
        commit_interval=3600.0,
    )
    await worker.start()
    return worker


async def _assign(worker: Worker, assignment: frozenset[Any]) -> None:
    """Give `worker` `assignment`, reading newly assigned partitions from the group's
    committed offsets, as a Kafka consumer does (the in-process one keeps its position)."""
    await worker._on_assigned(assignment)
    consumer: Any = worker._consumer
    for tp in worker._manager.pending:  # to be built (not resumed)
        consumer.seek(tp, (await consumer.committed(tp)) or 0)


def test_a_task_built_afresh_resumes_at_the_groups_offset_not_an_older_ownerships(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    plan = _graph().plan()

    async def main() -> None:
        worker = await _worker(broker, tmp_path / "w1")
        everything = frozenset({P0, P1})
        _write(broker, plan, [(0, "a", 1), (1, "b", 2)])
        await worker.run(until_idle=True, idle_wait=0.0)  # commits partition 1 at offset 1

        # partition 1 moves to another member, which processes two more of its records
        await worker._on_revoked(everything)
        await _assign(worker, frozenset({P0}))
        _write(broker, plan, [(1, "b", 3), (1, "b", 4)])
        other = await _worker(broker, tmp_path / "w2")
        await other.run(until_idle=True, idle_wait=0.0)
        await other.stop()
        assert _out(broker, plan) == [1, 2, 3, 4]

        # it comes back here: built afresh, nothing left to process
        await worker._on_revoked(frozenset({P0}))
        await _assign(worker, everything)
        await worker.run(until_idle=True, idle_wait=0.0)
        # a rebalance gives it back again: it resumes where the group stands
        await worker._on_revoked(everything)
        await _assign(worker, everything)
        await worker.run(until_idle=True, idle_wait=0.0)
        await worker.stop()
        assert _out(broker, plan) == [1, 2, 3, 4], "input another member processed, again"

    asyncio.run(main())
