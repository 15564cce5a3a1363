"""Benchmark: how long the partitions of a worker killed with SIGKILL stay unprocessed.

Three `flowgraph run` workers (RocksDB stores, a directory each) share a group on an
8-partition topic and count records per key (``tests/integration/kafka_failover_jobs.py``).
Per case:

1. load: `--keys` records of distinct keys are produced, then the workers start and count
   them, so the table holds that many keys (and its changelog as many records); ``load/s``
   is keys over the time from the start of the workers to the group's last commit of them
   (joins included);
2. settle: a ticker writes one timed record to every partition every `--tick` seconds; the
   graph stamps each with its partition, the worker's pid and ``time.time()`` at processing
   (to ``<graph>-stamps``); the case waits until every partition is stamped by one worker,
   all three stamp, and ownership has not moved for two seconds;
3. kill -9 of the worker owning the most partitions, the ticker still writing;
4. takeover: from the kill to the first stamp of a lost partition by a surviving worker
   (``first``), and until every lost partition has one (``all``); the session timeout
   is in it (the group notices the death only then), then the rebalance and the restore of
   the lost tables from their changelogs, or from a standby where workers keep one;
5. the workers drain the input, stop on SIGTERM, and the table read from its changelog is
   compared with a plain count of what was produced (``--no-verify`` skips it).

Restore: the workers' log lines (every 2 s) say how many changelog records each restored;
the benchmark stamps the lines as they arrive and shows what the survivors restored after
the kill (``restored``: more than the lost tables where the rebalance also moves partitions
between survivors) and when their logs first showed the total (``restore shown``: the
restore ended at most then, and at most 2 s before).

    python bench/bench_failover.py [--keys N] [--standbys 0,1] [--session-timeout-ms MS]

The target with a standby: takeover <= session timeout + 2 s, whatever the size of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowgraph.partitioner import partition_for
from flowgraph.runtime.codecs import topic_codecs
from tests.integration import kafka_failover_jobs as jobs
from tests.kafka_broker import Broker, open_broker

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8
WORKERS = 3
JOBS = Path(jobs.__file__).resolve()
_SCRIPT = Path(sys.executable).parent / "flowgraph"
FLOWGRAPH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flowgraph.cli"]
RESTORED = re.compile(r"restored (\d+) changelog records")
STABLE = 2.0
"""Seconds without a partition changing owner before the group counts as settled."""


def partition_of(key: bytes) -> int:
    return partition_for(key, PARTITIONS)


# -- a worker and its log ---------------------------------------------------------------------


@dataclass
class Worker:
    """A `flowgraph run` subprocess whose output lines are kept with their arrival time."""

    proc: subprocess.Popen[bytes]
    log: Path
    lines: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def start(cls, target: str, broker: str, state: Path, log: Path) -> Worker:
        cmd = [*FLOWGRAPH, "run", target, "--broker", broker, "--store", f"rocksdb://{state}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        worker = cls(proc, log)
        assert proc.stdout is not None
        threading.Thread(target=worker._read, args=(proc.stdout,), daemon=True).start()
        return worker

    def _read(self, out: IO[bytes]) -> None:
        with open(self.log, "w", encoding="utf-8") as f:
            for raw in out:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append((time.time(), line))
                f.write(line + "\n")
                f.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        """Stop the benchmark, with the log's tail, if the worker has exited."""
        if self.proc.poll() is not None:
            tail = "\n".join(line for _, line in self.lines[-30:])
            raise SystemExit(f"worker {self.pid} exited with {self.proc.returncode}:\n{tail}")

    def restored(self, since: float = 0.0, before: float | None = None) -> int:
        """The last restore count the worker logged between `since` and `before`."""
        found = 0
        for at, line in list(self.lines):
            if at < since or (before is not None and at >= before):
                continue
            m = RESTORED.search(line)
            if m:
                found = int(m.group(1))
        return found

    def restore_shown_at(self, since: float) -> float | None:
        """When a log line after `since` first showed the final restore count (None if no
        restore happened after `since`)."""
        final = self.restored(since)
        if final <= self.restored(0.0, since):
            return None
        for at, line in list(self.lines):
            m = RESTORED.search(line)
            if at >= since and m and int(m.group(1)) == final:
                return at
        return None


