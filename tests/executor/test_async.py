"""`async def` steps give the same results as their sync versions, in the same order per key.

Each step keeps at most ``concurrency`` calls in flight, starts the next call as soon as one
finishes, and emits its results in input order; a commit waits for the calls in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.faults import InjectedCrash
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.memory import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs
from tests.executor.harness import DLQ, EXECUTORS, GRAPH, Cluster, _dead_letters


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


VALUES = list(range(40))


def as_async(fn: Callable[..., Any], delay: Callable[..., float] = lambda *a: 0.0):
    """`fn` as an ``async def`` that sleeps `delay(*args)` seconds first."""

    async def run(*args: Any) -> Any:
        await asyncio.sleep(delay(*args))
        return fn(*args)

    return run


def jitter(v: int, *rest: Any) -> float:
    """A few milliseconds, varying so later records often finish first."""
    value = rest[-1] if rest else v
    return 0.001 * ((value * 7) % 4)


def pipeline(wrap: Callable[..., Any], seen: list[int]) -> Callable[[fg.Stream], None]:
    """The same graph with every user function passed through `wrap`."""

    def build(s: fg.Stream) -> None:
        keyed = (
            s.map(wrap(lambda v: v * 3), name="triple")
            .filter(wrap(lambda v: v % 2 == 0), name="even")
            .flat_map(wrap(lambda v: [v, v + 1]), name="pair")
            .peek(wrap(seen.append), name="look")
            .key_by(wrap(lambda v: v % 5), name="mod5")
        )
        keyed.to("keyed")
        keyed.aggregate(list, wrap(lambda acc, v: [*acc, v]), name="history")
        keyed.sum(wrap(lambda v: v * v), name="squares")
        keyed.reduce(wrap(lambda a, b: a * 2 + b), name="fold")

    return build


def test_async_steps_match_their_sync_versions(execute):
    sync_seen: list[int] = []
    async_seen: list[int] = []
    sync = execute(pipeline(lambda f: f, sync_seen), VALUES)
    done = execute(pipeline(lambda f: as_async(f, jitter), async_seen), VALUES)
    assert done.tables == sync.tables
    assert done.by_key("keyed") == sync.by_key("keyed")
    assert sorted(async_seen) == sorted(sync_seen)
    assert done.dead_letters == sync.dead_letters == []
    expected = [w for v in VALUES if v * 3 % 2 == 0 for w in (v * 3, v * 3 + 1)]
    assert sync_seen == expected
    assert sync.tables["history"] == {k: [w for w in expected if w % 5 == k] for k in range(5)}


def test_async_map_keeps_order_per_key(execute):
    async def slow(v: int) -> int:
        await asyncio.sleep(0.001 * ((v * 7) % 5))
        return v

    def build(s: fg.Stream) -> None:
        s.map(slow).key_by(lambda v: v % 3, name="mod3").to("out", partitions=3)

    out = execute(build, VALUES)
    assert out.by_key("out") == {k: [v for v in VALUES if v % 3 == k] for k in range(3)}


def test_async_sink_callable(execute):
    calls: list[tuple[object, int]] = []

    async def collect(key: object, value: int) -> None:
        await asyncio.sleep(jitter(value))
        calls.append((key, value))

    execute(lambda s: s.to(collect), VALUES)
    assert sorted(calls) == [(None, v) for v in VALUES]


def test_async_aggregate_keeps_order_per_key(execute):
    async def append(acc: list[int], v: int) -> list[int]:
        await asyncio.sleep(jitter(v))
        return [*acc, v]

    out = execute(
        lambda s: (
            s.key_by(lambda v: v % 4, name="mod4")
            .aggregate(list, append, name="a")
            .changes()
            .to("out")
        ),
        VALUES,
    )
    assert out.tables == {"a": {k: [v for v in VALUES if v % 4 == k] for k in range(4)}}
    assert out.by_key("out") == {
        k: [[v for v in VALUES if v % 4 == k][: i + 1] for i in range(10)] for k in range(4)
    }


def test_async_generator_flat_map(execute):
    async def pairs(v: int) -> AsyncIterator[int]:
        yield v
        await asyncio.sleep(0)
        yield v + 100

    try:
        out = execute(lambda s: s.flat_map(pairs).to("out"), [1, 2])
    except fg.GraphDefinitionError:
        return  # a clear error while building is an acceptable answer too
    assert out.dead_letters == []
    assert out.values("out") == [1, 101, 2, 102]


# -- the window: a true bound of calls in flight, no head-of-line blocking ----------------


def run_worker(graph: fg.Graph, values: list[int], **worker: Any) -> Cluster:
    """Append `values` to source ``in`` (partition 0, no keys) and run a worker to idle."""
    cluster = Cluster(graph)
    cluster.run({"in": [(0, None, b"%d" % v) for v in values]}, **worker)
    return cluster


class Gauge:
    """Counts the calls running now and the most that ever ran at once."""

    def __init__(self) -> None:
        self.now = self.most = 0

    async def around(self, wait: Awaitable[Any]) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await wait
        finally:
            self.now -= 1


@pytest.mark.parametrize("concurrency", [1, 3, 16])
def test_calls_in_flight_never_exceed_the_bound_and_reach_it(concurrency):
    gauge = Gauge()

    async def call(v: int) -> int:
        await gauge.around(asyncio.sleep(0.001 * (v % 3)))
        return v

    g = fg.Graph(GRAPH)
    g.source("in", value_type=int).map(call, concurrency=concurrency).to("out")
    cluster = run_worker(g, list(range(60)))
    assert gauge.most == concurrency
    assert [v for _, v in cluster.output("out")] == list(range(60))


def test_a_slow_call_does_not_hold_up_the_others():
    """Record 0's call finishes only once every other call has: with chunks of calls that
    wait for their slowest, it would wait for itself (and time out into a dead letter)."""
    n = 30
    others_done = asyncio.Event()
    finished: list[int] = []

    async def call(v: int) -> int:
        if v == 0:
            await asyncio.wait_for(others_done.wait(), timeout=10)
        else:
            await asyncio.sleep(0)
        finished.append(v)
        if len(finished) == n - 1:
            others_done.set()
        return v

    g = fg.Graph(GRAPH)
    g.source("in", value_type=int).map(call, concurrency=4).to("out")
    cluster = run_worker(g, list(range(n)))
    assert finished == [*range(1, n), 0]
    assert [v for _, v in cluster.output("out")] == list(range(n))  # still in input order
    assert _dead_letters(cluster.broker, DLQ) == []


def test_the_default_bound_is_64():
    gauge = Gauge()

    async def call(v: int) -> int:
        await gauge.around(asyncio.sleep(0.002))
        return v

    g = fg.Graph(GRAPH)
    g.source("in", value_type=int).map(call).to("out")
    run_worker(g, list(range(200)))
    assert gauge.most == 64


@settings(max_examples=40, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 6)), min_size=1, max_size=40
    ),
    concurrency=st.integers(1, 6),
    max_batch=st.integers(1, 12),
)
def test_order_per_key_is_kept_under_random_delays(records, concurrency, max_batch):
    """Record i has value ``10 * i + d``: its call waits d turns of the event loop (0 to 6),
    so later calls often finish first. Every i that is a multiple of 5 fails and becomes a
    dead letter; the others go on."""
    gauge = Gauge()

    async def call(v: int) -> int:
        async def turns() -> None:
            for _ in range(v % 10):
                await asyncio.sleep(0)

        await gauge.around(turns())
        if v // 10 % 5 == 0:
            raise ValueError(f"bad {v}")
        return v // 10

    g = fg.Graph(GRAPH)
    src = g.source("in", key_type=str, value_type=int, partitions=2)
    src.map(call, concurrency=concurrency).to("out", partitions=2)
    cluster = Cluster(g)
    parts = [partition_for(k.encode(), 2) for k, _ in records]
    cluster.run(
        {
            "in": [
                (p, k.encode(), b"%d" % (10 * i + d))
                for i, ((k, d), p) in enumerate(zip(records, parts, strict=True))
            ]
        },
        max_batch=max_batch,
    )
    by_key: dict[str, list[int]] = {}
    for key, value in cluster.output("out"):
        by_key.setdefault(key, []).append(value)
    expected: dict[str, list[int]] = {}
    for i, (k, _) in enumerate(records):
        if i % 5:
            expected.setdefault(k, []).append(i)
    assert by_key == expected
    offsets, ends = [], [0, 0]
    for p in parts:
        offsets.append((p, ends[p]))
        ends[p] += 1
    letters = _dead_letters(cluster.broker, DLQ)
    assert sorted(
        (int(d.headers["source.partition"]), int(d.headers["source.offset"])) for d in letters
    ) == sorted(offsets[i] for i in range(0, len(records), 5))
    assert 1 <= gauge.most <= concurrency


def test_async_dead_letters_and_the_rest_go_on(execute):
    async def check(v: int) -> int:
        await asyncio.sleep(jitter(v))
        if v % 7 == 3:
            raise ValueError(f"bad {v}")
        return v

    out = execute(lambda s: s.map(check, name="check", concurrency=5).to("out"), VALUES)
    assert out.values("out") == [v for v in VALUES if v % 7 != 3]
    assert sorted(int(d.value) for d in out.dead_letters) == [v for v in VALUES if v % 7 == 3]
    assert {d.headers["error.step"] for d in out.dead_letters} == {"check"}


# -- a crash with calls in flight ----------------------------------------------------------


def test_a_crash_with_calls_in_flight_replays_exactly_the_unfinished_records():
    """Records 0-9 finish at once, 10-19 wait for a release, 20-39 finish at once. The first
    worker is killed (an injected crash after a run) while calls of 10-19 are in flight:
    nothing was committed, and what it wrote is a prefix of 0-9 (later records wait for 10,
    to keep input order). The next worker replays all 40: what was written is skipped by
    its origins, the rest written once."""
    release = asyncio.Event()
    gauge = Gauge()

    async def call(v: int) -> int:
        if 10 <= v < 20:
            await gauge.around(asyncio.wait_for(release.wait(), timeout=10))
        return v

    g = fg.Graph(GRAPH)
    g.source("in", value_type=int).map(call, concurrency=4).to("out")
    plan = g.plan()
    broker = MemoryBroker()
    broker.ensure("in", 1)
    broker.append("in", [(0, None, b"%d" % v, 0.0, None) for v in range(40)])
    decode = topic_codecs(plan, in_process=False)["out"][1].decode

    async def one(crash: Any) -> None:
        worker = Worker(
            plan,
            MemoryTransport(broker, encoded=True),
            MemoryBackend(),
            max_batch=5,
            commit_interval=3600.0,
            crash_point=crash,
        )
        await worker.start()
        await worker.run(until_idle=True, idle_wait=0.0)
        await worker.stop()

    in_flight: list[int] = []

    def crash(point: str) -> None:
        if point == "in-batch" and gauge.now:
            in_flight.append(gauge.now)
            raise InjectedCrash("killed with calls in flight")

    with pytest.raises(InjectedCrash):
        asyncio.run(one(crash))
    assert len(in_flight) == 1 and 1 <= in_flight[0] <= 4  # calls waiting for the release
    written = [decode(v) for _, v, *_ in broker.records("out")]
    assert 1 <= len(written) <= 10
    assert written == list(range(len(written)))  # emitted before the crash, not committed
    assert broker.committed.get(GRAPH, {}).get(("in", 0), 0) == 0
    assert _dead_letters(broker, DLQ) == []
    release = asyncio.Event()
    release.set()
    asyncio.run(one(None))
    written = [decode(v) for _, v, *_ in broker.records("out")]
    assert written == list(range(40))
    assert _dead_letters(broker, DLQ) == []


def two_inputs(wrap: Callable[..., Any]) -> fg.Graph:
    """Two topics merged in one task, an async map, then an aggregation (maybe async) of
    both inputs, which keeps one position per input to skip what a replay applied."""
    g = fg.Graph(GRAPH)
    a = g.source("a", key_type=str, value_type=int)
    b = g.source("b", key_type=str, value_type=int)
    mapped = a.merge(b, name="both").map(as_async(lambda v: v * 10, jitter), name="times10")
    mapped.aggregate(list, wrap(lambda acc, v: [*acc, v]), name="hist")
    return g


def test_an_async_map_into_an_aggregation_of_two_inputs_replays_exactly():
    records = {
        t: [(0, f"k{v % 3}".encode(), b"%d" % (v + base)) for v in range(n)]
        for t, base, n in (("a", 0, 40), ("b", 1000, 5))
    }
    tables = []
    for wrap in (lambda f: f, lambda f: as_async(f, jitter)):
        cluster = Cluster(two_inputs(wrap))
        cluster.run(records, max_batch=7)
        first = cluster.last_tables
        cluster.reset_committed(["b"])  # b alone: its records must find their own positions
        cluster.run(max_batch=7)
        assert cluster.last_tables == first  # the replay applied nothing twice
        cluster.reset_committed()
        cluster.run(max_batch=7)
        assert cluster.last_tables == first
        tables.append(first)
    sync, in_async = tables
    assert in_async == sync
    assert sorted(v for vs in sync["hist"].values() for v in vs) == sorted(
        int(v) * 10 for recs in records.values() for _, _, v in recs
    )


def test_a_call_that_raises_cancelled_error_is_a_dead_letter_and_the_rest_go_on(execute):
    """Only a call cancelled from outside (the loop shutting down) is dropped; one whose
    function raises `CancelledError` itself fails like any other, and its slot is reused."""

    async def touchy(v: int) -> int:
        await asyncio.sleep(0)
        if v % 10 == 4:
            raise asyncio.CancelledError
        return v

    out = execute(lambda s: s.map(touchy, concurrency=1).to("out"), VALUES)
    assert out.values("out") == [v for v in VALUES if v % 10 != 4]
    assert [int(d.value) for d in out.dead_letters] == [4, 14, 24, 34]
    assert {d.headers["error.type"] for d in out.dead_letters} == {"CallCancelledError"}


@pytest.mark.parametrize("max_batch", [1, 1000])
def test_a_merge_after_async_steps_keeps_timestamp_order_into_a_window(max_batch: int) -> None:
    """Two chained async steps merged with a plain source feed a window: the source's later
    record must not overtake the earlier one still in the async calls (it would be late)."""

    async def key(v: int) -> int:
        return v % 5

    async def same(v: int) -> int:
        return v

    g = fg.Graph("merge-after-async")
    plain = g.source("plain", key_type=int, value_type=int)
    slow = g.source("slow", key_type=int, value_type=int)
    merged = slow.key_by(key, name="key").map(same, name="same").merge(plain)
    merged.window(fg.Tumbling(1, retention=1e9)).count(name="per_second")
    plan = g.plan()

    windows, late = windows_after_one_run(plan, {"slow": [1.0], "plain": [2.0]}, max_batch)
    assert late == 0
    assert windows == {fg.WindowKey(0, 1.0, 2.0): 1, fg.WindowKey(0, 2.0, 3.0): 1}


@pytest.mark.parametrize("max_batch", [1, 1000])
def test_records_a_task_writes_to_its_own_input_are_read_before_later_ones(max_batch: int) -> None:
    """An async key_by whose repartition topic the same task reads (merged with another
    source before a window): what a run writes there must be read before the other source's
    later records run, or the window counts it late."""

    async def key(v: int) -> int:
        return v % 5

    g = fg.Graph("own-input")
    plain = g.source("plain", key_type=int, value_type=int)
    slow = g.source("slow", key_type=int, value_type=int)
    keyed = slow.key_by(key, name="key")
    keyed.count(name="per_key")  # the repartition topic, read in the same task as `plain`
    keyed.merge(plain).window(fg.Tumbling(1, retention=1e9)).count(name="per_second")
    plain.merge(slow).to("both")  # both sources in one task, with the repartition topic
    plan = g.plan()
    assert len(plan.subtopologies[0].source_topics) == 3

    inputs = {"slow": [1.0, 2.0], "plain": [3.0]}
    windows, late = windows_after_one_run(plan, inputs, max_batch)
    assert late == 0
    assert windows == {fg.WindowKey(0, float(t), t + 1.0): 1 for t in (1, 2, 3)}


def windows_after_one_run(
    plan: Any, inputs: dict[str, list[float]], max_batch: int
) -> tuple[dict[Any, Any], int]:
    """Run `plan` once over records (key and value 0) at the given timestamps per topic,
    all appended before the run: the windows of table ``per_second`` and the late count."""

    async def main() -> tuple[dict[Any, Any], int]:
        transport = MemoryTransport()
        worker = Worker(plan, transport, MemoryBackend(), max_batch=max_batch)
        await worker.start()
        for topic, times in inputs.items():
            transport.broker.append(topic, [(0, b"0", b"0", ts, None) for ts in times])
        try:
            await worker.run(until_idle=True, idle_wait=0.0)
            return worker.table("per_second").windows(), worker.stats.late
        finally:
            await worker.stop()

    return asyncio.run(main())
