"""State stores of the runtime: `open_backend(url)` gives a backend, which opens partitions."""

from flowgraph.runtime.state.base import Entry as Entry
from flowgraph.runtime.state.base import StateBackend as StateBackend
from flowgraph.runtime.state.base import StateCodec as StateCodec
from flowgraph.runtime.state.base import StorePartition as StorePartition
from flowgraph.runtime.state.base import open_backend as open_backend
from flowgraph.runtime.state.memory import MemoryBackend as MemoryBackend
from flowgraph.runtime.state.rocksdb import RocksDBBackend as RocksDBBackend

__all__ = [
    "Entry",
    "MemoryBackend",
    "RocksDBBackend",
    "StateBackend",
    "StateCodec",
    "StorePartition",
    "open_backend",
]
