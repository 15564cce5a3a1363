"""Benchmark: scale-out, 1, 2 and 4 worker processes against a raw aiokafka consumer group.

N JSON click records keyed by user are produced to an 8-partition topic on the test broker
(tansu, started here, or FLOWGRAPH_TEST_BROKER), spread evenly over the partitions, before
anything is timed. Then, for each group size (1, 2, 4 processes by default), one after the
other:

- raw: a consumer group of aiokafka processes (getmany + msgspec decode + a dict count per
  URL, offsets committed once at the end, fetch sizes as flowgraph's): what the machine
  allows for one hop. It reads the input ``--raw-passes`` times (default 5), which makes its
  timed window about as long as flowgraph's: on a shared machine a window of one second can
  fall into a quiet moment that a window of seven does not, and its scaling would show luck;
- flowgraph: worker processes (the `Worker` API, each with its own RocksDB directory) running
  ``source -> key_by(url) -> count`` until the group is idle: two sub-topologies, so every
  record crosses the broker twice (the source, then the repartition topic), and each count
  is changelogged.

Every process joins its group first, with fetching held back; only once the group's
assignment covers every partition (and has stopped changing) are all told to go at once, so
process start, imports and the join are not timed. Each process reports the wall times of
its first and last record processed; a size's throughput is N over the span from the
group's first record to its last. Alongside: CPU seconds per record of the members and the
broker (the machine's other work stretches the wall times, hardly the CPU), rebalances after
the go, and per flowgraph member the time spent processing, fetching and committing. Every
group's counts must equal a plain-Python count.

``--kinds ... one-hop`` adds a third group: the same count on a copy of the clicks keyed by
URL, so without the repartition hop (what the second hop costs). ``--profile DIR`` runs the
flowgraph workers under cProfile (slower) and writes one ``.prof`` file per worker to DIR,
for ``python -m pstats``.

    python bench/bench_scale.py [--records N] [--sizes 1 2 4] [--kinds raw flowgraph one-hop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flowgraph as fg
from bench.bench_kafka import produce
from flowgraph.partitioner import partition_for
from flowgraph.runtime import open_transport
from flowgraph.runtime.kafka import MAX_BATCH_BYTES
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from tests.kafka_broker import open_broker

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8
URLS = 2_000
TABLE = "per_url"
FAST_JOIN = "?session_timeout_ms=6000&heartbeat_interval_ms=500"
"""tansu holds each group join for half the session timeout: keep it short, but long enough
that a member of 4 on 2 busy cores does not miss its heartbeats."""
SETTLE = 1.0
"""Seconds the group's assignment must stay unchanged before the go."""
JOIN_TIMEOUT = 120.0
"""Seconds for a group's members to start and join before the bench gives up."""


def run_timeout(records: int) -> float:
    """Seconds for a group to process `records` before the bench gives up (a stuck run)."""
    return 120.0 + records / 5_000


MARK = "@@"
"""Prefix of the children's report lines on stdout (anything else there is passed through)."""


class Click(fg.Record):
    url: str
    user: str
    ts: float


def by_url(click: Click) -> str:
    return click.url


def graph(graph_id: str, topic: str) -> fg.Graph:
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=PARTITIONS)
    clicks.key_by(by_url).count(name=TABLE)
    return g


def one_hop_graph(graph_id: str, topic: str) -> fg.Graph:
    """The count on a source keyed by URL already: one sub-topology, one hop."""
    g = fg.Graph(graph_id)
    g.source(topic, key_type=str, value_type=Click, partitions=PARTITIONS).count(name=TABLE)
    return g


def make_records(n: int) -> tuple[list[tuple[int, bytes, bytes]], dict[str, int]]:
    """`n` clicks ``(partition, user key, JSON value)`` dealt round-robin over the partitions,
    and the count per URL they must give.

    URLs are uniform: with the Zipf-like popularity of bench_kafka.py the repartition topic's
    largest partition holds 20% of the records, and that skew alone would cap the scaling
    of the second hop; here both hops are balanced and the figures show the framework.
    """
    rng = random.Random(7)
    out = []
    counts: dict[str, int] = {}
    for i in range(n):
        url = f"/page/{rng.randrange(URLS)}"
        user = f"user{rng.randrange(100_000)}"
        counts[url] = counts.get(url, 0) + 1
        value = json.dumps({"url": url, "user": user, "ts": 1.7e9 + i}).encode()
        out.append((i % PARTITIONS, user.encode(), value))
    return out, counts


