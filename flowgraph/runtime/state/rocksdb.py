"""State on local disk: one RocksDB database (via rocksdict) per store per partition.

Layout: ``DIR/<store>/<partition>/`` holds one database. Data is in the default column family,
metadata (changelog offset, format version; see `metadata`) in its own, and one `write` is one
RocksDB WriteBatch covering both, so a crash never leaves data and offset out of step.

Durability: the write-ahead log is on but never fsynced per write. The changelog topic is the
durability mechanism (docs/concepts/planner.md, "Durability order"): a process crash
loses nothing (the WAL is in the OS page cache), and a machine crash rolls the database back
to a consistent earlier batch, whose stored changelog offset tells the restore where to resume.

Faults: a directory that cannot be created or written, or a file in its place, is a
`ConfigurationError` when a partition opens (the backend probes its directory at once); a
write, read or close that fails later (a full disk, a directory removed while the worker runs)
is a `StorageError`. Both are one sentence naming the path and the cause.

Bytes: keys go through a key codec and must encode deterministically (equal keys, equal bytes;
``1``, ``1.0`` and ``True`` are different keys here although equal in a dict). Values go through
a value codec; the store frames each entry as msgpack ``[position, value bytes]`` itself, so the
value codec only ever sees values; a deleted key's grave is ``[position, nil]`` and decodes to
``(position, DELETE)``. Both codecs default to msgpack (msgspec), which round-trips
None, bool, int (64-bit), float, str, bytes, lists and dicts; keys decode arrays as tuples (so
tuple keys come back hashable), values decode them as lists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import msgspec
from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from flowgraph._delete import DELETE
from flowgraph.errors import ConfigurationError, StorageError
from flowgraph.runtime.state import metadata
from flowgraph.runtime.state.base import Entry, StateCodec, check_address

__all__ = ["RocksDBBackend", "RocksDBStorePartition"]

_WRITE_BUFFER_SIZE = 16 << 20
"""Per-partition memtable, as Kafka Streams' default store: many partitions share one machine."""
_BLOCK_CACHE_SIZE = 64 << 20
"""One LRU block cache shared by every partition of a backend."""


_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "not a directory (a file is in the way)",
    errno.EEXIST: "not a directory (a file is in the way)",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file size limit was reached)",
    errno.ENOENT: "the directory was removed",
}
_PHRASES = (  # RocksDB says what the OS said, in the middle of its own text
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("file too large", errno.EFBIG),
    ("permission denied", errno.EACCES),
    ("operation not permitted", errno.EPERM),
    ("read-only file system", errno.EROFS),
    ("not a directory", errno.ENOTDIR),
    ("no such file or directory", errno.ENOENT),
)


def storage_cause(exc: BaseException) -> str:
    """What an OS or RocksDB error means, in a few words ("permission denied")."""
    if isinstance(exc, OSError) and exc.errno in _CAUSES:
        return _CAUSES[exc.errno]
    text = " ".join(str(exc).split())
    lowered = text.lower()
    for phrase, code in _PHRASES:
        if phrase in lowered:
            return _CAUSES[code]
    return text or type(exc).__name__


def _tuplify(obj: Any) -> Any:
    """Turn decoded msgpack arrays back into tuples, recursively (keys and positions)."""
    if type(obj) is list:
        return tuple([_tuplify(item) for item in obj])
    return obj


class _MsgpackCodec:
    """The default `StateCodec`: msgpack via msgspec, bound builtins on the hot path."""

    encode: Callable[[object], bytes]
    decode: Callable[[bytes], object]

    def __init__(self, *, for_keys: bool) -> None:
        # "deterministic" sorts dict keys and sets, so an equal key always gives equal bytes.
        self.encode = msgspec.msgpack.Encoder(order="deterministic" if for_keys else None).encode
        decode = msgspec.msgpack.Decoder().decode
        if for_keys:
            self.decode = lambda data: _tuplify(decode(data))
        else:
            self.decode = decode


_encode_frame = msgspec.msgpack.Encoder().encode
_decode_frame = msgspec.msgpack.Decoder(tuple[Any, bytes | None]).decode
"""An entry on disk: ``[position, value bytes]``, or ``[position, nil]`` for a grave."""


