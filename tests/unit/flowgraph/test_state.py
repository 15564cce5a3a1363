"""State stores: one set of behaviour tests over both backends, plus RocksDB's disk contract."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from flowgraph import DELETE
from flowgraph.errors import ConfigurationError
from flowgraph.runtime.state import (
    MemoryBackend,
    RocksDBBackend,
    StateBackend,
    StorePartition,
    metadata,
    open_backend,
)

BACKENDS = ["memory", "rocksdb"]


def make_backend(kind: str, directory: Path) -> StateBackend:
    return MemoryBackend() if kind == "memory" else RocksDBBackend(directory)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateBackend]:
    opened = make_backend(request.param, tmp_path / "state")
    yield opened
    opened.close()


@pytest.fixture
def store(backend: StateBackend) -> StorePartition:
    return backend.open("clickstats-per_url", 0)


# -- behaviour, both backends ------------------------------------------------------------------


def test_get_missing_key_returns_none(store: StorePartition) -> None:
    assert store.get("nope") is None
    assert store.get_many(["nope", "nada"]) == {}
    assert store.get_many([]) == {}
    assert len(store) == 0
    assert list(store.entries()) == []


def test_write_then_get(store: StorePartition) -> None:
    store.write({"a": (1, 10), "b": (2, "two"), "c": (3, None)})
    assert store.get("a") == (1, 10)
    assert store.get("b") == (2, "two")
    assert store.get("c") == (3, None)  # a None value is a value, not a deletion


def test_get_many_returns_only_found_keys(store: StorePartition) -> None:
    store.write({"a": (1, 10), "b": (2, 20)})
    assert store.get_many(["a", "x", "b", "a"]) == {"a": (1, 10), "b": (2, 20)}
    assert store.get_many(key for key in ["b"]) == {"b": (2, 20)}  # any iterable


def test_none_deletes_and_later_write_wins(store: StorePartition) -> None:
    store.write({"a": (1, 10), "b": (2, 20)})
    store.write({"a": None, "b": (3, 21), "never-there": None})
    assert store.get("a") is None
    assert store.get("b") == (3, 21)
    assert len(store) == 1


def test_entries_items_len(store: StorePartition) -> None:
    store.write({"a": (1, 10), "b": (2, 20), "c": (3, 30)})
    assert dict(store.entries()) == {"a": (1, 10), "b": (2, 20), "c": (3, 30)}
    assert dict(store.items()) == {"a": 10, "b": 20, "c": 30}
    assert len(store) == 3


def test_tuple_keys_and_positions_round_trip(store: StorePartition) -> None:
    """Windowed keys and multi-source positions are tuples; they must come back as tuples."""
    key = ("url", 1_700_000_000_000)
    store.write({key: ((5, 7), {"count": 3}), ("nested", (1, 2)): (-1, [1, 2])})
    assert store.get(("url", 1_700_000_000_000)) == ((5, 7), {"count": 3})
    assert dict(store.entries()) == {
        key: ((5, 7), {"count": 3}),
        ("nested", (1, 2)): (-1, [1, 2]),
    }
    found = next(k for k, _ in store.entries() if k == key)
    assert type(found) is tuple
    entry = store.get(key)
    assert entry is not None
    assert type(entry[0]) is tuple


def test_changelog_offset(store: StorePartition) -> None:
    assert store.changelog_offset() is None
    store.write({"a": (1, 1)})
    assert store.changelog_offset() is None
    store.write({"a": (2, 2)}, changelog_offset=41)
    assert store.changelog_offset() == 41
    store.write({"b": (3, 3)})  # no offset given: the stored one stays
    assert store.changelog_offset() == 41
    store.write({}, changelog_offset=42)  # an offset alone is a valid batch
    assert store.changelog_offset() == 42
    assert dict(store.items()) == {"a": 2, "b": 3}


def test_clear_drops_data_and_offset(store: StorePartition) -> None:
    store.write({i: (i, i) for i in range(100)}, changelog_offset=7)
    store.clear()
    assert len(store) == 0
    assert store.get(3) is None
    assert list(store.entries()) == []
    assert store.changelog_offset() is None
    store.write({"after": (1, 1)}, changelog_offset=1)  # usable again at once
    assert dict(store.items()) == {"after": 1}
    assert store.changelog_offset() == 1
    store.clear()
    store.clear()  # clearing an empty store is fine


def test_open_is_idempotent_and_partitions_are_isolated(backend: StateBackend) -> None:
    p0 = backend.open("s", 0)
    assert backend.open("s", 0) is p0
    assert (p0.name, p0.partition) == ("s", 0)
    p1 = backend.open("s", 1)
    other = backend.open("t", 0)
    p0.write({"k": (1, "p0")}, changelog_offset=1)
    p1.write({"k": (1, "p1")}, changelog_offset=2)
    assert p0.get("k") == (1, "p0")
    assert p1.get("k") == (1, "p1")
    assert other.get("k") is None
    assert (p0.changelog_offset(), p1.changelog_offset(), other.changelog_offset()) == (1, 2, None)


def test_reopen_after_backend_close_keeps_state(backend: StateBackend) -> None:
    """Memory: the same backend object keeps partitions; RocksDB: the files do."""
    backend.open("s", 0).write({"k": (9, "v")}, changelog_offset=3)
    backend.close()
    again = backend.open("s", 0)
    assert again.get("k") == (9, "v")
    assert again.changelog_offset() == 3


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "nul\0"])
def test_store_names_must_be_directory_names(backend: StateBackend, name: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be used as a directory name"):
        backend.open(name, 0)


@pytest.mark.parametrize("partition", [-1, True, "0"])
def test_partition_must_be_a_number(backend: StateBackend, partition: Any) -> None:
    with pytest.raises(ConfigurationError, match="not a partition number"):
        backend.open("s", partition)


def test_write_accepts_any_mapping_of_updates(store: StorePartition) -> None:
    from types import MappingProxyType

    store.write(MappingProxyType({"a": (1, 1)}), changelog_offset=0)
    assert store.get("a") == (1, 1)


# -- RocksDB on disk ---------------------------------------------------------------------------


def test_a_grave_keeps_its_position_but_is_no_table_row(store: StorePartition) -> None:
    """``(position, DELETE)`` marks a deleted key: `get` sees it, `items` and len do not."""
    store.write({"a": (1, "x"), "b": (2, None), "c": ((3, 4), DELETE)})
    assert store.get("c") == ((3, 4), DELETE)
    assert store.get_many(["a", "c"]) == {"a": (1, "x"), "c": ((3, 4), DELETE)}
    assert dict(store.items()) == {"a": "x", "b": None}  # a None value is still a value
    assert len(store) == 2
    assert dict(store.entries())["c"] == ((3, 4), DELETE)
    store.write({"c": (5, "back"), "a": (6, DELETE)})
    assert dict(store.items()) == {"b": None, "c": "back"}
    assert len(store) == 2
    store.write({"a": None})  # the grave deleted for good
    assert store.get("a") is None
    assert len(store) == 2


def test_a_grave_survives_a_restart_on_disk(tmp_path: Path) -> None:
    first = RocksDBBackend(tmp_path)
    first.open("t-users", 0).write({"gone": (7, DELETE), "kept": (8, 1)}, changelog_offset=2)
    first.close()
    second = RocksDBBackend(tmp_path)
    try:
        store = second.open("t-users", 0)
        assert store.get("gone") == (7, DELETE)
        assert dict(store.items()) == {"kept": 1}
        assert len(store) == 1
    finally:
        second.close()


def test_rocksdb_layout_and_reopen_in_a_fresh_backend(tmp_path: Path) -> None:
    first = RocksDBBackend(tmp_path)
    first.open("clicks", 0).write({("u", 1): ((3, 4), {"n": 1})}, changelog_offset=11)
    first.open("clicks", 2).write({"x": (1, 1)}, changelog_offset=12)
    first.close()
    for partition in (0, 2):
        assert (tmp_path / "clicks" / str(partition) / "CURRENT").is_file()  # a real RocksDB
    assert not (tmp_path / "clicks" / "1").exists()

    second = RocksDBBackend(tmp_path)  # as after a process restart
    try:
        p0 = second.open("clicks", 0)
        assert dict(p0.entries()) == {("u", 1): ((3, 4), {"n": 1})}
        assert p0.changelog_offset() == 11
        assert second.open("clicks", 2).changelog_offset() == 12
    finally:
        second.close()


def test_rocksdb_clear_survives_reopen(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path)
    part = backend.open("s", 0)
    part.write({i: (i, "x" * 100) for i in range(5000)}, changelog_offset=5)
    part.clear()
    backend.close()
    backend = RocksDBBackend(tmp_path)
    try:
        part = backend.open("s", 0)
        assert len(part) == 0
        assert part.changelog_offset() is None
    finally:
        backend.close()


def test_rocksdb_batch_is_atomic_when_a_value_cannot_be_encoded(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path)
    try:
        part = backend.open("s", 0)
        part.write({"a": (1, 1)}, changelog_offset=1)
        with pytest.raises(TypeError):
            part.write({"a": (2, 2), "b": (2, object())}, changelog_offset=2)
        assert dict(part.entries()) == {"a": (1, 1)}
        assert part.changelog_offset() == 1
    finally:
        backend.close()


def test_rocksdb_metadata_is_not_data(tmp_path: Path) -> None:
    """Offset and format version live in their own column family, unseen by `entries()`."""
    backend = RocksDBBackend(tmp_path)
    backend.open("s", 0).write({}, changelog_offset=3)
    backend.close()
    path = str(tmp_path / "s" / "0")
    assert metadata.METADATA_COLUMN_FAMILY in rocksdict.Rdict.list_cf(path)
    backend = RocksDBBackend(tmp_path)
    try:
        part = backend.open("s", 0)
        assert list(part.entries()) == []
        assert len(part) == 0
    finally:
        backend.close()


def _raw_db(path: Path) -> rocksdict.Rdict:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    return rocksdict.Rdict(
        str(path),
        options=opts,
        column_families={metadata.METADATA_COLUMN_FAMILY: rocksdict.Options(raw_mode=True)},
    )


def test_rocksdb_refuses_another_format_version(tmp_path: Path) -> None:
    RocksDBBackend(tmp_path).open("s", 0).close()
    db = _raw_db(tmp_path / "s" / "0")
    meta = db.get_column_family(metadata.METADATA_COLUMN_FAMILY)
    meta[metadata.FORMAT_VERSION_KEY] = metadata.encode_int(metadata.FORMAT_VERSION + 1)
    meta.close()
    db.close()
    backend = RocksDBBackend(tmp_path)
    with pytest.raises(ConfigurationError, match=r"has format version 2 .* reads version 1"):
        backend.open("s", 0)
    backend.close()


def test_rocksdb_refuses_a_foreign_database(tmp_path: Path) -> None:
    db = _raw_db(tmp_path / "s" / "0")
    db[b"someone"] = b"else"
    db.close()
    backend = RocksDBBackend(tmp_path)
    with pytest.raises(ConfigurationError, match="not written by flowgraph"):
        backend.open("s", 0)
    backend.close()
    _raw_db(tmp_path / "s" / "0").close()  # the failed open released its lock


def test_rocksdb_second_backend_on_same_directory_fails_clearly(tmp_path: Path) -> None:
    first = RocksDBBackend(tmp_path)
    first.open("s", 0)
    second = RocksDBBackend(tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="another worker"):
            second.open("s", 0)
    finally:
        second.close()
        first.close()


def test_rocksdb_close_ends_open_iterators(tmp_path: Path) -> None:
    """A RocksDB iterator pins the database; close() must not leave it locked."""
    backend = RocksDBBackend(tmp_path)
    part = backend.open("s", 0)
    part.write({i: (i, i) for i in range(10)})
    started = part.entries()
    next(started)
    never_started = part.items()
    backend.close()
    with pytest.raises(StopIteration):
        next(started)
    again = RocksDBBackend(tmp_path)
    try:
        assert len(again.open("s", 0)) == 10
    finally:
        again.close()
    del never_started


def test_rocksdb_entries_are_a_snapshot(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path)
    try:
        part = backend.open("s", 0)
        part.write({1: (1, 1), 2: (2, 2)})
        scan = part.entries()
        assert next(scan) == (1, (1, 1))
        part.write({3: (3, 3), 2: None})
        assert list(scan) == [(2, (2, 2))]
    finally:
        backend.close()


def test_rocksdb_partition_closed_alone_is_reopened(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path)
    try:
        part = backend.open("s", 0)
        part.write({"k": (1, 1)})
        part.close()
        part.close()  # idempotent
        reopened = backend.open("s", 0)
        assert reopened is not part
        assert reopened.get("k") == (1, 1)
    finally:
        backend.close()


def test_rocksdb_custom_codecs_are_used(tmp_path: Path) -> None:
    class Utf8:
        def encode(self, obj: object, /) -> bytes:
            return str(obj).encode()

        def decode(self, data: bytes, /) -> object:
            return data.decode()

    backend = RocksDBBackend(tmp_path, key_codec=Utf8(), value_codec=Utf8())
    try:
        part = backend.open("s", 0)
        part.write({"b": (1, "x"), "a": (2, "y")})
        assert list(part.entries()) == [("a", (2, "y")), ("b", (1, "x"))]  # byte order
    finally:
        backend.close()


def test_rocksdb_unwritable_directory_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigurationError, match=r"cannot use state directory .*: not a directory"):
        RocksDBBackend(tmp_path / "file" / "state")


def test_memory_backend_is_fresh_per_object() -> None:
    MemoryBackend().open("s", 0).write({"k": (1, 1)})
    assert MemoryBackend().open("s", 0).get("k") is None


# -- open_backend --------------------------------------------------------------------------------


def test_open_backend_memory() -> None:
    backend = open_backend("memory://")
    assert isinstance(backend, MemoryBackend)
    assert backend.url == "memory://"


def test_open_backend_rocksdb_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend("rocksdb://.flowgraph")
    try:
        assert isinstance(backend, RocksDBBackend)
        assert backend.url == "rocksdb://.flowgraph"
        backend.open("s", 3)
        assert (tmp_path / ".flowgraph" / "s" / "3").is_dir()
    finally:
        backend.close()


def test_open_backend_rocksdb_absolute(tmp_path: Path) -> None:
    url = f"rocksdb://{tmp_path / 'abs'}"
    assert url.startswith("rocksdb:///")
    backend = open_backend(url)
    try:
        assert isinstance(backend, RocksDBBackend)
        assert backend.directory == tmp_path / "abs"
        assert backend.url == url
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://localhost", "unsupported state store URL 'redis://localhost'"),
        ("", "unsupported state store URL ''"),
        ("rocksdb:/tmp/x", "unsupported state store URL"),
        ("/tmp/x", "unsupported state store URL"),
        ("memory://name", "memory stores take none"),
        ("rocksdb://", "names no directory"),
    ],
)
def test_open_backend_rejects_other_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        open_backend(url)
    assert "expected 'memory://' or 'rocksdb://DIR'" in str(info.value)


# -- property: random batches behave like a dict -------------------------------------------------

keys = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.tuples(st.text(max_size=4), st.integers(0, 2**40)),
)
positions = st.one_of(
    st.integers(0, 2**62), st.tuples(st.integers(0, 2**40), st.integers(0, 2**40))
)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
entries = st.none() | st.tuples(positions, values)
# Small key pools so batches overwrite and delete keys written before.
key_pool = st.lists(keys, min_size=1, max_size=12, unique=True)


class StoreMachine(RuleBasedStateMachine):
    """Drive a partition with random batches, clears and reopens; compare with a dict."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="flowgraph-state-"))
        self.backend = make_backend(self.kind, self.directory)
        self.part = self.backend.open("s", 0)
        self.model: dict[Any, Any] = {}
        self.offset: int | None = None
        self.seen: list[Any] = []

    @rule(pool=key_pool, data=st.data(), offset=st.none() | st.integers(0, 2**62))
    def write(self, pool: list[Any], data: st.DataObject, offset: int | None) -> None:
        candidates = pool + self.seen[:8]
        updates = data.draw(st.dictionaries(st.sampled_from(candidates), entries, max_size=10))
        self.part.write(updates, changelog_offset=offset)
        for key, entry in updates.items():
            if entry is None:
                self.model.pop(key, None)
            else:
                self.model[key] = entry
        self.seen = list(dict.fromkeys([*updates, *self.seen]))[:20]
        if offset is not None:
            self.offset = offset

    @rule()
    def clear(self) -> None:
        self.part.clear()
        self.model.clear()
        self.offset = None

    @rule()
    def reopen(self) -> None:
        """Memory: the same backend object; RocksDB: a new one, as after a restart."""
        self.backend.close()
        if self.kind == "rocksdb":
            self.backend = make_backend(self.kind, self.directory)
        self.part = self.backend.open("s", 0)

    @invariant()
    def same_as_model(self) -> None:
        assert dict(self.part.entries()) == self.model
        assert dict(self.part.items()) == {key: entry[1] for key, entry in self.model.items()}
        assert len(self.part) == len(self.model)
        assert self.part.changelog_offset() == self.offset
        probe = [*self.seen, "absent-key"]
        assert self.part.get_many(probe) == {k: self.model[k] for k in probe if k in self.model}
        for key in probe:
            assert self.part.get(key) == self.model.get(key)

    def teardown(self) -> None:
        self.backend.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class RocksDBStoreMachine(StoreMachine):
    kind = "rocksdb"


TestMemoryStoreMachine = StoreMachine.TestCase
TestMemoryStoreMachine.settings = settings(max_examples=60, stateful_step_count=15, deadline=None)
TestRocksDBStoreMachine = RocksDBStoreMachine.TestCase
TestRocksDBStoreMachine.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)
