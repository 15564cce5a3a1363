"""Benchmark: an ``async def`` map whose calls wait on I/O, embedded on ``memory://``.

Records (JSON ints) are pre-written to a 1-partition memory topic (not timed) and run through
``source.map(call, concurrency=N).to("out")``, where ``call`` sleeps and returns its value:

- steady: every call takes 10 ms;
- slow:   every call takes 10 ms, except one in every 100, which takes 500 ms.

Same-run baselines, plain asyncio over the same calls (no flowgraph):

- chunked: calls awaited in chunks of N that each wait for their slowest (``gather``), which
  is how async steps ran before they had a sliding window (on fewer records: it is slow);
- window:  a sliding window of N calls (a semaphore), results in any order: the ceiling.

The ideal is N calls always in flight: N / 10 ms records/s for the steady case. For the slow
case each slow call holds one slot for 50 short calls' time, so a true bound of N calls in
flight gives at best N / (10 ms x (99 + 50) / 100) records/s. flowgraph also waits for the
calls in flight at each commit (every second) and at the end of the run.
Checks (a failure exits non-zero with one line): every record reached ``out`` once, in input
order, and there were no dead letters.

    python bench/bench_async.py [--records N] [--concurrency N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import flowgraph as fg
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker

FAST = 0.010
SLOW = 0.500
EVERY = 100


def graph(delay: Any, concurrency: int | None) -> fg.Graph:
    """source -> async map (sleeps `delay(v)`) -> out."""

    async def call(v: int) -> int:
        return await _call(v, delay)

    g = fg.Graph("bench-async")
    src = g.source("in", value_type=int)
    mapped = src.map(call) if concurrency is None else src.map(call, concurrency=concurrency)
    mapped.to("out")
    return g


def timed_run(n: int, delay: Any, concurrency: int | None) -> tuple[float, list[Any], int]:
    """Seconds to process `n` records, the values written to ``out``, and the dead letters."""
    g = graph(delay, concurrency)
    plan = g.plan()
    transport = MemoryTransport()
    transport.broker.ensure("in", 1)
    transport.broker.append("in", [(0, None, b"%d" % v, 0.0, None) for v in range(n)])

    async def main() -> tuple[float, int]:
        worker = Worker(plan, transport, open_backend("memory://"))
        await worker.start()
        start = time.perf_counter()
        await worker.run(until_idle=True, idle_wait=0.0)
        elapsed = time.perf_counter() - start
        await worker.stop()
        return elapsed, worker.stats.dead_letters

    elapsed, dead = asyncio.run(main())
    out = [int(v) for _, v, *_ in transport.broker.records("out")]
    return elapsed, out, dead


async def _call(v: int, delay: Any) -> int:
    await asyncio.sleep(delay(v))
    return v


def chunked(n: int, delay: Any, limit: int) -> float:
    """Seconds to await `n` calls in chunks of `limit`, each waiting for its slowest."""

    async def run() -> None:
        for start in range(0, n, limit):
            await asyncio.gather(*(_call(v, delay) for v in range(start, min(n, start + limit))))

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def window(n: int, delay: Any, limit: int) -> float:
    """Seconds to await `n` calls with at most `limit` in flight (a semaphore)."""

    async def run() -> None:
        slots = asyncio.Semaphore(limit)

        async def one(v: int) -> None:
            async with slots:
                await _call(v, delay)

        await asyncio.gather(*(one(v) for v in range(n)))

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=None, help="default: the step's")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n = args.records
    limit = args.concurrency or 64
    few = max(n // 10, limit)  # for the chunked baseline
    cases = {
        "steady": lambda v: FAST,
        "slow": lambda v: SLOW if v % EVERY == EVERY - 1 else FAST,
    }
    problems: list[str] = []
    best: dict[tuple[str, str], float] = {}

    def keep(what: str, name: str, rate: float) -> None:
        best[what, name] = max(best.get((what, name), 0.0), rate)

    for _ in range(args.rounds):
        for name, delay in cases.items():
            elapsed, out, dead = timed_run(n, delay, args.concurrency)
            if out != list(range(n)):
                problems.append(f"{name}: out holds {len(out)} records, not 0..{n - 1} in order")
            if dead:
                problems.append(f"{name}: {dead} dead letters")
            keep("flowgraph", name, n / elapsed)
            keep("chunked", name, few / chunked(few, delay, limit))
            keep("window", name, n / window(n, delay, limit))
    ideal = {"steady": limit / FAST, "slow": limit / (FAST * ((EVERY - 1) + SLOW / FAST) / EVERY)}
    print(f"async map, {n:,} records ({few:,} chunked), {limit} calls in flight")
    print(f"records/s, best of {args.rounds}:")
    print(f"  {'case':<8} {'flowgraph':>10} {'chunked':>10} {'window':>10} {'ideal':>10}")
    for name in cases:
        rates = [best[what, name] for what in ("flowgraph", "chunked", "window")]
        print(f"  {name:<8}" + "".join(f" {r:>10,.0f}" for r in [*rates, ideal[name]]))
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
