"""FlowgraphAssignor through the test broker, with plain aiokafka consumers in one group.

What the broker must do for it: accept the custom protocol name, carry each member's join
user data to the leader and each assignment's user data back (the standby sets), and, for
static members (``group_instance_id``), hand a restarted member its partitions back
without a rebalance.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flowgraph.runtime.kafka import KafkaTransport
from flowgraph.runtime.kafka_assignor import FlowgraphAssignor, decode_state
from flowgraph.runtime.kafka_config import parse
from flowgraph.runtime.kafka_consumer import KafkaConsumer
from planner.assignment import MemberState, TaskId, Topology
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

SETTLE_TIMEOUT = 60.0
"""Seconds for a group to settle (tansu holds joins for a few seconds each)."""


def run(coro: Coroutine[Any, Any, Any], timeout: float = 120.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Recording(FlowgraphAssignor):
    """The assignor, noting the states the leader decoded from the joins it got."""

    seen: dict[str, MemberState] | None = None

    def assign(self, cluster: Any, members: Any) -> Any:
        self.seen = {mid: decode_state(meta.user_data) for mid, meta in members.items()}
        return super().assign(cluster, members)


class Member:
    """One plain aiokafka consumer with the assignor; it reports what it holds, as a worker
    would: its tasks, and offsets for their state (actives ahead of standbys)."""

    def __init__(self, kafka: Broker, group: str, topo: Topology, **config: Any) -> None:
        self.assignor = Recording(topo, 1, self.state)
        self.revoked: list[frozenset[Any]] = []
        self.assigned: list[frozenset[Any]] = []
        self.fixed: MemberState | None = None
        """When set, reported instead (a restarted worker that kept its state on disk)."""
        self.reported = MemberState()
        """What this member sent with its last join."""
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            partition_assignment_strategy=(self.assignor,),
            **config,
        )

    def state(self) -> MemberState:
        a = self.assignor
        self.reported = self.fixed or MemberState(
            active=a.active,
            standby=a.standby,
            offsets={**dict.fromkeys(a.standby, 5), **dict.fromkeys(a.active, 10)},
        )
        return self.reported

    async def start(self, topics: list[str]) -> None:
        member = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked:
                    member.revoked.append(frozenset(revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                member.assigned.append(frozenset(assigned))

        await self.consumer.start()
        self.consumer.subscribe(topics, listener=Listener())

    def partitions(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}


async def settle(
    members: list[Member], done: Callable[[], bool], timeout: float = SETTLE_TIMEOUT
) -> float:
    """Poll every member (aiokafka rebalances inside its own tasks) until `done`."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < timeout, "the group did not settle"
        await asyncio.gather(*(m.consumer.getmany(timeout_ms=50) for m in members))
    return time.monotonic() - start


async def poll(members: list[Member], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.gather(*(m.consumer.getmany(timeout_ms=50) for m in members))


def covers(members: list[Member], topo: Topology) -> Callable[[], bool]:
    """True once the members' tasks are every task once, with their partitions owned."""

    def check() -> bool:
        tasks = sorted(t for m in members for t in m.assignor.active)
        return tasks == topo.tasks() and all(
            m.partitions() == {tp for t in m.assignor.active for tp in topo.partitions_of(t)}
            for m in members
        )

    return check


async def make_topics(kafka: Broker, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, p, 1) for n, p in topics.items()])
    finally:
        await admin.close()


