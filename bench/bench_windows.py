"""Benchmark: windowed counts per key, embedded, against the same run's non-windowed count.

1,000,000 JSON events (1,000 keys drawn at random, seeded; timestamps 0, 0.001, 0.002, ... s, so
1,000 events/s and 1,000 s in all) are pre-written to a 4-partition memory topic (not timed) and
counted per key three ways, each with the memory store and with the RocksDB store:

- count:    ``events.count()``, the baseline (the same graph without ``.window(...)``);
- tumbling: ``events.window(fg.Tumbling(10), timestamp=lambda e: e.ts).count()``, 100 windows;
- hopping:  ``events.window(fg.Hopping(60, 10), timestamp=lambda e: e.ts).count()``, 6 windows
  per record;
- sliding:  ``events.window(fg.Sliding(60), timestamp=lambda e: e.ts).count()``, a window per
  record;
- keyed:    ``events.key_by(zone).window(fg.Tumbling(10)).count()``, 16 zones, placed by the
  record timestamps (in order, interleaved across the 4 partitions): the realistic case for
  the scheduler, which runs the source partitions in timestamp order so that nothing is late
  behind the repartition topic; its runs are about one record long, so this case shows
  what the ordering costs.

Windows use grace=0 and retention=0 (state deleted as windows close) and emit="update", as a
user would run them; the event time comes from the record value through a user lambda. Each case
runs in its own process so that peak RSS is its own; cases are interleaved over several rounds
and the best of each is kept, since this machine is noisy.

Checks (a failure exits non-zero with one line): every timed run processed every event with no
dead letters and no late records, and its windows still held at the end are exactly the ones not
yet past their end (values checked against counts computed here). A separate verification run
(not timed) keeps every window (large retention) and checks all of them, and that the tumbling
counts sum to the events and the hopping counts to 6 per event less the windows missing near t=0.

    python bench/bench_windows.py [--records N] [--rounds N] [--case NAME] [--verify-records N]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import resource
import tempfile
import time
from collections import Counter
from typing import Any

from _cases import best_of, child, dir_size, fail_on

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker

PARTITIONS = 4
KEYS = 1_000
TUMBLING = (10, 10)  # (size, step) in seconds
HOPPING = (60, 10)
SLIDING = 60  # seconds: a window [t - 60, t] per event, about 60 events of its key in each
KINDS = ("count", "tumbling", "hopping", "sliding", "keyed")
STORES = ("memory", "rocksdb")
TARGETS = {"tumbling": 0.60, "hopping": 0.25}
KEEP_ALL = 1e9  # retention for the verification run: no window is ever deleted


class Event(fg.Record):
    user: str
    ts: float


def zone(user: str) -> str:
    """The key of the keyed case: 16 zones, not the key the input is partitioned by."""
    return f"zone{int(user[4:]) % 16}"


def keys_of(kind: str, users: list[str]) -> list[str]:
    """The windows' keys: the users, or for the keyed case their zones."""
    return [zone(u) for u in users] if kind == "keyed" else users


def make_events(n: int) -> tuple[list[str], list[int]]:
    """Keys and timestamps in milliseconds (integers, so expected windows are exact)."""
    rng = random.Random(42)
    users = [f"user{i}" for i in range(KEYS)]
    return rng.choices(users, k=n), list(range(n))


def encode(users: list[str], ms: list[int]) -> list[tuple[int, bytes, bytes, float, None]]:
    out = []
    for user, t in zip(users, ms, strict=True):
        key = user.encode()
        ts = t / 1000
        value = f'{{"user":"{user}","ts":{ts!r}}}'.encode()
        out.append((partition_for(key, PARTITIONS), key, value, ts, None))
    return out


def build_graph(kind: str, retention: float = 0.0) -> fg.Graph:
    g = fg.Graph("bench")
    events = g.source("events", key_type=str, value_type=Event, partitions=PARTITIONS)
    if kind == "count":
        events.count(name="counts")
    elif kind == "tumbling":
        spec = fg.Tumbling(TUMBLING[0], grace=0, retention=retention, emit="update")
        events.window(spec, timestamp=lambda e: e.ts).count(name="counts")
    elif kind == "sliding":
        slide = fg.Sliding(SLIDING, grace=0, retention=retention, emit="update")
        events.window(slide, timestamp=lambda e: e.ts).count(name="counts")
    elif kind == "keyed":
        spec = fg.Tumbling(TUMBLING[0], grace=0, retention=retention, emit="update")
        events.key_by(lambda e: zone(e.user), name="zone").window(spec).count(name="counts")
    else:
        spec = fg.Hopping(HOPPING[0], HOPPING[1], grace=0, retention=retention, emit="update")
        events.window(spec, timestamp=lambda e: e.ts).count(name="counts")
    return g


