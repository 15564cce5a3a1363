"""The group's partition assignor on Kafka: tasks, not partitions, with standbys.

aiokafka's own assignors hand out partitions one by one, so the two topics a task joins can
land on different workers and nothing is known of where state is. `FlowgraphAssignor` runs
on the group leader inside aiokafka's rebalance: it reads what each member reports in its
join (`MemberState` in the subscription's user data), decides with the pure
`planner.assignment.assign`, and sends each member its partitions (every source topic of a
task together) plus, in the assignment's user data, its task sets. aiokafka calls
`on_assignment` on every member before the rebalance listener's ``on_partitions_assigned``,
so the worker finds `active` and `standby` set when its callback runs.

The user data is msgpack (msgspec) with a version number; what a member cannot decode (an
older or newer flowgraph, another client) counts as an empty state, never as an error:
a rebalance must not fail because one member speaks differently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from planner.assignment import MemberAssignment, MemberState, TaskId, Topology, assign

__all__ = [
    "FORMAT_VERSION",
    "FlowgraphAssignor",
    "decode_assignment",
    "decode_state",
    "encode_assignment",
    "encode_state",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the user data below; another version decodes as nothing."""
PROTOCOL_VERSION = 0
"""Version of Kafka's consumer protocol structs (the fields around the user data)."""


class _State(msgspec.Struct):
    """`MemberState` on the wire: tasks as ``[sub, partition]``, offsets as triples."""

    v: int
    a: list[tuple[int, int]] = []
    s: list[tuple[int, int]] = []
    o: list[tuple[int, int, int]] = []


class _Assignment(msgspec.Struct):
    v: int
    a: list[tuple[int, int]] = []
    s: list[tuple[int, int]] = []


_encoder = msgspec.msgpack.Encoder()
_state = msgspec.msgpack.Decoder(_State)
_assignment = msgspec.msgpack.Decoder(_Assignment)


def encode_state(state: MemberState) -> bytes:
    """`state` as the user data of a join."""
    wire = _State(
        v=FORMAT_VERSION,
        a=sorted(state.active),
        s=sorted(state.standby),
        o=sorted((sub, p, off) for (sub, p), off in state.offsets.items()),
    )
    return _encoder.encode(wire)


def decode_state(data: bytes | None) -> MemberState:
    """A member's `MemberState` from its join's user data; empty if undecodable."""
    try:
        wire = _state.decode(data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return MemberState()
    if wire.v != FORMAT_VERSION:
        return MemberState()
    return MemberState(
        active=wire.a, standby=wire.s, offsets={(sub, p): off for sub, p, off in wire.o}
    )


def encode_assignment(share: MemberAssignment) -> bytes:
    """A member's task sets as the user data of its assignment."""
    return _encoder.encode(
        _Assignment(v=FORMAT_VERSION, a=sorted(share.active), s=sorted(share.standby))
    )


def decode_assignment(data: bytes | None) -> MemberAssignment:
    """The task sets of an assignment's user data; empty if undecodable."""
    try:
        wire = _assignment.decode(data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return MemberAssignment()
    if wire.v != FORMAT_VERSION:
        return MemberAssignment()
    return MemberAssignment(active=wire.a, standby=wire.s)


class FlowgraphAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """aiokafka partition assignor of a flowgraph group, used as an instance.

    `state` is called at every join for what this member holds now (see `MemberState`);
    `active` and `standby` are this member's tasks from the last assignment.
    """

    name = "flowgraph"

    def __init__(
        self,
        topology: Topology,
        standby_replicas: int | None,
        state: Callable[[], MemberState],
    ) -> None:
        self.topology = topology
        self.standby_replicas = standby_replicas
        self.state = state
        self.active: frozenset[TaskId] = frozenset()
        self.standby: frozenset[TaskId] = frozenset()

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        """What this member sends with its join: its subscription and its state."""
        try:
            state = self.state()
        except Exception:  # a join must go out; the group then sees no state here
            log.exception("flowgraph assignor: reading this member's state failed")
            state = MemberState()
        return ConsumerProtocolMemberMetadata(PROTOCOL_VERSION, list(topics), encode_state(state))

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        """On the leader: every member's share, tasks mapped to their topic partitions.

        A task's partitions that the cluster does not have (a topic missing, or narrower
        than its sub-topology) are left out with a warning; the rest is assigned.
        """
        states = {mid: decode_state(meta.user_data) for mid, meta in members.items()}
        shares = assign(self.topology, states, self.standby_replicas)
        counts: dict[str, set[int] | None] = {}
        missing: set[str] = set()
        taken: set[tuple[str, int]] = set()
        out: dict[str, ConsumerProtocolMemberAssignment] = {}
        for mid, share in sorted(shares.items()):
            subscribed = set(members[mid].subscription)
            topics: dict[str, list[int]] = {}
            for task in sorted(share.active):
                for topic, p in self.topology.partitions_of(task):
                    if topic not in counts:
                        counts[topic] = cluster.partitions_for_topic(topic)
                    existing = counts[topic]
                    if existing is None or p not in existing or topic not in subscribed:
                        missing.add(topic)
                        continue
                    if (topic, p) in taken:  # two sub-topologies read one topic: first wins
                        continue
                    taken.add((topic, p))
                    topics.setdefault(topic, []).append(p)
            out[mid] = ConsumerProtocolMemberAssignment(
                PROTOCOL_VERSION,
                sorted((topic, sorted(ps)) for topic, ps in topics.items()),
                encode_assignment(share),
            )
        if missing:
            log.warning(
                "flowgraph assignor: partitions of %s are not in the cluster metadata or "
                "not subscribed; assigned the rest",
                ", ".join(sorted(missing)),
            )
        return out

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        """On every member, before ``on_partitions_assigned``: keep its task sets."""
        share = decode_assignment(assignment.user_data)
        self.active = share.active
        self.standby = share.standby