# -- Kafka helpers ----------------------------------------------------------------------------


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def produce(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]
) -> None:
    """Write `records` (key, value) in batches per partition, partitioned like flowgraph."""
    batches: dict[int, Any] = {}
    futures = []
    for key, value in records:
        p = partition_of(key)
        batch = batches.get(p)
        if batch is None:
            batch = batches[p] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for p, batch in batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=p))
    await asyncio.gather(*futures)


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """Records of `topic` the group has committed, over all partitions."""
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await client.start()
    try:
        offsets = [await client.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
        return sum(o or 0 for o in offsets)
    finally:
        await client.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, read to the fetch's high watermark."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, 0)
        out: list[Any] = []
        pending = set(tps)
        while pending:
            data = await reader.getmany(*pending, timeout_ms=200, max_records=100_000)
            for records in data.values():
                out.extend(records)
            for tp in list(pending):
                high = reader.highwater(tp)
                if high is not None and await reader.position(tp) >= high:
                    pending.discard(tp)
        return out
    finally:
        await reader.stop()


class Stamps:
    """Tails the stamps topic: who processed which partition when."""

    def __init__(self, bootstrap: str, topic: str, codec: Any) -> None:
        self.bootstrap, self.topic, self.codec = bootstrap, topic, codec
        self.seen: list[jobs.Stamp] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._tail())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _tail(self) -> None:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await reader.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, 0)
            while True:
                data = await reader.getmany(timeout_ms=100)
                for records in data.values():
                    self.seen.extend(self.codec.decode(r.value) for r in records)
        finally:
            await reader.stop()

    def owners(self, since: float) -> dict[int, set[int]]:
        """Partition -> pids that stamped it at or after `since`."""
        out: dict[int, set[int]] = collections.defaultdict(set)
        for s in self.seen:
            if s.at >= since:
                out[s.partition].add(s.pid)
        return out

    def first_after(self, partition: int, since: float, not_pid: int) -> float | None:
        ats = [
            s.at
            for s in self.seen
            if s.partition == partition and s.at > since and s.pid != not_pid
        ]
        return min(ats) if ats else None


# -- one case ---------------------------------------------------------------------------------


@dataclass
class Result:
    keys: int
    standbys: int
    session: float
    lost: int
    first: float
    all: float
    restored: int
    restore_shown: float | None
    load_rate: float
    exact: bool | None


async def wait(what: str, predicate: Any, timeout: float, workers: list[Worker]) -> None:
    started = time.monotonic()
    while not await predicate():
        for w in workers:
            w.check()
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not true after {timeout:.0f} s: {what}")
        await asyncio.sleep(0.2)


async def run_case(
    broker: Broker, keys: int, standbys: int, session_ms: int, tick: float, verify: bool
) -> Result:
    graph_id = f"bench-fo-{uuid.uuid4().hex[:8]}"
    topic, stamps_topic = f"{graph_id}-ticks", jobs.stamps_topic(graph_id)
    plan = jobs.make_graph(graph_id, topic, PARTITIONS).plan()
    codecs = topic_codecs(plan, in_process=False)
    tick_codec, stamp_codec = codecs[topic][1], codecs[stamps_topic][1]
    assert tick_codec is not None and stamp_codec is not None
    heartbeat = max(100, session_ms // 6)
    url = f"{broker.url}?session_timeout_ms={session_ms}&heartbeat_interval_ms={heartbeat}"
    url += f"&standby_replicas={standbys}"
    target = f"{JOBS}:make_graph({graph_id!r}, {topic!r}, {PARTITIONS})"
    bootstrap = broker.bootstrap
    await create_topics(bootstrap, topic, stamps_topic)

    reference: collections.Counter[str] = collections.Counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, max_request_size=4 << 20
    )
    await producer.start()
    tmp = tempfile.TemporaryDirectory(prefix="bench-failover-")
    workers: list[Worker] = []
    stamps = Stamps(bootstrap, stamps_topic, stamp_codec)
    ticking = True
    produced = 0
    try:
        # 1. load
        names = [f"key-{i}" for i in range(keys)]
        for start in range(0, keys, 100_000):
            chunk = names[start : start + 100_000]
            await produce(
                producer,
                topic,
                [(k.encode(), tick_codec.encode(jobs.Tick(n=-1))) for k in chunk],
            )
        reference.update(names)
        produced = keys
        loading = time.monotonic()
        for i in range(WORKERS):
            state, log = Path(tmp.name) / f"w{i + 1}", Path(tmp.name) / f"w{i + 1}.log"
            workers.append(Worker.start(target, url, state, log))

        async def loaded() -> bool:
            return await committed(bootstrap, graph_id, topic) >= keys

        await wait("the table is loaded", loaded, 30 + keys / 2_000, workers)
        load_rate = keys / (time.monotonic() - loading)

        # 2. settle, ticking
        tick_keys: dict[int, str] = {}
        for name in names:
            tick_keys.setdefault(partition_of(name.encode()), name)
            if len(tick_keys) == PARTITIONS:
                break
        assert len(tick_keys) == PARTITIONS, "too few keys for a key in every partition"

        async def ticker() -> None:
            nonlocal produced
            n = 0
            while ticking:
                batch = [
                    (k.encode(), tick_codec.encode(jobs.Tick(n=n, timed=True)))
                    for k in tick_keys.values()
                ]
                await produce(producer, topic, batch)
                reference.update(tick_keys.values())
                produced += len(batch)
                n += 1
                await asyncio.sleep(tick)

        ticks = asyncio.create_task(ticker())
        await stamps.start()
        pids = {w.pid for w in workers}

        async def settled() -> bool:
            now = time.time()
            owners = stamps.owners(now - STABLE)
            return (
                len(owners) == PARTITIONS
                and all(len(o) == 1 for o in owners.values())
                and set().union(*owners.values()) == pids
            )

        await wait("the group settles", settled, 120 + 6 * session_ms / 1000, workers)

        # 3. kill -9 of the worker with the most partitions
        owners = stamps.owners(time.time() - STABLE)
        by_pid: dict[int, set[int]] = collections.defaultdict(set)
        for p, o in owners.items():
            by_pid[next(iter(o))].add(p)
        victim = max(workers, key=lambda w: len(by_pid[w.pid]))
        lost = by_pid[victim.pid]
        survivors = [w for w in workers if w is not victim]
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.proc.wait()

        # 4. takeover
        async def taken_over() -> bool:
            return all(stamps.first_after(p, killed_at, victim.pid) for p in lost)

        await wait("the lost partitions are taken over", taken_over, 300, survivors)
        firsts = [stamps.first_after(p, killed_at, victim.pid) or 0.0 for p in lost]
        taken = max(firsts)

        async def logged() -> bool:  # a line of each survivor since: the restore is in it
            return all(w.lines and w.lines[-1][0] > taken for w in survivors)

        await wait("the survivors log a line after the takeover", logged, 30, survivors)
        ticking = False
        await ticks

        # 5. drain, stop, verify
        async def drained() -> bool:
            return await committed(bootstrap, graph_id, topic) >= produced

        await wait("the survivors commit everything", drained, 60 + keys / 5_000, survivors)
        for w in survivors:
            w.proc.send_signal(signal.SIGTERM)
        for w in survivors:
            if w.proc.wait(60) != 0:
                w.check()
                raise SystemExit(f"worker {w.pid} exited with {w.proc.returncode}")
        restored = sum(w.restored(killed_at) - w.restored(0.0, killed_at) for w in survivors)
        shown = [t for w in survivors if (t := w.restore_shown_at(killed_at)) is not None]
        exact = None
        if verify:
            exact = await changelog_equals(bootstrap, plan, dict(reference))
        return Result(
            keys=keys,
            standbys=standbys,
            session=session_ms / 1000,
            lost=len(lost),
            first=min(firsts) - killed_at,
            all=max(firsts) - killed_at,
            restored=restored,
            restore_shown=max(shown) - killed_at if shown else None,
            load_rate=load_rate,
            exact=exact,
        )
    finally:
        ticking = False
        if stamps._task is not None:
            await stamps.stop()
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        await producer.stop()
        tmp.cleanup()


