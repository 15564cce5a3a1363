"""Benchmark: a stream-table join and session windows, embedded, against the same run's count.

1,000,000 JSON events over 100,000 keys (users; about 10 events each) are pre-written to a
4-partition memory topic (not timed) and processed four ways, each with the memory store and
with the RocksDB store:

- count:    ``events.count()``, the baseline;
- join:     ``events.join(profiles, enrich).to("enriched")``, where ``profiles`` is
  ``g.source("profiles").to_table()`` over the same 100,000 keys and 4 partitions (so the join
  needs no repartition). The table is loaded first, by a run of its own that is not timed;
  the events are then appended and only that second run is timed, so the figure is the
  stream side's rate against a loaded table. Every event finds its profile (an inner join),
  and the sink encodes the enriched record to JSON;
- session:  ``events.window(fg.Session(30, grace=10), timestamp=lambda e: e.ts).count()``;
- tumbling: ``events.window(fg.Tumbling(60, grace=10), timestamp=lambda e: e.ts).count()``,
  for reference.

Event times are realistic for sessions: each user comes in bursts (visits) of a few events
1 to 29 s apart, the visits starting at random times over an hour; the events then
arrive in time order with up to 8 s of disorder (less than the grace), so a key's sessions are
many, most events extend their key's latest session, and now and then a late event bridges two
sessions of its key, which merges them. Windows use retention 0 and emit="update", as
bench/bench_windows.py does. Each case runs in its own process (peak RSS is its own); cases
are interleaved over rounds and the best of each is kept, since this machine is noisy.

Checks (a failure exits non-zero with one line): every timed run processed every event with no
dead letters and no late records; the count equals counting the events here; every event left
the join with its own user's profile; the sessions and tumbling windows held at the end are
exactly those that sorting each key's event times gives (`flowgraph.windows.sessions_of`), less
those past their retention.

    python bench/bench_joins.py [--records N] [--keys N] [--rounds N]

(``--case kind/store --data FILE`` runs one case in a child process.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import random
import resource
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _cases import best_of, dir_size, fail_on

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from flowgraph.windows import Session, sessions_of

PARTITIONS = 4
GAP = 30.0  # seconds without an event that end a session
GRACE = 10.0  # more than the disorder, so no event is late
DISORDER = 8.0  # an event arrives up to this many seconds after its time
TUMBLING = 60.0
HOUR = 3_600_000  # ms: event times span an hour
KINDS = ("count", "join", "session", "tumbling")
STORES = ("memory", "rocksdb")

Raw = tuple[int, bytes, bytes, float, None]


class Event(fg.Record):
    user: str
    ts: float


class Profile(fg.Record):
    user: str
    plan: str
    country: str


class Enriched(fg.Record):
    user: str
    ts: float
    plan: str
    country: str


def enrich(e: Event, p: Profile) -> Enriched:
    return Enriched(e.user, e.ts, p.plan, p.country)


def make_events(n: int, keys: int) -> tuple[list[str], list[int]]:
    """Users and times in ms, in arrival order: visits of a few events each, then disorder."""
    rng = random.Random(42)
    per_user = Counter(rng.randrange(keys) for _ in range(n))
    timed: list[tuple[float, int, int]] = []  # (arrival, time ms, user)
    for u, count in per_user.items():
        left = count
        while left:
            size = min(left, 1 + int(rng.expovariate(1 / 2.5)))  # events in this visit
            t = rng.randrange(HOUR)
            for _ in range(size):
                timed.append((t + rng.random() * DISORDER * 1000, t, u))
                t += rng.randrange(1_000, 29_000)  # within the gap: the session goes on
            left -= size
    timed.sort()
    return [f"user{u}" for _, _, u in timed], [t for _, t, _ in timed]


def partition(key: bytes) -> int:
    return partition_for(key, PARTITIONS)


def encode_events(users: list[str], ms: list[int]) -> list[Raw]:
    out = []
    for user, t in zip(users, ms, strict=True):
        key = user.encode()
        ts = t / 1000
        out.append((partition(key), key, f'{{"user":"{user}","ts":{ts!r}}}'.encode(), ts, None))
    return out


def profile_of(i: int) -> tuple[str, str]:
    return ("free", "pro", "team")[i % 3], ("fr", "de", "jp", "us", "br")[i % 5]


def encode_profiles(keys: int) -> list[Raw]:
    out = []
    for i in range(keys):
        user = f"user{i}"
        plan, country = profile_of(i)
        value = f'{{"user":"{user}","plan":"{plan}","country":"{country}"}}'.encode()
        out.append((partition(user.encode()), user.encode(), value, 0.0, None))
    return out


def build_graph(kind: str) -> fg.Graph:
    g = fg.Graph("bench")
    events = g.source("events", key_type=str, value_type=Event, partitions=PARTITIONS)
    if kind == "count":
        events.count(name="counts")
    elif kind == "join":
        profiles = g.source("profiles", key_type=str, value_type=Profile, partitions=PARTITIONS)
        table = profiles.to_table(name="profile")
        events.join(table, enrich).to("enriched")
    elif kind == "session":
        spec: Any = fg.Session(GAP, grace=GRACE, retention=0, emit="update")
        events.window(spec, timestamp=lambda e: e.ts).count(name="counts")
    else:
        spec = fg.Tumbling(TUMBLING, grace=GRACE, retention=0, emit="update")
        events.window(spec, timestamp=lambda e: e.ts).count(name="counts")
    return g


def expected_windows(kind: str, users: list[str], ms: list[int]) -> dict[Any, int]:
    """The windows held at the end: each key's (sorted) windows still inside retention."""
    stream_time = [0.0] * PARTITIONS
    times: dict[str, list[float]] = defaultdict(list)
    for user, t in zip(users, ms, strict=True):
        p = partition(user.encode())
        stream_time[p] = max(stream_time[p], t / 1000)
        times[user].append(t / 1000)
    out: dict[Any, int] = {}
    for user, ts in times.items():
        st = stream_time[partition(user.encode())]
        if kind == "session":
            for (s, e), count in sessions_of(ts, GAP):
                if e + GRACE + GAP > st:  # a session is kept `gap` past its close
                    out[(user, s, e)] = count
        else:
            for t in ts:
                s = (t // TUMBLING) * TUMBLING
                if s + TUMBLING + GRACE > st:
                    key = (user, s, s + TUMBLING)
                    out[key] = out.get(key, 0) + 1
    return out


def merges(users: list[str], ms: list[int]) -> tuple[int, int]:
    """(sessions made, merges): `Session.place` one event at a time in arrival order."""
    spec = Session(GAP)
    held: dict[str, list[tuple[float, float]]] = defaultdict(list)
    made = merged = 0
    for user, t in zip(users, ms, strict=True):
        mine = held[user]
        (s, e), touched = spec.place(mine, t / 1000)
        made += not touched
        merged += len(touched) > 1
        for w in touched:
            mine.remove(w)
        mine.append((s, e))
        mine.sort()
    return made, merged


def timed_run(kind: str, data: dict[str, Any], store: str) -> tuple[float, Any, Any, Any]:
    plan = build_graph(kind).plan()
    transport = MemoryTransport()
    broker = transport.broker
    broker.ensure("events", PARTITIONS)
    if kind == "join":
        broker.ensure("profiles", PARTITIONS)
        broker.append("profiles", encode_profiles(data["keys"]))

    async def main() -> tuple[float, Any, Any, Any]:
        worker = Worker(plan, transport, open_backend(store))
        await worker.start()
        loaded = None
        if kind == "join":  # load the table first, not timed
            await worker.run(until_idle=True, idle_wait=0.0)
            loaded = worker.stats.events
        broker.append("events", data["records"])
        start = time.perf_counter()
        await worker.run(until_idle=True, idle_wait=0.0)
        elapsed = time.perf_counter() - start
        if kind == "join":
            table: Any = [(m[0], m[1]) for m in broker.records("enriched")]
        elif kind == "count":
            table = dict(worker.table("counts"))
        else:
            table = {
                (w.key, w.start, w.end): v for w, v in worker.table("counts").windows().items()
            }
        await worker.stop()
        return elapsed, table, worker.stats, loaded

    return asyncio.run(main())


def check_join(transport_out: list[Any], users: list[str], ms: list[int]) -> list[str]:
    got: Counter[tuple[str, int]] = Counter()
    for key, value in transport_out:
        e = json.loads(value)
        i = int(e["user"][4:])
        if key.decode() != e["user"] or (e["plan"], e["country"]) != profile_of(i):
            return [f"join: event of {key!r} left with {e}"]
        got[(e["user"], round(e["ts"] * 1000))] += 1
    want = Counter(zip(users, ms, strict=True))
    if got != want:
        return [f"join: {sum(got.values()):,} enriched events differ from the {len(users):,} sent"]
    return []


def run_case(kind: str, store: str, path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = pickle.load(f)
    users, ms = data["users"], data["ms"]
    n = len(users)
    disk = 0
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if store == "memory" else f"rocksdb://{tmp}"
        elapsed, table, stats, loaded = timed_run(kind, data, url)
        disk = dir_size(tmp)
    label = f"{kind}/{store}"
    problems = []
    events = stats.events - (loaded or 0)
    if events != n:
        problems.append(f"{label}: processed {events:,} events, expected {n:,}")
    if stats.dead_letters:
        problems.append(f"{label}: {stats.dead_letters:,} dead letters")
    if getattr(stats, "late", 0):
        problems.append(f"{label}: {stats.late:,} late records")
    if kind == "count":
        want: Any = dict(Counter(users))
        if table != want:
            problems.append(f"{label}: counts differ from counting the events")
    elif kind == "join":
        problems += check_join(table, users, ms)
    elif kind in ("session", "tumbling"):
        want = expected_windows(kind, users, ms)
        if table != want:
            wrong = sum(1 for k in want if table.get(k) != want[k])
            extra = sum(1 for k in table if k not in want)
            problems.append(f"{label}: {wrong} windows wrong or missing, {extra} extra")
    return {
        "elapsed": elapsed,
        "rate": n / elapsed,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "disk_mb": disk / 2**20,
        "held": len(table),
        "problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="best of N, cases interleaved")
    parser.add_argument("--case", help="kind/store, e.g. join/memory (with --data)")
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, store = args.case.split("/")
        print(json.dumps(run_case(kind, store, args.data)))
        return

    started = time.perf_counter()
    users, ms = make_events(args.records, args.keys)
    made, merged = merges(users, ms)
    problems: list[str] = []
    cases = [f"{kind}/{store}" for store in STORES for kind in KINDS]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "events.pickle")
        with open(path, "wb") as f:
            records = encode_events(users, ms)
            pickle.dump({"users": users, "ms": ms, "records": records, "keys": args.keys}, f)
        results, found = best_of(
            __file__, cases, lambda c: ["--case", c, "--data", path], args.rounds
        )
        problems += found

    print(
        f"joins and sessions, {args.records:,} JSON events, {args.keys:,} keys, "
        f"{PARTITIONS} partitions; best of {args.rounds}"
    )
    print(
        f"join: inner, against a to_table() of {args.keys:,} keys loaded before timing, "
        f'then to("enriched"); session {GAP:g} s gap, tumbling {TUMBLING:g} s, both grace '
        f'{GRACE:g} s, retention 0, emit "update", event time from the value; {made:,} '
        f"sessions started, {merged:,} merges ({DISORDER:g} s of disorder)"
    )
    print(
        f"{'case':<18}{'events/s':>12}{'vs count':>10}{'peak RSS MB':>13}{'disk MB':>9}{'held':>10}"
    )
    for case in cases:
        r = results.get(case)
        if r is None:
            print(f"{case:<18}{'failed':>12}")
            continue
        kind, store = case.split("/")
        base = results.get(f"count/{store}")
        ratio = f"{r['rate'] / base['rate']:.0%}" if base and kind != "count" else ""
        disk = f"{r['disk_mb']:.1f}" if store == "rocksdb" else ""
        held = f"{r['held']:,}" if kind != "join" else ""
        print(f"{case:<18}{r['rate']:>12,.0f}{ratio:>10}{r['rss_mb']:>13.0f}{disk:>9}{held:>10}")
    print(
        "vs count: rate / the same store's plain count in this run; held: keys (count) or "
        "windows in the store after the run; peak RSS includes the pre-written events; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    fail_on(problems)


if __name__ == "__main__":
    main()
