"""Benchmark: an ``async def`` map whose calls wait on I/O, embedded on ``memory://``.

Records (JSON ints) are pre-written to a 1-partition memory topic (not timed) and run through
``source.map(call, concurrency=N).to("out")``, where ``call`` sleeps and returns its value:

- steady: every call takes 10 ms;
- slow:   every call takes 10 ms, except one in every 100, which takes 500 ms.

The ideal is N calls always in flight: N / 10 ms records/s for the steady case. For the slow
case each slow call holds one slot for 50 short calls' time, so a true bound of N calls in
flight gives at best N / (10 ms x (99 + 50) / 100) records/s (shown as "ideal (window)").
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
        await asyncio.sleep(delay(v))
        return v

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=None, help="default: the step's")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n = args.records
    limit = args.concurrency or 64
    cases = {
        "steady": lambda v: FAST,
        "slow": lambda v: SLOW if v % EVERY == EVERY - 1 else FAST,
    }
    problems: list[str] = []
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, delay in cases.items():
            elapsed, out, dead = timed_run(n, delay, args.concurrency)
            if out != list(range(n)):
                problems.append(f"{name}: out holds {len(out)} records, not 0..{n - 1} in order")
            if dead:
                problems.append(f"{name}: {dead} dead letters")
            best[name] = min(best.get(name, float("inf")), elapsed)
    ideal = limit / FAST
    window = limit / (FAST * ((EVERY - 1) + SLOW / FAST) / EVERY)
    print(f"async map, {n:,} records, {limit} calls in flight, best of {args.rounds}")
    print(f"  {'case':<8} {'records/s':>10}  {'ideal':>8}  {'ideal (window)':>14}")
    for name in cases:
        rate = n / best[name]
        extra = f"{window:>14,.0f}" if name == "slow" else f"{'':>14}"
        print(f"  {name:<8} {rate:>10,.0f}  {ideal:>8,.0f}  {extra}".rstrip())
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
