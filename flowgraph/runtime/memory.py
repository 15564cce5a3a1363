"""The `memory://` transport: partitioned in-process logs with offsets and one consumer group.

It behaves like a one-broker Kafka for one process: offsets, committed positions per group,
record timestamps and headers. Internal topics (repartition, changelog, feed) hold Python
objects, since nothing outside the process can read them; external topics hold bytes, so the
codecs are exercised exactly as on Kafka. Like Kafka Streams, which deletes repartition
records once they are committed, this transport drops records of repartition and feed topics
once they are fetched (nothing else can read them, and a crash loses the process anyway), and
keeps only the latest record per key of compacted topics (changelogs), so an
endless embedded run keeps bounded memory.

In bytes mode (``MemoryTransport(encoded=True)``) it stands in for Kafka in tests: every topic
holds bytes made by the same codecs as on Kafka, nothing is trimmed and nothing is handed
over directly, so a worker abandoned mid-commit (a crash) leaves what a killed process leaves
on a real broker, and the next worker on the same `MemoryBroker` recovers from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.transport import TP, Message, OutRecord, Push, Write
from planner.physical import TopicSpec

__all__ = ["CompactedLog", "Log", "MemoryBroker", "MemoryConsumer", "MemoryTransport"]

_TRIMMED_ROLES = frozenset({"repartition", "feed"})


class Log(list[Message]):
    """One partition: its records, and `base`, the offset of the first one still kept."""

    __slots__ = ("base", "trim")

    def __init__(self, trim: bool = False) -> None:
        super().__init__()
        self.base = 0
        self.trim = trim

    @property
    def end(self) -> int:
        """The offset the next record will get."""
        return self.base + len(self)

    def slice(self, start: int, stop: int) -> list[Message]:
        """Records with offsets in ``[start, stop)`` that are still kept."""
        lo = max(start - self.base, 0)
        return self[lo : max(stop - self.base, lo)]

    def add(self, key: Any, value: Any, ts: float, headers: Any) -> int:
        """Append one record; returns its offset."""
        offset = self.base + len(self)
        self.append((key, value, ts, offset, headers))
        return offset

    def drop_before(self, offset: int) -> None:
        """Forget records before `offset` (committed records of a trimmed topic)."""
        n = min(offset - self.base, len(self))
        if n > 0:
            del self[:n]
            self.base += n


class CompactedLog:
    """A compacted partition (changelogs): the latest record of each key, in offset order.

    Offsets keep counting, so they have gaps where older records of a key were dropped, as in
    a compacted Kafka topic. Tombstones (value None) are kept.
    """

    trim = False

    def __init__(self) -> None:
        self.latest: dict[Any, Message] = {}
        self.end = 0

    def add(self, key: Any, value: Any, ts: float, headers: Any) -> int:
        """Append one record, replacing the key's previous one; returns its offset."""
        offset = self.end
        self.end += 1
        self.latest.pop(key, None)
        self.latest[key] = (key, value, ts, offset, headers)
        return offset

    def slice(self, start: int, stop: int) -> list[Message]:
        """Records still kept with offsets in ``[start, stop)``."""
        return [m for m in self.latest.values() if start <= m[3] < stop]

    def drop_before(self, offset: int) -> None:
        """Compacted topics are never trimmed."""

    def __iter__(self) -> Iterator[Message]:
        return iter(list(self.latest.values()))

    def __len__(self) -> int:
        return len(self.latest)


Partition = Log | CompactedLog


class MemoryBroker:
    """The logs themselves; share one between transports to see the same topics."""

    def __init__(self) -> None:
        self.logs: dict[str, list[Partition]] = {}
        self.committed: dict[str, dict[TP, int]] = {}

    def ensure(
        self, topic: str, partitions: int, *, trim: bool = False, compact: bool = False
    ) -> list[Partition]:
        """Create `topic` if missing; a different partition count is a configuration error."""
        log = self.logs.get(topic)
        if log is None:
            log = self.logs[topic] = [
                CompactedLog() if compact else Log(trim) for _ in range(partitions)
            ]
        elif len(log) != partitions:
            msg = (
                f"topic {topic!r} exists with {len(log)} partitions but the plan needs "
                f"{partitions}; delete the topic or change the graph's partitions"
            )
            raise ConfigurationError(msg)
        return log

    def append(self, topic: str, records: Sequence[OutRecord]) -> dict[int, int]:
        """Append records; returns the last offset per partition written."""
        log = self.logs[topic]
        last: dict[int, int] = {}
        now = time.time()
        for partition, key, value, ts, headers in records:
            last[partition] = log[partition].add(key, value, now if ts is None else ts, headers)
        return last

    def records(self, topic: str) -> list[Message]:
        """Every kept record of `topic`, partition by partition (for tests and drivers)."""
        return [m for part in self.logs[topic] for m in part]


