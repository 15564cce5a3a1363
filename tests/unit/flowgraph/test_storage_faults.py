"""Storage faults on real RocksDB files become one sentence naming the path and the cause, and
a failure while closing never hides the first one."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph.errors import ConfigurationError, FlowgraphError, StorageError
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import RocksDBBackend
from flowgraph.runtime.state.rocksdb import storage_cause
from flowgraph.runtime.worker import Worker


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.EACCES, "permission denied"),
        (errno.ENOTDIR, "not a directory"),
        (errno.ENOSPC, "no space left on device"),
        (errno.EFBIG, "file too large"),
        (errno.ENOENT, "the directory was removed"),
    ],
)
def test_os_errors_read_as_their_cause(code: int, cause: str) -> None:
    assert storage_cause(OSError(code, os.strerror(code), "/some/path")).startswith(cause)
    # RocksDB wraps the OS's words in its own ("IO error: <strerror>: While ...: <path>")
    wrapped = Exception(f"IO error: While appending to file: /x/000004.log: {os.strerror(code)}")
    assert storage_cause(wrapped).startswith(cause)


def test_an_unknown_error_keeps_its_own_words_on_one_line() -> None:
    assert storage_cause(Exception("Corruption:\n  bad block")) == "Corruption: bad block"


def test_a_file_where_the_state_directory_goes_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(ConfigurationError, match=r"'.*state': it is a file, not a directory"):
        RocksDBBackend(tmp_path / "state")


def test_a_file_where_a_partition_directory_goes_names_that_path(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "0").write_text("")
    try:
        with pytest.raises(ConfigurationError, match=r"store 's' partition 0 at '.*s/0'"):
            backend.open("s", 0)
    finally:
        backend.close()


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[tuple[RocksDBBackend, Path]]:
    backend = RocksDBBackend(tmp_path / "state")
    try:
        yield backend, tmp_path / "state" / "s" / "0"
    finally:
        backend.close()


def test_a_write_after_the_directory_was_removed_fails_naming_it(
    partition: tuple[RocksDBBackend, Path],
) -> None:
    backend, path = partition
    store = backend.open("s", 0)
    store.write({"a": (1, 1)}, changelog_offset=0)
    shutil.rmtree(path.parent.parent)
    with pytest.raises(StorageError) as caught:
        store.write({"a": (2, 2)}, changelog_offset=1)
    assert caught.value.path == str(path)
    assert "removed" in caught.value.cause
    assert str(caught.value).startswith(f"cannot write store 's' partition 0 at {str(path)!r}")


def test_a_full_disk_fails_the_write_naming_the_store(
    partition: tuple[RocksDBBackend, Path],
) -> None:
    """A real write error: RLIMIT_FSIZE (soft limit, restored after) makes the write-ahead
    log's growth fail with EFBIG, as a full disk fails with ENOSPC."""
    backend, path = partition
    store = backend.open("s", 0)
    store.write({"a": (0, 0)})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, hard))
    try:
        with pytest.raises(StorageError) as caught:
            for i in range(100):  # 100 x 20 KB; the log may grow to 256 KB
                store.write({f"k{i}-{j}": (i, "x" * 200) for j in range(100)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert caught.value.path == str(path)
    assert caught.value.cause.startswith("file too large")


class _FailingStop(MemoryTransport):
    """A transport whose `stop` fails: the second error of a run that already failed."""

    async def stop(self) -> None:
        await super().stop()
        msg = "the broker connection broke while closing"
        raise RuntimeError(msg)


def test_a_failure_while_stopping_never_hides_the_first(tmp_path: Path) -> None:
    """The commit fails (the store directory is gone) and so does closing the transport:
    `Worker.stop` closes the stores anyway and raises the commit's error."""
    g = fg.Graph("stopping")
    g.source_from(range(1_000), name="numbers").count(name="total")
    backend = RocksDBBackend(tmp_path / "state")
    worker = Worker(g.plan(), _FailingStop(), backend)

    async def body() -> None:
        await worker.start()
        await worker.run(max_events=500)
        await worker.step()  # processed, not committed
        shutil.rmtree(tmp_path / "state")
        await worker.stop()

    with pytest.raises(FlowgraphError) as caught:
        asyncio.run(body())
    assert isinstance(caught.value, StorageError), caught.value
    assert all(store.closed for store in worker.stores.values())  # type: ignore[attr-defined]
