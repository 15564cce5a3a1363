"""FlowgraphAssignor without a broker: what goes into a join, what the leader sends back.

The group protocol structs are aiokafka's own, encoded and decoded as they travel; the
cluster is the one thing stood in for (its partition counts). The broker round trip is in
tests/integration/test_kafka_assignor.py.
"""

from __future__ import annotations

import logging

import msgspec
import pytest
from aiokafka.coordinator.protocol import ConsumerProtocol

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.kafka import KafkaTransport
from flowgraph.runtime.kafka_assignor import (
    FlowgraphAssignor,
    decode_assignment,
    decode_state,
    encode_state,
)
from flowgraph.runtime.kafka_config import parse
from planner.assignment import MemberAssignment, MemberState, Topology

TOPO = Topology(
    topics={0: ("orders", "payments"), 1: ("g-by_user-repartition",)},
    partitions={0: 4, 1: 2},
    stateful={1},
)


class Cluster:
    """The partition counts aiokafka's ClusterMetadata would report."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.topics.get(topic)
        return None if n is None else set(range(n))


def joined(assignor: FlowgraphAssignor, topics: list[str]) -> object:
    """A member's join metadata as the leader receives it (encoded, then decoded)."""
    raw = assignor.metadata(topics).encode()
    return ConsumerProtocol.METADATA.decode(raw)


def test_state_round_trips_and_garbage_is_an_empty_state() -> None:
    state = MemberState(active={(0, 1)}, standby={(1, 0)}, offsets={(1, 0): 42, (0, 1): -1})
    assert decode_state(encode_state(state)) == state
    for junk in (b"", None, b"\x00\xff", msgspec.msgpack.encode({"v": 99, "a": [[0, 1]]})):
        assert decode_state(junk) == MemberState()
        assert decode_assignment(junk) == MemberAssignment()


def test_leader_assigns_tasks_with_their_partitions_and_standbys() -> None:
    topics = ["orders", "payments", "g-by_user-repartition"]
    members = {name: FlowgraphAssignor(TOPO, 1, MemberState) for name in ("member-a", "member-b")}
    # b ran repartition task (1, 1) before and holds its state.
    members["member-b"].state = lambda: MemberState(active={(1, 1)}, offsets={(1, 1): 9})
    metas = {name: joined(a, topics) for name, a in members.items()}
    cluster = Cluster({"orders": 4, "payments": 4, "g-by_user-repartition": 2})
    leader = members["member-a"]
    out = leader.assign(cluster, metas)
    for name, assignor in members.items():
        raw = out[name].encode()  # as SyncGroup carries it
        assignor.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(raw))
    a, b = members["member-a"], members["member-b"]
    assert (1, 1) in b.active and (1, 1) in a.standby
    assert a.active | b.active == set(TOPO.tasks()) and not a.active & b.active
    assert a.standby | b.standby == {(1, 0), (1, 1)}
    for name, assignor in members.items():
        parts = {(t, p) for t, ps in out[name].assignment for p in ps}
        want = {tp for task in assignor.active for tp in TOPO.partitions_of(task)}
        assert parts == want
        # co-partitioned topics travel together
        assert {p for t, p in parts if t == "orders"} == {p for t, p in parts if t == "payments"}


def test_missing_topic_assigns_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    assignor = FlowgraphAssignor(TOPO, 0, MemberState)
    metas = {"m": joined(assignor, ["orders", "payments", "g-by_user-repartition"])}
    with caplog.at_level(logging.WARNING):
        out = assignor.assign(Cluster({"orders": 4, "g-by_user-repartition": 1}), metas)
    parts = {(t, p) for t, ps in out["m"].assignment for p in ps}
    assert parts == {("orders", p) for p in range(4)} | {("g-by_user-repartition", 0)}
    assert "payments" in caplog.text and "g-by_user-repartition" in caplog.text
    # a member that cannot say its state still joins, with none
    broken = FlowgraphAssignor(TOPO, 0, lambda: 1 / 0)  # type: ignore[arg-type, return-value]
    assert decode_state(broken.metadata(["orders"]).user_data) == MemberState()


def test_static_membership_on_a_broker_without_it_is_one_sentence() -> None:
    """The JoinGroup versions a broker announces (its ApiVersions answer) decide."""

    class Conn:
        def __init__(self, top: int) -> None:
            self._versions = {11: (0, top)}

    class Client:
        _conns: dict[str, Conn] = {}

    class Admin:
        _client = Client()

    settings = parse("kafka://h:9092?group_instance_id=worker-a", {})
    transport = KafkaTransport(settings)
    transport._admin = Admin()  # type: ignore[assignment]
    Client._conns = {"a": Conn(2)}
    with pytest.raises(ConfigurationError) as info:
        transport._check_static_membership()
    assert "group_instance_id" in str(info.value) and "\n" not in str(info.value)
    Client._conns = {"a": Conn(9)}
    transport._check_static_membership()
    Client._conns = {}  # not known yet: go on
    transport._check_static_membership()
