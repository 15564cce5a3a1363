"""Pins what the Kafka transport relies on, against the test broker (tansu) through aiokafka.

Each test is a real aiokafka call. Where tansu differs from Apache Kafka, the test asserts
tansu's behaviour when the broker is the one started here (``not kafka.external``) and accepts
Kafka's when ``FLOWGRAPH_TEST_BROKER`` points elsewhere. Figures (throughput, rebalance
timings) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownError,
    for_code,
)
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import OffsetAndMetadata

from tests.kafka_broker import Broker, BrokerUnavailable, start_broker

pytestmark = pytest.mark.integration

SESSION_MS = 6000  # the smallest session timeout Apache Kafka accepts by default
HEARTBEAT_MS = 1000


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def note(message: str) -> None:
    print(f"[broker-probe] {message}")


def unique(prefix: str) -> str:
    return f"probe-{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def admin_client(kafka: Broker) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def producer(kafka: Broker, **config: Any) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **config)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@contextlib.asynccontextmanager
async def consumer(kafka: Broker, **config: Any) -> AsyncIterator[AIOKafkaConsumer]:
    config.setdefault("enable_auto_commit", False)
    client = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, **config)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def create_topic(
    kafka: Broker, name: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    async with admin_client(kafka) as admin:
        response = await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=configs or {})]
        )
    [(topic, code, message)] = response.topic_errors
    assert (topic, code) == (name, 0), message


async def produce_batches(
    client: AIOKafkaProducer, topic: str, partition: int, count: int, value: bytes = b"v" * 16
) -> list[int]:
    """``count`` records through create_batch/send_batch; returns each batch's base offset."""
    futures = []
    batch, pending = client.create_batch(), 0
    for i in range(count):
        key = b"k%d" % i
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            futures.append(await client.send_batch(batch, topic, partition=partition))
            batch = client.create_batch()
            assert batch.append(key=key, value=value, timestamp=None) is not None
            pending = 0
        pending += 1
    if pending:
        futures.append(await client.send_batch(batch, topic, partition=partition))
    return [metadata.offset for metadata in await asyncio.gather(*futures)]


async def read_to_end(client: AIOKafkaConsumer, tp: TopicPartition, start: int) -> list[int]:
    """Offsets from ``start`` to the end: the restore loop that is right on tansu.

    "Caught up" is position >= highwater, where highwater comes from the last fetch response.
    ``end_offsets()`` (ListOffsets) cannot be used: on tansu it is below the end.
    """
    client.seek(tp, start)
    offsets: list[int] = []
    while True:
        batch = await client.getmany(tp, timeout_ms=100, max_records=10_000)
        offsets.extend(record.offset for record in batch.get(tp, ()))
        highwater = client.highwater(tp)  # None until the first fetch response for tp
        if highwater is not None and await client.position(tp) >= highwater:
            return offsets