def _db_options(cache: Cache) -> Options:
    """Options for a streaming state store: small memtables, bloom filters, no sync."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_write_buffer_size(_WRITE_BUFFER_SIZE)
    opts.set_max_write_buffer_number(3)
    opts.set_compression_type(DBCompressionType.lz4())
    # Data and metadata column families flush together, so the WAL is never pinned by one.
    opts.set_atomic_flush(True)
    opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    opts.set_keep_log_file_num(2)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(10, False)  # most gets of a new key miss; a filter answers them
    opts.set_block_based_table_factory(table)
    return opts


def _write_options() -> WriteOptions:
    """No fsync per write: the changelog, not the local disk, makes state durable."""
    opts = WriteOptions()
    opts.sync = False
    return opts


class RocksDBStorePartition:
    """One store partition in its own RocksDB database at ``DIR/<store>/<partition>/``."""

    def __init__(
        self,
        name: str,
        partition: int,
        path: Path,
        *,
        key_codec: StateCodec,
        value_codec: StateCodec,
        cache: Cache,
    ) -> None:
        self.name = name
        self.partition = partition
        self.path = path
        self.closed = False
        try:
            db = Rdict(
                str(path),
                options=_db_options(cache),
                column_families={metadata.METADATA_COLUMN_FAMILY: Options(raw_mode=True)},
            )
        except Exception as exc:  # rocksdict raises a bare Exception for RocksDB errors
            text = str(exc).lower()
            busy = "lock" in text and "permission denied" not in text
            hint = "; is another worker using the same state directory?" if busy else ""
            cause = " ".join(str(exc).split()) if busy else storage_cause(exc)
            msg = (
                f"cannot open store {name!r} partition {partition} at {str(path)!r}: {cause}{hint}"
            )
            raise ConfigurationError(msg) from exc
        self._db = db
        self._broken = False
        """A failure was raised: closing then fails the same way, which says nothing new."""
        self._inode = _inode(path)
        """The directory's identity: `write` checks it is still there (see `_check_dir`)."""
        self._meta = db.get_column_family(metadata.METADATA_COLUMN_FAMILY)
        self._meta_handle = db.get_column_family_handle(metadata.METADATA_COLUMN_FAMILY)
        self._write_opts = _write_options()
        # Hoisted bound methods: these run once per key of every batch.
        self._db_get = db.get
        self._encode_key = key_codec.encode
        self._decode_key = key_codec.decode
        self._encode_value = value_codec.encode
        self._decode_value = value_codec.decode
        # Open scans pin the database (a RocksDB iterator holds it); close() ends them.
        self._scans: weakref.WeakSet[Generator[Any, None, None]] = weakref.WeakSet()
        try:
            self._check_format()
        except ConfigurationError:
            self.close()
            raise
        except Exception as exc:  # stamping a new database failed: a full disk, say
            self._broken = True
            self.close()
            where = f"store {name!r} partition {partition} at {str(path)!r}"
            msg = f"cannot open {where}: {storage_cause(exc)}"
            raise ConfigurationError(msg) from exc
        except BaseException:
            self.close()
            raise

    def _check_format(self) -> None:
        """Stamp a new database with the format version; refuse one written differently."""
        raw = self._meta.get(metadata.FORMAT_VERSION_KEY)
        if raw is not None:
            version = metadata.decode_int(raw)
            if version != metadata.FORMAT_VERSION:
                msg = (
                    f"state store at {str(self.path)!r} has format version {version} but this "
                    f"flowgraph reads version {metadata.FORMAT_VERSION}; delete the directory so "
                    "the store is restored from its changelog"
                )
                raise ConfigurationError(msg)
            return
        if next(self._db.keys(), None) is not None:
            msg = (
                f"directory {str(self.path)!r} holds a RocksDB database not written by flowgraph "
                "(no format version); point the state URL elsewhere or delete it"
            )
            raise ConfigurationError(msg)
        batch = WriteBatch(raw_mode=True)
        batch.put(
            metadata.FORMAT_VERSION_KEY,
            metadata.encode_int(metadata.FORMAT_VERSION),
            self._meta_handle,
        )
        self._db.write(batch, self._write_opts)

    def _decode_entry(self, raw: bytes) -> Entry:
        position, value = _decode_frame(raw)
        if type(position) is list:
            position = _tuplify(position)
        return (position, DELETE if value is None else self._decode_value(value))

    def _failed(self, exc: BaseException, action: str = "write") -> StorageError:
        """The one-sentence error for a RocksDB or OS failure of this partition."""
        self._broken = True
        what = f"{action} store {self.name!r} partition {self.partition}"
        return StorageError(str(self.path), storage_cause(exc), what=what)

    def _check_dir(self) -> None:
        """Refuse to write once the directory is gone: RocksDB would go on appending to its
        deleted files without a word, and everything written after would be lost."""
        if _inode(self.path) != self._inode:
            self._broken = True
            cause = "the directory was removed (or replaced) while the worker ran"
            what = f"write store {self.name!r} partition {self.partition}"
            raise StorageError(str(self.path), cause, what=what)

    def get(self, key: object) -> Entry | None:
        """Return the entry for `key`, or None."""
        try:
            raw = self._db_get(self._encode_key(key))
        except Exception as exc:
            if self.closed or not _is_io_error(exc):
                raise
            raise self._failed(exc, "read") from exc
        return None if raw is None else self._decode_entry(raw)

    def get_many(self, keys: Iterable[object]) -> dict[object, Entry]:
        """Return the entries of the keys found, with one multi-get into RocksDB."""
        keys = list(keys)
        if not keys:
            return {}
        encode_key = self._encode_key
        encoded: list[Any] = [encode_key(key) for key in keys]
        try:
            raws = cast("list[bytes | None]", self._db_get(encoded))
        except Exception as exc:
            if self.closed or not _is_io_error(exc):
                raise
            raise self._failed(exc, "read") from exc
        decode_value = self._decode_value
        found: dict[object, Entry] = {}
        for key, raw in zip(keys, raws, strict=True):  # _decode_entry inlined: the hot loop
            if raw is not None:
                position, value = _decode_frame(raw)
                if type(position) is list:
                    position = _tuplify(position)
                found[key] = (position, DELETE if value is None else decode_value(value))
        return found

    def write(
        self, updates: Mapping[Any, Entry | None], *, changelog_offset: int | None = None
    ) -> None:
        """Apply a batch and the changelog offset in one WriteBatch.

        Everything is encoded before anything is written, so a value the codec rejects leaves
        the store untouched.
        """
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        encode_key, encode_value = self._encode_key, self._encode_value
        for key, entry in updates.items():
            if entry is None:
                delete(encode_key(key))
            elif entry[1] is DELETE:  # a grave: the position, no value
                put(encode_key(key), _encode_frame((entry[0], None)))
            else:
                put(encode_key(key), _encode_frame((entry[0], encode_value(entry[1]))))
        if changelog_offset is not None:
            batch.put(
                metadata.CHANGELOG_OFFSET_KEY,
                metadata.encode_int(changelog_offset),
                self._meta_handle,
            )
        if batch.len():
            self._check_dir()
            try:
                self._db.write(batch, self._write_opts)
            except Exception as exc:
                raise self._failed(exc) from exc

    def changelog_offset(self) -> int | None:
        """Return the last changelog offset written, or None."""
        raw = self._meta.get(metadata.CHANGELOG_OFFSET_KEY)
        return None if raw is None else metadata.decode_int(raw)

    def _scan(self, positions: bool) -> Generator[Any, None, None]:
        decode_key, decode_entry = self._decode_key, self._decode_entry
        # Raw mode: keys and values are bytes.
        try:
            pairs = cast("Iterator[tuple[bytes, bytes]]", self._db.items())
            if positions:
                for key, raw in pairs:
                    yield decode_key(key), decode_entry(raw)
            else:
                decode_value = self._decode_value
                for key, raw in pairs:
                    value = _decode_frame(raw)[1]
                    if value is not None:  # graves are deleted keys
                        yield decode_key(key), decode_value(value)
        except Exception as exc:
            if not _is_io_error(exc):
                raise
            raise self._failed(exc, "read") from exc

    def entries(self) -> Iterator[tuple[object, Entry]]:
        """Iterate in encoded-key byte order over a snapshot taken at the first `next()`."""
        scan = self._scan(positions=True)
        self._scans.add(scan)
        return scan

    def items(self) -> Iterator[tuple[object, object]]:
        """Iterate over ``(key, value)`` like `entries`."""
        scan = self._scan(positions=False)
        self._scans.add(scan)
        return scan

    def __len__(self) -> int:
        """Count the keys with a value: O(n), a full scan (RocksDB only keeps an estimate)."""
        values = cast("Iterator[bytes]", self._db.values())
        return sum(1 for raw in values if _decode_frame(raw)[1] is not None)

    def clear(self) -> None:
        """Delete all data and the changelog offset in one batch, then compact the space away."""
        it = self._db.iter()
        it.seek_to_first()
        first: bytes | None = it.key() if it.valid() else None
        it.seek_to_last()
        last: bytes | None = it.key() if it.valid() else None
        del it  # an iterator pins the database
        batch = WriteBatch(raw_mode=True)
        if first is not None and last is not None:
            batch.delete_range(first, last)  # end is exclusive
            batch.delete(last)
        batch.delete(metadata.CHANGELOG_OFFSET_KEY, self._meta_handle)
        self._check_dir()
        try:
            self._db.write(batch, self._write_opts)
            # A range tombstone only hides the data; compaction drops the files now, since a
            # restore is about to refill the store.
            self._db.compact_range(None, None)
        except Exception as exc:
            raise self._failed(exc) from exc

    def close(self) -> None:
        """Close the database; open `entries()` iterators are ended first (they pin it)."""
        if self.closed:
            return
        self.closed = True
        for scan in list(self._scans):
            # ValueError: closing from inside that very loop; it ends with the loop.
            with contextlib.suppress(ValueError):
                scan.close()
        try:
            self._meta.close()
            # The column family handle also pins the database until it is dropped.
            del self._meta_handle
            self._db.close()
        except Exception as exc:
            if not self._broken:  # else it only repeats the failure already raised
                raise self._failed(exc, "close") from exc

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<RocksDBStorePartition {self.name!r}[{self.partition}] {str(self.path)!r}{state}>"


