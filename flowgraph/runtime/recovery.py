"""Bringing a task back after a start, a crash or a rebalance.

Two things must be true before a task processes a record:

- each of its stores holds what its changelog holds (`restore`): local RocksDB state plus
  the changelog tail, or the whole changelog when the local state is gone or belongs to
  another broker;
- it knows which records it wrote after its last commit (`recover_writes`), so that
  replaying those inputs writes nothing twice to repartition and sink topics. Each written
  record carries an origin header; after each commit a task notes in ``<graph>-checkpoints``
  where its output partitions end (`write_checkpoints`), which bounds the scan.
"""

from __future__ import annotations

import operator
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from flowgraph._delete import DELETE
from flowgraph.errors import ConfigurationError
from flowgraph.runtime.collector import quiet_gc
from flowgraph.runtime.state.base import Entry, StorePartition
from flowgraph.runtime.task import ORIGIN_HEADER, Task, TopicCodecs
from flowgraph.runtime.transport import TP, OutRecord, Transport
from flowgraph.serde import fast_decoder
from planner import naming
from planner.physical import PhysicalPlan

__all__ = ["POSITION_HEADER", "Recovery", "changelog_applier", "encode_position", "newer"]

POSITION_HEADER = "fg.pos"
"""Changelog header holding the source offset(s) a stored value reflects."""


_ORIGIN_WRITER = struct.Struct(">II")
"""The start of an origin header (see `task.ORIGIN`): sub-topology id and task partition."""