def windows_of(t_ms: int, size: int, step: int) -> range:
    """The k of the windows ``[k * step, k * step + size)`` holding `t_ms` (seconds, k >= 0)."""
    size_ms, step_ms = size * 1000, step * 1000
    first = max(0, (t_ms - size_ms) // step_ms + 1)
    return range(first, t_ms // step_ms + 1)


def expected_windows(
    users: list[str], ms: list[int], kind: str, alive_after: dict[str, int] | None = None
) -> dict[tuple[str, float, float], int]:
    """Counts per (key, start, end); with `alive_after` only windows ending after that ms."""
    if kind == "sliding":
        return sliding_windows(users, ms, alive_after)
    size, step = TUMBLING if kind in ("tumbling", "keyed") else HOPPING
    counts: Counter[tuple[str, float, float]] = Counter()
    for user, t in zip(users, ms, strict=True):
        for k in windows_of(t, size, step):
            if alive_after is None or (k * step + size) * 1000 > alive_after[user]:
                counts[(user, float(k * step), float(k * step + size))] += 1
    return dict(counts)


def sliding_windows(
    users: list[str], ms: list[int], alive_after: dict[str, int] | None = None
) -> dict[tuple[str, float, float], int]:
    """One window ``[t - 60, t]`` per event: its key's events in it (float bounds, as the
    executor computes them); with `alive_after` only windows not yet deleted (ending at or
    after that ms: a sliding window includes its end)."""
    times: dict[str, list[float]] = {}
    counts: dict[tuple[str, float, float], int] = {}
    for user, t_ms in zip(users, ms, strict=True):
        t = t_ms / 1000
        mine = times.setdefault(user, [])
        mine.append(t)  # times only increase
        if alive_after is not None and t_ms < alive_after[user]:
            continue
        start = t - SLIDING
        counts[(user, start, t)] = len(mine) - bisect.bisect_left(mine, start)
    return counts


def live_windows(users: list[str], ms: list[int], kind: str) -> dict[tuple[str, float, float], int]:
    """Windows still held at the end with retention 0: those ending after their partition's
    stream time (the largest timestamp it saw)."""
    part = {u: partition_for(u.encode(), PARTITIONS) for u in set(users)}
    stream_time = [0] * PARTITIONS
    for user, t in zip(users, ms, strict=True):
        if t > stream_time[part[user]]:
            stream_time[part[user]] = t
    horizon = HOPPING[0] * 1000
    tail = [i for i, t in enumerate(ms) if t >= min(stream_time) - horizon]  # sliding: ends in
    alive_after = {u: stream_time[p] for u, p in part.items()}
    return expected_windows(
        [users[i] for i in tail], [ms[i] for i in tail], kind, alive_after=alive_after
    )


def as_plain(windows: dict[Any, int]) -> dict[tuple[str, float, float], int]:
    return {(w.key, w.start, w.end): v for w, v in windows.items()}


def check_stats(stats: Any, n: int, label: str) -> list[str]:
    problems = []
    if stats.events != n:
        problems.append(f"{label}: processed {stats.events:,} events, expected {n:,}")
    if stats.dead_letters:
        problems.append(f"{label}: {stats.dead_letters:,} dead letters")
    if getattr(stats, "late", 0):
        problems.append(f"{label}: {stats.late:,} late records (timestamps only increase)")
    return problems


def diff(got: dict[Any, int], want: dict[Any, int], label: str) -> list[str]:
    if got == want:
        return []
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and got[k] != want[k]]
    sample = (wrong or missing or extra)[:1]
    detail = ", ".join(f"{k}: got {got.get(k)} want {want.get(k)}" for k in sample)
    return [
        f"{label}: {len(wrong)} wrong, {len(missing)} missing, {len(extra)} extra windows "
        f"of {len(want):,} (e.g. {detail})"
    ]


def timed_run(
    kind: str, records: list[tuple[int, bytes, bytes, float, None]], store: str
) -> tuple[float, Any, Any]:
    plan = build_graph(kind).plan()
    transport = MemoryTransport()
    transport.broker.ensure("events", PARTITIONS)
    transport.broker.append("events", records)

    async def main() -> tuple[float, Any, Any]:
        worker = Worker(plan, transport, open_backend(store))
        await worker.start()
        start = time.perf_counter()
        await worker.run(until_idle=True, idle_wait=0.0)
        elapsed = time.perf_counter() - start
        table = worker.table("counts")
        table = dict(table) if kind == "count" else as_plain(table.windows())
        await worker.stop()
        return elapsed, table, worker.stats

    return asyncio.run(main())


def run_case(kind: str, store: str, n: int) -> dict[str, Any]:
    users, ms = make_events(n)
    keys = keys_of(kind, users)
    want = dict(Counter(users)) if kind == "count" else live_windows(keys, ms, kind)
    records = encode(users, ms)
    disk = 0
    if store == "memory":
        elapsed, table, stats = timed_run(kind, records, "memory://")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, table, stats = timed_run(kind, records, f"rocksdb://{tmp}")
            disk = dir_size(tmp)
    label = f"{kind}/{store}"
    problems = check_stats(stats, n, label) + diff(table, want, f"{label} windows held at end")
    return {
        "elapsed": elapsed,
        "rate": n / elapsed,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "disk_mb": disk / 2**20,
        "held": len(table),
        "problems": problems,
    }


def verify(n: int) -> dict[str, Any]:
    """Keep every window (large retention), read them back through RunResult, check them all."""
    users, ms = make_events(n)
    records = encode(users, ms)
    problems: list[str] = []
    for kind in ("tumbling", "hopping", "sliding", "keyed"):
        want = expected_windows(keys_of(kind, users), ms, kind)
        size, step = TUMBLING if kind in ("tumbling", "keyed") else HOPPING
        want_total = sum(len(windows_of(t, size, step)) for t in ms)  # 6 per event less t < 50 s
        if kind == "sliding":
            want_total = sum(want.values())
        if kind in ("tumbling", "keyed") and want_total != n:
            problems.append(f"verify: bad expectation {want_total} for tumbling")
        for store in STORES:
            label = f"verify {kind}/{store} ({n:,} events, retention {KEEP_ALL:g})"

            def fill(worker: Worker) -> None:
                broker = worker.transport.broker  # type: ignore[attr-defined]
                broker.ensure("events", PARTITIONS)
                broker.append("events", records)

            with tempfile.TemporaryDirectory() as tmp:
                url = "memory://" if store == "memory" else f"rocksdb://{tmp}"
                result = fg.run(build_graph(kind, KEEP_ALL), store=url, on_worker=fill)
                got = as_plain(result.table("counts").windows())
            problems += check_stats(result.stats, n, label)
            total = sum(got.values())
            if total != want_total:
                problems.append(f"{label}: window counts sum to {total:,}, expected {want_total:,}")
            problems += diff(got, want, label)
    return {"problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="best of N, cases interleaved")
    parser.add_argument("--verify-records", type=int, default=200_000)
    parser.add_argument("--case", help="kind/store, e.g. tumbling/memory, or verify")
    args = parser.parse_args()
    if args.case == "verify":
        print(json.dumps(verify(args.verify_records)))
        return
    if args.case:
        kind, store = args.case.split("/")
        print(json.dumps(run_case(kind, store, args.records)))
        return

    started = time.perf_counter()
    problems = child(__file__, ["--case", "verify", "--verify-records", str(args.verify_records)])[
        "problems"
    ]
    cases = [f"{kind}/{store}" for store in STORES for kind in KINDS]
    results, found = best_of(
        __file__, cases, lambda c: ["--case", c, "--records", str(args.records)], args.rounds
    )
    problems += found

    print(
        f"windowed counts per key, {args.records:,} JSON events, {KEYS:,} keys, "
        f"{PARTITIONS} partitions, 1 ms apart; best of {args.rounds}"
    )
    print(
        "event time from the value: window(spec, timestamp=lambda e: e.ts); "
        "tumbling 10 s, hopping 60/10 s (6 windows per event), sliding 60 s (a window per "
        "event); grace 0, retention 0, "
        'emit "update"; keyed: key_by(zone) then tumbling 10 s by the record timestamps, '
        "in timestamp order across the partitions"
    )
    print(
        f"{'case':<18}{'events/s':>12}{'vs count':>10}{'target':>8}"
        f"{'peak RSS MB':>13}{'disk MB':>9}{'held at end':>16}"
    )
    for case in cases:
        r = results.get(case)
        if r is None:
            print(f"{case:<18}{'failed':>12}")
            continue
        kind, store = case.split("/")
        base = results.get(f"count/{store}")
        ratio = f"{r['rate'] / base['rate']:.0%}" if base and kind != "count" else ""
        target = f">={TARGETS[kind]:.0%}" if kind in TARGETS else ""
        if kind in TARGETS and base and r["rate"] / base["rate"] < TARGETS[kind]:
            target += "!"
        disk = f"{r['disk_mb']:.1f}" if store == "rocksdb" else ""
        held = f"{r['held']:,} " + ("keys" if kind == "count" else "windows")
        print(
            f"{case:<18}{r['rate']:>12,.0f}{ratio:>10}{target:>8}"
            f"{r['rss_mb']:>13.0f}{disk:>9}{held:>16}"
        )
    print(
        "vs count: rate / the same store's non-windowed count in this run; ! = below target; "
        "peak RSS includes the pre-written events (the same in every case)"
    )
    print(
        "held at end: windows (keys for count) in the store after the run; disk: RocksDB "
        f"directory after close; checked: timed runs' held windows, and a run keeping all "
        f"windows ({args.verify_records:,} events); {time.perf_counter() - started:.0f} s in all"
    )
    fail_on(problems)


if __name__ == "__main__":
    main()
