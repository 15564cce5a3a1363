"""The plan's topics on a Kafka cluster: made as the plan says, and watched for a lost cluster.

No aiokafka client of flowgraph's lets a metadata request create a topic (`no_auto_create`):
a topic exists because `KafkaTopics.create` made it with the plan's partitions. While a run
goes on, a watch checks that the cluster still holds those topics; if not (a new, empty
cluster at the same address, or storage wiped), the run stops with `BrokerDataLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from flowgraph.errors import ConfigurationError, FlowgraphError
from flowgraph.runtime.kafka_config import KafkaSettings
from flowgraph.runtime.transport import TP
from planner.physical import TopicSpec

__all__ = ["BrokerDataLost", "KafkaTopics", "no_auto_create"]

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
    by a client marked by `no_auto_create` change, so other aiokafka users in the process
    keep aiokafka's behaviour.
    """

    def build(self, request_struct_class: Any) -> Any:
        # read when sent, not when made: the admin client makes it before sending it
        if _NO_AUTO_CREATE.get() and getattr(self, "_allow_auto_topic_creation", 0) is None:
            self._allow_auto_topic_creation = False
        return super().build(request_struct_class)


aiokafka.client.MetadataRequest = _MetadataRequest
aiokafka.admin.client.MetadataRequest = _MetadataRequest


def no_auto_create(*clients: Any) -> None:
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


class BrokerDataLost(FlowgraphError):
    """The cluster the worker writes to lost its data (or was replaced by an empty one)."""


class KafkaTopics:
    """Creates and checks the plan's topics with the transport's admin client and producer,
    and watches the cluster for the loss of its data once they exist."""

    def __init__(
        self,
        settings: KafkaSettings,
        url: str,
        end_offsets: Callable[[Sequence[TP]], Awaitable[dict[TP, int]]],
    ) -> None:
        """`end_offsets` tells whether an internal topic with the wrong partition count is
        empty (it is then recreated)."""
        self.settings = settings
        self.url = url
        self._end_offsets = end_offsets
        self.admin: AIOKafkaAdminClient | None = None
        self.producer: AIOKafkaProducer | None = None
        self.partitions: dict[str, int] = {}
        """Partition count of each topic the plan uses, as made or found."""
        self._cluster_id: str | None = None
        self._brokers = 1
        self.watch: asyncio.Task[None] | None = None
        """The cluster watch, started once the topics exist."""
        self.lost_event = asyncio.Event()
        """Set with `failure`: a flush awaiting acks gives up on it."""
        self.failure: BrokerDataLost | None = None
        """Set when the watch finds that the cluster lost its data; the run then stops."""
        self.on_failure: Callable[[], None] | None = None
        """Called once when `failure` is set (`fg.run` stops the worker with it)."""

    async def connect(self, admin: AIOKafkaAdminClient, producer: AIOKafkaProducer) -> None:
        """Use the transport's started clients; note the cluster's id and size."""
        self.admin, self.producer = admin, producer
        cluster = await admin.describe_cluster()
        self._cluster_id = cluster.get("cluster_id")
        self._brokers = max(len(cluster.get("brokers") or ()), 1)

    async def stop_watch(self) -> None:
        """Stop the cluster watch, if it runs."""
        if self.watch is not None:
            self.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watch
            self.watch = None

    @property
    def replication_factor(self) -> int:
        """Of the topics flowgraph creates: the setting, else min(3, brokers in the cluster)."""
        return self.settings.replication_factor or min(3, self._brokers)

    async def create(self, specs: Sequence[TopicSpec]) -> None:
        """Make the plan's topics exist as it says, before any client reads or writes them.

        Missing internal and sink topics are created with the plan's partitions, the
        replication factor and (internal ones) the configured topic configs; a missing source
        topic stops the run in one sentence unless `create_source_topics` is set. A topic
        with another partition count: an empty internal one is recreated (a client made it,
        e.g. after the broker lost its data), anything else is one sentence.
        """
        assert self.admin is not None and self.producer is not None
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
            self.partitions[spec.name] = await self.partition_count(spec.name, spec.partitions)
        if self.watch is None:
            self.watch = asyncio.ensure_future(self._watch_cluster())

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
        assert self.admin is not None
        if not topics:
            return
        response = await self.admin.create_topics(list(topics))
        for name, code, *rest in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                error = rest[0] if rest and rest[0] else f"error code {code}"
                msg = f"cannot create topic {name!r} on {self.url}: {error}"
                raise ConfigurationError(msg)

    async def _mismatch(self, spec: TopicSpec, count: int) -> None:
        """`spec.name` exists with `count` partitions, not the plan's: recreate or refuse."""
        assert self.admin is not None
        if not (spec.internal or spec.role == "dlq"):
            msg = (
                f"topic {spec.name!r} on {self.url} has {count} partitions but the graph "
                f"declares {spec.partitions}; set the graph's partitions={count} for it, or "
                f"repartition the data into a topic with {spec.partitions} partitions"
            )
            raise ConfigurationError(msg)
        ends = await self._end_offsets([(spec.name, p) for p in range(count)])
        if any(ends.values()):
            msg = (
                f"internal topic {spec.name!r} on {self.url} holds data written with {count} "
                f"partitions but the graph now has {spec.partitions}, so its partitions "
                "changed; reset the application's internal topics (delete them and the "
                "local state) to run it"
            )
            raise ConfigurationError(msg)
        await self.admin.delete_topics([spec.name])
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
        admin client's requests are marked by `no_auto_create`.
        """
        assert self.admin is not None
        if not topics:  # an empty list would mean every topic
            return (await self.admin.describe_cluster()).get("cluster_id"), {}
        found = (await self.admin._get_cluster_metadata(list(topics))).to_object()
        counts = {
            t["topic"]: len(t["partitions"]) for t in found["topics"] if not t.get("error_code")
        }
        return found.get("cluster_id"), counts

    async def partition_count(self, topic: str, expected: int | None = None) -> int:
        assert self.producer is not None
        for _ in range(50):
            parts = await self.producer.partitions_for(topic)
            if parts and (expected is None or len(parts) == expected):
                return len(parts)
            await asyncio.sleep(0.1)
            if parts:  # cached from before the topic was made again: ask afresh
                await self.producer.client.force_metadata_update()
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
        self.lost_event.set()
        if self.on_failure is not None:
            self.on_failure()

    async def check_lost(self) -> BrokerDataLost | None:
        """`failure`, checked now: for a client error that may come from a lost cluster.

        A group commit can fail on the new, empty cluster before the watch looks, so the
        caller asks, giving the broker `WATCH_TIMEOUT` seconds to answer.
        """
        deadline = time.monotonic() + WATCH_TIMEOUT
        while self.failure is None and self.watch is not None and time.monotonic() < deadline:
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
            self._metadata(list(self.partitions)), WATCH_TIMEOUT
        )
        if self._cluster_id is not None and cluster_id and cluster_id != self._cluster_id:
            return f"its cluster id changed from {self._cluster_id!r} to {cluster_id!r}"
        gone = sorted(t for t in self.partitions if t not in have)
        if gone:
            return f"topic{'s' if len(gone) > 1 else ''} {', '.join(map(repr, gone))} vanished"
        changed = sorted(t for t, n in self.partitions.items() if have[t] != n)
        if changed:
            name = changed[0]
            return f"topic {name!r} now has {have[name]} partitions, not {self.partitions[name]}"
        return None
