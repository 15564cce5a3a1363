"""What the executor needs from a broker: topics, a group consumer, a producer.

Records travel as plain tuples because the hot loop unpacks millions of them:
``Message = (key, value, timestamp, offset, headers)``, timestamp in seconds (float),
headers a tuple of ``(str, bytes)`` pairs or None. Two implementations: `memory://`
(in-process, the embedded default) and `kafka://` (aiokafka).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from planner.physical import TopicSpec

__all__ = [
    "TP",
    "Consumer",
    "InProcessTransport",
    "MembershipLost",
    "Message",
    "OutRecord",
    "Transport",
]

TP = tuple[str, int]
"""A topic partition."""
Message = tuple[Any, Any, float, int, Any]
"""``(key, value, timestamp, offset, headers)`` as read from a topic."""
OutRecord = tuple[int, Any, Any, float, Any]
"""``(partition, key, value, timestamp, headers)`` to be written to a topic."""
Push = Callable[[Any, Any, float, int, Any], None]
"""``push(key, value, timestamp, offset, headers)``: hand one record to a step."""
Write = Callable[[int, Any, Any, float, Any], None]
"""``write(partition, key, value, timestamp, headers)``: send one record to a topic."""


class MembershipLost(Exception):
    """A commit found that the group no longer counts this member as the owner of its
    partitions (expelled after a silent session, or a rebalance went on without it)."""


class Consumer(Protocol):
    """A member of a consumer group: fetches batches from the partitions assigned to it."""

    def assignment(self) -> frozenset[TP]:
        """Partitions this member owns now."""
        ...

    async def getmany(
        self, max_records: int, timeout: float, partitions: Sequence[TP] | None = None
    ) -> dict[TP, list[Message]]:
        """Records past the current positions of `partitions` (default: all assigned), up
        to `max_records` per partition on memory://, in all on Kafka (may be empty)."""
        ...

    def behind(self, tp: TP) -> bool:
        """True when `tp` may hold records not fetched yet (its end is not known, or past
        the fetch position): the scheduler waits for them before running past them."""
        ...

    def seek(self, tp: TP, offset: int) -> None:
        """Read `tp` from `offset` on (the offset of the next record to fetch)."""
        ...

    def highwater(self, tp: TP) -> int | None:
        """The end of `tp` as last seen by a fetch (None before the first)."""
        ...

    async def caught_up(self) -> bool:
        """True when this member has read every partition it owns to its end (or owns none)."""
        ...

    async def positions(self) -> dict[TP, int]:
        """Where this member reads next in each partition it owns, all fetched records
        having been handed out; {} while a fetch is still out."""
        ...

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Record that everything before these offsets is processed; `MembershipLost` if
        the group gave the partitions away meanwhile."""
        ...

    async def still_member(self) -> bool:
        """False when the group has expelled this member (asked before a commit that comes
        late, when heartbeats may have been held up); True when in doubt."""
        ...

    def pause(self, tps: Sequence[TP]) -> None:
        """Fetch nothing from `tps` (assigned, tasks still restoring) until `resume`."""
        ...

    def resume(self, tps: Sequence[TP]) -> None:
        """Fetch from `tps` again."""
        ...

    async def committed(self, tp: TP) -> int | None:
        """The group's committed offset of `tp`, or None."""
        ...

    async def group_offsets(self, tps: Sequence[TP]) -> dict[TP, int | None]:
        """The group's committed offsets of `tps` (None: none yet), whoever owns them.

        One request where the broker allows, so an until-idle worker can watch the whole
        group cheaply.
        """
        ...

    async def stop(self) -> None:
        """Leave the group."""
        ...


class Transport(Protocol):
    """A broker connection: `memory://` or `kafka://`."""

    url: str
    in_process: bool
    """True when the topics live in this process (one member owns every partition at once)."""
    encoded: bool
    """True when every topic holds bytes made by the topic codecs, as on Kafka; False lets
    internal topics hold Python objects (nobody else reads them). When True, written records
    carry origin headers and a restart scans for them, so nothing is written twice."""
    session_timeout: float
    """Seconds before the group moves a silent member's partitions to others (0 in process)."""

    async def start(self) -> None:
        """Connect; raise `ConfigurationError` with one sentence if the broker is unreachable."""
        ...

    async def stop(self) -> None:
        """Flush and disconnect."""
        ...

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics; a topic with other partitions is a `ConfigurationError`."""
        ...

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assigned: Callable[[frozenset[TP]], Awaitable[None]] | None = None,
        on_revoked: Callable[[frozenset[TP]], Awaitable[None]] | None = None,
        assignor: Any = None,
    ) -> Consumer:
        """Join `group` subscribed to `topics`; rebalances call the two callbacks.

        `assignor` (a `flowgraph.runtime.kafka_assignor.FlowgraphAssignor` on Kafka) decides
        which member gets which partitions; None keeps the transport's default. In-process
        transports have one member and ignore it.
        """
        ...

    def writer(self, topic: str) -> Callable[[int, Any, Any, float, Any], None]:
        """A sync ``write(partition, key, value, timestamp, headers)`` for the hot loop.

        Records may be buffered; `flush` waits until every one written so far is acked.
        """
        ...

    async def flush(self) -> None:
        """Wait until every record given to a `writer` is acknowledged."""
        ...

    def discard(self) -> None:
        """Drop records given to a `writer` and not flushed yet (their tasks are gone)."""
        ...

    async def produce(self, topic: str, records: Sequence[OutRecord]) -> dict[int, int]:
        """Write records and wait for the acks; return the last offset written per partition."""
        ...

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        """Records of `tp` with offsets in ``[start, end)`` (for restoring state)."""
        ...

    async def end_offset(self, tp: TP) -> int:
        """Offset the next record written to `tp` will get."""
        ...

    async def end_offsets(self, tps: Sequence[TP]) -> dict[TP, int]:
        """`end_offset` of each of `tps`, read together; safe to call while a restore reads."""
        ...

    def tail_reader(self) -> Any:
        """A group-less `tailer.TailReader` (or an awaitable of one) for following
        changelog partitions in the background: standby tasks, global tables."""
        ...


@runtime_checkable
class InProcessTransport(Transport, Protocol):
    """A transport whose topics live in this process, so records can skip the log."""

    def direct_writer(self, topic: str, readers: Sequence[Push]) -> Write:
        """A writer handing each record straight to ``readers[partition]``, storing nothing."""
        ...

    def end(self, topic: str, partition: int) -> int:
        """The end offset of a partition, without awaiting."""
        ...