class MemoryConsumer:
    """The only member of its group: owns every partition of its topics."""

    def __init__(self, broker: MemoryBroker, group: str, topics: Sequence[str]) -> None:
        self._broker = broker
        self._committed = broker.committed.setdefault(group, {})
        self._tps = [(t, p) for t in topics for p in range(len(broker.logs[t]))]
        self._positions = {tp: self._committed.get(tp, 0) for tp in self._tps}
        self._paused: set[TP] = set()

    def assignment(self) -> frozenset[TP]:
        """Every partition of the subscribed topics."""
        return frozenset(self._tps)

    async def getmany(
        self, max_records: int, timeout: float = 0.0, partitions: Sequence[TP] | None = None
    ) -> dict[TP, list[Message]]:
        """The next records of each partition, in topic order; {} when all are read."""
        logs = self._broker.logs
        positions = self._positions
        result: dict[TP, list[Message]] = {}
        tps = self._tps if partitions is None else partitions
        if self._paused:
            tps = [tp for tp in tps if tp not in self._paused]
        for tp in tps:
            pos = positions[tp]
            part = logs[tp[0]][tp[1]]
            if isinstance(part, Log) and pos < part.base:
                pos = part.base  # rewound below what was dropped: go on from what is kept
            if pos < part.end:
                batch = part.slice(pos, pos + max_records)
                positions[tp] = pos + len(batch)
                result[tp] = batch
                if part.trim:
                    # Nobody else reads an internal topic of this process: drop what was
                    # handed out now, so its records die with the batch instead of piling up.
                    part.drop_before(pos + len(batch))
        return result

    def seek(self, tp: TP, offset: int) -> None:
        """Read `tp` from `offset` on."""
        self._positions[tp] = offset

    def behind(self, tp: TP) -> bool:
        """True while the partition's log holds records past the fetch position."""
        part = self._broker.logs[tp[0]][tp[1]]
        return max(self._positions[tp], getattr(part, "base", 0)) < part.end

    def highwater(self, tp: TP) -> int | None:
        """The end of the partition's log."""
        return self._broker.logs[tp[0]][tp[1]].end

    async def caught_up(self) -> bool:
        """True when every partition is read to its end (this member owns them all)."""
        logs = self._broker.logs
        return all(
            max(self._positions[tp], getattr(part, "base", 0)) >= part.end
            for tp in self._tps
            if (part := logs[tp[0]][tp[1]]) is not None
        )

    async def positions(self) -> dict[TP, int]:
        """Where each partition is read next (past records already dropped)."""
        logs = self._broker.logs
        return {
            tp: max(pos, getattr(logs[tp[0]][tp[1]], "base", 0))
            for tp, pos in self._positions.items()
        }

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        """Store the group's positions."""
        self._committed.update(offsets)

    def pause(self, tps: Sequence[TP]) -> None:
        """Fetch nothing from `tps` until `resume` (their tasks are not built yet)."""
        self._paused.update(tps)

    def resume(self, tps: Sequence[TP]) -> None:
        """Fetch from `tps` again."""
        self._paused.difference_update(tps)

    async def still_member(self) -> bool:
        """Always: the only member of its group."""
        return True

    async def committed(self, tp: TP) -> int | None:
        """The committed offset of `tp`, or None."""
        return self._committed.get(tp)

    async def group_offsets(self, tps: Sequence[TP]) -> dict[TP, int | None]:
        """The committed offsets of `tps` (None where none)."""
        return {tp: self._committed.get(tp) for tp in tps}

    async def stop(self) -> None:
        """Nothing to leave in one process."""


