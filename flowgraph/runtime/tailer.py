"""Keeping stores up to date with their changelogs in the background.

A standby task (a replica of a task another worker runs) and a global table (a table every
worker holds whole) are the same thing underneath: stores that follow changelog partitions
someone else writes. `ChangelogTailer` reads those partitions with one group-less reader and
writes each chunk into its store with `changelog_applier`, the function restores use, so a
store it hands over (a standby promoted to active) only needs the tail restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from flowgraph.runtime.recovery import changelog_applier
from flowgraph.runtime.state.base import StorePartition
from flowgraph.runtime.transport import TP, Message

__all__ = ["ChangelogTailer", "TailReader"]

log = logging.getLogger("flowgraph")

POLL = 0.2
"""Seconds one read waits for new changelog records before the loop looks around again."""


class TailReader(Protocol):
    """A group-less reader of some partitions from given offsets (`Transport.tail_reader`)."""

    def assign(self, positions: Mapping[TP, int]) -> None:
        """Read exactly these partitions, each from its offset (new ones) or on (kept ones)."""
        ...

    async def getmany(self, timeout: float) -> dict[TP, list[Message]]:
        """Records read since the last call, per partition (waits up to `timeout`)."""
        ...

    def highwater(self, tp: TP) -> int | None:
        """The end of `tp` as last seen by a read (None before the first)."""
        ...

    async def stop(self) -> None:
        """Close the reader."""
        ...


class ChangelogTailer:
    """Follows changelog partitions into their stores, in one background task."""

    def __init__(
        self,
        make_reader: Callable[[], Any],
        codecs: Mapping[str, Any],
        *,
        on_applied: Callable[[int], None] = lambda n: None,
    ) -> None:
        """`make_reader()` gives a `TailReader` (or an awaitable of one), made on first use."""
        self._make_reader = make_reader
        self._codecs = codecs
        self._on_applied = on_applied
        self._reader: TailReader | None = None
        self._stores: dict[TP, StorePartition] = {}
        self._positions: dict[TP, int] = {}
        """Per changelog partition, the offset of the next record to apply."""
        self._appliers: dict[TP, Callable[[StorePartition, Sequence[Any]], None]] = {}
        self._dirty = True
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.failure: BaseException | None = None
        """What stopped the background task (a changelog that cannot be applied)."""

    # -- what it follows -----------------------------------------------------------------

    def add(self, tp: TP, store: StorePartition) -> None:
        """Follow changelog partition `tp` into `store`, from the store's own position on."""
        offset = store.changelog_offset()
        self._stores[tp] = store
        self._positions[tp] = 0 if offset is None else offset + 1
        self._dirty = True
        self._wake.set()

    def remove(self, tp: TP) -> StorePartition | None:
        """Stop following `tp`; its store, as up to date as the last chunk applied.

        Synchronous, and chunks are applied synchronously in the loop: once this returns,
        nothing more is written into the store by the tailer.
        """
        store = self._stores.pop(tp, None)
        self._positions.pop(tp, None)
        self._appliers.pop(tp, None)
        self._dirty = True
        return store

    def following(self) -> dict[TP, StorePartition]:
        """The partitions followed, with their stores."""
        return dict(self._stores)

    def position(self, tp: TP) -> int | None:
        """The next offset of `tp` to apply (None when not followed)."""
        return self._positions.get(tp)

    def lag(self) -> dict[TP, int | None]:
        """Records of each followed partition not applied yet (None: its end is not known)."""
        out: dict[TP, int | None] = {}
        for tp, position in self._positions.items():
            high = self._reader.highwater(tp) if self._reader is not None else None
            out[tp] = None if high is None else max(0, high - position)
        return out

    # -- reading -------------------------------------------------------------------------

    async def _reader_now(self) -> TailReader:
        if self._reader is None:
            made = self._make_reader()
            self._reader = await made if asyncio.iscoroutine(made) else made
        if self._dirty:
            self._dirty = False
            self._reader.assign(dict(self._positions))
        return self._reader

    async def poll(self, timeout: float = POLL) -> int:
        """Read once and apply what came; the number of records applied."""
        if not self._stores:
            return 0
        reader = await self._reader_now()
        batches = await reader.getmany(timeout)
        applied = 0
        for tp, records in batches.items():
            store = self._stores.get(tp)  # removed while the read was out: not ours now
            if store is None or not records:
                continue
            position = self._positions[tp]
            records = [r for r in records if r[3] >= position]
            if not records:
                continue
            apply = self._appliers.get(tp)
            if apply is None:  # one per partition: an applier remembers its store's keys
                apply = self._appliers[tp] = changelog_applier(self._codecs, tp[0])
            apply(store, records)
            self._positions[tp] = records[-1][3] + 1
            applied += len(records)
        if applied:
            self._on_applied(applied)
        return applied

    async def catch_up(
        self, ends: Mapping[TP, int], stop: Callable[[], bool] = lambda: False
    ) -> bool:
        """Read until every partition in `ends` is applied up to its end offset there;
        False when `stop()` said to give up first."""
        while any(self._positions.get(tp, end) < end for tp, end in ends.items()):
            if stop():
                return False
            await self.poll()
        return True

    def start(self) -> None:
        """Follow in the background until `stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="changelog tailer"
            )

    async def _run(self) -> None:
        while True:
            try:
                if not self._stores:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker gone: log once per kind, try again later
                if self.failure is None or type(self.failure) is not type(exc):
                    log.warning("changelog tailer: %s: %s; retrying", type(exc).__name__, exc)
                self.failure = exc
                self._dirty = True
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Stop the background task and close the reader (stores stay open: not its own)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader.stop(), 3.0)
            self._reader = None
