"""Benchmark: restoring a store from its changelog, records per second into RocksDB.

A count table's changelog as a worker writes it (keys and values encoded, the position in a
header) is applied by `changelog_applier` in the chunks a restore reads (50,000 records),
into a fresh RocksDB store partition. No broker: this times the applier and the store, the
part of a restore that runs on the worker. Each key is written several times, as a busy
table's changelog holds it, so later chunks meet keys the store already holds.

    python bench/bench_restore.py [--records N] [--keys K] [--batch B] [--repeat R]

CPU seconds of the process (RocksDB's threads included), so other load on the machine
counts less.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flowgraph as fg
from flowgraph.runtime.codecs import topic_codecs
from flowgraph.runtime.collector import quiet_gc
from flowgraph.runtime.recovery import POSITION_HEADER, changelog_applier, encode_position
from flowgraph.runtime.state import open_backend

CHUNK = 50_000
"""Records a restore reads at a time (`Recovery._restore_range`)."""


def changelog(records: int, keys: int, batch: int) -> tuple[str, object, list[list[tuple]]]:
    """The changelog's name, the topic codecs, and `records` changelog records in chunks: a
    count over inputs with keys drawn from `keys` (a tenth of them to 100 hot keys),
    committed every `batch` inputs as a worker writes it (one record per key changed, in the
    order the keys were first touched, each with the offset of its last input)."""
    g = fg.Graph("bench")
    g.source("clicks", key_type=str, value_type=str).count(name="per_url")
    plan = g.plan()
    codecs = topic_codecs(plan, in_process=False)
    name = plan.stores[0].changelog
    kc, vc = codecs[name]
    assert kc is not None and vc is not None
    rng = random.Random(7)
    counts: dict[int, int] = {}
    log: list[tuple] = []
    offset = 0
    while len(log) < records:
        dirty: dict[int, int] = {}
        for _ in range(batch):
            key = rng.randrange(100) if rng.random() < 0.1 else rng.randrange(keys)
            counts[key] = counts.get(key, 0) + 1
            dirty[key] = offset
            offset += 1
        for key, position in dirty.items():
            headers = ((POSITION_HEADER, encode_position(position)),)
            log.append((kc.encode(f"url-{key}"), vc.encode(counts[key]), 0.0, len(log), headers))
    del log[records:]
    return name, codecs, [log[i : i + CHUNK] for i in range(0, len(log), CHUNK)]


def run(records: int, keys: int, batch: int) -> float:
    name, codecs, chunks = changelog(records, keys, batch)
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_backend(f"rocksdb://{tmp}")
        store = backend.open("per_url", 0)
        apply = changelog_applier(codecs, name)  # type: ignore[arg-type]
        began = time.process_time()
        with quiet_gc():  # as `Recovery.restore_all` does
            for chunk in chunks:
                apply(store, chunk)
        elapsed = time.process_time() - began
        backend.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000, help="inputs per commit")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    best = min(run(args.records, args.keys, args.batch) for _ in range(args.repeat))
    print(
        f"{args.records:,} changelog records, {args.keys:,} keys, "
        f"commits of {args.batch:,} inputs: "
        f"{best:.2f} s, {args.records / best:,.0f} records/s (best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