async def changelog_equals(bootstrap: str, plan: Any, expected: dict[str, int]) -> bool:
    """Whether the table, as its changelog says (last value per key), equals `expected`."""
    [spec] = plan.stores
    kc, vc = topic_codecs(plan, in_process=False)[spec.changelog]
    assert kc is not None and vc is not None
    table: dict[str, int] = {}
    for r in await read_all(bootstrap, spec.changelog):
        table[kc.decode(r.key)] = vc.decode(r.value)
    if table != expected:
        wrong = [k for k in table.keys() | expected.keys() if table.get(k) != expected.get(k)]
        print(f"changelog: {len(wrong)} of {len(expected):,} keys differ, e.g. {wrong[:3]}")
    return table == expected


# -- main -------------------------------------------------------------------------------------


def standby_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys in the table")
    parser.add_argument(
        "--standbys", type=standby_list, default=[0, 1], help="cases, e.g. 0,1 (default)"
    )
    parser.add_argument("--session-timeout-ms", type=int, default=3_000)
    parser.add_argument("--tick", type=float, default=0.02, help="seconds between ticks")
    parser.add_argument("--no-verify", action="store_true", help="skip the changelog check")
    args = parser.parse_args()
    broker = open_broker()
    results: list[Result] = []
    try:
        for standbys in args.standbys:
            results.append(
                await run_case(
                    broker,
                    args.keys,
                    standbys,
                    args.session_timeout_ms,
                    args.tick,
                    not args.no_verify,
                )
            )
    finally:
        broker.stop()
    print(
        f"fail-over: kill -9 of 1 of {WORKERS} workers, {PARTITIONS} partitions, RocksDB stores; "
        "takeover = kill to the first record of a lost partition processed by a survivor"
    )
    head = (
        f"{'keys':>10}{'standbys':>10}{'session':>9}{'lost':>6}{'takeover first':>16}"
        f"{'all':>8}{'restored':>10}{'restore shown':>15}{'load/s':>9}{'exact':>7}"
    )
    print(head)
    bad = False
    for r in results:
        shown = f"<= {r.restore_shown:.1f} s" if r.restore_shown is not None else "-"
        exact = {None: "-", True: "yes", False: "NO"}[r.exact]
        bad = bad or r.exact is False
        print(
            f"{r.keys:>10,}{r.standbys:>10}{r.session:>7.1f} s{r.lost:>6}{r.first:>14.2f} s"
            f"{r.all:>6.2f} s{r.restored:>10,}{shown:>15}{r.load_rate:>9,.0f}{exact:>7}"
        )
    print("target with a standby: takeover <= session timeout + 2 s, whatever the table size")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