class MemoryTailReader:
    """`TailReader` in process: reads the broker's logs from given offsets on."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._positions: dict[TP, int] = {}

    def assign(self, positions: Mapping[TP, int]) -> None:
        """Read exactly these partitions, each from its offset."""
        self._positions = dict(positions)

    async def getmany(self, timeout: float) -> dict[TP, list[Message]]:
        """What the logs hold past each position; waits `timeout` when there is nothing."""
        out: dict[TP, list[Message]] = {}
        for tp, position in self._positions.items():
            part = self._broker.logs[tp[0]][tp[1]]
            if position < part.end:
                batch = part.slice(position, part.end)
                if batch:
                    out[tp] = batch
                    self._positions[tp] = batch[-1][3] + 1
        if not out:
            await asyncio.sleep(timeout)
        return out

    def highwater(self, tp: TP) -> int | None:
        """The end of the partition's log."""
        return self._broker.logs[tp[0]][tp[1]].end

    async def stop(self) -> None:
        """Nothing to close."""


class MemoryTransport:
    """`memory://`: the embedded default; pass a `MemoryBroker` to share logs between runs.

    `encoded=True` is the bytes mode: every topic holds bytes, as on Kafka (see above).
    """

    in_process = True
    session_timeout = 0.0

    def __init__(self, broker: MemoryBroker | None = None, *, encoded: bool = False) -> None:
        self.url = "memory://"
        self.broker = broker or MemoryBroker()
        self.encoded = encoded

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to flush."""

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics the plan lists."""
        for spec in specs:
            self.broker.ensure(
                spec.name,
                spec.partitions,
                trim=spec.role in _TRIMMED_ROLES and not self.encoded,
                compact=("cleanup.policy", "compact") in spec.configs,
            )

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assigned: Any = None,
        on_revoked: Any = None,
        assignor: Any = None,
    ) -> MemoryConsumer:
        """A consumer owning every partition of `topics` (no rebalances, so no callbacks,
        and no assignor: the one member runs every task)."""
        return MemoryConsumer(self.broker, group, topics)

    def writer(self, topic: str) -> Callable[[int, Any, Any, float, Any], None]:
        """Append one record at a time, visible at once (nothing to flush)."""
        log = self.broker.logs[topic]
        if not all(isinstance(p, Log) for p in log):

            def add(partition: int, key: Any, value: Any, ts: float, headers: Any) -> None:
                log[partition].add(key, value, ts, headers)

            return add
        logs: list[Log] = log  # type: ignore[assignment]

        def write(partition: int, key: Any, value: Any, ts: float, headers: Any) -> None:
            part = logs[partition]
            part.append((key, value, ts, part.base + len(part), headers))

        return write

    def direct_writer(self, topic: str, readers: Sequence[Push]) -> Write:
        """A writer that hands each record straight to ``readers[partition]``, storing nothing.

        The log's offsets move on as if the records had been written (the reader gets that
        offset), so a later worker on this broker numbers on from there.
        """
        logs: list[Any] = self.broker.logs[topic]
        for part in logs:
            part.drop_before(part.end)

        def write(partition: int, key: Any, value: Any, ts: float, headers: Any) -> None:
            part = logs[partition]
            offset = part.base
            part.base = offset + 1
            readers[partition](key, value, ts, offset, headers)

        return write

    def end(self, topic: str, partition: int) -> int:
        """The end offset of a partition, without awaiting (in-process only)."""
        return self.broker.logs[topic][partition].end

    def written_end(self, tp: TP) -> int:
        """One past the last offset written to `tp`: every write is acknowledged at once."""
        return self.broker.logs[tp[0]][tp[1]].end

    def discard(self) -> None:
        """Nothing to drop: records land in their logs as they are written."""

    async def flush(self) -> None:
        """Writes are already in the log."""

    async def produce(self, topic: str, records: Sequence[OutRecord]) -> dict[int, int]:
        """Append records (acknowledged at once)."""
        return self.broker.append(topic, records)

    async def read(self, tp: TP, start: int, end: int) -> list[Message]:
        """Records of `tp` in ``[start, end)`` still kept."""
        return self.broker.logs[tp[0]][tp[1]].slice(start, end)

    def tail_reader(self) -> MemoryTailReader:
        """A reader following partitions of this broker from given offsets."""
        return MemoryTailReader(self.broker)

    async def end_offset(self, tp: TP) -> int:
        """The offset the next record of `tp` will get."""
        return self.broker.logs[tp[0]][tp[1]].end

    async def end_offsets(self, tps: Sequence[TP]) -> dict[TP, int]:
        """The end offset of each of `tps`."""
        return {tp: self.broker.logs[tp[0]][tp[1]].end for tp in tps}
