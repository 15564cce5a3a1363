"""When an until-idle run may stop: the group, not one worker, must be done.

`GroupIdle` is checked against scripted offset readings (the races) and a fake clock (giving
up), then through real workers: two members of one group on a shared `memory://` broker, each
owning half the partitions, as two `flowgraph run --until-idle` processes on Kafka would.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime.idle import GroupIdle, default_stall_timeout
from flowgraph.runtime.memory import MemoryBroker, MemoryConsumer, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.transport import TP
from flowgraph.runtime.worker import Worker

SRC, REP = ("in", 0), ("g-rep", 0)


class Script:
    """Offset readings in the order a check asks for them: ends, committed, ends."""

    def __init__(self, *readings: Mapping[TP, int | None]) -> None:
        self.readings = list(readings)
        self.asked: list[str] = []
        self.now = 0.0

    async def ends(self, tps: Sequence[TP]) -> Mapping[TP, int]:
        self.asked.append("ends")
        return self.readings.pop(0)  # type: ignore[return-value]

    async def committed(self, tps: Sequence[TP]) -> Mapping[TP, int | None]:
        self.asked.append("committed")
        return self.readings.pop(0)

    def idle(self, stall_timeout: float = 10.0) -> GroupIdle:
        return GroupIdle(
            "g",
            [SRC, REP],
            self.ends,
            self.committed,
            stall_timeout=stall_timeout,
            clock=lambda: self.now,
        )


def check(group: GroupIdle) -> bool:
    return asyncio.run(group.check())


def test_done_when_committed_equals_both_end_readings() -> None:
    offsets = {SRC: 10, REP: 7}
    script = Script(offsets, offsets, offsets)
    assert check(script.idle())
    assert script.asked == ["ends", "committed", "ends"]


def test_a_repartition_write_between_the_reads_is_seen() -> None:
    """Another member writes repartition records, then commits its source offsets, between
    the first end reading and the committed one: only the second end reading shows it."""
    script = Script({SRC: 10, REP: 7}, {SRC: 10, REP: 7}, {SRC: 10, REP: 9})
    group = script.idle()
    assert not check(group)
    assert group.left == {REP: 2}


def test_records_read_but_not_committed_are_not_done() -> None:
    script = Script({SRC: 10, REP: 7}, {SRC: 10, REP: None}, {SRC: 10, REP: 7})
    group = script.idle()
    assert not check(group)
    assert group.left == {REP: 7}


def test_a_partition_that_grew_and_was_committed_in_between_is_not_done() -> None:
    """Committed equals the second end reading but not the first: read again."""
    script = Script({SRC: 10, REP: 7}, {SRC: 10, REP: 9}, {SRC: 10, REP: 9})
    assert not check(script.idle())


def test_gives_up_only_after_stall_timeout_without_progress() -> None:
    stuck = {SRC: 10, REP: 7}
    behind = {SRC: 4, REP: 7}
    script = Script(*[stuck, behind, stuck] * 3)
    group = script.idle(stall_timeout=10.0)
    assert not check(group)
    script.now = 9.0
    assert not check(group) and not group.stalled()
    script.now = 10.5
    assert not check(group) and group.stalled()
    message = str(group.error())
    assert message.startswith("group 'g' did not finish: 6 input records are not processed")
    assert "'in' partition 0" in message and "10 s" in message


def test_a_commit_anywhere_in_the_group_is_progress() -> None:
    ends = {SRC: 10, REP: 7}
    script = Script(ends, {SRC: 4, REP: 7}, ends, ends, {SRC: 5, REP: 7}, ends)
    group = script.idle(stall_timeout=10.0)
    assert not check(group)
    script.now = 9.0
    assert not check(group)  # SRC moved from 4 to 5
    script.now = 18.0
    assert not group.stalled()
    script.now = 19.5
    assert group.stalled()


def test_local_work_is_progress() -> None:
    ends = {SRC: 10, REP: 7}
    script = Script(ends, {SRC: 4, REP: 7}, ends)
    group = script.idle(stall_timeout=10.0)
    assert not check(group)
    script.now = 9.0
    group.progressed()
    script.now = 18.0
    assert not group.stalled()


def test_default_stall_timeout_is_a_few_sessions_and_at_least_30_s() -> None:
    assert default_stall_timeout(10.0) == 30.0
    assert default_stall_timeout(2.0) == 30.0
    assert default_stall_timeout(45.0) == 135.0


# -- through workers: a group of two on one memory broker ----------------------------------------

PARTS = 4


def by_url(url: str) -> str:
    return url


def make_graph() -> fg.Graph:
    g = fg.Graph("gi")
    clicks = g.source("gi-clicks", key_type=str, value_type=str, partitions=PARTS)
    clicks.key_by(by_url).count(name="per_url")
    return g


class Member(MemoryTransport):
    """`memory://` as one of several members of a group: owns `partitions` of every topic.

    Not in process (internal topics hold bytes, the worker checks the whole group); the
    assignment arrives at the first fetch, as on Kafka.
    """

    in_process = False
    session_timeout = 0.1

    def __init__(self, broker: MemoryBroker, partitions: set[int], fetch_time: float) -> None:
        super().__init__(broker)
        self.partitions = partitions
        self.fetch_time = fetch_time

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assigned: Any = None,
        on_revoked: Any = None,
        assignor: Any = None,
    ) -> MemoryConsumer:
        return _Owning(self, group, topics, on_assigned)


class _Owning(MemoryConsumer):
    def __init__(self, member: Member, group: str, topics: Sequence[str], on_assigned: Any) -> None:
        super().__init__(member.broker, group, topics)
        self._tps = [tp for tp in self._tps if tp[1] in member.partitions]
        self._on_assigned = on_assigned
        self._fetch_time = member.fetch_time

    async def getmany(
        self, max_records: int, timeout: float = 0.0, partitions: Sequence[TP] | None = None
    ) -> dict[TP, list[Any]]:
        if self._on_assigned is not None:
            assigned, self._on_assigned = self._on_assigned, None
            await assigned(self.assignment())
        await asyncio.sleep(self._fetch_time)  # the other member runs meanwhile
        return await super().getmany(max_records, timeout, partitions)


def urls(n: int) -> list[str]:
    return [f"/page/{i % 37}" for i in range(n)]


def write_clicks(broker: MemoryBroker, clicks: list[str], *, skew: int = 1) -> None:
    """Clicks over the source partitions; partitions 2 and 3 get `skew` times as many."""
    spread = [0, 1] + [2, 3] * skew
    broker.ensure("gi-clicks", PARTS)
    broker.append(
        "gi-clicks",
        [
            (spread[i % len(spread)], f"user-{i}".encode(), u.encode(), 0.0, None)
            for i, u in enumerate(clicks)
        ],
    )


async def member(
    broker: MemoryBroker, partitions: set[int], fetch_time: float = 0.0, **run: Any
) -> Worker:
    worker = Worker(
        make_graph().plan(),
        Member(broker, partitions, fetch_time),
        open_backend("memory://"),
        max_batch=50,
        commit_every=100,
    )
    await worker.start()
    try:
        await worker.run(until_idle=True, idle_wait=0.001, **run)
    finally:
        await worker.stop()
    return worker


def left_in(broker: MemoryBroker) -> dict[TP, int]:
    committed = broker.committed["gi"]
    return {
        (topic, p): log.end - committed.get((topic, p), 0)
        for topic in ("gi-clicks", "gi-by_url-repartition")
        for p, log in enumerate(broker.logs[topic])
        if log.end != committed.get((topic, p), 0)
    }


def test_two_members_started_together_both_stop_only_when_the_group_is_done() -> None:
    """The first member reads its own source partitions soon, but the slower other's key_by
    writes keep landing in its repartition partitions: stopping at its own ends would leave
    those unprocessed."""
    broker = MemoryBroker()
    clicks = urls(3_000)
    write_clicks(broker, clicks, skew=4)

    async def both() -> list[Worker]:
        return list(
            await asyncio.gather(
                member(broker, {0, 1}, stall_timeout=5.0),
                member(broker, {2, 3}, fetch_time=0.002, stall_timeout=5.0),
            )
        )

    workers = asyncio.run(both())
    assert left_in(broker) == {}
    table: dict[str, int] = {}
    for worker in workers:
        table.update(worker.table("per_url"))
    assert table == dict(collections.Counter(clicks))


def test_a_member_alone_gives_up_naming_what_the_other_holds() -> None:
    broker = MemoryBroker()
    write_clicks(broker, urls(1_000))
    started = time.monotonic()
    with pytest.raises(fg.GroupStalledError) as caught:
        asyncio.run(member(broker, {0, 1}, stall_timeout=0.5))
    took = time.monotonic() - started
    assert 0.5 <= took < 5, took
    err = caught.value
    assert err.left == left_in(broker)
    clicks = {p: n for (topic, p), n in err.left.items() if topic == "gi-clicks"}
    rekeyed = {p: n for (topic, p), n in err.left.items() if topic != "gi-clicks"}
    assert clicks == {2: 250, 3: 250}
    assert set(rekeyed) == {2, 3}  # written by this member for the other to count
    assert str(err).startswith(
        f"group 'gi' did not finish: {500 + sum(rekeyed.values())} input records are not "
        f"processed ({sum(rekeyed.values())} in 'gi-by_url-repartition' partitions 2, 3 and 500 "
        "in 'gi-clicks' partitions 2, 3) and no member committed any progress for"
    )


def test_memory_runs_still_stop_as_soon_as_they_are_done() -> None:
    g = make_graph()
    source = g.plan().topic("gi-clicks")
    assert source.partitions == PARTS
    started = time.monotonic()
    result = fg.run(g, until_idle=True)
    assert result.events == 0
    assert time.monotonic() - started < 1.0


def test_the_group_check_covers_source_and_repartition_topics_only() -> None:
    """Not changelogs, checkpoints, the dead-letter topic or sinks: nobody consumes them."""
    g = make_graph()
    g.source("gi-more", key_type=str, value_type=str, partitions=2).to("gi-out")
    plan = g.plan()
    transport = Member(MemoryBroker(), set(), 0.0)
    consumer = MemoryConsumer(transport.broker, "gi", [])
    group = GroupIdle.of_plan(plan, transport, consumer)
    assert sorted(group.partitions) == sorted(
        [("gi-clicks", p) for p in range(PARTS)]
        + [("gi-by_url-repartition", p) for p in range(PARTS)]
        + [("gi-more", 0), ("gi-more", 1)]
    )
    assert group.stall_timeout == 30.0  # at least 30 s, even with a 0.1 s session
    assert GroupIdle.of_plan(plan, transport, consumer, 4.0).stall_timeout == 4.0


def test_offsets_that_hold_no_record_for_the_worker_are_committed_past() -> None:
    """Records removed by retention before anyone read them (or transaction markers on
    Kafka): the worker reads past them, and commits that, or the group never looks done."""
    broker = MemoryBroker()
    clicks = urls(400)
    write_clicks(broker, clicks)
    gone = broker.logs["gi-clicks"][3]
    gone.drop_before(gone.end)
    worker = asyncio.run(member(broker, {0, 1, 2, 3}, stall_timeout=2.0))
    assert left_in(broker) == {}
    assert sum(worker.table("per_url").values()) == 300
