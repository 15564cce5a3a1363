"""A task: one sub-topology on one partition, run a batch at a time.

`Task.process` takes the records fetched from one of its input partitions, decodes them,
runs every step reachable from that input in topological order (each step one loop over
the batch), and collects what must leave the task: records for topics (repartition, sinks,
dead letters) and, at `flush`, one state update per changed key per store. The worker owns
the order of side effects (changelog, local store, offsets); the task only computes.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from flowgraph.errors import SerializationError
from flowgraph.runtime.aggregate import AggregateOp
from flowgraph.runtime.ops import Rec, stateless_op
from flowgraph.runtime.state.base import Entry, StorePartition
from flowgraph.runtime.transport import OutRecord
from flowgraph.serde import Codec
from planner import logical as lg
from planner.physical import PhysicalPlan, Subtopology

__all__ = ["Failure", "Task", "TopicCodecs"]

TopicCodecs = Mapping[str, tuple[Codec | None, Codec | None]]
"""Per topic, the key and value codec; None means records pass as Python objects."""

_PARTITION_CACHE_MAX = 1 << 16


class Failure:
    """A record that could not be processed, on its way to the dead-letter topic."""

    __slots__ = ("error", "key", "offset", "partition", "step", "timestamp", "topic", "value")

    def __init__(self, step: str, error: BaseException, rec: Rec, topic: str,
                 partition: int) -> None:
        self.step = step
        self.error = error
        self.key, self.value, self.timestamp, self.offset = rec[0], rec[1], rec[2], rec[3]
        self.topic = topic
        self.partition = partition


class _Partitioner:
    """Stable key -> partition (crc32 of the key's bytes), with a bounded per-task cache."""

    def __init__(self, partitions: int, codec: Codec | None, default: int) -> None:
        self.partitions = partitions
        self.codec = codec
        self.default = default % partitions
        self.cache: dict[Any, int] = {}

    def __call__(self, key: Any) -> int:
        if key is None:
            return self.default
        try:
            return self.cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable key: no caching
            return zlib.crc32(self._bytes(key)) % self.partitions
        if len(self.cache) >= _PARTITION_CACHE_MAX:
            self.cache.clear()
        p = self.cache[key] = zlib.crc32(self._bytes(key)) % self.partitions
        return p

    def _bytes(self, key: Any) -> bytes:
        if isinstance(key, bytes):
            return key
        if isinstance(key, str):
            return key.encode()
        if self.codec is not None:
            return self.codec.encode(key)
        return repr(key).encode()


class Task:
    """Sub-topology `sub` on partition `partition`."""

    def __init__(self, plan: PhysicalPlan, sub: Subtopology, partition: int,
                 stores: Mapping[str, StorePartition], codecs: TopicCodecs,
                 hash_codecs: Mapping[str, Codec]) -> None:
        self.plan = plan
        self.sub = sub
        self.partition = partition
        self.stores = stores
        self.failures: list[Failure] = []
        self.outputs: dict[str, list[OutRecord]] = {}
        self.counts: dict[str, int] = {s.id: 0 for s in sub.steps}
        self._topic = ""
        self._entry_topics = [e.topic for e in sub.steps if isinstance(e, lg.Source | lg.Repartition)]
        self.aggregates: dict[str, AggregateOp] = {}
        consumers: dict[str, list[str]] = {s.id: [] for s in sub.steps}
        for s in sub.steps:
            for u in s.inputs:
                if u in consumers:
                    consumers[u].append(s.id)
        self._emits = {s: bool(c) for s, c in consumers.items()}
        self._ops: dict[str, tuple[bool, Callable[..., Any]]] = {}
        topic_parts = {t.name: t.partitions for t in plan.topics}
        for step in sub.steps:
            fail = self._failer(step.id)
            if isinstance(step, lg.Aggregate):
                store = stores[plan.store_for(step.id).name]
                self.aggregates[step.id] = AggregateOp(step, store, len(self._entry_topics), fail)
            elif isinstance(step, lg.Sink) and step.topic is not None:
                assert step.topic is not None
                self._ops[step.id] = (False, self._topic_writer(
                    step.topic, topic_parts[step.topic], codecs[step.topic], hash_codecs, fail))
            elif isinstance(step, lg.FnNode | lg.Sink):
                self._ops[step.id] = stateless_op(step, fail)
        self._writers = [
            (u, self._topic_writer(t, topic_parts[t], codecs[t], hash_codecs, self._failer(u)))
            for u, t in sub.outputs
        ]
        self._decoders = {t: codecs[t] for t in self._entry_topics}
        self._routes = {t: self._route(t) for t in self._entry_topics}

    # -- compilation ---------------------------------------------------------------------

    def _failer(self, step_id: str) -> Callable[[BaseException, Rec], None]:
        def fail(exc: BaseException, rec: Rec) -> None:
            self.failures.append(Failure(step_id, exc, rec, self._topic, self.partition))

        return fail

    def _route(self, topic: str) -> list[lg.Node]:
        """Steps reachable from the entry reading `topic`, in topological order."""
        entry = next(s for s in self.sub.steps
                     if isinstance(s, lg.Source | lg.Repartition) and s.topic == topic)
        reached = {entry.id}
        route: list[lg.Node] = []
        for s in self.sub.steps:
            if s.id != entry.id and any(u in reached for u in s.inputs):
                reached.add(s.id)
                route.append(s)
        return route

    def _topic_writer(self, topic: str, partitions: int, codecs: tuple[Codec | None, Codec | None],
                      hash_codecs: Mapping[str, Codec],
                      fail: Callable[[BaseException, Rec], None]) -> Callable[[list[Rec]], list[Rec]]:
        kc, vc = codecs
        partition_of = _Partitioner(partitions, hash_codecs.get(topic), self.partition)
        out = self.outputs.setdefault(topic, [])

        def write(batch: list[Rec]) -> list[Rec]:
            append = out.append
            if kc is None and vc is None:
                for k, v, ts, _o, h in batch:
                    append((partition_of(k), k, v, ts, h))
                return batch
            for r in batch:
                k, v, ts, _o, h = r
                try:
                    kb = None if k is None or kc is None else kc.encode(k)
                    vb = None if v is None or vc is None else vc.encode(v)
                except Exception as exc:
                    fail(exc, r)
                    continue
                append((partition_of(k), kb, vb, ts, h))
            return batch

        return write

    # -- processing ------------------------------------------------------------------------

    async def process(self, topic: str, messages: list[Rec]) -> None:
        """Run the records of one input partition through the sub-topology."""
        self._topic = topic
        batch = self._decode(topic, messages)
        index = self._entry_topics.index(topic)
        values: dict[str, list[Rec]] = {self._entry_id(topic): batch}
        counts = self.counts
        counts[self._entry_id(topic)] += len(batch)
        for step in self._routes[topic]:
            ins = [values[u] for u in step.inputs if u in values]
            data = ins[0] if len(ins) == 1 else [r for part in ins for r in part]
            if isinstance(step, lg.Aggregate):
                agg = self.aggregates[step.id]
                emit = self._emits[step.id]
                if agg.is_async:
                    result = await agg.run_async(data, index, emit)
                else:
                    result = agg.run(data, index, emit)
                counts[step.id] += len(data)
            else:
                op = self._ops.get(step.id)
                if op is None:  # Merge, Changes: pass through
                    result = data
                elif op[0]:
                    result = await op[1](data)
                else:
                    result = op[1](data)
                counts[step.id] += len(result)
            values[step.id] = result
        for step_id, write in self._writers:
            if step_id in values:
                write(values[step_id])

    def _entry_id(self, topic: str) -> str:
        for s in self.sub.steps:
            if isinstance(s, lg.Source | lg.Repartition) and s.topic == topic:
                return s.id
        raise KeyError(topic)

    def _decode(self, topic: str, messages: list[Rec]) -> list[Rec]:
        kc, vc = self._decoders[topic]
        if kc is None and vc is None:
            return messages
        kd = kc.decode if kc is not None else None
        vd = vc.decode if vc is not None else None
        out: list[Rec] = []
        append = out.append
        it = iter(messages)
        while True:
            try:
                for k, v, ts, o, h in it:
                    append((
                        k if k is None or kd is None else kd(k),
                        v if v is None or vd is None else vd(v),
                        ts, o, h,
                    ))
            except SerializationError as exc:
                part = "key" if kd is not None and _fails(kd, k) else "value"
                self.failures.append(Failure(
                    self._entry_id(topic), exc.with_topic(topic, part), (k, v, ts, o, h), topic,
                    self.partition))
                continue
            return out

    def flush(self) -> dict[str, dict[Any, Entry]]:
        """Per store name, the entries changed since the last flush."""
        return {agg.store.name: agg.flush() for agg in self.aggregates.values()}

    def take_outputs(self) -> dict[str, list[OutRecord]]:
        """Records to write, per topic; the task's buffers are emptied."""
        ready = {t: list(recs) for t, recs in self.outputs.items() if recs}
        for recs in self.outputs.values():
            recs.clear()
        return ready

    def take_failures(self) -> list[Failure]:
        """Failed records since the last call."""
        failures, self.failures = self.failures, []
        return failures


def _fails(decode: Callable[[Any], Any], data: Any) -> bool:
    if data is None:
        return False
    try:
        decode(data)
    except Exception:
        return True
    return False


def now() -> float:
    """Wall-clock seconds, the default record timestamp."""
    return time.time()
