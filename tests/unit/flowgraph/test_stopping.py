"""`run_async` races its work against the `stop` event: a worker still starting stops at once,
a running one finishes its batch, one stuck in a batch is cut after the grace period, and the
stores are closed on every way out (a RocksDB directory can be opened again right after)."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph import _run
from flowgraph.errors import Interrupted
from flowgraph.runtime.state import RocksDBBackend
from flowgraph.runtime.worker import Worker


def ticks() -> fg.Graph:
    g = fg.Graph("ticks")
    g.source_from(itertools.count(), name="ticks").count(name="total")
    return g


async def _hang(n: int) -> int:
    await asyncio.sleep(60)
    return n


def stuck() -> fg.Graph:
    g = fg.Graph("stuck")
    g.source_from(itertools.count(), name="ticks").map(_hang).count(name="total")
    return g


def reopened(state: Path, store: str) -> dict[object, object]:
    """The store's committed table; opening it fails if the run left it open (RocksDB lock)."""
    backend = RocksDBBackend(state)
    try:
        return dict(backend.open(store, 0).items())
    finally:
        backend.close()


def test_a_stop_before_the_run_processes_nothing(tmp_path: Path) -> None:
    """On memory:// starting never waits, so the run loop sees the stop at once (a worker
    that waits while starting is cut instead: tests/integration/test_cli_faults.py)."""

    async def body() -> fg.RunResult:
        stop = asyncio.Event()
        stop.set()
        return await fg.run_async(ticks(), store=f"rocksdb://{tmp_path}", stop=stop)

    assert asyncio.run(body()).events == 0
    assert reopened(tmp_path, "ticks-total") == {}


def test_a_stop_while_running_finishes_the_batch_and_commits(tmp_path: Path) -> None:
    async def body() -> fg.RunResult:
        stop = asyncio.Event()

        def started(worker: Worker) -> None:
            asyncio.get_running_loop().call_later(0.3, stop.set)

        return await fg.run_async(
            ticks(), store=f"rocksdb://{tmp_path}", stop=stop, on_start=started
        )

    result = asyncio.run(body())
    assert result.events > 0
    assert reopened(tmp_path, "ticks-total") == {None: result.events}


def test_a_batch_that_hangs_is_cut_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_run, "STOP_GRACE", 0.5)

    async def body() -> None:
        stop = asyncio.Event()

        def started(worker: Worker) -> None:
            asyncio.get_running_loop().call_later(0.3, stop.set)

        await fg.run_async(stuck(), store=f"rocksdb://{tmp_path}", stop=stop, on_start=started)

    began = time.monotonic()
    with pytest.raises(Interrupted, match="in the middle of a batch or a commit"):
        asyncio.run(body())
    assert time.monotonic() - began < 5
    assert reopened(tmp_path, "stuck-total") == {}  # the cut batch is not committed


def test_cancelling_the_run_closes_its_stores(tmp_path: Path) -> None:
    async def body() -> None:
        run = asyncio.ensure_future(fg.run_async(stuck(), store=f"rocksdb://{tmp_path}"))
        await asyncio.sleep(0.5)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(body())
    assert reopened(tmp_path, "stuck-total") == {}