def names(prefix: str) -> tuple[str, str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return (f"{prefix}-{tag}", f"orders-{tag}", f"payments-{tag}", f"by-user-{tag}")


async def stop_all(members: list[Member]) -> None:
    for m in members:
        await m.consumer.stop()


@pytest.mark.slow  # tansu holds each join and sync for seconds: about 15 s
def test_three_members_get_tasks_and_standbys_and_a_leaver_fails_over(kafka: Broker) -> None:
    group, orders, payments, repartition = names("assign")
    # sub 0 joins orders with payments (co-partitioned); sub 1 reads a repartition topic.
    topo = Topology(
        topics={0: (orders, payments), 1: (repartition,)}, partitions={0: 4, 1: 2}, stateful={0, 1}
    )
    topics = [orders, payments, repartition]

    async def scenario() -> None:
        await make_topics(kafka, {orders: 4, payments: 4, repartition: 2})
        config = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
        members = [Member(kafka, group, topo, **config) for _ in range(3)]
        try:
            for m in members:
                await m.start(topics)
            took = await settle(members, covers(members, topo))
            print(f"[assignor] 3 members settled in {took:.1f} s")
            by_task = {t: m for m in members for t in m.assignor.active}
            standby_of: dict[TaskId, Member] = {}
            for m in members:
                assert not m.assignor.active & m.assignor.standby
                for t in m.assignor.standby:
                    assert t not in standby_of  # one standby each (standby_replicas=1)
                    standby_of[t] = m
            # the standby sets came back through the broker, one per task
            assert sorted(standby_of) == topo.tasks()
            assert sorted(len(m.assignor.active) for m in members) == [2, 2, 2]
            # a member leaves (LeaveGroup): its tasks go to their standbys
            gone = members.pop(0)
            lost = set(gone.assignor.active)
            await gone.consumer.stop()
            took = await settle(members, covers(members, topo))
            print(f"[assignor] failover after a leave took {took:.1f} s")
            for t in lost:
                if standby_of[t] is not gone:
                    assert t in standby_of[t].assignor.active, t
            # the leader got the survivors' join user data as they sent it
            [seen] = [m.assignor.seen for m in members if m.assignor.seen is not None][-1:]
            assert len(seen) == len(members)
            assert all(m.reported in seen.values() for m in members)
            for m in members:  # the survivors kept their own tasks
                assert {t for t, owner in by_task.items() if owner is m} <= m.assignor.active
        finally:
            await stop_all(members)

    run(scenario())


@pytest.mark.slow  # tansu holds a static member's join and sync for seconds: about 30 s
def test_a_static_member_restarted_gets_its_partitions_back_without_a_rebalance(
    kafka: Broker,
) -> None:
    group, orders, payments, repartition = names("static")
    topo = Topology(
        topics={0: (orders, payments), 1: (repartition,)}, partitions={0: 2, 1: 2}, stateful={1}
    )
    topics = [orders, payments, repartition]
    # tansu holds a static join for half a session and its sync for 3 s, and does not count
    # the rejoin as contact: the session must outlast stop + rejoin + sync (13 s of 20 here)
    config = {"session_timeout_ms": 20_000, "heartbeat_interval_ms": 500}

    async def scenario() -> None:
        await make_topics(kafka, {orders: 2, payments: 2, repartition: 2})
        a = Member(kafka, group, topo, group_instance_id="worker-a", **config)
        b = Member(kafka, group, topo, group_instance_id="worker-b", **config)
        members = [a, b]
        try:
            for m in members:
                await m.start(topics)
            took = await settle(members, covers(members, topo))
            print(f"[assignor] 2 static members settled in {took:.1f} s")
            await poll(members, 1.5)  # a few heartbeats, as a running worker would have sent
            before_a = (a.partitions(), a.assignor.active, a.assignor.standby)
            before_b = b.partitions()
            # tansu keeps a static member that comes back only if its join carries the same
            # user data as its last one (Kafka takes new data too): report the same state.
            kept = a.reported
            stopping = KafkaConsumer(a.consumer, {}, None, group, static=True)  # type: ignore[arg-type]
            await stopping.stop()  # a static member: no LeaveGroup
            a2 = Member(kafka, group, topo, group_instance_id="worker-a", **config)
            a2.fixed = kept
            members = [a2, b]
            await a2.start(topics)
            took = await settle(members, lambda: bool(a2.assignor.active))
            print(f"[assignor] static member back in {took:.1f} s")
            assert (a2.partitions(), a2.assignor.active, a2.assignor.standby) == before_a
            await poll(members, 3.0)  # a rebalance, were there one, would show by now
            assert b.revoked == [] and b.partitions() == before_b
        finally:
            await stop_all(members)

    run(scenario())


def test_the_kafka_transport_joins_with_the_assignor_and_the_instance_id(kafka: Broker) -> None:
    group, orders, payments, _ = names("transport")
    topo = Topology(topics={0: (orders, payments)}, partitions={0: 2}, stateful={0})

    async def scenario() -> None:
        await make_topics(kafka, {orders: 2, payments: 2})
        settings = parse(f"{kafka.url}?group_instance_id=worker-t&heartbeat_interval_ms=500", {})
        transport = KafkaTransport(settings)
        await transport.start()
        assignor = FlowgraphAssignor(topo, None, MemberState)
        try:
            consumer = await transport.consumer(group, [orders, payments], assignor=assignor)
            start = time.monotonic()
            while not consumer.assignment():
                assert time.monotonic() - start < SETTLE_TIMEOUT
                await consumer.getmany(100, 0.05)
            assert assignor.active == {(0, 0), (0, 1)} and assignor.standby == frozenset()
            assert consumer.assignment() == {(t, p) for t in (orders, payments) for p in (0, 1)}
            # a static member: aiokafka joined with the instance id
            coordinator = consumer._consumer._coordinator  # type: ignore[attr-defined]
            assert coordinator._group_instance_id == "worker-t"
            await consumer.stop()
        finally:
            await transport.stop()

    run(scenario())
