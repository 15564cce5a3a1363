"""The `kafka://` transport: aiokafka producer, group consumer and admin client.

The group member is `KafkaConsumer` (kafka_consumer.py); this module keeps the transport's
lifecycle, producing and the reads of a restore.

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
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import TopicPartition

from flowgraph.errors import ConfigurationError, FlowgraphError
from flowgraph.runtime.kafka_config import KNOWN, KafkaSettings
from flowgraph.runtime.kafka_consumer import Assigned, KafkaConsumer, RebalanceListener
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
TOPIC_TIMEOUT = 10.0
"""Seconds to wait for a deleted internal topic to be gone so it can be made again."""
WATCH_INTERVAL = 2.0
"""Seconds between two checks that the cluster still holds the plan's topics."""
WATCH_TIMEOUT = 10.0
"""Seconds one such check may take (a slow answer is skipped, not taken for a loss)."""

_NO_AUTO_CREATE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flowgraph_no_auto_create", default=False
)


class _MetadataRequest(MetadataRequest):  # type: ignore[misc]
    """aiokafka's metadata request, asking the broker not to create the topics it names.

    aiokafka sends ``allow_auto_topic_creation=True`` whenever none is given and offers no
    setting; its clients make the request by this module-level name. Only requests sent
    by a client marked by `_no_auto_create` change, so other aiokafka users in the process
    keep aiokafka's behaviour.
    """

    def build(self, request_struct_class: Any) -> Any:
        # read when sent, not when made: the admin client makes it before sending it
        if _NO_AUTO_CREATE.get() and getattr(self, "_allow_auto_topic_creation", 0) is None:
            self._allow_auto_topic_creation = False
        return super().build(request_struct_class)


aiokafka.client.MetadataRequest = _MetadataRequest
aiokafka.admin.client.MetadataRequest = _MetadataRequest


def _no_auto_create(*clients: Any) -> None:
    """Make the metadata requests of `clients` never create topics.

    Wraps what sends them: an `AIOKafkaClient`'s `_metadata_update` (producer, consumers)
    and the admin client's `_send_request` (its `describe_topics` names topics).
    """
    for client in clients:
        for name in ("_metadata_update", "_send_request"):
            method = getattr(client, name, None)
            if method is not None:
                setattr(client, name, _marked(method))


