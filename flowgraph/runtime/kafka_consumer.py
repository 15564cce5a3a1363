"""A member of the graph's consumer group on Kafka: fetching, offsets, rebalances, leaving.

`KafkaTransport.consumer` makes one per worker. Rebalances reach the worker through
`RebalanceListener`; a commit the group refuses because the worker is no longer its member becomes
`MembershipLost`, so the worker drops its tasks and rejoins.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    for_code,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from flowgraph.runtime.transport import TP, MembershipLost, Message

__all__ = ["Assigned", "KafkaConsumer", "RebalanceListener"]

LEAVE_TIMEOUT = 5.0
"""Seconds at most to leave the group when a worker stops."""
JOINING_LEAVE_TIMEOUT = 1.0
"""Seconds at most to leave the group for a worker that owns no partitions."""
FETCH_GRACE = 0.1
"""Seconds a fetch may take beyond its timeout before `getmany` returns without it."""

Assigned = Callable[[frozenset[TP]], Awaitable[None]]


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalances to the worker: commit and drop on revoke, restore on assign."""

    def __init__(self, on_assigned: Assigned, on_revoked: Assigned) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.assigning: asyncio.Task[Any] | None = None
        """The task running `on_assigned` (it may restore state for long), for `stop`."""

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.on_revoked(frozenset((tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigning = asyncio.current_task()
        try:
            await self.on_assigned(frozenset((tp.topic, tp.partition) for tp in assigned))
        finally:
            self.assigning = None


class KafkaConsumer:
    """A member of the graph's consumer group (the `Consumer` protocol over aiokafka)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        written: Mapping[TP, int],
        admin: AIOKafkaAdminClient,
        group: str,
        static: bool = False,
    ) -> None:
        self._consumer = consumer
        self._static = static
        """A static member (``group_instance_id``): it never sends LeaveGroup, so a restart
        within the session timeout gets its partitions back without a rebalance."""
        self._written = written
        """End offsets this process's own writes reached, which a fetch may not show yet."""
        self._admin = admin
        self._group = group
        self._fetch: asyncio.Future[Any] | None = None
        """A getmany still waiting (for an assignment), picked up by the next call."""

    def assignment(self) -> frozenset[TP]:
        """Partitions this member owns now."""
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def getmany(
        self, max_records: int, timeout: float, partitions: Sequence[TP] | None = None
    ) -> dict[TP, list[Message]]:
        """Records fetched since the last call, as ``(key, value, seconds, offset, headers)``.

        `partitions` limits the fetch to those (the others' buffers are full); None fetches
        from all. Returns within about `timeout` even while the member has no partitions:
        aiokafka's own getmany then waits for an assignment however long a rebalance takes,
        and an idle worker must go on checking its group meanwhile. The fetch is left
        running, not cancelled (records it returns are not lost), and the next call picks it
        up; records it brings for a partition no longer wanted are buffered all the same.
        A member that owns partitions awaits its fetch inline (a rebalance that starts
        meanwhile holds it up for at most the session timeout).
        """
        if self._fetch is None:
            owned = self._consumer.assignment()
            if partitions is None:
                wanted = []
            else:  # only those still assigned (a rebalance may have moved some), and not none
                wanted = [tp for p in partitions if (tp := TopicPartition(*p)) in owned]
                if not wanted:
                    return {}
            fetch = self._consumer.getmany(
                *wanted, timeout_ms=int(timeout * 1000), max_records=max_records
            )
            if owned:  # the common case, awaited inline: a task per fetch halves throughput
                return self._messages(await fetch)
            self._fetch = asyncio.ensure_future(fetch)
        done, _ = await asyncio.wait({self._fetch}, timeout=timeout + FETCH_GRACE)
        if not done:
            return {}
        fetch, self._fetch = self._fetch, None
        return self._messages(fetch.result())

    @staticmethod
    def _messages(data: Any) -> dict[TP, list[Message]]:
        """aiokafka records as ``(key, value, seconds, offset, headers)`` per partition."""
        return {
            (tp.topic, tp.partition): [
                (r.key, r.value, r.timestamp / 1000, r.offset, r.headers or None) for r in records
            ]
            for tp, records in data.items()
            if records
        }

    def seek(self, tp: TP, offset: int) -> None:
        """Read `tp` from `offset` on."""
        self._consumer.seek(TopicPartition(*tp), offset)

    def fetch_position(self, tp: TP) -> int | None:
        """The offset the next fetch of `tp` starts at (None while unknown)."""
        try:
            state = self._consumer._subscription.subscription.assignment.state_value(
                TopicPartition(*tp)
            )
        except AttributeError:
            return None
        return state.position if state is not None and state.has_valid_position else None

    def behind(self, tp: TP) -> bool:
        """True unless `tp` is known to be fetched to its high watermark (and our own writes).

        The position is read from aiokafka's subscription state: the public `position` is
        async and may wait for a reset, and this is asked in the hot loop.
        """
        part = TopicPartition(*tp)
        high = self._consumer.highwater(part)
        if high is None:
            return True
        try:
            state = self._consumer._subscription.subscription.assignment.state_value(part)
            position = state.position if state.has_valid_position else None
        except AttributeError:  # another aiokafka: do not wait on what cannot be known
            return False
        if position is None:
            return True
        return bool(position < max(high, self._written.get(tp, 0)))

    def highwater(self, tp: TP) -> int | None:
        """The high watermark from the last fetch of `tp` (None before the first)."""
        high = self._consumer.highwater(TopicPartition(*tp))
        return None if high is None else int(high)

    async def caught_up(self) -> bool:
        """True when this member has read each partition it owns to its high watermark.

        True as well when it owns none (yet): whether the run may stop is then the group's
        question (see `flowgraph.runtime.idle`).
        """
        for part in self._consumer.assignment():
            high = self._consumer.highwater(part)
            if high is None:
                return False
            end = max(high, self._written.get((part.topic, part.partition), 0))
            if await self._consumer.position(part) < end:
                return False
        return True

    async def positions(self) -> dict[TP, int]:
        """Where this member reads next in each partition it owns ({} while a fetch is out).

        aiokafka moves a position past records the worker never sees, such as transaction
        markers, so it can be ahead of the last record handed out + 1.
        """
        if self._fetch is not None:
            return {}
        return {
            (part.topic, part.partition): int(await self._consumer.position(part))
            for part in self._consumer.assignment()
        }

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit the group's offsets (the next offset to read per partition).

        Raises `MembershipLost` when the group no longer counts this member as the owner
        (expelled after a silent session, or a rebalance went on without it); aiokafka
        rejoins by itself.
        """
        if not offsets:
            return
        try:
            await self._consumer.commit(
                {TopicPartition(*tp): OffsetAndMetadata(o, "") for tp, o in offsets.items()}
            )
        except (
            CommitFailedError,
            UnknownMemberIdError,
            RebalanceInProgressError,
            IllegalGenerationError,
            IllegalStateError,  # a partition is no longer assigned
        ) as exc:
            cause = exc.__cause__ if isinstance(exc, CommitFailedError) else None
            msg = type(cause or exc).__name__
            raise MembershipLost(msg) from exc

    async def still_member(self) -> bool:
        """False when the group no longer counts this member (it was expelled: a blocked
        event loop sent no heartbeat for a session); asks the coordinator with a heartbeat.

        True when it cannot tell: the commit that follows then finds out.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        member = getattr(coordinator, "member_id", None)
        if coordinator is None or member is None:
            return True
        if not member:  # aiokafka knows already: it rejoins under a new member id
            return False
        from aiokafka.protocol.group import HeartbeatRequest  # internals, guarded

        try:
            request = HeartbeatRequest(self._group, coordinator.generation, member)
            response = await coordinator._send_req(request)
        except Exception:
            return True
        error = for_code(response.error_code)
        if error in (UnknownMemberIdError, IllegalGenerationError):
            coordinator.reset_generation()  # aiokafka rejoins
            return False
        return True

    def pause(self, tps: Sequence[TP]) -> None:
        """Fetch nothing from `tps` until `resume` (their tasks are not built yet)."""
        owned = self._consumer.assignment()
        parts = [tp for p in tps if (tp := TopicPartition(*p)) in owned]
        if parts:
            self._consumer.pause(*parts)

    def resume(self, tps: Sequence[TP]) -> None:
        """Fetch from `tps` again."""
        owned = self._consumer.assignment()
        parts = [tp for p in tps if (tp := TopicPartition(*p)) in owned]
        if parts:
            self._consumer.resume(*parts)

    async def committed(self, tp: TP) -> int | None:
        """The group's committed offset of `tp`, or None."""
        result = await self._consumer.committed(TopicPartition(*tp))
        return None if result is None else int(result)

    async def group_offsets(self, tps: Sequence[TP]) -> dict[TP, int | None]:
        """The group's committed offsets of `tps`, in one OffsetFetch through the admin client.

        The admin client asks the coordinator directly, so this works for partitions other
        members own and while this member is joining or restoring.
        """
        found = await self._admin.list_consumer_group_offsets(
            self._group, partitions=[TopicPartition(*tp) for tp in tps]
        )
        offsets = {(tp.topic, tp.partition): int(meta.offset) for tp, meta in found.items()}
        return {tp: o if (o := offsets.get(tp, -1)) >= 0 else None for tp in tps}

    async def stop(self) -> None:
        """Leave the group (partitions move to the other members at once).

        Waits `LEAVE_TIMEOUT` seconds at most, and less when it owns no partitions: a
        member still joining (the broker holds its join while it waits for a stopped member)
        has nothing to hand over, and aiokafka would otherwise wait for that join to time
        out before it stops.

        A static member sends no LeaveGroup at all (nor does aiokafka for it): the group
        keeps its partitions for it until it is back or its session times out.
        """
        if self._fetch is not None:  # records it may still return were never processed
            self._fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await self._fetch
            self._fetch = None
        listener = getattr(getattr(self._consumer, "_subscription", None), "listener", None)
        if isinstance(listener, RebalanceListener) and listener.assigning is not None:
            # Stopping in the middle of an assignment (a restore): aiokafka would wait for
            # it to end before leaving; cancel it (and the group task it runs in) instead.
            listener.assigning.cancel()
        owns = bool(self._consumer.assignment())
        coordinator = getattr(self._consumer, "_coordinator", None)
        member = getattr(coordinator, "member_id", "")
        node = getattr(coordinator, "coordinator_id", None)
        try:
            await asyncio.wait_for(self._leave(), LEAVE_TIMEOUT if owns else JOINING_LEAVE_TIMEOUT)
        except TimeoutError:
            if member and node is not None and not self._static:
                # Stuck in a join the broker holds: leave by member id on the admin
                # client's connection (the consumer's is held by the join), or the broker
                # keeps this member until its session expires (aiokafka internals, guarded).
                from aiokafka.protocol.group import LeaveGroupRequest

                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self._admin._send_request(LeaveGroupRequest(self._group, member), node),
                        LEAVE_TIMEOUT,
                    )

    async def _leave(self) -> None:
        coordinator = getattr(self._consumer, "_coordinator", None)
        if (
            coordinator is not None
            and getattr(coordinator, "generation", None) == 0
            and not self._static
        ):
            # Some brokers (tansu) number a new group's first generation 0, and aiokafka
            # sends LeaveGroup only above 0, so the others would wait a whole session
            # timeout for our partitions. Leave explicitly (aiokafka internals, guarded).
            with contextlib.suppress(Exception):
                from aiokafka.protocol.group import LeaveGroupRequest

                await coordinator._send_req(
                    LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
                )
        await self._consumer.stop()
