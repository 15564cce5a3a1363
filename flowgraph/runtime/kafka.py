"""The `kafka://` transport: aiokafka producer, group consumer and admin client.

The group member is `KafkaConsumer` (kafka_consumer.py), and the plan's topics are made and
watched by `KafkaTopics` (kafka_topics.py); this module keeps the transport's lifecycle,
producing and the reads of a restore.

Records leave a task through `writer`, which appends to one aiokafka `BatchBuilder` per
partition without awaiting (the hot loop stays sync); `flush` sends the batches and waits for
every ack. Restoring state reads a changelog partition with a group-less consumer.

End offsets come from the fetch response's high watermark, never from ListOffsets alone:
some Kafka-protocol brokers (tansu, the test broker) answer ListOffsets(latest) with the
base offset of the partition's last record batch + 1, not its end. The high watermark is right
on every broker, so `end_offset` seeks near the end and fetches to learn it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.kafka_assignor import FlowgraphAssignor
from flowgraph.runtime.kafka_config import KNOWN, KafkaSettings
from flowgraph.runtime.kafka_consumer import Assigned, KafkaConsumer, RebalanceListener
from flowgraph.runtime.kafka_tail import KafkaTailReader
from flowgraph.runtime.kafka_topics import BrokerDataLost, KafkaTopics, no_auto_create
from flowgraph.runtime.transport import TP, Message, OutRecord, Write
from planner.physical import TopicSpec

__all__ = ["BrokerDataLost", "KafkaConsumer", "KafkaTransport"]

MAX_BATCH_BYTES = 1 << 20
END_OFFSET_TIMEOUT = 60.0
"""Seconds to wait for a fetch response that tells a partition's end before giving up."""
FETCH_WAIT = 0.2
"""Seconds a restore read waits for a fetch before deciding a partition is read to its end."""
CLOSE_TIMEOUT = 3.0
"""Seconds at most for each part of closing the transport (a last flush, each client), so a
worker whose broker went away still exits."""
HIGHWATER_POLL_MS = 10
"""How long one poll for a partition's high watermark waits (it is polled until known)."""
JOIN_GROUP = 11
"""Kafka's api key of JoinGroup."""
STATIC_JOIN_VERSION = 5
"""The first JoinGroup version that carries a group instance id (KIP-345)."""


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


FED_BACK_FETCH_WAIT_MS = 20
"""A group consumer's longest wait in a fetch when the worker reads back what it writes
(`track_oldest`): the schedule waits for those records, so a fetch must return them soon
after they are sent, not at the end of aiokafka's default 500 ms wait."""


class _PartitionBuffer:
    """Records for one topic partition, in aiokafka batches, sent at `flush`."""

    __slots__ = ("batch", "full", "oldest")

    def __init__(self) -> None:
        self.batch: Any = None
        self.full: list[tuple[Any, int]] = []
        self.oldest = math.inf
        """The oldest timestamp buffered, kept by tracked writers only (`track_oldest`)."""

    def add(
        self, producer: AIOKafkaProducer, key: Any, value: Any, ts: float, headers: Any
    ) -> None:
        """Append one record; a full batch is kept for `flush` and another started."""
        hdrs = list(headers or ())
        if self.batch is None:
            self.batch = producer.create_batch()
        if self.batch.append(key=key, value=value, timestamp=_ms(ts), headers=hdrs) is None:
            self.full.append((self.batch, self.batch.record_count()))
            self.batch = producer.create_batch()
            self.batch.append(key=key, value=value, timestamp=_ms(ts), headers=hdrs)