def _marked(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        token = _NO_AUTO_CREATE.set(True)
        try:
            return await method(*args, **kwargs)
        finally:
            _NO_AUTO_CREATE.reset(token)

    return call


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


class _PartitionBuffer:
    """Records for one topic partition, in aiokafka batches, sent at `flush`."""

    __slots__ = ("batch", "full")

    def __init__(self) -> None:
        self.batch: Any = None
        self.full: list[tuple[Any, int]] = []

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


class BrokerDataLost(FlowgraphError):
    """The cluster the worker writes to lost its data (or was replaced by an empty one)."""


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
        self._partitions: dict[str, int] = {}
        self._written: dict[TP, int] = {}
        self._cluster_id: str | None = None
        self._brokers = 1
        self._watch: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.failure: BrokerDataLost | None = None
        """Set when the watch finds that the cluster lost its data; the run then stops."""
        self.on_failure: Callable[[], None] | None = None
        """Called once when `failure` is set (`fg.run` stops the worker with it)."""

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
            _no_auto_create(producer.client)
            try:
                await asyncio.wait_for(producer.start(), max(deadline - time.monotonic(), 1.0))
            except (TimeoutError, KafkaError, OSError) as exc:
                last = exc
                await producer.stop()
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
        _no_auto_create(self._admin, self._admin._client)
        await self._admin.start()
        self._reader = self._plain_reader()
        await self._reader.start()
        cluster = await self._admin.describe_cluster()
        self._cluster_id = cluster.get("cluster_id")
        self._brokers = max(len(cluster.get("brokers") or ()), 1)

    def _plain_reader(self) -> AIOKafkaConsumer:
        """A group-less consumer for restores and end offsets."""
        reader = AIOKafkaConsumer(
            **self.settings.client_kwargs(),
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,  # an empty fetch at the end of a restore returns at once
        )
        _no_auto_create(reader._client)
        return reader

    async def stop(self) -> None:
        """Flush what is buffered and disconnect; every client is closed even if flushing or
        closing another fails, and the first failure is raised after."""
        failures: list[BaseException] = []
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

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
        return self.settings.replication_factor or min(3, self._brokers)

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Make the plan's topics exist as it says, before any client reads or writes them.

        Missing internal and sink topics are created with the plan's partitions, the
        replication factor and (internal ones) the configured topic configs; a missing source
        topic stops the run in one sentence unless `create_source_topics` is set. A topic
        with another partition count: an empty internal one is recreated (a client made it,
        e.g. after the broker lost its data), anything else is one sentence.
        """
        assert self._admin is not None and self._producer is not None
        have = await self._topic_partitions([s.name for s in specs])
        missing = [s for s in specs if s.name not in have]
        sources = [s for s in missing if s.role == "source"]
        if sources and not self.settings.create_source_topics:
            names = ", ".join(repr(s.name) for s in sources)
            how = "; ".join(
                f"kafka-topics.sh --create --topic {s.name} --partitions {s.partitions}"
                for s in sources
            )
            msg = (
                f"source topic{'s' if len(sources) > 1 else ''} {names} "
                f"{'do' if len(sources) > 1 else 'does'} not exist on {self.url}; create "
                f"{'them' if len(sources) > 1 else 'it'} ({how}) or let flowgraph do it "
                "(flowgraph run --create-topics, fg.run(create_topics=True) or "
                "?create_source_topics=true in the broker URL)"
            )
            raise ConfigurationError(msg)
        await self._create([self._new_topic(s) for s in missing])
        for spec in specs:
            count = have.get(spec.name, spec.partitions)
            if count != spec.partitions:
                await self._mismatch(spec, count)
        for spec in specs:
            self._partitions[spec.name] = await self._partition_count(spec.name, spec.partitions)
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._watch_cluster())

    def _new_topic(self, spec: TopicSpec) -> NewTopic:
        configs = dict(self.settings.topic_configs) if spec.internal or spec.role == "dlq" else {}
        configs.update(spec.configs)  # the plan's own (a changelog's compaction) win
        return NewTopic(
            name=spec.name,
            num_partitions=spec.partitions,
            replication_factor=self.replication_factor,
            topic_configs=configs,
        )

    async def _create(self, topics: Sequence[NewTopic]) -> None:
        """Create `topics`; one already there (another worker made it) is fine."""
        assert self._admin is not None
        if not topics:
            return
        response = await self._admin.create_topics(list(topics))
        for name, code, *rest in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                error = rest[0] if rest and rest[0] else f"error code {code}"
                msg = f"cannot create topic {name!r} on {self.url}: {error}"
                raise ConfigurationError(msg)

    async def _mismatch(self, spec: TopicSpec, count: int) -> None:
        """`spec.name` exists with `count` partitions, not the plan's: recreate or refuse."""
        assert self._admin is not None
        if not (spec.internal or spec.role == "dlq"):
            msg = (
                f"topic {spec.name!r} on {self.url} has {count} partitions but the graph "
                f"declares {spec.partitions}; set the graph's partitions={count} for it, or "
                f"repartition the data into a topic with {spec.partitions} partitions"
            )
            raise ConfigurationError(msg)
        ends = await self.end_offsets([(spec.name, p) for p in range(count)])
        if any(ends.values()):
            msg = (
                f"internal topic {spec.name!r} on {self.url} holds data written with {count} "
                f"partitions but the graph now has {spec.partitions}, so its partitions "
                "changed; reset the application's internal topics (delete them and the "
                "local state) to run it"
            )
            raise ConfigurationError(msg)
        await self._admin.delete_topics([spec.name])
        deadline = time.monotonic() + TOPIC_TIMEOUT
        while True:  # a deleted topic may take a moment to go
            try:
                await self._create([self._new_topic(spec)])
                if (await self._topic_partitions([spec.name])).get(spec.name) == spec.partitions:
                    return
            except ConfigurationError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                msg = f"internal topic {spec.name!r} on {self.url} could not be recreated"
                raise ConfigurationError(msg)
            await asyncio.sleep(0.2)

    async def _topic_partitions(self, topics: Sequence[str]) -> dict[str, int]:
        """The partition count of each of `topics` that exists (one metadata request)."""
        return (await self._metadata(topics))[1]

    async def _metadata(self, topics: Sequence[str]) -> tuple[str | None, dict[str, int]]:
        """The cluster id, and the partition count of each of `topics` that exists.

        Names only `topics` (never all of a big cluster's), and creates none of them: the
        admin client's requests are marked by `_no_auto_create`.
        """
        assert self._admin is not None
        if not topics:  # an empty list would mean every topic
            return (await self._admin.describe_cluster()).get("cluster_id"), {}
        found = (await self._admin._get_cluster_metadata(list(topics))).to_object()
        counts = {
            t["topic"]: len(t["partitions"]) for t in found["topics"] if not t.get("error_code")
        }
        return found.get("cluster_id"), counts

    async def _partition_count(self, topic: str, expected: int | None = None) -> int:
        assert self._producer is not None
        for _ in range(50):
            parts = await self._producer.partitions_for(topic)
            if parts and (expected is None or len(parts) == expected):
                return len(parts)
            await asyncio.sleep(0.1)
            if parts:  # cached from before the topic was made again: ask afresh
                await self._producer.client.force_metadata_update()
        if expected is None:  # a write to a topic the plan did not make
            msg = f"topic {topic!r} does not exist on {self.url}"
        else:
            msg = f"topic {topic!r} was not found on {self.url} after it was created"
        raise ConfigurationError(msg)

    async def _watch_cluster(self) -> None:
        """Stop the run when the cluster lost its data: see `lost`."""
        while self.failure is None:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                why = await self.lost()
            except Exception:  # unreachable, or a garbled answer: the next check tries again
                continue
            if why:
                self._fail(why)

    def _fail(self, why: str) -> None:
        self.failure = BrokerDataLost(
            f"Kafka at {self.url} lost its data ({why}); this run stops, and a restart "
            "recreates the topics the graph needs (records not yet processed from the lost "
            "topics are gone)"
        )
        self._lost.set()
        if self.on_failure is not None:
            self.on_failure()

    async def check_lost(self) -> BrokerDataLost | None:
        """`failure`, checked now: for a client error that may come from a lost cluster.

        A group commit can fail on the new, empty cluster before the watch looks, so the
        caller asks, giving the broker `WATCH_TIMEOUT` seconds to answer.
        """
        deadline = time.monotonic() + WATCH_TIMEOUT
        while self.failure is None and self._watch is not None and time.monotonic() < deadline:
            try:
                why = await self.lost()
            except Exception:
                await asyncio.sleep(0.5)
                continue
            if why:
                self._fail(why)
            break
        return self.failure

    async def lost(self) -> str | None:
        """Why the cluster no longer holds what this worker made or read, or None.

        The signals, any of which means the brokers' data is gone (a new, empty cluster at
        the same address, or storage wiped): the cluster id in metadata changed (Kafka
        makes a new one for a new cluster; brokers that keep a fixed id, as tansu does, need
        the others); a topic the plan uses is gone; or it came back with another partition
        count (a client auto-created it). Offsets out of range alone are not used: retention
        and compaction cause them too.
        """
        cluster_id, have = await asyncio.wait_for(
            self._metadata(list(self._partitions)), WATCH_TIMEOUT
        )
        if self._cluster_id is not None and cluster_id and cluster_id != self._cluster_id:
            return f"its cluster id changed from {self._cluster_id!r} to {cluster_id!r}"
        gone = sorted(t for t in self._partitions if t not in have)
        if gone:
            return f"topic{'s' if len(gone) > 1 else ''} {', '.join(map(repr, gone))} vanished"
        changed = sorted(t for t, n in self._partitions.items() if have[t] != n)
        if changed:
            name = changed[0]
            return f"topic {name!r} now has {have[name]} partitions, not {self._partitions[name]}"
        return None

    # -- consuming -----------------------------------------------------------------------

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assigned: Assigned | None = None,
        on_revoked: Assigned | None = None,
    ) -> KafkaConsumer:
        """Join `group` over `topics`; rebalances call `on_assigned`/`on_revoked`."""

        async def nothing(tps: frozenset[TP]) -> None:
            return None

        consumer = AIOKafkaConsumer(
            **self.settings.group_kwargs(group),
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * MAX_BATCH_BYTES,
            fetch_max_bytes=16 * MAX_BATCH_BYTES,
        )
        _no_auto_create(consumer._client)
        try:
            await consumer.start()
        except BaseException:  # cancelled (a stop request) or failed: leave nothing open
            await consumer.stop()
            raise
        consumer.subscribe(
            topics=list(topics),
            listener=RebalanceListener(on_assigned or nothing, on_revoked or nothing),
        )
        assert self._admin is not None
        return KafkaConsumer(consumer, self._written, self._admin, self.settings.group_id or group)

    # -- producing -----------------------------------------------------------------------

    def writer(self, topic: str) -> Write:
        """Append records to per-partition batches; `flush` sends them."""
        assert self._producer is not None
        producer = self._producer
        buffers = self._buffers.setdefault(
            topic, [_PartitionBuffer() for _ in range(self._partitions[topic])]
        )

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
        if self._watch is None:
            await self._send_buffers(self._buffers)
            return
        sending = asyncio.ensure_future(self._send_buffers(self._buffers))
        lost = asyncio.ensure_future(self._lost.wait())
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
        for topic, parts in buffers.items():
            for partition, buf in enumerate(parts):
                batches = buf.full
                if buf.batch is not None:
                    batches.append((buf.batch, buf.batch.record_count()))
                buf.full, buf.batch = [], None
                for batch, count in batches:
                    if count:
                        fut = await self._producer.send_batch(batch, topic, partition=partition)
                        pending.append((topic, partition, count, fut))
        last: dict[str, dict[int, int]] = {}
        for topic, partition, count, fut in pending:
            meta = await fut
            end = meta.offset + count - 1
            parts_last = last.setdefault(topic, {})
            parts_last[partition] = max(parts_last.get(partition, -1), end)
            tp = (topic, partition)
            self._written[tp] = max(self._written.get(tp, 0), end + 1)
        return last

    async def produce(self, topic: str, records: Sequence[OutRecord]) -> dict[int, int]:
        """Write records, wait for their acks; the last offset written per partition."""
        assert self._producer is not None
        parts = [
            _PartitionBuffer()
            for _ in range(self._partitions.get(topic) or await self._partition_count(topic))
        ]
        producer = self._producer
        for partition, key, value, ts, headers in records:
            parts[partition].add(producer, key, value, ts, headers)
        return (await self._send_buffers({topic: parts})).get(topic, {})

    def discard(self) -> None:
        """Drop every record written but not flushed (their tasks were dropped)."""
        for parts in self._buffers.values():
            for buf in parts:
                buf.batch, buf.full = None, []

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