async def wait_until(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate()`` holds; TimeoutError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not true after {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# -- topics -------------------------------------------------------------------------------


def test_create_topic_with_partitions_and_config(kafka: Broker) -> None:
    topic = unique("create")

    async def body() -> None:
        await create_topic(kafka, topic, 3, {"cleanup.policy": "compact"})
        async with admin_client(kafka) as admin:
            assert topic in await admin.list_topics()
            [described] = await admin.describe_topics([topic])
            assert described["error_code"] == 0
            assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]
            # configs=None (all of them): naming keys makes tansu drop the connection
            # (it cannot decode the request: "StringWithoutLength")
            [configs] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
            [(code, _, _, name, entries)] = configs.resources
            assert (code, name) == (0, topic)
            assert {e[0]: e[1] for e in entries}["cleanup.policy"] == "compact"
        async with consumer(kafka) as client:
            await client.topics()  # refreshes metadata for all topics; creates nothing
            assert client.partitions_for_topic(topic) == {0, 1, 2}  # sync, cached metadata
        async with producer(kafka) as client:
            assert await client.partitions_for(topic) == {0, 1, 2}

    run(body())


def test_create_existing_topic_answers_an_error_code(kafka: Broker) -> None:
    topic = unique("exists")

    async def body() -> None:
        await create_topic(kafka, topic, 3)
        async with admin_client(kafka) as admin:
            # aiokafka's admin returns the response; it raises nothing for per-topic errors
            response = await admin.create_topics([NewTopic(topic, 5, 1)])
            [(name, code, message)] = response.topic_errors
            assert name == topic
            assert for_code(code) is TopicAlreadyExistsError, (code, message)
            [described] = await admin.describe_topics([topic])
            assert len(described["partitions"]) == 3

    run(body())


def test_metadata_naming_a_missing_topic_creates_it(kafka: Broker) -> None:
    """aiokafka sends allow_auto_topic_creation=True: naming a topic in metadata creates it."""
    topic = unique("auto")

    async def body() -> None:
        async with admin_client(kafka) as admin:
            assert topic not in await admin.list_topics()  # all-topics metadata: no creation
            [described] = await admin.describe_topics([topic])
            created = topic in await admin.list_topics()
        note(
            f"describe_topics([missing]): error_code={described['error_code']} "
            f"partitions={len(described['partitions'])} created={created}"
        )
        if not kafka.external:
            assert created
            assert described["error_code"] == 0
            assert len(described["partitions"]) >= 1

    run(body())


# -- producing ----------------------------------------------------------------------------


def test_send_and_wait_metadata_headers_and_timestamps(kafka: Broker) -> None:
    topic = unique("produce")
    tp = TopicPartition(topic, 1)
    headers = [("offset", b"41"), ("offset", b"42"), ("empty", b"")]
    stamp = 1_700_000_000_123

    async def body() -> None:
        await create_topic(kafka, topic, 2)
        async with producer(kafka) as client:
            first = await client.send_and_wait(
                topic, b"v0", key=b"k", partition=1, headers=headers, timestamp_ms=stamp
            )
            second = await client.send_and_wait(topic, b"v1", key=b"k", partition=1)
            tombstone = await client.send_and_wait(topic, None, key=b"k", partition=1)
        assert (first.topic, first.partition, first.offset) == (topic, 1, 0)
        assert first.timestamp == stamp  # CreateTime: the producer's timestamp comes back
        assert (second.offset, tombstone.offset) == (1, 2)
        async with consumer(kafka) as client:
            client.assign([tp])
            client.seek(tp, 0)
            records = (await client.getmany(tp, timeout_ms=2000))[tp]
        assert [(r.offset, r.key, r.value) for r in records] == [
            (0, b"k", b"v0"),
            (1, b"k", b"v1"),
            (2, b"k", None),  # a tombstone (value None) stays None
        ]
        assert records[0].headers == tuple(headers)  # order and duplicates kept
        assert records[0].timestamp == stamp
        assert records[0].timestamp_type == 0  # CreateTime
        assert records[1].headers == ()
        assert abs(records[1].timestamp - time.time() * 1000) < 60_000

    run(body())


def test_throughput_of_100k_small_records(kafka: Broker) -> None:
    topic = unique("throughput")
    count = 100_000

    async def body() -> None:
        await create_topic(kafka, topic, 2)
        async with producer(kafka, linger_ms=5) as client:
            started = time.perf_counter()
            futures = [
                await client.send(topic, b"v%d" % i, key=b"k%d" % i, partition=0)
                for i in range(count)
            ]
            await client.flush()
            send_s = time.perf_counter() - started
            assert futures[-1].result().offset == count - 1

            started = time.perf_counter()
            bases = await produce_batches(client, topic, 1, count)
            batch_s = time.perf_counter() - started
        assert bases[0] == 0
        assert bases == sorted(bases)  # send_batch's RecordMetadata.offset: the batch's base
        async with consumer(kafka) as client:
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            client.assign(tps)
            for tp in tps:
                client.seek(tp, count - 1)
            await client.getmany(*tps, timeout_ms=2000)
            assert [client.highwater(tp) for tp in tps] == [count, count]
        note(f"send()+flush(): {count / send_s:,.0f} records/s ({send_s:.2f} s for {count:,})")
        note(
            f"create_batch()/send_batch(): {count / batch_s:,.0f} records/s "
            f"({batch_s:.2f} s, {len(bases)} batches of <= 16 KiB)"
        )
        assert send_s < 20 and batch_s < 20

    run(body())


def test_producer_features(kafka: Broker) -> None:
    """gzip works; records over max_request_size fail in the client; no idempotence on tansu."""
    topic = unique("features")
    tp = TopicPartition(topic, 0)
    big = b"x" * (2 * 1024 * 1024)

    async def body() -> None:
        await create_topic(kafka, topic, 1)
        async with producer(kafka, compression_type="gzip", acks="all") as client:
            assert (await client.send_and_wait(topic, b"zipped", partition=0)).offset == 0
        async with producer(kafka) as client:  # default max_request_size: 1 MiB
            with pytest.raises(MessageSizeTooLargeError):
                await client.send_and_wait(topic, big, partition=0)
        async with producer(kafka, max_request_size=4 * 1024 * 1024) as client:
            assert (await client.send_and_wait(topic, big, partition=0)).offset == 1
        async with consumer(kafka) as client:  # default max_partition_fetch_bytes: 1 MiB
            client.assign([tp])
            client.seek(tp, 0)
            records: list[Any] = []
            while len(records) < 2:
                records.extend((await client.getmany(tp, timeout_ms=2000)).get(tp, ()))
            assert [len(r.value) for r in records] == [len(b"zipped"), len(big)]

        idempotent = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, enable_idempotence=True)
        try:
            await idempotent.start()
            supported = True
        except UnknownError:  # InitProducerId fails on tansu
            supported = False
        finally:
            await idempotent.stop()
        note(f"enable_idempotence=True: start() {'works' if supported else 'raises UnknownError'}")
        if not kafka.external:
            assert not supported

    run(body())


