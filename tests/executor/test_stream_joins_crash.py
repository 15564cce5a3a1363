"""Stream-stream joins after crashes at every commit point: each pair and each unmatched
record written once, as the oracle (tests/join_oracle.py) says, whether the next run finds
its store or restores it from the changelog."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import POINTS
from flowgraph.runtime.memory import MemoryBroker
from flowgraph.runtime.state import MemoryBackend
from flowgraph.runtime.worker import topic_codecs
from tests.executor.harness import crash_run
from tests.join_oracle import Event, join_oracle, pair

WITHIN, GRACE = 3.0, 6.0
"""Timestamps grow by one per record, so a record comes at most a few seconds after a later
one (runs interleave by timestamp): the grace covers that, and the result does not depend
on how the runs of the two inputs interleave."""


def graph() -> fg.Graph:
    g = fg.Graph("sjc")
    left = g.source("l", key_type=str, value_type=str, partitions=2)
    right = g.source("r", key_type=str, value_type=str, partitions=2)
    rekeyed = right.key_by(lambda v: v.split(":")[0], name="by_key")
    # two records from each re-keyed one: they share its offset, and both are buffered
    rekeyed = rekeyed.flat_map(lambda v: [v, f"{v}*"], name="twice")
    left.join(rekeyed, pair, within=WITHIN, grace=GRACE, how="outer", name="paired").to(
        "out", value_type=str
    )
    return g


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("nth", [1, 3])
def test_stream_joins_are_exact_after_a_crash(point: str, nth: int) -> None:
    plan = graph().plan()
    codecs = topic_codecs(plan, in_process=False)
    broker = MemoryBroker()
    backend = MemoryBackend()
    events: list[Event] = []
    crashed = False
    t = 0.0
    for round_ in range(3):
        batches: dict[str, list[Any]] = {"l": [], "r": []}
        for i in range(14):
            t += 1.0
            key = f"k{(i * 7 + round_) % 5}"
            side = 0 if (i + round_) % 3 else 1
            value = f"{'lr'[side]}{len(events)}"
            topic = "lr"[side]
            kc, vc = codecs[topic]
            assert kc is not None and vc is not None
            if side == 0:
                events.append((0, key, t, value))
                kb = kc.encode(key)
                batches[topic].append((partition_for(kb, 2), kb, vc.encode(value), t, None))
            else:
                events.append((1, key, t, f"{key}:{value}"))
                events.append((1, key, t, f"{key}:{value}*"))
                kb = kc.encode(f"x{i}")
                record = (partition_for(kb, 2), kb, vc.encode(f"{key}:{value}"), t, None)
                batches[topic].append(record)
        for topic, records in batches.items():
            broker.ensure(topic, 2)
            broker.append(topic, records)
        crash = (point, nth) if round_ == 1 else None
        if crash and point == "in-restore":
            backend = MemoryBackend()  # so that the run restores, and crashes in it
        if asyncio.run(crash_run(plan, broker, backend, crash, end_of_input=False)):
            crashed = True
            backend = MemoryBackend()  # and the store is lost too: restored from changelogs
    asyncio.run(crash_run(plan, broker, backend, None, end_of_input=True))
    if nth == 1:
        assert crashed  # the second run did crash (a third commit may not come)
    kc, vc = codecs["out"]
    assert kc is not None and vc is not None
    written = Counter((kc.decode(m[0]), vc.decode(m[1]), m[2]) for m in broker.records("out"))
    expected, late = join_oracle(
        events,
        within=WITHIN,
        grace=GRACE,
        how="outer",
        partition_of=lambda k: partition_for(k.encode(), 2),
        end_of_input=True,
    )
    assert late == 0
    assert written == expected, "a joined record lost or written twice"