class KafkaTransport:
    """`kafka://host:port[,host:port]`: topics, group membership and writes on Apache Kafka.

    Every aiokafka client it makes (producer, admin, group consumer, restore readers) is
    built from the same `KafkaSettings` (security, client id) and never lets a metadata
    request create a topic: topics exist because `create_topics` made them as the plan says.
    """

    in_process = False
    encoded = True

    OPTIONS: frozenset[str] = KNOWN
    """Settings a ``kafka://`` URL may set as query parameters (see `kafka_config`)."""

    def __init__(self, settings: KafkaSettings | str) -> None:
        if isinstance(settings, str):
            settings = KafkaSettings(servers=settings)
        self.settings = settings
        self.servers = settings.servers
        self.url = f"kafka://{self.servers}"
        self.session_timeout_ms = settings.session_timeout_ms
        self.session_timeout = settings.session_timeout_ms / 1000
        self.heartbeat_interval_ms = settings.heartbeat_interval_ms
        self.connect_timeout = settings.connect_timeout
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._ends_reader: AIOKafkaConsumer | None = None
        """Reads end offsets for `end_offsets`, apart from `_reader`, which a restore may hold."""
        self._buffers: dict[str, list[_PartitionBuffer]] = {}
        self._tracked: set[str] = set()
        """Topics whose writers keep their oldest unfetched timestamp (`track_oldest`)."""
        self._sent_oldest: dict[TP, tuple[float, int]] = {}
        """Per tracked partition, the oldest timestamp sent and the end offset it was sent up
        to, until a fetch passes that end."""
        self._written: dict[TP, int] = {}
        self._topics = KafkaTopics(settings, self.url, self.end_offsets)
        """The plan's topics: creating and checking them, the cluster watch."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, retrying for `connect_timeout` seconds, then fail in one sentence."""
        deadline = time.monotonic() + self.connect_timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            producer = AIOKafkaProducer(
                **self.settings.client_kwargs(),
                acks="all",
                linger_ms=5,
                max_batch_size=MAX_BATCH_BYTES,
                max_request_size=4 * MAX_BATCH_BYTES,
                request_timeout_ms=30_000,
            )
            no_auto_create(producer.client)
            try:
                await asyncio.wait_for(producer.start(), max(deadline - time.monotonic(), 1.0))
            except (TimeoutError, KafkaError, OSError) as exc:
                last = exc
                await producer.stop()
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # a stop request that arrived as the connection failed: wait_for raises
                    # the failure then, not the cancellation, which must not be retried away
                    raise asyncio.CancelledError from exc
                await asyncio.sleep(0.5)
                continue
            except BaseException:  # cancelled (a stop request): leave nothing open
                await producer.stop()
                raise
            self._producer = producer
            break
        if self._producer is None:
            text = str(last)
            name = type(last).__name__
            why = f" ({text if text.startswith(name) else f'{name}: {text}'})" if last else ""
            hint = "the broker runs and the address is right"
            if self.settings.security_protocol != "PLAINTEXT":
                hint += f" and takes {self.settings.security_protocol} as configured"
            msg = (
                f"cannot reach Kafka at {self.servers!r} after {self.connect_timeout:.0f} s{why}; "
                f"check that {hint}"
            )
            raise ConfigurationError(msg)
        self._admin = AIOKafkaAdminClient(**self.settings.client_kwargs())
        no_auto_create(self._admin, self._admin._client)
        await self._admin.start()
        self._reader = self._plain_reader()
        await self._reader.start()
        await self._topics.connect(self._admin, self._producer)

    def _plain_reader(self) -> AIOKafkaConsumer:
        """A group-less consumer for restores and end offsets."""
        reader = AIOKafkaConsumer(
            **self.settings.client_kwargs(),
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,  # an empty fetch at the end of a restore returns at once
        )
        no_auto_create(reader._client)
        return reader

    async def tail_reader(self) -> KafkaTailReader:
        """A group-less reader following changelog partitions (standbys, global tables)."""
        reader = self._plain_reader()
        await reader.start()
        return KafkaTailReader(reader)

    async def stop(self) -> None:
        """Flush what is buffered and disconnect; every client is closed even if flushing or
        closing another fails, and the first failure is raised after."""
        failures: list[BaseException] = []
        await self._topics.stop_watch()

        async def bounded(step: Awaitable[None], what: str) -> None:
            try:
                await asyncio.wait_for(step, CLOSE_TIMEOUT)
            except TimeoutError:  # the broker is gone: give up on it, go on closing
                msg = f"{what} did not finish within {CLOSE_TIMEOUT:.0f} s"
                failures.append(TimeoutError(msg))
            except BaseException as exc:
                failures.append(exc)

        if self._producer is not None and self.failure is None:
            await bounded(self.flush(), "sending the last records to Kafka")
        closing = [self._producer, self._reader, self._ends_reader]
        self._producer = self._reader = self._ends_reader = None
        self._topics.admin = self._topics.producer = None  # closed below
        for client in closing:
            if client is not None:
                await bounded(client.stop(), "closing a Kafka client")
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await bounded(admin.close(), "closing the Kafka admin client")
        if failures:
            raise failures[0]

    # -- topics --------------------------------------------------------------------------

    @property
    def replication_factor(self) -> int:
        """Of the topics flowgraph creates: the setting, else min(3, brokers in the cluster)."""
        return self._topics.replication_factor

    @property
    def failure(self) -> BrokerDataLost | None:
        """Set when the watch finds that the cluster lost its data; the run then stops."""
        return self._topics.failure

    @property
    def on_failure(self) -> Callable[[], None] | None:
        """Called once when `failure` is set (`fg.run` stops the worker with it)."""
        return self._topics.on_failure

    @on_failure.setter
    def on_failure(self, call: Callable[[], None] | None) -> None:
        self._topics.on_failure = call

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Make the plan's topics exist as it says (see `KafkaTopics.create`)."""
        await self._topics.create(specs)

    async def check_lost(self) -> BrokerDataLost | None:
        """`failure`, checked now (see `KafkaTopics.check_lost`)."""
        return await self._topics.check_lost()

    async def lost(self) -> str | None:
        """Why the cluster no longer holds what this worker made or read, or None."""
        return await self._topics.lost()

    # -- consuming -----------------------------------------------------------------------

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assigned: Assigned | None = None,
        on_revoked: Assigned | None = None,
        assignor: FlowgraphAssignor | None = None,
    ) -> KafkaConsumer:
        """Join `group` over `topics`; rebalances call `on_assigned`/`on_revoked`.

        `assignor` replaces aiokafka's round robin (every member of a group must use the
        same); the settings' `group_instance_id` makes this member static.
        """

        async def nothing(tps: frozenset[TP]) -> None:
            return None

        if self.settings.group_instance_id is not None:
            self._check_static_membership()
        extra: dict[str, Any] = {}
        if assignor is not None:
            extra["partition_assignment_strategy"] = (assignor,)
        if self._tracked:
            extra["fetch_max_wait_ms"] = FED_BACK_FETCH_WAIT_MS
        consumer = AIOKafkaConsumer(
            **self.settings.group_kwargs(group),
            **extra,
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * MAX_BATCH_BYTES,
            fetch_max_bytes=16 * MAX_BATCH_BYTES,
        )
        no_auto_create(consumer._client)
        try:
            await consumer.start()
        except BaseException:  # cancelled (a stop request) or failed: leave nothing open
            await consumer.stop()
            raise
        if topics:  # none: an app of timers only, in no group (see Worker.start)
            consumer.subscribe(
                topics=list(topics),
                listener=RebalanceListener(on_assigned or nothing, on_revoked or nothing),
            )
        assert self._admin is not None
        return KafkaConsumer(
            consumer,
            self._written,
            self._admin,
            self.settings.group_id or group,
            static=self.settings.group_instance_id is not None,
        )

    def _check_static_membership(self) -> None:
        """Static membership needs JoinGroup v5 (Kafka 2.3); an older broker would take the
        member as dynamic, and one that never leaves would hold its partitions a whole
        session after every stop. Read from the admin client's connections (aiokafka
        internals, guarded: when they cannot tell, go on)."""
        conns = getattr(getattr(self._admin, "_client", None), "_conns", None) or {}
        tops = [
            versions[JOIN_GROUP][1]
            for conn in list(conns.values())
            if JOIN_GROUP in (versions := getattr(conn, "_versions", None) or {})
        ]
        if tops and max(tops) < STATIC_JOIN_VERSION:
            msg = (
                f"kafka setting 'group_instance_id' needs a broker with static membership "
                f"(JoinGroup v{STATIC_JOIN_VERSION}, Kafka 2.3 or later), but {self.servers!r} "
                f"speaks JoinGroup v{max(tops)} at most; unset group_instance_id"
            )
            raise ConfigurationError(msg)

    # -- producing -----------------------------------------------------------------------

    def writer(self, topic: str) -> Write:
        """Append records to per-partition batches; `flush` sends them."""
        assert self._producer is not None
        producer = self._producer
        buffers = self._buffers.setdefault(
            topic, [_PartitionBuffer() for _ in range(self._topics.partitions[topic])]
        )

        if topic in self._tracked:

            def tracked(partition: int, key: Any, value: Any, ts: float, headers: Any) -> None:
                buf = buffers[partition]
                buf.add(producer, key, value, ts, headers)
                if ts < buf.oldest:
                    buf.oldest = ts

            return tracked

        def write(partition: int, key: Any, value: Any, ts: float, headers: Any) -> None:
            buffers[partition].add(producer, key, value, ts, headers)

        return write

    async def flush(self) -> None:
        """Send every buffered batch and wait for all acks.

        Raises `BrokerDataLost` once the watch found the cluster lost its data, also while
        the acks are awaited: a write to a topic that is gone would wait for it for ever.
        """
        if self.failure is not None:
            raise self.failure
        if self._topics.watch is None:
            await self._send_buffers(self._buffers)
            return
        sending = asyncio.ensure_future(self._send_buffers(self._buffers))
        lost = asyncio.ensure_future(self._topics.lost_event.wait())
        try:
            await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await sending
        if self.failure is not None:
            raise self.failure
        sending.result()

    async def _send_buffers(
        self, buffers: Mapping[str, list[_PartitionBuffer]]
    ) -> dict[str, dict[int, int]]:
        assert self._producer is not None
        pending: list[tuple[str, int, int, Any]] = []
        oldest_sent: dict[TP, float] = {}
        for topic, parts in buffers.items():
            for partition, buf in enumerate(parts):
                batches = buf.full
                if buf.batch is not None:
                    batches.append((buf.batch, buf.batch.record_count()))
                buf.full, buf.batch = [], None
                oldest, buf.oldest = buf.oldest, math.inf
                for batch, count in batches:
                    if count:
                        fut = await self._producer.send_batch(batch, topic, partition=partition)
                        pending.append((topic, partition, count, fut))
                if oldest != math.inf:
                    oldest_sent[(topic, partition)] = oldest
        last: dict[str, dict[int, int]] = {}
        for topic, partition, count, fut in pending:
            meta = await fut
            end = meta.offset + count - 1
            parts_last = last.setdefault(topic, {})
            parts_last[partition] = max(parts_last.get(partition, -1), end)
            tp = (topic, partition)
            self._written[tp] = max(self._written.get(tp, 0), end + 1)
        for tp, oldest in oldest_sent.items():  # kept until a fetch passes their end
            before = self._sent_oldest.get(tp)
            end = self._written.get(tp, 0)
            self._sent_oldest[tp] = (oldest if before is None else min(oldest, before[0]), end)
        return last

    async def produce(self, topic: str, records: Sequence[OutRecord]) -> dict[int, int]:
        """Write records, wait for their acks; the last offset written per partition."""
        assert self._producer is not None
        count = self._topics.partitions.get(topic) or await self._topics.partition_count(topic)
        parts = [_PartitionBuffer() for _ in range(count)]
        producer = self._producer
        for partition, key, value, ts, headers in records:
            parts[partition].add(producer, key, value, ts, headers)
        return (await self._send_buffers({topic: parts})).get(topic, {})

    def track_oldest(self, topics: Iterable[str]) -> None:
        """Keep, for writes to `topics` (a repartition topic this worker also reads, see
        `own_oldest`), the oldest timestamp not yet fetched back. Only writers made after
        this call track; other topics' writes pay nothing."""
        self._tracked.update(topics)

    def own_oldest(self, tp: TP, position: int | None) -> float | None:
        """The oldest timestamp among this process's writes to `tp` (a tracked topic) that a
        fetch at `position` has not returned yet: buffered for a flush, or sent to offsets
        at or past `position` (None: unknown, taken as all fetched). None if there are none.
        """
        oldest = math.inf
        parts = self._buffers.get(tp[0])
        if parts is not None:
            oldest = parts[tp[1]].oldest
        sent = self._sent_oldest.get(tp)
        if sent is not None:
            if position is not None and position < sent[1]:
                oldest = min(oldest, sent[0])
            else:
                del self._sent_oldest[tp]
        return None if oldest == math.inf else oldest

    def discard(self) -> None:
        """Drop every record written but not flushed (their tasks were dropped)."""
        for parts in self._buffers.values():
            for buf in parts:
                buf.batch, buf.full, buf.oldest = None, [], math.inf

    def written_end(self, tp: TP) -> int:
        """One past the last offset this process's acked writes reached in `tp` (0: none)."""
        return self._written.get(tp, 0)

    # -- reading for restore -------------------------------------------------------------

    async def end_offset(self, tp: TP) -> int:
        """The offset the next record of `tp` will get, from a fetch's high watermark."""
        assert self._reader is not None
        reader = self._reader
        part = TopicPartition(*tp)
        reader.assign([part])
        await reader.seek_to_end(part)  # ListOffsets: at or a little before the end
        near = await reader.position(part)
        deadline = time.monotonic() + END_OFFSET_TIMEOUT
        while True:  # only a fetch response tells the true end; never guess (state depends on it)
            # Short polls: getmany waits for records, not for the response, and an empty
            # partition has none, so a long timeout would be paid in full for each one.
            await reader.getmany(part, timeout_ms=HIGHWATER_POLL_MS, max_records=1)
            high = reader.highwater(part)
            if high is not None:
                return max(int(near), int(high))
            if time.monotonic() > deadline:
                msg = (
                    f"Kafka at {self.servers!r} did not answer a fetch of {tp[0]!r} "
                    f"partition {tp[1]} within {END_OFFSET_TIMEOUT:.0f} s; is it overloaded?"
                )
                raise ConfigurationError(msg)

    async def end_offsets(self, tps: Sequence[TP]) -> dict[TP, int]:
        """`end_offset` of each of `tps`, from one fetch's high watermarks.

        Uses a reader of its own, so it can run while a restore reads a changelog. Every call
        assigns the partitions afresh, and aiokafka keeps high watermarks per assignment, so
        only a fetch made for this call can answer.
        """
        if self._ends_reader is None:
            self._ends_reader = self._plain_reader()
            await self._ends_reader.start()
        reader = self._ends_reader
        parts = [TopicPartition(*tp) for tp in tps]
        reader.assign(parts)
        await reader.seek_to_end(*parts)  # ListOffsets: at or a little before the end
        near = {part: await reader.position(part) for part in parts}
        deadline = time.monotonic() + END_OFFSET_TIMEOUT
        while True:
            missing = [part for part in parts if reader.highwater(part) is None]
            if not missing:
                break
            if time.monotonic() > deadline:
                msg = (
                    f"Kafka at {self.servers!r} did not answer a fetch of {len(missing)} "
                    f"partitions within {END_OFFSET_TIMEOUT:.0f} s; is it overloaded?"
                )
                raise ConfigurationError(msg)
            await reader.getmany(*missing, timeout_ms=HIGHWATER_POLL_MS, max_records=1)
        return {
            (part.topic, part.partition): max(int(near[part]), int(reader.highwater(part)))
            for part in parts
        }

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        """Records of `tp` with offsets in ``[start, end)`` (compacted topics may have gaps)."""
        assert self._reader is not None
        reader = self._reader
        part = TopicPartition(*tp)
        reader.assign([part])
        reader.seek(part, start)
        out: list[Message] = []
        while True:
            data = await reader.getmany(
                part, timeout_ms=int(FETCH_WAIT * 1000) * 5, max_records=50_000
            )
            records = data.get(part, [])
            done = bool(records) and records[-1].offset >= end - 1
            if done and records[-1].offset >= end:
                records = [r for r in records if r.offset < end]
            out += [
                (r.key, r.value, r.timestamp / 1000, r.offset, r.headers or None) for r in records
            ]
            if done:
                return out
            if not records:  # a slow fetch returns nothing too: stop only at a known end
                position = await reader.position(part)
                high = reader.highwater(part)
                if position >= end or (high is not None and high <= position):
                    return out