# -- fetching -----------------------------------------------------------------------------


def test_getmany_highwater_and_end_offsets(kafka: Broker) -> None:
    topic = unique("highwater")
    tp = TopicPartition(topic, 0)
    count = 50_000

    async def body() -> None:
        await create_topic(kafka, topic, 1)
        async with producer(kafka) as client:
            bases = await produce_batches(client, topic, 0, count)
        quirk = bases[-1] + 1  # tansu's ListOffsets(latest): last batch's base offset + 1
        async with consumer(kafka) as client:
            client.assign([tp])
            client.seek(tp, 0)
            assert client.highwater(tp) is None  # unknown until a fetch response
            batch = await client.getmany(tp, timeout_ms=2000, max_records=500)
            assert [r.offset for r in batch[tp]] == list(range(500))
            assert client.highwater(tp) == count  # the fetch response's high watermark: right
            assert client.last_stable_offset(tp) == count
            assert await client.position(tp) == 500

            end = (await client.end_offsets([tp]))[tp]
            assert (await client.beginning_offsets([tp]))[tp] == 0
            note(
                f"{count:,} records in {len(bases)} batches: highwater={count} "
                f"end_offsets={end} (last batch base + 1 = {quirk})"
            )
            if kafka.external:
                assert end in (count, quirk)
            else:
                assert end == quirk < count

            # seek_to_end() and auto_offset_reset="latest" use the same ListOffsets
            assert await client.seek_to_end(tp)
            assert await client.position(tp) == end
            tail: list[int] = []
            while len(tail) < count - end:
                tail.extend(r.offset for r in (await client.getmany(tp, timeout_ms=2000))[tp])
            assert tail == list(range(end, count))  # re-delivered on tansu, empty on Kafka

    run(body())


def test_restore_reads_from_an_offset_to_the_highwater(kafka: Broker) -> None:
    topic = unique("restore")
    full, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    count = 200_000

    async def body() -> None:
        await create_topic(kafka, topic, 2, {"cleanup.policy": "compact"})
        async with producer(kafka) as client:
            await produce_batches(client, topic, 0, count)
        async with consumer(kafka) as client:  # no group_id: manual assignment, no commits
            client.assign([full, empty])
            started = time.perf_counter()
            offsets = await read_to_end(client, full, 0)
            elapsed = time.perf_counter() - started
            assert offsets == list(range(count))
            assert await read_to_end(client, full, 150_000) == list(range(150_000, count))
            assert await read_to_end(client, full, count) == []

            assert client.highwater(empty) == 0  # came with the fetch responses for `full`
            assert (await client.end_offsets([empty]))[empty] == 0
        # "caught up" on an empty partition (or one read to its end) needs a fetch response,
        # which the broker holds for fetch_max_wait_ms (default 500) when there is no data
        waits = {}
        for wait_ms in (500, 20):
            async with consumer(kafka, fetch_max_wait_ms=wait_ms) as client:
                client.assign([empty])
                started = time.perf_counter()
                assert await read_to_end(client, empty, 0) == []
                waits[wait_ms] = time.perf_counter() - started
        note(
            f"restore of {count:,} records (seek 0 -> highwater): {elapsed:.2f} s, "
            f"{count / elapsed:,.0f} records/s; empty partition caught up in "
            f"{waits[500]:.2f} s (fetch_max_wait_ms=500), {waits[20]:.2f} s (20)"
        )
        assert waits[500] > 0.4
        assert waits[20] < 0.4

    run(body())


# -- consumer groups ----------------------------------------------------------------------