class Recovery:
    """Restores stores and recovers what tasks wrote, for one worker."""

    def __init__(
        self,
        plan: PhysicalPlan,
        transport: Transport,
        codecs: TopicCodecs,
        stats: Any,
        crash_point: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.transport = transport
        self.codecs = codecs
        self.stats = stats
        self.crash_point = crash_point
        self.scan_from: dict[TP, int] = {}
        """Per output partition, an offset at or before anything this worker writes next."""
        self._noted: dict[str, dict[str, dict[int, int]]] | None = None
        """The checkpoints as read for the assignment under way (`begin`)."""

    def begin(self) -> None:
        """A new assignment: read the checkpoints afresh when a task first needs them."""
        self._noted = None

    async def recover_writes(
        self, tasks: Task | Sequence[Task], interrupted: Callable[[], bool] = lambda: False
    ) -> bool:
        """Learn what `tasks` wrote after their last commits, so their replays write nothing
        twice; False if `interrupted()` said to give up first.

        Each task's checkpoint says where its output topics ended at its last commit;
        everything of its own from there on (origin header with its sub-topology and
        partition) was written by the run that crashed, for inputs it will now process
        again. Those (entry, offset, sequence) marks let the task's writers skip exactly
        those records. All tasks of an assignment are recovered together: one end-offset
        lookup for every output partition, and each partition read once, from the earliest
        checkpoint among the tasks that write it, each origin going to the task it names.
        """
        if isinstance(tasks, Task):
            tasks = [tasks]
        if not tasks:
            return True
        if self._noted is None:  # read once per assignment, not once per task
            self._noted = await self._checkpoints()
        starts: dict[TP, int] = {}
        owners: dict[tuple[int, int], tuple[Task, dict[TP, int]]] = {}
        for task in tasks:
            noted = self._noted.get(_task_key(task), {})
            own: dict[TP, int] = {}
            for topic in task.written_topics():
                for r in range(self.plan.topic(topic).partitions):
                    start = own[(topic, r)] = int(noted.get(topic, {}).get(r, 0))
                    starts[(topic, r)] = min(starts.get((topic, r), start), start)
            owners[(task.sub.id, task.partition)] = (task, own)
        ends = await self.transport.end_offsets(list(starts))
        unpack = _ORIGIN_WRITER.unpack_from
        for tp, first in starts.items():
            if interrupted():
                return False
            end = ends[tp]
            self.scan_from[tp] = max(self.scan_from.get(tp, 0), end)
            topic, r = tp
            start = first
            while start < end:
                chunk = await self.transport.read(tp, start, min(end, start + 50_000))
                if not chunk:
                    break
                for _k, _v, _ts, offset, headers in chunk:
                    for name, value in headers or ():
                        if name == ORIGIN_HEADER:
                            owner = owners.get(unpack(value))
                            # only what the task wrote after its own checkpoint
                            if owner is not None and offset >= owner[1].get(tp, 0):
                                owner[0].note_written(topic, r, value)
                start = chunk[-1][3] + 1
        return True

    async def _checkpoints(self) -> dict[str, dict[str, dict[int, int]]]:
        """The latest checkpoint of every task of this graph, by task key."""
        name = naming.checkpoint_topic(self.plan.graph_id)
        if not any(t.name == name for t in self.plan.topics):
            return {}
        tp = (name, 0)
        kc, vc = self.codecs[name]
        end = await self.transport.end_offset(tp)
        latest: dict[str, dict[str, dict[int, int]]] = {}
        start = 0
        while start < end:
            chunk = await self.transport.read(tp, start, end)
            if not chunk:
                break
            for k, v, _ts, _o, _h in chunk:
                key = k if kc is None else kc.decode(k)
                latest[key] = v if vc is None else vc.decode(v)
            start = chunk[-1][3] + 1
        return latest

    async def write_checkpoints(self, tasks: list[Task]) -> None:
        """After a commit: note where each task's output topics end now (see recover_writes)."""
        name = naming.checkpoint_topic(self.plan.graph_id)
        kc, vc = self.codecs.get(name, (None, None))
        if kc is None or vc is None:
            return
        written = getattr(self.transport, "written_end", None)
        records: list[OutRecord] = []
        for task in tasks:
            if not task.tag_origins or task.dedupe:
                # While a task still replays inputs a crashed run wrote for, its checkpoint
                # stays where it was: moved past those records, a second crash before the
                # replay passes them would not scan them, and they would be written again.
                continue
            noted: dict[str, dict[int, int]] = {}
            for topic in task.written_topics():
                for r in range(self.plan.topic(topic).partitions):
                    tp = (topic, r)
                    end = max(self.scan_from.get(tp, 0), written(tp) if written else 0)
                    self.scan_from[tp] = end
                    noted.setdefault(topic, {})[r] = end
            records.append((0, kc.encode(_task_key(task)), vc.encode(noted), time.time(), None))
        if records:
            await self.transport.produce(name, records)

    async def restore(self, store: StorePartition, tp: TP) -> None:
        """Bring `store` up to the end of its changelog before any record is processed."""
        await self.restore_all([(store, tp)])

    async def restore_all(
        self,
        stores: Sequence[tuple[StorePartition, TP]],
        interrupted: Callable[[], bool] = lambda: False,
        restored: Callable[[int], None] = lambda index: None,
    ) -> bool:
        """Restore each store from its changelog partition; one end-offset lookup for all.

        Checks `interrupted()` before each store (False: given up, the rest not restored)
        and calls `restored(i)` after the i-th one, for progress.
        """
        if not stores:
            return True
        ends = await self.transport.end_offsets([tp for _, tp in stores])
        for index, (store, tp) in enumerate(stores):
            if interrupted():
                return False
            start = store.changelog_offset()
            end = ends[tp]
            if start is not None and start >= end:
                # The local state is ahead of its changelog: it was written against another
                # broker (a fresh memory:// one, or a recreated topic), so its offsets mean
                # nothing here. As Kafka Streams does, drop it and rebuild from the changelog.
                store.clear()
                start = None
            start = 0 if start is None else start + 1
            with quiet_gc():
                await self._restore_range(store, tp, start, end)
            restored(index)
        return True

    async def _restore_range(self, store: StorePartition, tp: TP, start: int, end: int) -> None:
        apply = changelog_applier(self.codecs, tp[0])
        while start < end:
            chunk = await self.transport.read(tp, start, min(end, start + 50_000))
            if not chunk:
                break
            apply(store, chunk)
            self.crash_point("in-restore")
            self.stats.restored += len(chunk)
            start = chunk[-1][3] + 1


MEMORY_KEYS = 1_000_000
"""Keys whose stored positions an incremental restore remembers (about 120 MB at most);
past that it forgets them and reads them from the store again."""
_MISSING: Any = object()


def changelog_applier(
    codecs: TopicCodecs, changelog: str
) -> Callable[[StorePartition, Sequence[Any]], None]:
    """A function writing a chunk of records of `changelog` into a store, with the chunk's
    last offset as the store's changelog position: the one way a store learns its changelog,
    for restores, standbys and global tables alike.

    Per key, the entry with the highest source position wins, not the last one written: a
    worker paused past its session may write a changelog record after the new owner of its
    partitions wrote newer ones, and its record (a lower position) must not win a restore.
    A record is dropped when the key already holds a `newer` position (from an earlier record
    or in the store); equal or incomparable positions go to the later record. A tombstone
    without a position deletes the key for good: whatever comes after it starts afresh.

    Cheap because a changelog's positions grow from commit to commit: the function keeps the
    highest position of the chunks it wrote into a store that started empty, and a record
    above it cannot lose to any of them. Only the others (a commit cut in two by the chunk
    boundary, a paused worker's late record) are compared with the store, in one multi-get
    per chunk; repeats of a key within a chunk are compared with each other as they come.
    Into a store that held entries before (an incremental restore), each key is read from
    the store once and then remembered (`MEMORY_KEYS` at most).
    """
    kc, vc = codecs[changelog]
    kd = fast_decoder(kc) if kc is not None else None
    decode = None if vc is None else fast_decoder(vc)
    known: list[Any] = [None, None, None]
    """The store written last, its changelog offset after that, and the highest position
    written into it (None: unknown, the store held entries of its own before)."""
    memory: dict[Any, Any] = {}
    """Without a highest position: the positions the store holds for the keys seen so far
    (None: no entry), so each key is read from the store once."""

    def apply(store: StorePartition, chunk: Sequence[Any]) -> None:
        offset = store.changelog_offset()
        if store is not known[0] or offset is None or offset != known[1]:
            # another store, or this one written (or cleared) by someone else since
            known[0], known[2] = store, (-1 if offset is None else None)
            memory.clear()
        top = known[2]
        remember = memory.get
        by_int = type(top) is int
        updates: dict[Any, Entry | None] = {}
        first = updates.setdefault
        suspects: list[Any] = []  # keys whose first record here is not above `top`
        reset: set[Any] = set()  # keys deleted for good in this chunk
        for k, v, _ts, _o, h in chunk:
            key = k if kd is None else kd(k)
            if v is not None and decode is not None:  # the common case, inlined
                raw = h[0][1] if h and h[0][0] == POSITION_HEADER else _position(h)
                if raw is None:
                    msg = (
                        f"changelog {changelog!r} has a record without its "
                        f"{POSITION_HEADER!r} header at offset {_o}; it was not written "
                        "by flowgraph"
                    )
                    raise ConfigurationError(msg)
                position: Any = _decode_list(raw)
                if type(position) is list:
                    position = tuple(position)
                entry: Entry | None = (position, decode(v))
            elif v is not None:  # in process: the entry itself
                position, entry = v[0], v
            else:
                # a tombstone with a position is a deleted key's grave (see aggregate.py);
                # without one it deletes the key for good
                raw = _position(h)
                if raw is None:
                    updates[key] = None
                    reset.add(key)
                    continue
                position = _decode_position(raw)
                entry = (position, DELETE)
            held = first(key, entry)
            if held is not entry:  # the key came before in this chunk
                if held is not None and newer(held[0], position):
                    continue  # a late record of a paused worker: a newer one came first
                updates[key] = entry
            elif by_int:
                try:
                    if position <= top:
                        suspects.append(key)
                except TypeError:  # a tuple against an int: no telling
                    suspects.append(key)
            elif top is not None:
                if not _ahead(position, top):
                    suspects.append(key)
            else:
                stored = remember(key, _MISSING)
                if stored is _MISSING:
                    suspects.append(key)
                elif stored is not None and newer(stored, position):
                    del updates[key]  # a late record: the store holds a newer entry
        if reset and suspects:
            suspects = [key for key in suspects if key not in reset]
        if suspects:
            for key, stored in store.get_many(suspects).items():
                entry = updates[key]
                if entry is not None and newer(stored[0], entry[0]):
                    del updates[key]  # the store holds a newer entry of the key
                    if top is None:
                        memory[key] = stored[0]
        store.write(updates, changelog_offset=chunk[-1][3])
        known[1] = chunk[-1][3]
        if top is not None:
            known[2] = _highest(top, updates)
        else:
            if len(memory) > MEMORY_KEYS:
                memory.clear()
            memory.update(zip(updates, map(_position_of, updates.values()), strict=True))

    return apply


def _position_of(entry: Entry | None) -> Any:
    return None if entry is None else entry[0]


def _ahead(position: Any, top: Any) -> bool:
    """True when no record at or below `top` (the highest of each input so far) can be
    `newer` than `position`: it is above `top` on some input."""
    if type(position) is tuple and type(top) is tuple and len(position) == len(top):
        return any(p > t for p, t in zip(position, top, strict=True))
    return False


def _highest(top: Any, updates: dict[Any, Entry | None]) -> Any:
    """`top` raised to the positions of `updates` (per input for tuples); None when they
    mix kinds."""
    try:
        high = max(map(_first, filter(None, updates.values())), default=top)
    except TypeError:  # ints and tuples
        return None
    if type(high) is int:
        return max(top, high) if type(top) is int else None
    positions = [e[0] for e in updates.values() if e is not None]
    if type(top) is int and top < 0:  # nothing written yet: the first chunk sets the kind
        top = positions[0]
    if type(top) is tuple and all(type(p) is tuple and len(p) == len(top) for p in positions):
        return tuple(map(max, top, *positions))
    return None


_first = operator.itemgetter(0)


def newer(position: Any, than: Any) -> bool:
    """True when `position` is strictly ahead of `than`: a greater int, or a tuple (one
    offset per input topic) at least as far on every input and not equal. Anything else
    (equal, incomparable tuples, an int against a tuple) is not newer, so a restore keeps
    the later record of the two."""
    if type(position) is int:
        return type(than) is int and position > than
    if type(position) is not tuple or type(than) is not tuple or len(position) != len(than):
        return False
    return position != than and all(p >= t for p, t in zip(position, than, strict=True))


encode_position = msgspec.msgpack.Encoder().encode
_decode_list = msgspec.msgpack.Decoder(int | list[int]).decode


def _decode_position(data: bytes) -> int | tuple[int, ...]:
    """A stored position: an int, or one int per input topic (msgpack gives a list back)."""
    position = _decode_list(data)
    return position if isinstance(position, int) else tuple(position)


def _position(headers: Any) -> bytes | None:
    """The position header's value, if the record has one."""
    if not headers:
        return None
    if headers[0][0] == POSITION_HEADER:  # where flowgraph puts it
        return headers[0][1]  # type: ignore[no-any-return]
    return next((value for name, value in headers if name == POSITION_HEADER), None)


def _task_key(task: Task) -> str:
    """Stable name of a task: its sub-topology and partition."""
    return f"{task.sub.id}-{task.partition}"
