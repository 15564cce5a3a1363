"""Origin marks without a broker: what `Recovery.recover_writes` reads back after a crash,
and how a replaying task uses it to write each record once.

Tasks are driven by hand on a `MemoryBroker` with byte codecs and origin tags, as a worker
on Kafka runs them: a "commit" notes the checkpoint, a "crash" drops the task, and a new
task recovers its marks before replaying the input since the checkpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any

import flowgraph as fg
from flowgraph.runtime.codecs import codec_or
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.recovery import Recovery
from flowgraph.runtime.stats import RunStats
from flowgraph.runtime.task import Task
from flowgraph.runtime.worker import topic_codecs
from flowgraph.serde import AutoCodec


def graph() -> fg.Graph:
    """Two outputs per input record (so sequence numbers matter), to a sink of 2 partitions."""
    g = fg.Graph("t")
    src = g.source("in", key_type=int, value_type=int, partitions=2)
    src.flat_map(lambda v: [v, v + 100], name="fm").to("out")
    return g


class Rig:
    """Tasks of `graph()` over one memory broker, with the codecs a Kafka run uses."""

    def __init__(self, g: fg.Graph | None = None) -> None:
        self.plan = (g or graph()).plan()
        self.transport = MemoryTransport(MemoryBroker(), encoded=True)
        self.codecs = topic_codecs(self.plan, in_process=False)
        self.hash_codecs = {t.name: codec_or(t.key_type, AutoCodec()) for t in self.plan.topics}

    def task(self, partition: int) -> Task:
        writers = {
            t.name: self.transport.writer(t.name)
            for t in self.plan.topics
            if t.role in ("repartition", "sink", "dlq")
        }
        return Task(
            self.plan,
            self.plan.subtopologies[0],
            partition,
            {},
            self.codecs,
            self.hash_codecs,
            writers,
            tag_origins=True,
        )

    def recovery(self) -> Recovery:
        return Recovery(self.plan, self.transport, self.codecs, RunStats(), lambda _: None)

    def inputs(self, values: list[int], first: int = 0, topic: str = "in") -> list[Any]:
        """Input records of `values`, at offsets from `first`."""
        kc, vc = self.codecs[topic]
        return [
            (kc.encode(v % 3), vc.encode(v), float(o), o, None) for o, v in enumerate(values, first)
        ]

    def out(self, topic: str = "out") -> list[int]:
        _, vc = self.codecs[topic]
        return sorted(vc.decode(v) for _, v, *_ in self.transport.broker.records(topic))


def test_a_replay_after_a_crash_writes_every_output_once():
    rig = Rig()
    values = [5, 6, 7, 8, 9, 10]
    records = rig.inputs(values)

    async def main() -> tuple[Any, Any]:
        await rig.transport.create_topics(rig.plan.topics)
        first, other = rig.task(0), rig.task(1)
        recovery = rig.recovery()
        await recovery.recover_writes(first)
        await recovery.recover_writes(other)
        await first.process("in", records[:2])
        await other.process("in", rig.inputs([50, 51]))  # another task, same output topic
        await recovery.write_checkpoints([first, other])  # a commit
        await first.process("in", records[2:5])  # written, then a crash before the commit
        await other.process("in", rig.inputs([52], first=20))  # the other task goes on
        assert rig.out() == sorted(
            [*values[:5], *(v + 100 for v in values[:5]), 50, 51, 52, 150, 151, 152]
        )
        again = rig.task(0)
        await rig.recovery().recover_writes(again)
        marks = dict(again.dedupe)
        await again.process("in", records[2:])  # the replay, then one record more
        return marks, again.dedupe

    marks, left = asyncio.run(main())
    assert rig.out() == sorted([*values, *(v + 100 for v in values), 50, 51, 52, 150, 151, 152])
    # Per output partition, the last (input offset, sequence) the crashed task wrote there
    # after its checkpoint: the other task's records and those before it are not marks.
    assert set(marks.values()) <= {(o, s) for o in (2, 3, 4) for s in (0, 1)}
    assert max(marks.values()) == (4, 1)
    assert {topic for topic, _, _ in marks} == {"out"}
    assert left == {}  # the replay passed every mark, so they are forgotten


def test_without_a_crash_nothing_is_marked():
    """After a commit, the checkpoint says where the outputs end: nothing to skip."""
    rig = Rig()

    async def main() -> dict[Any, Any]:
        await rig.transport.create_topics(rig.plan.topics)
        task = rig.task(0)
        recovery = rig.recovery()
        await recovery.recover_writes(task)
        await task.process("in", rig.inputs([1, 2, 3]))
        await recovery.write_checkpoints([task])
        again = rig.task(0)
        await rig.recovery().recover_writes(again)
        return again.dedupe

    assert asyncio.run(main()) == {}
    assert rig.out() == [1, 2, 3, 101, 102, 103]


def test_marks_of_one_input_outlive_the_replay_of_another():
    """A task fed by two topics keeps marks per input: replaying one input past its marks
    forgets only that input's marks."""
    g = fg.Graph("t")
    a = g.source("a", key_type=int, value_type=int)
    b = g.source("b", key_type=int, value_type=int)
    a.merge(b, name="both").to("out")
    rig = Rig(g)
    from_a, from_b = rig.inputs([1, 2, 3, 4, 5], topic="a"), rig.inputs([11, 12, 13], topic="b")

    async def main() -> None:
        await rig.transport.create_topics(rig.plan.topics)
        task = rig.task(0)
        recovery = rig.recovery()
        await recovery.recover_writes(task)
        await task.process("a", from_a[:1])
        await task.process("b", from_b[:1])
        await recovery.write_checkpoints([task])
        await task.process("a", from_a[1:3])
        await task.process("b", from_b[1:3])  # a crash after these
        again = rig.task(0)
        await rig.recovery().recover_writes(again)
        await again.process("a", from_a[1:])  # a's replay, past b's marks' offsets
        await again.process("b", from_b[1:])

    asyncio.run(main())
    assert rig.out() == [1, 2, 3, 4, 5, 11, 12, 13]


def test_a_task_writing_a_repartition_topic_and_a_sink_recovers_both():
    g = fg.Graph("t")
    src = g.source("in", key_type=int, value_type=int)
    src.key_by(lambda v: v % 3, name="kb").count(name="n")
    src.to("out")
    rig = Rig(g)
    records = rig.inputs([1, 2, 3, 4])
    (repartition,) = [t.name for t in rig.plan.topics if t.role == "repartition"]

    async def main() -> None:
        await rig.transport.create_topics(rig.plan.topics)
        task = rig.task(0)
        recovery = rig.recovery()
        await recovery.recover_writes(task)
        await task.process("in", records[:1])
        await recovery.write_checkpoints([task])
        await task.process("in", records[1:3])  # a crash after these
        again = rig.task(0)
        await rig.recovery().recover_writes(again)
        await again.process("in", records[1:])

    asyncio.run(main())
    assert rig.out() == [1, 2, 3, 4]
    assert rig.out(repartition) == [1, 2, 3, 4]