def test_commit_and_committed_after_reconnect(kafka: Broker) -> None:
    topic = unique("commit")
    group = unique("group")
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def body() -> None:
        await create_topic(kafka, topic, 2)
        async with producer(kafka) as client:
            await produce_batches(client, topic, 0, 100)
        async with consumer(kafka, group_id=group) as client:
            client.assign([tp0, tp1])  # a group_id with manual assignment can commit
            assert await client.committed(tp0) is None
            await client.commit({tp0: OffsetAndMetadata(42, ""), tp1: OffsetAndMetadata(7, "m")})
            assert await client.committed(tp0) == 42
        async with consumer(kafka, group_id=group) as client:
            assert await client.committed(tp0) == 42
            assert await client.committed(tp1) == 7
            client.assign([tp0])
            assert await client.position(tp0) == 42  # resumes at the committed offset
            records = (await client.getmany(tp0, timeout_ms=2000, max_records=1))[tp0]
            assert records[0].offset == 42

    run(body())


class Recorder(ConsumerRebalanceListener):
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[tuple[float, str, list[int]]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.events.append((time.monotonic(), "revoked", sorted(tp.partition for tp in revoked)))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.events.append((time.monotonic(), "assigned", sorted(tp.partition for tp in assigned)))


class Member:
    """A subscribed group member polling in the background, as the runtime's loop would."""

    def __init__(self, kafka: Broker, topic: str, group: str, name: str) -> None:
        self.listener = Recorder(name)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        self.topic = topic
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> Member:
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=self.listener)
        self._poller = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        while True:
            await self.consumer.getmany(timeout_ms=100)

    def owns(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    @property
    def generation(self) -> int:
        return int(self.consumer._coordinator.generation)  # private: for the tansu quirk

    async def leave(self) -> None:
        """Work around tansu's generation 0: aiokafka sends LeaveGroup only if generation > 0."""
        coordinator = self.consumer._coordinator
        if coordinator.generation == 0:
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            await coordinator._send_req(request)
        await self.stop()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.consumer.stop()


@contextlib.asynccontextmanager
async def members(*pending: Member) -> AsyncIterator[tuple[Member, ...]]:
    try:
        await asyncio.gather(*(m.start() for m in pending))
        yield pending
    finally:
        for member in pending:
            await member.stop()


def test_group_splits_partitions_and_a_clean_leave_hands_them_over(kafka: Broker) -> None:
    topic = unique("rebalance")
    group = unique("group")
    tp0 = TopicPartition(topic, 0)

    async def body() -> None:
        await create_topic(kafka, topic, 4)
        async with producer(kafka) as client:
            await produce_batches(client, topic, 0, 10)
        a, b = Member(kafka, topic, group, "a"), Member(kafka, topic, group, "b")
        async with members(a, b):
            joined = await wait_until(lambda: len(a.owns()) == len(b.owns()) == 2, 20)
            assert a.owns() | b.owns() == {0, 1, 2, 3}
            generation = a.generation
            owner = a if 0 in a.owns() else b
            await owner.consumer.commit({tp0: OffsetAndMetadata(3, "")})

            started = time.monotonic()
            await b.leave()
            handover = await wait_until(lambda: a.owns() == {0, 1, 2, 3}, 20)
            assert handover < SESSION_MS / 1000  # the leave was honoured, nothing expired
            assert await a.consumer.committed(tp0) == 3
            assert a.listener.events[-1][1:] == ("assigned", [0, 1, 2, 3])
            assert a.listener.events[-1][0] > started
        note(
            f"group of 2 joined (generation {generation}) in {joined:.1f} s; "
            f"after LeaveGroup the survivor owned all partitions in {handover:.1f} s"
        )
        if not kafka.external:
            assert generation == 0  # tansu's first generation (Kafka's is 1)

    run(body())


CHILD = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main(bootstrap, topic, group, session_ms, heartbeat_ms):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
        enable_auto_commit=False, session_timeout_ms=int(session_ms),
        heartbeat_interval_ms=int(heartbeat_ms))
    await consumer.start()
    consumer.subscribe([topic])
    while True:
        await consumer.getmany(timeout_ms=100)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
