"""`stream.process` on Kafka: orders of two partitions re-keyed by item into three, a running
total per item kept by a real worker, its state restored from the changelog by a second run
on an empty store; and a `flowgraph run` worker killed with SIGKILL right after a commit
produced its outputs and changelog records, whose restart leaves each record applied and
written once."""

from __future__ import annotations

import collections
import json
import signal
import uuid
from pathlib import Path

import pytest

import flowgraph as fg
from tests.integration import kafka_process_jobs as jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    committed,
    create_topic,
    flowgraph_run,
    high_watermarks,
    make_clicks,
    partition_of,
    read_topic,
    run_async,
    write_input,
)
from tests.integration.test_kafka_global_tables import send
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration


def item(order: str) -> str:
    return order.split("@")[1]


def running_total(total: int, order: str) -> tuple[int, list[str]]:
    amount = int(order.split("@")[2])
    return total + amount, [json.dumps([order, total + amount])]


def process_graph(graph_id: str, orders: str, out: str) -> fg.Graph:
    g = fg.Graph(graph_id)
    stream = g.source(orders, key_type=str, value_type=str, partitions=2)
    stream.key_by(item, partitions=3).process(running_total, 0, value_type=str).to(out)
    return g


def test_process_keeps_state_per_key_through_a_repartition_on_kafka(
    kafka: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id = f"kt-process-{suffix}"
    orders, out = f"{graph_id}-orders", f"{graph_id}-out"
    run_async(create_topic(kafka, orders, 2))
    g = process_graph(graph_id, orders, out)
    assert [t.partitions for t in g.plan().topics if t.role == "repartition"] == [3]
    wanted = [(f"o{n}", f"o{n}@i{n % 5}@{n}") for n in range(60)]
    totals: dict[str, int] = {}
    for run, part in enumerate((wanted[:30], wanted[30:])):
        send(kafka, orders, [(partition_of(k, 2), k, v) for k, v in part])
        for _, v in part:
            totals[item(v)] = totals.get(item(v), 0) + int(v.split("@")[2])
        result = fg.run(
            g,
            broker=f"{kafka.url}?{FAST_GROUP}",
            store=f"rocksdb://{tmp_path / f'state-{run}'}",  # the second run restores
            until_idle=True,
        )
        assert result.table("running_total") == totals
    seen: dict[str, list[int]] = {}
    orders_out = []
    for p, records in run_async(read_topic(kafka, out)).items():
        for r in records:
            order, total = json.loads(r.value)
            key = r.key.decode()
            assert key == item(order)
            assert partition_of(key, 3) == p  # written where the item's state is
            seen.setdefault(key, []).append(total)
            orders_out.append(order)
    assert sorted(orders_out) == sorted(v for _, v in wanted)  # each order once
    for key, got in seen.items():
        assert got == sorted(got)  # running totals only grow (amounts are positive or 0)
        assert got[-1] == totals[key]


@pytest.mark.slow
def test_kill_9_mid_run_applies_and_writes_each_record_once(kafka: Broker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id = f"kt-process-kill-{suffix}"
    topic = f"{graph_id}-clicks"
    target = f"{jobs.__name__}:make_process_graph({graph_id!r}, {topic!r}, 4)"
    clicks = make_clicks(12_000, seed=21)
    write_input(kafka, topic, clicks)  # keyed by URL
    broker = f"{kafka.url}?{FAST_GROUP}"
    state = tmp_path / "state"
    small_commits = ("--until-idle", "--commit-every", "500")
    crashed = flowgraph_run(target, broker, state, *small_commits, crash_at="after-produce:3")
    if crashed.returncode != -signal.SIGKILL:
        pytest.fail(f"no crash at after-produce:3: {crashed.why()}")
    # The window: outputs (and changelog records) of records whose offsets were not
    # committed, so the restart reads those records again and must skip them.
    applied = sum(high_watermarks(kafka, f"{graph_id}-out").values())
    from_committed = sum(committed(kafka, graph_id, topic, 4).values())
    print(f"[kafka] process kill: {applied} outputs, {from_committed} committed inputs")
    if not applied > from_committed:
        pytest.fail(f"crash window missed: {applied} outputs, {from_committed} committed inputs")
    done = flowgraph_run(target, broker, state, *small_commits)
    assert done.returncode == 0, done.why()

    per_url = collections.Counter(c.url for c in clicks)
    written: collections.Counter[tuple[str, str, float]] = collections.Counter()
    numbers: dict[str, list[int]] = {}
    for records in run_async(read_topic(kafka, f"{graph_id}-out")).values():
        for r in records:
            user, ts, n = json.loads(r.value)
            url = r.key.decode()
            written[url, user, ts] += 1
            numbers.setdefault(url, []).append(n)
    assert written == collections.Counter((c.url, c.user, c.ts) for c in clicks), (
        "a record's output lost or written twice"
    )
    # each URL's clicks numbered 1..n exactly: none applied twice, none skipped
    assert {u: sorted(ns) for u, ns in numbers.items()} == {
        u: list(range(1, n + 1)) for u, n in per_url.items()
    }
    graph = jobs.make_process_graph(graph_id, topic, 4)
    restored = fg.run(
        graph, broker=broker, store=f"rocksdb://{tmp_path / 'reader'}", until_idle=True
    )
    assert restored.events == 0
    assert restored.table(jobs.STEP) == dict(per_url)