# -- the children: one member of a group each ---------------------------------------------


def report(**fields: Any) -> None:
    """One line to the parent: marked, so log lines on stdout are told apart from it."""
    sys.stdout.write(MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


async def read_line() -> str:
    """The next line from the parent (blocking read in a thread: heartbeats go on)."""
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def wait_go() -> None:
    """Wait for the parent's go; a parent gone before it (its pipe closed) ends the child."""
    if not await read_line():
        raise SystemExit(1)


def cpu_seconds() -> float:
    """CPU seconds of this process so far: the cost of a run, whatever the machine's load."""
    t = os.times()
    return t.user + t.system


class _RawListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reports each assignment; before the go, keeps the new partitions paused."""

    def __init__(self, consumer: AIOKafkaConsumer, state: dict[str, Any]) -> None:
        self.consumer = consumer
        self.state = state

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if not self.state["go"]:
            self.consumer.pause(*assigned)
        else:
            self.state["rebalances"] += 1
        report(assigned=sorted([tp.topic, tp.partition] for tp in assigned))


async def raw_child(args: argparse.Namespace) -> None:
    """consume + decode + count, one hop; commit once at the end."""
    decode = msgspec.json.Decoder(Click).decode
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_partition_fetch_bytes=4 * MAX_BATCH_BYTES,
        fetch_max_bytes=16 * MAX_BATCH_BYTES,
    )
    state: dict[str, Any] = {"go": False, "rebalances": 0}
    await consumer.start()
    consumer.subscribe([args.topic], listener=_RawListener(consumer, state))
    await wait_go()
    state["go"] = True
    owned = consumer.assignment()
    # the records were dealt round-robin (make_records); tansu's ListOffsets can lag behind
    # what it has acknowledged, so the ends are worked out rather than asked for
    ends = {
        tp: args.records // PARTITIONS + (tp.partition < args.records % PARTITIONS) for tp in owned
    }
    consumer.resume(*owned)
    cpu0 = cpu_seconds()
    counts: dict[str, int] = {}
    nxt: dict[TopicPartition, int] = {}
    passes = dict.fromkeys(owned, args.raw_passes)
    first = last = 0.0
    seen = 0
    while any(passes.values()):
        data = await consumer.getmany(timeout_ms=200, max_records=10_000)
        if not data:
            continue
        if not first:
            first = time.time()
        for tp, records in data.items():
            for r in records:
                url = decode(r.value).url
                counts[url] = counts.get(url, 0) + 1
            seen += len(records)
            nxt[tp] = records[-1].offset + 1
            if nxt[tp] >= ends[tp]:
                passes[tp] -= 1
                if passes[tp]:  # read it again from the start
                    consumer.seek(tp, 0)
        last = time.time()
    cpu = cpu_seconds() - cpu0
    await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in nxt.items()})
    report(
        done=True,
        first=first,
        last=last,
        records=seen,
        cpu=cpu,
        rebalances=state["rebalances"],
        counts=counts,
        ends={f"{tp.partition}": e for tp, e in ends.items()},
        nxt={f"{tp.partition}": e for tp, e in nxt.items()},
    )
    await read_line()  # stop: nobody leaves before all are done (no rebalance mid-run)
    await consumer.stop()


class Clock:
    """Where a worker's time goes from its first record processed to its last, measured per
    call of a step, a fetch and a commit (never per record): wall and CPU seconds, calls,
    records. Waits and commits after the last record (the group's end) are left out."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.records = 0
        self.process = self.process_cpu = 0.0
        self.fetch = self.fetch_cpu = self.fetches = self.fetched = 0.0
        self.empty = 0.0
        """Seconds in fetches that brought nothing (waiting for records)."""
        self.commit = self.commits = 0.0
        self._later = [0.0, 0.0, 0.0]
        """Empty-fetch seconds, commit seconds and commits since the last record: counted
        once another record comes."""

    def wrap(self, worker: Worker) -> None:
        process, commit = worker._process, worker.commit
        consumer = worker._consumer
        assert consumer is not None
        getmany = consumer.getmany
        later = self._later

        async def timed_process(budget: int | None) -> int:
            t0, c0 = time.time(), time.process_time()
            n = await process(budget)
            if n:
                now = time.time()
                self.process += now - t0
                self.process_cpu += time.process_time() - c0
                self.records += n
                self.last = now
                if not self.first:
                    self.first = t0
                self.empty += later[0]
                self.commit += later[1]
                self.commits += later[2]
                later[:] = [0.0, 0.0, 0.0]
            return n

        async def timed_commit() -> None:
            t0 = time.time()
            await commit()
            if self.first:
                later[1] += time.time() - t0
                later[2] += 1

        async def timed_getmany(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.time(), time.process_time()
            batches = await getmany(*args, **kwargs)
            if self.first:
                if batches:
                    self.fetch += time.time() - t0
                    self.fetch_cpu += time.process_time() - c0
                    self.fetches += 1
                    self.fetched += sum(len(b) for b in batches.values())
                else:
                    later[0] += time.time() - t0
            return batches

        worker._process = timed_process  # type: ignore[method-assign]
        worker.commit = timed_commit  # type: ignore[method-assign]
        consumer.getmany = timed_getmany  # type: ignore[method-assign]


async def flowgraph_child(args: argparse.Namespace) -> None:
    """One worker of ``source -> key_by -> count`` (or the one-hop ``source -> count``)
    until the group is idle."""
    plan = (graph if args.child == "flowgraph" else one_hop_graph)(args.group, args.topic).plan()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            name: value
            for name in ("max_batch", "commit_every", "commit_interval")
            if (value := getattr(args, name)) is not None
        }
        worker = Worker(
            plan,
            open_transport(args.url + FAST_JOIN),
            open_backend(f"rocksdb://{tmp}"),
            **settings,
        )
        state: dict[str, Any] = {"go": False, "rebalances": 0}
        assigned = worker._on_assigned

        async def on_assigned(tps: frozenset[tuple[str, int]]) -> None:
            # Worker._on_assigned only notes the partitions: their tasks are built (and
            # fetched) by the first step after the go
            if state["go"]:
                state["rebalances"] += 1
            report(assigned=sorted(tps))
            await assigned(tps)

        worker._on_assigned = on_assigned  # type: ignore[method-assign,assignment]
        await worker.start()  # joins in the background; run() builds the tasks
        clock = Clock()
        clock.wrap(worker)
        await wait_go()
        state["go"] = True
        cpu0 = cpu_seconds()
        if profiler is not None:
            profiler.enable()
        await worker.run(until_idle=True, stall_timeout=300)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(args.profile, f"{args.group}-{args.index}.prof"))
        cpu = cpu_seconds() - cpu0
        table = worker.table(TABLE)
        report(
            done=True,
            **{k: v for k, v in vars(clock).items() if not k.startswith("_")},
            events=worker.stats.events,
            cpu=cpu,
            rebalances=state["rebalances"],
            lost=worker.lost_memberships,
            counts=table,
        )
        await read_line()  # stop
        await worker.stop()


# -- the parent: a group of children per size ----------------------------------------------


class Member:
    """A child process and what it reported."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.assigned: list[tuple[str, int]] = []
        self.assigned_at = 0.0
        self.done: dict[str, Any] | None = None
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if not line.startswith(MARK):
                sys.stderr.write(line)
                continue
            msg = json.loads(line[len(MARK) :])
            if "assigned" in msg:
                self.assigned = [tuple(tp) for tp in msg["assigned"]]
                self.assigned_at = time.monotonic()
            if msg.get("done"):
                self.done = msg

    def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far; 0 when unknown (an external
    broker)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_for(what: str, cond: Any, members: list[Member], timeout: float) -> None:
    """Poll `cond` until it holds; stop the bench on a member that died or on `timeout`."""
    deadline = time.monotonic() + timeout
    while not cond():
        for m in members:
            if m.proc.returncode is not None and m.done is None:
                raise SystemExit(f"a member exited with {m.proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


KINDS = ("raw", "flowgraph", "one-hop")
SHOWN = {"raw": "raw", "flowgraph": "flowgraph", "one-hop": "one hop"}


def plan_of(kind: str, group: str, topic: str) -> Any:
    return (graph if kind == "flowgraph" else one_hop_graph)(group, topic).plan()


def entry_partitions(kind: str, group: str, topic: str) -> set[tuple[str, int]]:
    """Every partition the group reads: the source's, and the repartition topic's too."""
    topics = [topic]
    if kind != "raw":
        topics = [t for sub in plan_of(kind, group, topic).subtopologies for t in sub.source_topics]
    return {(t, p) for t in topics for p in range(PARTITIONS)}


async def group_run(
    kind: str, size: int, args: argparse.Namespace, broker: Any, topic: str
) -> dict[str, Any]:
    """Start `size` members of a new group, let them join, go, and collect their reports."""
    group = f"scale-{kind}-{size}-{uuid.uuid4().hex[:8]}"
    every = entry_partitions(kind, group, topic)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--group", group]
    cmd += ["--topic", topic, "--bootstrap", broker.bootstrap, "--url", broker.url]
    cmd += ["--records", str(args.records), "--raw-passes", str(args.raw_passes)]
    if kind != "raw":
        for name in ("profile", "max_batch", "commit_every", "commit_interval"):
            if (value := getattr(args, name)) is not None:
                cmd += [f"--{name.replace('_', '-')}", str(value)]
    members = []
    for i in range(size):
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "--index",
            str(i),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        members.append(Member(proc))
    pid = broker.process.pid if broker.process is not None else None
    try:

        def joined() -> bool:
            owned = [tp for m in members for tp in m.assigned]
            settled = time.monotonic() - max(m.assigned_at for m in members) >= SETTLE
            return (
                all(m.assigned for m in members)
                and len(owned) == len(set(owned))
                and set(owned) >= every
                and settled
            )

        await wait_for(f"{size} {kind} members to join", joined, members, JOIN_TIMEOUT)
        broker_cpu = cpu_of(pid)
        for m in members:
            m.tell("go")
        await wait_for(
            f"{size} {kind} members to finish",
            lambda: all(m.done for m in members),
            members,
            run_timeout(args.records),
        )
        broker_cpu = cpu_of(pid) - broker_cpu
        for m in members:
            m.tell("stop")
        for m in members:
            await asyncio.wait_for(m.proc.wait(), 60)
            await m.reader
    finally:
        for m in members:
            if m.proc.returncode is None:
                m.proc.kill()
                await m.proc.wait()
    reports = [m.done for m in members if m.done is not None]
    counts: dict[str, int] = {}
    for r in reports:
        for url, c in r.pop("counts").items():
            counts[url] = counts.get(url, 0) + c
    first = min(r["first"] for r in reports if r["first"])
    last = max(r["last"] for r in reports)
    return {
        "span": last - first,
        "counts": counts,
        "cpu": sum(r["cpu"] for r in reports),
        "broker_cpu": broker_cpu,
        "rebalances": sum(r["rebalances"] for r in reports),
        "reports": reports,
    }


def describe(kind: str, size: int, result: dict[str, Any]) -> str:
    """A few lines of detail on a group run: CPU, rebalances, where each member's time went."""
    span = result["span"]
    lines = [
        f"{SHOWN[kind]} x{size}: {span:.2f}s from the first record to the last; CPU "
        f"{result['cpu']:.1f}s members, {result['broker_cpu']:.1f}s broker "
        f"({result['broker_cpu'] / span:.0%} of a core); rebalances {result['rebalances']}"
    ]
    for i, r in enumerate(result["reports"]):
        line = f"    member {i}: {r['records']:,} records in {r['last'] - r['first']:.2f}s"
        if kind != "raw":
            per = r["fetched"] / r["fetches"] if r["fetches"] else 0
            line += (
                f"; processing {r['process']:.2f}s ({r['process_cpu']:.2f}s CPU), fetching "
                f"{r['fetch']:.2f}s ({r['fetch_cpu']:.2f}s CPU; {r['fetches']:.0f} fetches, "
                f"{per:,.0f} records each), "
                f"{r['commits']:.0f} commits {r['commit']:.2f}s, waiting for records "
                f"{r['empty']:.2f}s"
            )
        lines.append(line)
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    n = args.records
    kinds = [k for k in KINDS if k in args.kinds]
    rates: dict[tuple[str, int], float] = {}
    cpus: dict[tuple[str, int], float] = {}
    broker = open_broker()
    try:
        topic = f"scale-clicks-{uuid.uuid4().hex[:8]}"
        by_url_topic = f"scale-clicks-by-url-{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (topic, by_url_topic)])
        finally:
            await admin.close()
        records, expected = make_records(n)
        await produce(broker.bootstrap, topic, records)
        if "one-hop" in kinds:  # the same clicks, keyed and partitioned by URL already
            keyed = [
                (partition_for(u := json.loads(v)["url"].encode(), PARTITIONS), u, v)
                for _, _, v in records
            ]
            await produce(broker.bootstrap, by_url_topic, keyed)
            del keyed
        del records
        for _ in range(args.rounds):
            for size in args.sizes:
                for kind in kinds:
                    source = by_url_topic if kind == "one-hop" else topic
                    result = await group_run(kind, size, args, broker, source)
                    read = n * (args.raw_passes if kind == "raw" else 1)
                    check(kind, size, result["counts"], expected, read // n)
                    print(describe(kind, size, result), flush=True)
                    if read / result["span"] > rates.get((kind, size), 0.0):  # the best round
                        rates[kind, size] = read / result["span"]
                        cpus[kind, size] = (result["cpu"] + result["broker_cpu"]) / read * 1e6
    finally:
        broker.stop()
    best = f", the best of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\nscale-out on the test broker: {n:,} JSON clicks, {PARTITIONS} partitions{best}")
    print(
        f"raw: an aiokafka group, getmany + msgspec decode + dict count, commit at the end; "
        f"it reads the input {args.raw_passes} times"
    )
    print("flowgraph: source -> key_by -> count, RocksDB + changelog (two hops over the broker)")
    if "one-hop" in kinds:
        print("one hop: source keyed by URL -> count, RocksDB + changelog (one hop)")
    head = f"{'processes':>9}"
    for kind in kinds:
        head += f"{SHOWN[kind] + ' rec/s':>17}{'scaling':>9}{'CPU us/rec':>11}"
    ratio = "raw" in kinds and "flowgraph" in kinds
    print(head + (f"{'ours/raw':>10}" if ratio else ""))
    for size in args.sizes:
        line = f"{size:>9}"
        for kind in kinds:
            rate = rates[kind, size]
            line += f"{rate:>17,.0f}{rate / rates[kind, args.sizes[0]]:>8.2f}x"
            line += f"{cpus[kind, size]:>11.1f}"
        if ratio:
            line += f"{rates['flowgraph', size] / rates['raw', size]:>10.0%}"
        print(line)
    print(
        f"CPU us/rec: members and broker; load average now: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs (the machine's other work slows every case)"
    )
    print("target: flowgraph's scaling from 1 to 2 within 10% of the raw group's")


def check(
    kind: str, size: int, counts: dict[str, int], expected: dict[str, int], passes: int
) -> None:
    """Stop the bench if the group's merged counts are not the plain-Python count (times the
    passes over the input)."""
    expected = {url: c * passes for url, c in expected.items()}
    if counts != expected:
        wrong = [u for u in set(counts) | set(expected) if counts.get(u) != expected.get(u)]
        raise SystemExit(
            f"{SHOWN[kind]} x{size}: {len(wrong)} URLs counted wrong, e.g. {wrong[:3]} "
            f"({sum(counts.values())} counted, {sum(expected.values())} expected)"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every case this often, show the best"
    )
    parser.add_argument("--profile", metavar="DIR", default=None)
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        default=["raw", "flowgraph"],
        help="groups to run at each size (default: raw flowgraph; one-hop adds the count on "
        "a source keyed by URL, without the repartition hop)",
    )
    parser.add_argument(
        "--raw-passes",
        type=int,
        default=5,
        help="times the raw group reads the input (default 5: it is that much faster, and "
        "the machine's noise should hit windows of about the same length)",
    )
    parser.add_argument("--max-batch", type=int, help="the workers' max_batch (default 2000)")
    parser.add_argument(
        "--commit-every", type=int, help="the workers' commit_every (default 100000)"
    )
    parser.add_argument(
        "--commit-interval", type=float, help="the workers' commit_interval (default 1.0 s)"
    )
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    parsed = parse()
    if parsed.child == "raw":
        asyncio.run(raw_child(parsed))
    elif parsed.child in KINDS:
        asyncio.run(flowgraph_child(parsed))
    else:
        if parsed.profile:
            os.makedirs(parsed.profile, exist_ok=True)
        asyncio.run(main(parsed))