class RocksDBBackend:
    """Opens store partitions under one directory, one RocksDB database each.

    Reopening the same directory later (a new backend, e.g. after a restart) sees the data and
    changelog offsets written before. Two backends must not share a directory at once: RocksDB
    locks each database, and the second `open` fails with a ConfigurationError.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        key_codec: StateCodec | None = None,
        value_codec: StateCodec | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.url = f"rocksdb://{os.fspath(directory)}"
        self._key_codec = key_codec if key_codec is not None else _MsgpackCodec(for_keys=True)
        self._value_codec = (
            value_codec if value_codec is not None else _MsgpackCodec(for_keys=False)
        )
        self._cache = Cache(_BLOCK_CACHE_SIZE)
        self._partitions: dict[tuple[str, int], RocksDBStorePartition] = {}
        _usable_dir(self.directory, "state directory")  # fail at start, not at the first write

    def open(self, store: str, partition: int) -> RocksDBStorePartition:
        """Return the open partition, opening (and creating) its database if needed."""
        found = self._partitions.get((store, partition))
        if found is not None and not found.closed:
            return found
        check_address(store, partition)
        path = self.directory / store / str(partition)
        _usable_dir(path, f"store {store!r} partition {partition} at", probe=False)
        opened = RocksDBStorePartition(
            store,
            partition,
            path,
            key_codec=self._key_codec,
            value_codec=self._value_codec,
            cache=self._cache,
        )
        self._partitions[store, partition] = opened
        return opened

    def close(self) -> None:
        """Close every partition opened here; `open` works again afterwards.

        Every partition is closed even if closing one fails; the first failure is raised.
        """
        partitions, self._partitions = list(self._partitions.values()), {}
        failures: list[Exception] = []
        for opened in partitions:
            try:
                opened.close()
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    def __repr__(self) -> str:
        return f"RocksDBBackend({self.url!r}, {len(self._partitions)} open)"


def _inode(path: Path) -> tuple[int, int] | None:
    """The identity of the directory at `path`, or None if it is gone."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _is_io_error(exc: BaseException) -> bool:
    """True for a RocksDB I/O failure (not, e.g., a key that does not encode)."""
    return type(exc) is Exception and "io error" in str(exc).lower()


def _usable_dir(path: Path, what: str, *, probe: bool = True) -> None:
    """Create `path` if needed and, with `probe`, check a file can be written there (one tiny
    file, removed at once), so a directory that cannot take state fails in one sentence."""
    where = f"{what} {str(path)!r}"
    if path.exists() and not path.is_dir():
        msg = f"cannot use {where}: it is a file, not a directory; point the store elsewhere"
        raise ConfigurationError(msg)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if probe:
            fd, name = tempfile.mkstemp(prefix=".flowgraph-probe-", dir=path)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                os.unlink(name)
    except OSError as exc:
        msg = f"cannot use {where}: {storage_cause(exc)}"
        raise ConfigurationError(msg) from exc