def test_lost_members_are_noticed_after_the_session_timeout(kafka: Broker, tmp_path: Path) -> None:
    """Three groups at once: a member killed with SIGKILL, one stopped at generation 0, one
    stopped at generation >= 1. Only the last leaves at once; the others expire."""

    async def killed() -> float:
        topic = group = unique("killed")
        await create_topic(kafka, topic, 4)
        log = tmp_path / "child.log"
        with open(log, "wb") as out:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    kafka.bootstrap,
                    topic,
                    group,
                    str(SESSION_MS),
                    str(HEARTBEAT_MS),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            async with members(Member(kafka, topic, group, "survivor")) as (a,):
                try:
                    await wait_until(lambda: len(a.owns()) == 2, 20)
                except TimeoutError:
                    raise AssertionError(log.read_text()) from None
                os.kill(child.pid, signal.SIGKILL)
                await asyncio.to_thread(child.wait)
                return await wait_until(lambda: a.owns() == {0, 1, 2, 3}, 30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()

    async def stopped(first_generation: bool) -> tuple[int, float]:
        topic = group = unique("stopped")
        await create_topic(kafka, topic, 4)
        a = Member(kafka, topic, group, "a")
        async with members(a):
            if not first_generation:  # a alone makes generation 0; b's join starts the next
                await wait_until(lambda: len(a.owns()) == 4, 20)
            async with members(Member(kafka, topic, group, "b")) as (b,):
                await wait_until(lambda: len(a.owns()) == len(b.owns()) == 2, 20)
                generation = b.generation
                await b.stop()  # aiokafka's stop(): LeaveGroup only when generation > 0
                return generation, await wait_until(lambda: a.owns() == {0, 1, 2, 3}, 30)

    async def body() -> None:
        async with asyncio.TaskGroup() as group:  # a failure cancels and awaits the others
            kill = group.create_task(killed())
            first = group.create_task(stopped(first_generation=True))
            later = group.create_task(stopped(first_generation=False))
        kill_s, (gen0, stop0_s), (gen1, stop1_s) = kill.result(), first.result(), later.result()
        note(
            f"session_timeout_ms={SESSION_MS} heartbeat_interval_ms={HEARTBEAT_MS}: "
            f"kill -9 -> survivor owns all after {kill_s:.1f} s; stop() at generation "
            f"{gen0} -> {stop0_s:.1f} s; stop() at generation {gen1} -> {stop1_s:.1f} s"
        )
        session = SESSION_MS / 1000
        assert session * 0.8 < kill_s < session * 3
        assert gen1 > 0
        assert stop1_s < session
        if gen0 == 0:
            assert session * 0.8 < stop0_s < session * 3
        else:
            assert stop0_s < session

    run(body(), timeout=60)


# -- failures -----------------------------------------------------------------------------


def test_nothing_listening_fails_at_start() -> None:
    """Refused: KafkaConnectionError at once. Accepted but mute: after request_timeout_ms."""

    async def start(client: Any, timeout: float = 10.0) -> tuple[type[BaseException], float]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(client.start(), timeout)
        except (KafkaConnectionError, TimeoutError) as exc:
            return type(exc), time.perf_counter() - started
        finally:
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise AssertionError("started without a broker")

    async def body() -> None:
        refused = "127.0.0.1:1"
        for client in (
            AIOKafkaProducer(bootstrap_servers=refused),
            AIOKafkaConsumer(bootstrap_servers=refused),
            AIOKafkaAdminClient(bootstrap_servers=refused),
        ):
            error, elapsed = await start(client)
            assert error is KafkaConnectionError
            assert elapsed < 2
        with socket.socket() as mute:  # listens, never accepts: connect works, no answer
            mute.bind(("127.0.0.1", 0))
            mute.listen()
            address = f"127.0.0.1:{mute.getsockname()[1]}"
            error, mute_s = await start(
                AIOKafkaProducer(bootstrap_servers=address, request_timeout_ms=1000)
            )
            assert error is KafkaConnectionError
            assert 0.8 < mute_s < 3
            # the default request_timeout_ms is 40 s: bound start() from outside instead
            error, _ = await start(AIOKafkaProducer(bootstrap_servers=address), 0.5)
            assert error is TimeoutError
        note(
            f"mute listener: KafkaConnectionError after {mute_s:.2f} s "
            f"(request_timeout_ms=1000); wait_for(start(), 0.5) -> TimeoutError"
        )

    run(body())


def test_broker_death_fails_send_after_request_timeout(tmp_path: Path) -> None:
    try:
        broker = start_broker(log_dir=tmp_path)
    except BrokerUnavailable as exc:
        pytest.skip(f"cannot start a private tansu: {exc}")

    async def body() -> tuple[type[BaseException], float]:
        async with producer(broker, request_timeout_ms=1500, retry_backoff_ms=100) as client:
            assert (await client.send_and_wait("dies", b"x", partition=0)).offset == 0
            await asyncio.to_thread(broker.kill)
            started = time.perf_counter()
            with pytest.raises(KafkaError) as caught:
                await client.send_and_wait("dies", b"y", partition=0)
            return caught.type, time.perf_counter() - started

    try:
        error, elapsed = run(body())
    finally:
        broker.stop()
    note(
        f"broker gone: send_and_wait raised {error.__name__} after {elapsed:.2f} s "
        "(request_timeout_ms=1500)"
    )
    assert elapsed < 1.5 + 2
