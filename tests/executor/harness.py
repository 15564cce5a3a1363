"""Run one graph body through each executor and collect what it leaves behind.

Executor tests build their graph with a function ``build(stream)`` over one input stream, so the
same body runs through `TestDriver` (a topic source, one `send` per value) and through `fg.run`
(a bounded `source_from` feed, processed in batches). Records of the input have no key.

Helpers at the end drive `Worker` directly on a `MemoryBroker` that outlives it, for tests of
restarts and replays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

import flowgraph as fg
from flowgraph.runtime.faults import InjectedCrash, raise_at
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import StateBackend, open_backend
from flowgraph.runtime.worker import Worker, topic_codecs
from flowgraph.testing import DeadLetter, TestDriver

GRAPH = "t"
DLQ = f"{GRAPH}-dlq"

Build = Callable[[fg.Stream], object]

REPLAY_THROUGH_REPARTITION_BUG = (
    "rewinding committed offsets by hand is not a crash: no origin marks say what the rewound "
    "inputs wrote, so a replay through a repartition topic writes and counts again (on "
    "kafka:// too); replays after a crash are exact (test_writers.py, test_kafka.py)"
)


@attrs.frozen
class Outcome:
    """Final tables, decoded sink outputs (partition order), dead letters."""

    tables: dict[str, dict[Any, Any]]
    outputs: dict[str, list[tuple[Any, Any]]]
    dead_letters: list[DeadLetter]
    source_topic: str
    """The topic dead letters name as the input's (`in`, or the feed topic of fg.run)."""

    def values(self, topic: str) -> list[Any]:
        """Values written to `topic`, in order (one partition, or partition order)."""
        return [v for _, v in self.outputs[topic]]

    def by_key(self, topic: str) -> dict[Any, list[Any]]:
        """Per key, the values written to `topic`, in order."""
        result: dict[Any, list[Any]] = {}
        for k, v in self.outputs[topic]:
            result.setdefault(k, []).append(v)
        return result


def _decode_log(
    codecs: Mapping[str, tuple[Any, Any]], broker: MemoryBroker, topic: str
) -> list[tuple[Any, Any]]:
    kc, vc = codecs[topic]
    return [
        (
            k if k is None or kc is None else kc.decode(k),
            v if v is None or vc is None else vc.decode(v),
        )
        for part in broker.logs[topic]
        for k, v, _ts, _o, _h in part
    ]


def _dead_letters(broker: MemoryBroker, topic: str) -> list[DeadLetter]:
    return [
        DeadLetter(k, v, {name: value.decode() for name, value in (h or ()) if name != "fg.o"})
        for part in broker.logs[topic]
        for k, v, _ts, _o, h in part
    ]


def via_driver(
    build: Build,
    values: Iterable[Any],
    *,
    value_type: object = int,
    store: str = "memory://",
    partitions: int = 1,
    encode: bool = True,
) -> Outcome:
    """`TestDriver`: a source topic ``in``; each value sent (key None) and processed at once.

    `encode=False` lets internal topics hold Python objects: only there can a table keep a
    key its changelog cannot encode (None, from these keyless inputs).
    """
    g = fg.Graph(GRAPH)
    build(g.source("in", value_type=value_type, partitions=partitions))
    with TestDriver(g, store=store, encode=encode) as driver:
        for v in values:
            driver.send("in", None, v)
        plan = driver.plan
        return Outcome(
            tables={s.step: driver.table(s.step) for s in plan.stores},
            outputs={t.name: driver.output(t.name) for t in plan.topics if t.role == "sink"},
            dead_letters=driver.dead_letters(),
            source_topic="in",
        )


def via_run(
    build: Build,
    values: Iterable[Any],
    *,
    value_type: object = int,
    store: str = "memory://",
    partitions: int = 1,
    encode: bool = True,
) -> Outcome:
    """`fg.run` over ``source_from(values)``, batched; outputs read from its memory broker.

    `encode` is ignored: `fg.run` on memory:// passes Python objects through internal topics.
    """
    g = fg.Graph(GRAPH)
    build(g.source_from(list(values), name="in", value_type=value_type, partitions=partitions))
    started: list[Worker] = []
    result = fg.run(g, store=store, on_start=started.append)
    (worker,) = started
    broker = worker.transport.broker  # type: ignore[attr-defined]
    plan = worker.plan
    return Outcome(
        tables=result.tables,
        outputs={
            t.name: _decode_log(worker.codecs, broker, t.name)
            for t in plan.topics
            if t.role == "sink"
        },
        dead_letters=_dead_letters(broker, plan.dlq),
        source_topic=f"{GRAPH}-in-feed",
    )


EXECUTORS: dict[str, Callable[..., Outcome]] = {"driver": via_driver, "run": via_run}


# -- a worker on a broker that outlives it ----------------------------------------------------


@attrs.define
class Cluster:
    """One memory broker and one state URL shared by successive workers (restarts)."""

    graph: fg.Graph
    store: str = "memory://"
    broker: MemoryBroker = attrs.field(factory=MemoryBroker)
    backend: StateBackend | None = None
    """Kept between runs for memory://, whose state lives in the backend object."""
    last_tables: dict[str, dict[Any, Any]] = attrs.field(factory=dict)
    """Every table as the last run left it."""

    def run(
        self,
        records: Mapping[str, Iterable[tuple[int, Any, Any]]] | None = None,
        *,
        max_batch: int = 1000,
    ) -> Worker:
        """Start a worker, append ``(partition, key bytes, value bytes)`` records, run idle."""
        return asyncio.run(self._run(records or {}, max_batch))

    async def _run(
        self, records: Mapping[str, Iterable[tuple[int, Any, Any]]], max_batch: int
    ) -> Worker:
        if self.backend is None or self.store != "memory://":
            self.backend = open_backend(self.store)
        worker = Worker(
            self.graph.plan(), MemoryTransport(self.broker), self.backend, max_batch=max_batch
        )
        await worker.start()
        for topic, recs in records.items():
            self.broker.append(topic, [(p, k, v, 0.0, None) for p, k, v in recs])
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            self.last_tables = {s.step: worker.table(s.step) for s in worker.plan.stores}
        finally:
            await worker.stop()
        return worker

    def output(self, topic: str) -> list[tuple[Any, Any]]:
        """Decoded records of a sink topic, in partition order."""
        codecs = topic_codecs(self.graph.plan(), in_process=True)
        return _decode_log(codecs, self.broker, topic)

    def reset_committed(self, topics: Iterable[str] | None = None) -> None:
        """Forget the group's committed offsets (of `topics`, default all): a replay."""
        committed = self.broker.committed[self.graph.id]
        for tp in committed:
            if topics is None or tp[0] in topics:
                committed[tp] = 0


async def crash_run(
    plan: Any,
    broker: MemoryBroker,
    backend: Any,
    crash: tuple[str, int] | None,
    *,
    end_of_input: bool = False,
) -> bool:
    """Run `plan` until idle with small batches and frequent commits, raising at `crash`
    (a fault point and its nth time) if given: True when it crashed. A crashed worker is
    abandoned unstopped, as after kill -9; its stores stay as the crash left them."""
    worker = Worker(
        plan,
        MemoryTransport(broker, encoded=True),
        backend,
        max_batch=3,
        commit_every=4,
        commit_interval=3600.0,
        crash_point=raise_at(*crash) if crash else None,
    )
    try:
        await worker.start()
        await worker.run(until_idle=True, idle_wait=0.0, end_of_input=end_of_input)
    except InjectedCrash:
        return True
    await worker.stop()
    return False
