"""A task: one sub-topology on one partition, run a batch at a time.

At construction the sub-topology is compiled into push functions (`ops.py`), one chain per
input topic. `process` decodes the records of one input partition and pushes each through;
`async def` steps run their calls in a sliding window and emit in input order (`_advance`):
calls may still be in flight when `process` returns, and `settle` waits for them before a
commit. Records for repartition topics, sinks and the dead-letter topic go to the
transport's buffered writers as they are made (a failed record is written when it fails, so
it gets an origin like any other); each aggregation's changed keys wait for the worker's
commit. The worker owns the order of side effects (flush, changelog, local store, offsets);
the task only computes.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from flowgraph._context import RecordContext
from flowgraph._util import f_repr
from flowgraph.errors import SerializationError
from flowgraph.partitioner import partition_for
from flowgraph.runtime.agent import WORKER, AgentOp
from flowgraph.runtime.aggregate import AggregateOp
from flowgraph.runtime.ops import (
    AsyncStep,
    MakeContext,
    Rec,
    Window,
    fanout,
    join_push,
    stateless_push,
)
from flowgraph.runtime.state.base import StorePartition
from flowgraph.runtime.stream_join import StreamJoinOp
from flowgraph.runtime.table_state import TableState
from flowgraph.runtime.transport import OutRecord, Push, Write
from flowgraph.runtime.window_push import event_time
from flowgraph.runtime.windowed import WindowedAggregateOp
from flowgraph.runtime.windowed_table import WindowedTableState
from flowgraph.serde import Codec, JsonCodec, fast_decoder
from planner import logical as lg
from planner.physical import PhysicalPlan, Subtopology

__all__ = ["Failure", "Task", "TopicCodecs", "dead_letter"]

TopicCodecs = Mapping[str, tuple[Codec | None, Codec | None]]
"""Per topic, the key and value codec; None means records pass as Python objects."""

_PARTITION_CACHE_MAX = 1 << 16
_INF = float("inf")
ORIGIN_HEADER = "fg.o"
"""Header naming the writer and input of a record written to a topic (sub-topology id, task
partition, entry index, entry offset, sequence among that input's outputs), so nothing is
written twice. The sub-topology id keeps apart the writers of one topic: two sub-topologies
writing one sink (or a sink and the dead-letter topic) each recover only their own records."""
ORIGIN = struct.Struct(">IIHqI")
AT_COMMIT = 0xFFFF
"""Entry index of records written at a commit, not by an input (a value that cannot be stored)."""
ASYNC_ENTRIES = 256
"""Records emitted by the j-th ``async def`` step (j from 1) for entry i carry the entry index
``i + j * ASYNC_ENTRIES`` in their origin. Such a step emits later than the sync steps before
it write (dead letters, other branches), so its writes get their own sequence of origins,
increasing in input order like every other, for the replay to compare against."""
AT_END = 0xFFFE
"""Entry index of records written when the input ends and windows close (`end_of_input`)."""


class Failure:
    """A record that could not be processed, on its way to the dead-letter topic."""

    __slots__ = (
        "error",
        "headers",
        "key",
        "offset",
        "partition",
        "step",
        "timestamp",
        "topic",
        "value",
    )

    def __init__(
        self, step: str, error: BaseException, rec: Rec, topic: str, partition: int
    ) -> None:
        self.step = step
        self.error = error
        self.key, self.value, self.timestamp, self.offset = rec[0], rec[1], rec[2], rec[3]
        self.headers = rec[4]
        self.topic = topic
        self.partition = partition


def key_bytes(key: Any, codec: Codec | None) -> bytes:
    """Bytes a key is partitioned by: its topic key codec's encoding, as on Kafka, so a
    key lands in the same partition whichever transport carries it. Without a codec (or one
    that cannot encode it): str as UTF-8, bytes as is, else its repr."""
    if codec is not None:
        try:
            return codec.encode(key)
        except Exception:  # the record fails where it is encoded, not here
            pass
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return repr(key).encode()


def key_partition(key: Any, partitions: int, codec: Codec | None) -> int:
    """The partition of `key` in a topic of `partitions`: Kafka's default partitioner of
    its bytes, stable across runs and the same as a Java or aiokafka producer's."""
    return partition_for(key_bytes(key, codec), partitions)


class Task:
    """Sub-topology `sub` on partition `partition`."""

    def __init__(
        self,
        plan: PhysicalPlan,
        sub: Subtopology,
        partition: int,
        stores: Mapping[str, StorePartition],
        codecs: TopicCodecs,
        hash_codecs: Mapping[str, Codec],
        writers: Mapping[str, Write],
        tag_origins: bool = False,
        clock: Callable[[], float] = time.time,
        windows: dict[str, Window] | None = None,
        merged: str = "",
    ) -> None:
        """`merged`: the schedule runs this task's records in timestamp order with those of
        other tasks (`schedule.merged_groups`): of its sub-topology only (``"partitions"``),
        or of other sub-topologies too (``"subtopologies"``)."""
        self.plan = plan
        self.merged = merged
        self._shared = {} if windows is None else windows
        """Per ``async def`` step, its window of calls in flight, shared by the tasks of a
        worker so that the step's bound holds across its partitions."""
        self.sub = sub
        self.partition = partition
        self.stores = stores
        self.state = "running"
        """``running``, ``suspended`` or ``closed`` (see tasks.py for the lifecycle)."""
        self.failed = 0
        """Records sent to the dead-letter topic since the last `take_failures`."""
        self.failures: list[Failure] = []
        """Those records, for the run's summary and dead-letter log (see `take_failures`)."""
        self.failed_by_step: dict[str, int] = {}
        """Dead letters per step since the task began (for the step counts)."""
        self.cells: dict[str, list[int]] = {}
        """Per filter, records it dropped; per flat_map, records it emitted (`tally`)."""
        self._writers = writers
        self.clock = clock
        """Wall-clock time, for idle timeouts and `now()` queries (the TestDriver's own clock)."""
        self.tag_origins = tag_origins
        """Tag written records with their origin and skip re-writes after a crash (Kafka)."""
        self._seq = [0, -1, 0]
        """Entry index being processed, offset of the last record written, its sequence."""
        self.dedupe: dict[tuple[str, int, int], tuple[int, int]] = {}
        self.written_at: set[int] = set()
        """With an agent: every origin offset a crashed run wrote, for `AgentOp.replay_ends`
        (the marks keep only the last per output partition)."""
        """(topic, partition, entry index) -> last (offset, sequence) written before a crash."""
        self._processed = -1
        """While replaying (`dedupe` not empty): the highest input offset processed."""
        self.counts: dict[str, int] = {}
        self._topic = ""
        self._codecs = codecs
        self._hash_codecs = hash_codecs
        self._topic_parts = {t.name: t.partitions for t in plan.topics}
        entries = [s for s in sub.steps if isinstance(s, lg.Source | lg.Repartition)]
        self._entry_ids = {e.topic: e.id for e in entries}
        self._entry_index = {e.topic: i for i, e in enumerate(entries)}
        self.aggregates: dict[str, AggregateOp | WindowedAggregateOp | StreamJoinOp] = {}
        self.windowed: list[WindowedAggregateOp] = []
        self.stream_joins: list[StreamJoinOp] = []
        """Stream-stream joins: stateful like the aggregations, with windows that close."""
        self._deleting: list[AggregateOp] = []
        self.timed: list[AggregateOp] = []
        """`process` steps with timers: they fire what is pending when the input ends."""
        self.agents: list[AgentOp] = []
        self._sends: dict[str, Push] = {}
        """Per `Send` step, the writer its agent sends through."""
        self._async: list[AsyncStep | AggregateOp | WindowedAggregateOp | AgentOp] = []
        self._windows: list[AsyncStep] = []
        """The ``async def`` stateless steps, whose calls may be in flight between calls."""
        self._index = 0
        """Entry index of the input being processed or emitted (async tasks only)."""
        self._pushes: dict[str, Push | None] = {}
        self._dlq = plan.dlq
        self._dead_letter = self._writer(plan.dlq, _never_fails)
        self._compile(len(entries))
        self._entries = {e.topic: self._pushes[e.id] for e in entries}
        self._decoders = {
            e.topic: codecs[e.topic] if getattr(e, "key_read", True) else (None, codecs[e.topic][1])
            for e in entries
        }
        self.stampers: dict[str, Callable[[Any], Any]] = {
            e.topic: e.timestamp  # type: ignore[misc]
            for e in entries
            if isinstance(e, lg.Source) and e.timestamp is not None
        }
        """Per source topic with a ``timestamp=`` extractor, the extractor (see `stamp`)."""
        for topic in self.stampers:  # `stamp` decodes their values, before scheduling
            self._decoders[topic] = (self._decoders[topic][0], None)

    # -- compilation ---------------------------------------------------------------------

    @property
    def has_async(self) -> bool:
        """True when some step awaits, so records must come through `process`."""
        return bool(self._async)

    def entry_push(self, topic: str) -> Push:
        """A push that feeds records of `topic` into this task directly (no `process` call)."""
        push = self._entries[topic] or (lambda k, v, ts, o, h: None)
        if len(self._entry_index) == 1:
            self._topic = topic
            return push
        index = self._entry_index[topic]
        aggregates = list(self.aggregates.values())

        def deliver(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            self._topic = topic
            for agg in aggregates:
                agg.index = index
            push(k, v, ts, o, h)

        return deliver

    def _failer(self, step_id: str) -> Callable[[BaseException, Rec], None]:
        def fail(exc: BaseException, rec: Rec) -> None:
            self.fail(Failure(step_id, exc, rec, self._topic, self.partition))

        return fail

    def fail(self, failure: Failure) -> None:
        """Write `failure` to the dead-letter topic now, through this task's own writer.

        Written like a sink record, with an origin, so a replay after a crash skips the dead
        letters already written instead of writing them twice.
        """
        self._count_failure(failure)
        _, k, v, ts, h = dead_letter(failure)
        self._dead_letter(k, v, ts, failure.offset, h)

    def _count_failure(self, failure: Failure) -> None:
        self.failed += 1
        self.failures.append(failure)
        step = failure.step
        self.failed_by_step[step] = self.failed_by_step.get(step, 0) + 1

    def fail_at_commit(self, failure: Failure, position: int) -> None:
        """Dead-letter a value that cannot be stored, found at a commit (not by an input).

        Its origin is (entry `AT_COMMIT`, the key's position); a replay that finds the same
        failure at a position already dead-lettered before the crash skips it.
        """
        self._count_failure(failure)
        _, kb, vb, ts, h = dead_letter(failure)
        if not self.tag_origins:
            self._writers[self._dlq](0, kb, vb, ts, h)
            return
        mark = self.dedupe.get((self._dlq, 0, AT_COMMIT))
        if mark is not None and (position, 0) <= mark:
            return
        origin = ORIGIN.pack(self.sub.id, self.partition, AT_COMMIT, position, 0)
        self._writers[self._dlq](0, kb, vb, ts, ((ORIGIN_HEADER, origin), *h))

    def _compile(self, inputs: int) -> None:
        """Build push functions from the last step back to the entries."""
        sub = self.sub
        consumers: dict[str, list[str]] = {s.id: [] for s in sub.steps}
        for s in sub.steps:
            if isinstance(s, lg.Repartition):
                continue  # entered from its topic; the edge into it is a writer (below)
            # a join reads its table's state, not its updates
            ups = s.inputs[:1] if isinstance(s, lg.Join) else s.inputs
            if isinstance(s, lg.StreamJoin):
                ups = tuple(dict.fromkeys(ups))  # a self-join: one consumer, both sides
            for u in ups:
                if u in consumers:
                    consumers[u].append(s.id)
        writers: dict[str, list[Push]] = {}
        for step_id, topic in sub.outputs:
            writers.setdefault(step_id, []).append(self._writer(topic, self._failer(step_id)))
        async_steps: list[AsyncStep | AggregateOp | WindowedAggregateOp | AgentOp] = []
        late_steps = {s.id for s in sub.steps if isinstance(s, lg.Late)}
        joins: list[tuple[list[Callable[[Any], Any]], lg.Join]] = []
        sides: dict[str, dict[str, list[Push]]] = {}
        """Per stream-stream join, per input step, the pushes of the sides it feeds."""
        for step in reversed(sub.steps):
            targets = [
                p
                for c in consumers[step.id]
                if c not in late_steps
                for p in (sides[c].get(step.id, ()) if c in sides else (self._pushes[c],))
                if p is not None
            ]
            nxt = fanout(targets + writers.get(step.id, []))
            fail = self._failer(step.id)
            push: Push | None
            if isinstance(step, lg.Aggregate) and step.window is not None:
                store = self.stores[self.plan.store_for(step.id).name]
                wop = WindowedAggregateOp(step, store, inputs, fail, self.clock)
                self.aggregates[step.id] = wop
                self.windowed.append(wop)
                late = [p for c in consumers[step.id] if c in late_steps and (p := self._pushes[c])]
                push = wop.make_push(nxt, fanout(late))
                if wop.is_async:
                    async_steps.append(wop)
            elif isinstance(step, lg.Aggregate):
                store = self.stores[self.plan.store_for(step.id).name]
                changelog = self.plan.store_for(step.id).changelog
                agg = self.aggregates[step.id] = AggregateOp(
                    step,
                    store,
                    inputs,
                    fail,
                    self._codecs[changelog][0],
                    changelog,
                    self._context_maker() if step.context else None,
                )
                if step.agg == "process":  # it emits what its function returns
                    self.cells[step.id] = agg.emitted
                if agg.deletes:
                    self._deleting.append(agg)
                if agg.timed:
                    self.timed.append(agg)
                push = agg.make_push(nxt)
                if agg.is_async:
                    async_steps.append(agg)
            elif isinstance(step, lg.AgentTable):
                spec = self.plan.store_for(step.id)
                table: TableState
                if step.window is not None:
                    table = WindowedTableState(
                        step,
                        self.stores[spec.name],
                        fail,
                        self.clock,
                        self._codecs[spec.changelog][0],
                        spec.changelog,
                    )
                else:
                    table = TableState(
                        step,
                        self.stores[spec.name],
                        fail,
                        self._codecs[spec.changelog][0],
                        spec.changelog,
                    )
                self.aggregates[step.id] = table
                self._deleting.append(table)
                push = None  # written by its agent, not fed records
            elif isinstance(step, lg.Send):
                assert step.topic is not None
                if step.yields:
                    push = self._writer(step.topic, fail)  # fed what its agent yields
                else:
                    self._sends[step.id] = self._writer(step.topic, fail)
                    push = None  # fed by its agent's sends, not its yields
            elif isinstance(step, lg.Agent):
                aop = self._agent(step, consumers[step.id], fail)
                aop.next = nxt
                async_steps.append(aop)
                push = aop.make_push()
            elif isinstance(step, lg.StreamJoin):
                sjop = StreamJoinOp(
                    step, self.stores[self.plan.store_for(step.id).name], inputs, fail
                )
                sjop.next = nxt
                self.aggregates[step.id] = sjop
                self.stream_joins.append(sjop)
                feeds = sides[step.id] = {}
                for side, u in enumerate(step.inputs):
                    feeds.setdefault(u, []).append(sjop.make_push(side))
                push = None  # fed through its sides' pushes
            elif isinstance(step, lg.Join):
                read: list[Callable[[Any], Any]] = []
                joins.append((read, step))
                push = join_push(step, nxt, fail, self.cells.setdefault(step.id, [0]), read)
            elif isinstance(step, lg.Sink) and step.topic is not None:
                push = self._writer(step.topic, fail)
            elif isinstance(step, lg.FnNode | lg.Sink):
                ctx = self._context_maker() if step.context else None
                cell = None
                if isinstance(step, lg.Filter | lg.FlatMap):
                    cell = self.cells[step.id] = [0]
                if step.is_async:
                    limit = step.concurrency or lg.DEFAULT_CONCURRENCY
                    window = self._shared.get(step.id) or self._shared.setdefault(
                        step.id, Window(limit)
                    )
                    if self.merged == "partitions" and inputs == 1:
                        window.keep_order()  # the outputs of its tasks leave in run order
                    astep = AsyncStep(step, fail, window, ctx, cell)
                    astep.next = nxt or (lambda k, v, ts, o, h: None)
                    async_steps.append(astep)
                    push = astep.push
                else:
                    push = stateless_push(step, nxt, fail, ctx, cell)
            else:  # Source, Repartition, Merge, Changes, Late: records pass through
                push = nxt
            self._pushes[step.id] = push
        for read, join in joins:
            read.append(
                _global_reader(join.global_table)
                if join.global_table
                else self._table_reader(join.inputs[1])
            )
        self._async = list(reversed(async_steps))  # topological order
        self._windows = [s for s in self._async if isinstance(s, AsyncStep)]
        self.agents = [s for s in self._async if isinstance(s, AgentOp)]
        split = inputs > 1 and len(self._windows) < len(self._async)
        self._settle_runs = (inputs > 1 or self.merged == "subtopologies") and bool(self._windows)
        """Wait for the calls in flight at the end of every run: a run of another input
        would otherwise overtake the outputs still in flight and hand a window its records
        out of timestamp order, whether the input is this task's (a merge after an async
        step) or one of another sub-topology run in timestamp order with it. The tasks of
        one sub-topology need not wait: their async steps emit in the order of their runs
        (`Window.keep_order`)."""
        for j, astep in enumerate(self._windows, start=1):
            self._bind(astep, j * ASYNC_ENTRIES)
            astep.split = split
        for j, aop in enumerate(self.agents, start=len(self._windows) + 1):
            self._bind(aop, j * ASYNC_ENTRIES)

    def _table_reader(self, step_id: str) -> Callable[[Any], Any]:
        op = self.aggregates[step_id]
        assert isinstance(op, AggregateOp)
        return op.read

    def _agent(self, step: lg.Agent, consumers: list[str], fail: Any) -> AgentOp:
        """The agent `step`, with the tables and send writers of its consumers."""
        tables: dict[str, TableState] = {}
        sends: dict[str, Push] = {}
        by_id = {s.id: s for s in self.sub.steps}
        for c in consumers:
            node = by_id[c]
            if isinstance(node, lg.AgentTable):
                table = self.aggregates[c]
                assert isinstance(table, TableState)
                tables[c] = table
            elif isinstance(node, lg.Send) and not node.yields:
                assert node.topic is not None
                sends[node.topic] = self._sends[c]
        op = AgentOp(step, tables, sends, fail, self.partition, lambda: self._topic)
        op.marks = lambda: list(self.written_at)

        def fail_at(exc: BaseException, rec: Rec, origin: int) -> None:
            failure = Failure(step.id, exc, rec, self._topic, self.partition)
            self._count_failure(failure)
            _, k, v, ts, h = dead_letter(failure)
            self._dead_letter(k, v, ts, origin, h)

        op.fail_at = fail_at
        return op

    def held(self) -> dict[tuple[str, int], int]:
        """Per input partition, the offset of the first record an agent holds unhandled
        (a ``take()`` batch being gathered): the commit stops there."""
        out: dict[tuple[str, int], int] = {}
        if len(self._entry_index) != 1:
            return out
        (topic,) = self._entry_index
        for aop in self.agents:
            first = aop.held_from()
            if first is not None:
                tp = (topic, self.partition)
                out[tp] = min(first, out.get(tp, first))
        return out

    def close(self) -> None:
        """Stop what runs on its own: the coroutines of agents (the task is dropped)."""
        self.state = "closed"
        for aop in self.agents:
            aop.close()
        for astep in self._windows:
            astep.window.forget(astep)

    def _bind(self, step: AsyncStep | AgentOp, shift: int) -> None:
        """Give `step` the task's context: captured at push, restored around each emission.

        The context is the input topic (for dead letters) and entry (for aggregations and
        origins); the origin's entry index is shifted into the step's own range, whose
        sequence (last offset written, its count) the step keeps between emissions.
        """
        seq = self._seq
        state = [-1, -1, 0]  # origin entry index, offset of its last write, that write's count
        aggregates = list(self.aggregates.values()) if len(self._entry_index) > 1 else []

        def capture() -> tuple[str, int]:
            return self._topic, self._index

        def enter(ctx: tuple[str, int]) -> None:
            self._topic, index = ctx
            self._index = index
            for agg in aggregates:
                agg.index = index
            if state[0] != index + shift:
                state[0], state[1], state[2] = index + shift, -1, 0
            seq[0], seq[1], seq[2] = state

        def leave() -> None:
            state[1], state[2] = seq[1], seq[2]

        step.capture, step.enter, step.leave = capture, enter, leave

    def _context_maker(self) -> MakeContext:
        """Makes the context of a ``context=True`` step's record: the topic is the entry
        being run (`_topic`, set per run and per direct delivery), the partition this task's."""
        task = self
        partition = self.partition

        def make(k: Any, ts: float, o: int, h: Any) -> RecordContext:
            return RecordContext(k, ts, h, task._topic, partition, o)

        return make

    def _writer(self, topic: str, fail: Callable[[BaseException, Rec], None]) -> Push:
        """A push that writes records to `topic`, partitioned by key."""
        kc, vc = self._codecs[topic]
        partitions = self._topic_parts[topic]
        hash_codec = self._hash_codecs.get(topic)
        default = self.partition % partitions
        cache: dict[Any, int] = {}
        write = self._writers[topic]

        if kc is None and vc is None:

            def write_objects(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
                try:
                    p = cache[k]
                except KeyError:
                    if len(cache) >= _PARTITION_CACHE_MAX:
                        cache.clear()
                    p = cache[k] = (
                        default if k is None else key_partition(k, partitions, hash_codec)
                    )
                except TypeError:  # an unhashable key: no caching
                    p = key_partition(k, partitions, hash_codec)
                write(p, k, v, ts, h)

            return write_objects

        bcache: dict[bytes | None, int] = {None: default}
        """Key bytes -> partition (a hit costs a fifth of hashing the key again); None, no
        key, is the task's own partition."""
        cached = bcache.get

        def new_partition(kb: Any) -> int:  # never None: that is always cached
            if len(bcache) >= _PARTITION_CACHE_MAX:  # bound the memory of many distinct keys
                bcache.clear()
                bcache[None] = default
            p = bcache[kb] = partition_for(kb, partitions)
            return p

        def write_bytes(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                kb = None if k is None or kc is None else kc.encode(k)
                vb = None if v is None or vc is None else vc.encode(v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            p = cached(kb, -1)  # keys repeat: a hit costs less than the hash
            if p < 0:
                p = new_partition(kb)
            write(p, kb, vb, ts, h)

        if not self.tag_origins:
            return write_bytes
        seq = self._seq
        dedupe = self.dedupe
        me = self.partition
        sub_id = self.sub.id
        pack = ORIGIN.pack

        def write_tagged(k: Any, v: Any, ts: float, o: int, h: Any) -> None:
            try:
                kb = None if k is None or kc is None else kc.encode(k)
                vb = None if v is None or vc is None else vc.encode(v)
            except Exception as exc:
                fail(exc, (k, v, ts, o, h))
                return
            p = cached(kb, -1)  # keys repeat: a hit costs less than the hash
            if p < 0:
                p = new_partition(kb)
            i = seq[0]
            if seq[1] == o:
                n = seq[2] = seq[2] + 1
            else:
                seq[1], n = o, 0
                seq[2] = 0
            if dedupe:
                mark = dedupe.get((topic, p, i))
                if mark is not None and (o, n) <= mark:
                    return  # written before a crash; the replay must not write it again
            if h:
                h = tuple(x for x in h if x[0] != ORIGIN_HEADER)
            write(p, kb, vb, ts, ((ORIGIN_HEADER, pack(sub_id, me, i, o, n)), *(h or ())))

        return write_tagged

    # -- processing ------------------------------------------------------------------------

    async def process(self, topic: str, messages: list[Rec]) -> None:
        """Run the records of one input partition through the sub-topology."""
        self._topic = topic
        push = self._entries[topic]
        entry = self._entry_ids[topic]
        self.counts[entry] = self.counts.get(entry, 0) + len(messages)
        index = self._index = self._entry_index[topic]
        self._seq[0], self._seq[1] = index, -1  # an input's outputs all come from one call
        if len(self._entry_index) > 1:
            for agg in self.aggregates.values():
                agg.index = index
        if push is None:
            return
        kc, vc = self._decoders[topic]
        if kc is None and vc is None:
            for k, v, ts, o, h in messages:
                push(k, v, ts, o, h)
        else:
            self._decode_and_push(topic, messages, push, kc, vc)
        replaying = bool(self.dedupe)
        await self._advance(settle=replaying or self._settle_runs)
        if replaying and messages:
            self._retire_marks(index, messages[-1][3])

    async def _advance(self, *, settle: bool) -> bool:
        """Emit what the async steps have finished, in topological order, and wait while
        one holds more than its backlog (with `settle`: until none holds anything, so every
        record processed so far has all its outputs made); True if anything was emitted.

        A replay after a crash settles each run before retiring the marks it has passed,
        since a mark is only passed once the outputs it covers are made.
        """
        emitted = False
        yielded = settle
        while True:
            progressed = False
            for step in self._async:
                if isinstance(step, AsyncStep):
                    progressed = step.pump() or progressed
                else:
                    progressed = await step.drain() or progressed
            emitted = emitted or progressed
            if progressed:
                continue
            if not yielded and any(w.queue for w in self._windows):
                # one turn of the loop: the calls just started run, and those that finish
                # without waiting are emitted now rather than at the next run or commit
                yielded = True
                await asyncio.sleep(0)
                continue
            for w in self._windows:
                if w.queue and (settle or w.over):
                    await w.wait_head()
                    break
            else:
                return emitted

    async def settle(self) -> bool:
        """Wait for every async call in flight and make its outputs (before a commit, whose
        offsets cover every record processed); True if anything was emitted."""
        emitted = False
        for aop in self.agents:
            emitted = await aop.settle() or emitted
        if not self._windows:
            return emitted
        return await self._advance(settle=True) or emitted

    def runner(self, topic: str) -> Callable[[list[Rec]], None] | None:
        """`process` for `topic` as one sync function, or None when some step awaits.

        The worker calls it for every run of records the schedule hands out; in timestamp
        order across partitions, runs are often one record long, so its cost per call counts.
        """
        if self._async:
            return None
        push = self._entries[topic]
        entry = self._entry_ids[topic]
        index = self._entry_index[topic]
        counts = self.counts
        seq = self._seq
        aggregates = list(self.aggregates.values()) if len(self._entry_index) > 1 else []
        kc, vc = self._decoders[topic]
        vd = fast_decoder(vc) if vc is not None else None
        task = self

        def run(messages: list[Rec]) -> None:
            task._topic = topic
            counts[entry] = counts.get(entry, 0) + len(messages)
            seq[0], seq[1] = index, -1
            for agg in aggregates:
                agg.index = index
            if push is None:
                return
            if kc is None and vd is None:
                for k, v, ts, o, h in messages:
                    push(k, v, ts, o, h)
            elif kc is None:
                for k, v, ts, o, h in messages:
                    if v is not None:
                        try:
                            v = vd(v)  # type: ignore[misc]
                        except Exception:
                            task._decode_failure(topic, (k, v, ts, o, h), kc, vc)
                            continue
                    push(k, v, ts, o, h)
            else:
                task._decode_and_push(topic, messages, push, kc, vc)
            if task.dedupe and messages:
                task._retire_marks(index, messages[-1][3])

        return run

    def stamp(self, topic: str, messages: list[Rec]) -> list[Rec]:
        """Decode the values of `topic`'s records and give each its extracted event time.

        Runs when records are fetched, before they are scheduled, since the schedule orders
        them by timestamp. A value that does not decode, or whose extractor fails or gives
        no usable time, becomes a dead letter here; `process` then only decodes keys.
        """
        fn = self.stampers[topic]
        vc = self._codecs[topic][1]
        vd = fast_decoder(vc) if vc is not None else None
        entry = self._entry_ids[topic]
        # dead letters written here get their origin from this input, like a run's outputs
        self._seq[0], self._seq[1] = self._entry_index[topic], -1
        out: list[Rec] = []
        for rec in messages:
            k, v, _, o, h = rec
            if v is not None and vd is not None:
                try:
                    v = vd(v)
                except Exception:
                    self._decode_failure(topic, rec, None, vc)
                    continue
            try:
                got = fn(v)
            except Exception as exc:
                self._stamp_failure(entry, fn, exc, rec, topic)
                continue
            t = source_time(got)
            if t is None:
                self._stamp_failure(entry, fn, got, rec, topic)
                continue
            out.append((k, v, t, o, h))
        if len(out) < len(messages):  # its dead letters were read, though never scheduled
            self.counts[entry] = self.counts.get(entry, 0) + len(messages) - len(out)
        return out

    def _stamp_failure(self, step: str, fn: Any, got: Any, rec: Rec, topic: str) -> None:
        """A record whose source ``timestamp=`` raised (`got` is the exception) or gave
        something that is no event time: a dead letter, with one sentence why."""
        if isinstance(got, Exception):
            what = f"raised {got!r}"
        else:
            what = f"returned {got!r} ({type(got).__name__})"
        msg = (
            f"source {step!r} timestamp= {f_repr(fn)} {what}; an event time must be seconds "
            "since the epoch (a finite int or float, not negative) or a datetime; "
            "fix the function or the record"
        )
        self.fail(Failure(step, ValueError(msg), rec, topic, self.partition))

    def _retire_marks(self, index: int, offset: int) -> None:
        """Forget the marks of entry `index` once its replay has passed them all."""
        if offset > self._processed:
            self._processed = offset
        done = [
            key
            for key, (o, _) in self.dedupe.items()
            if key[2] != AT_COMMIT and key[2] % ASYNC_ENTRIES == index and o < offset
        ]
        for key in done:
            del self.dedupe[key]

    def retire_commit_marks(self) -> None:
        """After a commit: forget marks of dead letters written at a commit (entry
        `AT_COMMIT`) that the replay has passed; the commit just made has found again every
        value that failed at a position up to there."""
        done = [
            key
            for key, (o, _) in self.dedupe.items()
            if key[2] == AT_COMMIT and o < self._processed
        ]
        for key in done:
            del self.dedupe[key]

    def note_written(self, topic: str, partition: int, origin: bytes) -> None:
        """Recovery: a record with header `origin` is in `topic`; if it is ours, mark it.

        Ours means written by this sub-topology on this partition: other writers of the
        same topic use the same partitions, entry indexes and offsets.
        """
        sub, me, index, offset, seq = ORIGIN.unpack(origin)
        if me != self.partition or sub != self.sub.id:
            return
        key = (topic, partition, index)
        if key not in self.dedupe or self.dedupe[key] < (offset, seq):
            self.dedupe[key] = (offset, seq)
        if self.agents:
            self.written_at.add(offset)

    def written_topics(self) -> list[str]:
        """Topics this task writes (repartition and sink topics, the dead-letter topic)."""
        topics = [t for _, t in self.sub.outputs]
        topics += [s.topic for s in self.sub.steps if isinstance(s, lg.Sink) and s.topic]
        topics.append(self._dlq)
        return list(dict.fromkeys(topics))

    def _decode_and_push(
        self, topic: str, messages: list[Rec], push: Push, kc: Codec | None, vc: Codec | None
    ) -> None:
        kd = fast_decoder(kc) if kc is not None else None
        vd = fast_decoder(vc) if vc is not None else None
        if kd is None and vd is not None:  # the common case: keys not read, values typed
            for k, v, ts, o, h in messages:
                if v is not None:
                    try:
                        v = vd(v)
                    except Exception:
                        self._decode_failure(topic, (k, v, ts, o, h), kc, vc)
                        continue
                push(k, v, ts, o, h)
            return
        for k, v, ts, o, h in messages:
            try:
                if k is not None and kd is not None:
                    k = kd(k)
                if v is not None and vd is not None:
                    v = vd(v)
            except Exception:
                self._decode_failure(topic, (k, v, ts, o, h), kc, vc)
                continue
            push(k, v, ts, o, h)

    def _decode_failure(self, topic: str, rec: Rec, kc: Codec | None, vc: Codec | None) -> None:
        """Redo the failed decode with the full codec, for an error that names field and part."""
        error: BaseException | None = None
        for part, codec, data in (("key", kc, rec[0]), ("value", vc, rec[1])):
            if codec is None or not isinstance(data, bytes):
                continue
            try:
                codec.decode(data)
            except SerializationError as exc:
                error = exc.with_topic(topic, part)
                break
            except Exception as exc:
                error = SerializationError(str(exc), topic=topic, part=part)
                break
        if error is None:
            error = SerializationError("the record could not be decoded", topic=topic)
        self.fail(Failure(self._entry_ids[topic], error, rec, topic, self.partition))

    def tick(self) -> bool:
        """Let idle windowed steps advance stream time by the clock; True if state changed."""
        if not self.windowed:
            return False
        now = self.clock()
        changed = False
        for op in self.windowed:
            changed = op.tick(now) or changed
        return changed

    def has_open_windows(self) -> bool:
        """True when a windowed step of this task holds a window not closed yet (or a
        `process` step a timer not fired yet)."""
        return (
            any(op.has_open_windows() for op in self.windowed)
            or any(op.has_open_windows() for op in self.stream_joins)
            or any(op.has_open_windows() for op in self.timed)
        )

    async def end_of_input(self) -> int:
        """The input has ended: close the open windows of every windowed step, upstream first
        (and fire the pending timers of every `process` step with timers).

        What the closes emit is written with the origin (entry `AT_END`, one past the
        highest offset applied), so the same close replayed after a crash (the stream time
        it moved not yet stored) skips what was already written. The number of windows closed.
        """
        if not self.windowed and not self.stream_joins and not self.timed:
            return 0
        ops: list[WindowedAggregateOp | StreamJoinOp | AggregateOp] = [
            *self.windowed,
            *self.stream_joins,
            *self.timed,
        ]
        o = 1 + max(op.last_offset() for op in ops)
        self._seq[0], self._seq[1] = AT_END, -1
        closed = 0
        order = {s.id: i for i, s in enumerate(self.sub.steps)}
        for op in sorted(ops, key=lambda op: order[op.node.id]):  # upstream first
            closed += op.end_of_input(o)
            if self._async:
                await self._advance(settle=True)
        for key in [k for k in self.dedupe if k[2] == AT_END]:
            del self.dedupe[key]  # this close is done; a later one has a higher offset
        return closed

    @property
    def has_graves(self) -> bool:
        """True when a store holds deleted keys that the next flush deletes for good."""
        return any(op.has_graves for op in self._deleting)

    def take_failed(self) -> int:
        """Records dead-lettered since the last call."""
        failed, self.failed = self.failed, 0
        return failed

    def take_failures(self) -> list[Failure]:
        """The records dead-lettered since the last call (`failed` is reset too)."""
        failures, self.failures = self.failures, []
        self.failed = 0
        return failures

    def tally(self) -> dict[tuple[str, str], int]:
        """Raw per-step counters, summable over tasks: records into each entry (``in``),
        dead letters (``dead``), filter drops and flat_map outputs (``cell``), records
        skipped as already applied (``skip``) and late records (``late``) of each table.
        `flowgraph.runtime.stats.derive_step_counts` turns them into records per step."""
        out: dict[tuple[str, str], int] = {("in", s): n for s, n in self.counts.items()}
        out.update((("dead", s), n) for s, n in self.failed_by_step.items())
        out.update((("cell", s), c[0]) for s, c in self.cells.items())
        for s, agg in self.aggregates.items():
            out["skip", s] = agg.skipped
            if isinstance(agg, WindowedAggregateOp | StreamJoinOp):
                out["late", s] = agg.late
        return out


def _global_reader(name: str) -> Callable[[Any], Any]:
    """A lookup in this worker's copy of global table `name` (None if it lacks the key)."""
    from flowgraph.runtime.global_tables import MISSING  # it imports this module

    def read(key: Any) -> Any:
        worker = WORKER.get()
        if worker is None:
            msg = f"global table {name!r} is read outside a running worker"
            raise RuntimeError(msg)
        value = worker.global_tables.get(name, key)
        return None if value is MISSING else value

    return read


def _never_fails(exc: BaseException, rec: Rec) -> None:
    raise exc  # dead letters are bytes already; the raw codec takes any


def dead_letter(f: Failure) -> OutRecord:
    """The dead-letter record of `f`: key and value as bytes, the error in headers."""
    headers = (
        ("error.type", type(f.error).__name__.encode()),
        ("error.message", str(f.error).encode(errors="replace")),
        ("error.step", f.step.encode()),
        ("source.topic", f.topic.encode()),
        ("source.partition", str(f.partition).encode()),
        ("source.offset", str(f.offset).encode()),
    )
    return (0, _as_bytes(f.key), _as_bytes(f.value), f.timestamp, headers)


def source_time(t: Any) -> float | None:
    """A source extractor's result as float seconds since the epoch; None if unusable."""
    if type(t) is float:
        return t if 0.0 <= t < _INF else None
    try:
        seconds = event_time(t)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return seconds if seconds >= 0 else None


def _as_bytes(obj: Any) -> bytes | None:
    if obj is None or isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    try:
        return JsonCodec().encode(obj)
    except Exception:
        return repr(obj).encode(errors="replace")
