"""Windowed state across a restart: a run stopped anywhere and started again, on its store
or on a fresh one rebuilt from the changelog, ends where one uninterrupted run ends.

What a restart must bring back is everything the hot path keeps in memory: the windows and
their close and expiry schedule, stream time, sliding buffers, and which windows were already
emitted. The oracle (tests/window_oracle.py) says where one run ends.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from tests.executor.test_windows_oracle import events, make_table, window_specs
from tests.window_oracle import AGGREGATIONS, Oracle, Win, window_tuple

Event = tuple[str, float, int]


def build(spec: Any, agg: str) -> tuple[fg.Graph, list[Any], list[Any]]:
    """The graph, and the lists its changes() and late() go to, in both runs."""
    g = fg.Graph("restart")
    src = g.source("events", key_type=str, value_type=int)
    table = make_table(src.window(spec), agg)
    changes: list[Any] = []
    late: list[Any] = []
    table.changes().to(lambda k, v: changes.append((window_tuple(k), v)), name="changes-out")
    table.late().to(lambda k, v: late.append((k, v)), name="late-out")
    return g, changes, late


async def run_once(
    g: fg.Graph, broker: MemoryBroker, store: str, evs: list[Event], max_batch: int
) -> dict[Win, Any]:
    """One worker: append `evs`, process until idle, stop; the windows it held at the end."""
    worker = Worker(g.plan(), MemoryTransport(broker), open_backend(store), max_batch=max_batch)
    await worker.start()
    try:
        broker.append("events", [(0, k.encode(), b"%d" % v, t, None) for k, t, v in evs])
        await worker.run(until_idle=True, idle_wait=0.0)
        view: Any = worker.table("agg")
        return {window_tuple(w): value for w, value in view.windows().items()}
    finally:
        await worker.stop()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_restart_anywhere_ends_where_one_run_ends(data: st.DataObject, tmp_path: Path) -> None:
    kind = data.draw(st.sampled_from(["tumbling", "hopping", "sliding"]), label="kind")
    emit = data.draw(st.sampled_from(["update", "close"]), label="emit")
    spec = data.draw(window_specs(kind, emit), label="spec")
    agg = data.draw(st.sampled_from(sorted(AGGREGATIONS)), label="agg")
    evs = data.draw(events, label="events")
    cut = data.draw(st.integers(0, len(evs)), label="cut")
    how = data.draw(st.sampled_from(["same store", "store lost"]), label="restart")
    max_batch = data.draw(st.sampled_from([1, 3, 1000]), label="max_batch")

    oracle = Oracle(spec, AGGREGATIONS[agg])
    expected_changes = [change for key, t, v in evs for change in oracle.send(key, t, v)]

    g, changes, late = build(spec, agg)
    broker = MemoryBroker()
    state = tmp_path / f"state-{data.draw(st.integers(0, 10**9))}"
    store = f"rocksdb://{state}"
    asyncio.run(run_once(g, broker, store, evs[:cut], max_batch))
    if how == "store lost":
        shutil.rmtree(state, ignore_errors=True)
    held = asyncio.run(run_once(g, broker, store, evs[cut:], max_batch))

    assert held == oracle.held
    if emit == "close":  # each window once, whichever run closed it
        assert sorted(changes, key=repr) == sorted(expected_changes, key=repr)
    else:
        assert changes == expected_changes
    assert late == oracle.late
