"""A fold that raises for one record in the middle of a batch: that record is a dead letter,
and the records of the same key (and window) before and after it in the batch all count.

The records reach the worker at once, so they are processed in one batch by one push
loop (sync folds) or one drain (async folds), plain tables and every window path alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs

W = fg.WindowKey
BAD = 13
KEY = 7


def add(acc: int, v: int) -> int:
    if v == BAD:
        raise ValueError(f"bad {v}")
    return acc + v


async def add_async(acc: int, v: int) -> int:
    await asyncio.sleep(0)
    return add(acc, v)


def run_batch(g: fg.Graph, values: list[int], ts: float) -> tuple[Any, list[Any], list[Any]]:
    """Run `values` (key `KEY`, timestamp `ts`) as one batch: the table, the updates of
    ``changes()`` and the dead letters' values."""

    async def main() -> tuple[Any, list[Any], list[Any]]:
        broker = MemoryBroker()
        plan = g.plan()
        worker = Worker(plan, MemoryTransport(broker), MemoryBackend(), max_batch=1000)
        await worker.start()
        broker.append("in", [(0, b"%d" % KEY, b"%d" % v, ts, None) for v in values])
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            table = worker.table("total")
            table = table.windows() if hasattr(table, "windows") else dict(table)
        finally:
            await worker.stop()
        kc, vc = topic_codecs(plan, in_process=True)["out"]
        updates = [(kc.decode(k), vc.decode(v)) for part in broker.logs["out"] for k, v, *_ in part]
        dead = [v for part in broker.logs[plan.dlq] for _, v, *_ in part]
        return table, updates, dead

    return asyncio.run(main())


FOLDS = {"sync": add, "async": add_async}
WINDOWS: dict[str, tuple[Any, float, list[tuple[float, float]]]] = {
    # spec, the records' time, the windows that time is in
    "plain": (None, 0.0, []),
    "tumbling": (fg.Tumbling(10), 3.0, [(0.0, 10.0)]),
    "hopping": (fg.Hopping(10, 5), 7.0, [(0.0, 10.0), (5.0, 15.0)]),
}


def graph(window: str, fold: str) -> fg.Graph:
    g = fg.Graph("t")
    s: Any = g.source("in", key_type=int, value_type=int)
    spec = WINDOWS[window][0]
    if spec is not None:
        s = s.window(spec)
    s.aggregate(0, FOLDS[fold], name="total").changes(name="ch").to("out")
    return g


@pytest.mark.parametrize("fold", sorted(FOLDS))
@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize(
    "values", [[1, BAD, 2], [BAD, 1, 2], [1, 2, BAD]], ids=["middle", "first", "last"]
)
def test_a_fold_failing_mid_batch_keeps_the_good_records_of_its_key(window, fold, values):
    _, ts, windows = WINDOWS[window]
    table, updates, dead = run_batch(graph(window, fold), values, ts)
    good = [v for v in values if v != BAD]
    running = [sum(good[: i + 1]) for i in range(len(good))]
    assert dead == [b"%d" % BAD]
    if not windows:
        assert table == {KEY: sum(good)}
        assert updates == [(KEY, total) for total in running]
    else:
        assert table == {W(KEY, s, e): sum(good) for s, e in windows}
        assert updates == [(W(KEY, s, e), total) for total in running for s, e in windows]


@pytest.mark.parametrize("fold", [add, add_async], ids=["sync", "async"])
def test_a_sliding_fold_that_raises_leaves_no_record_behind(fold):
    """A record whose sliding-window fold raises is a dead letter and nothing more: later
    windows of its key do not fold it again (which failed every later record of the key),
    and queries of the key's windows work."""
    g = fg.Graph("t")
    src = g.source("in", key_type=int, value_type=int)
    src.window(fg.Sliding(10)).aggregate(0, fold, name="total")
    with fg.testing.TestDriver(g) as driver:
        for t, v in [(1.0, 1), (2.0, BAD), (3.0, 2), (4.0, 4)]:
            driver.send("in", KEY, v, timestamp=t)
        assert [d.value for d in driver.dead_letters()] == [b"%d" % BAD]
        view = driver.table("total")
        windows = dict(view.windows())
        assert windows[W(KEY, -6.0, 4.0)] == 7  # 1 + 2 + 4: the bad record is not in it
        if fold is add:
            assert view[KEY].current() == 7
