"""Windowed state on Kafka through kill -9: every window exact after the restart.

Readings with their own event times (a quarter-second grid, some out of order within the
grace, some too late) go to a 4-partition topic keyed by sensor. The graph of
``kafka_window_jobs.py`` keeps a tumbling count (emit on close, closed windows and late
records to sink topics, retention long enough that the last windows are still held), a
hopping sum and a sliding order-sensitive aggregate of the small readings, all on RocksDB. A
`flowgraph run` worker SIGKILLs itself at a crash point; a second one runs to the end. Then
everything is compared with an oracle computed here from the produced input alone, per input
partition (stream time is per partition of the aggregation's input, docs/concepts/windows.md;
the sliding windows come from the brute-force oracle of ``tests/window_oracle.py``):

- the windows held at the end, read through the public query API (``RunResult.table(name)
  .windows()`` of a bounded ``fg.run`` on a fresh store, so restored from the changelogs);
- the same windows in the changelog topics (tombstones delete) and in the worker's RocksDB;
- the closed-window sink: every closed count window exactly once, with its final count;
- the late sink: every reading too late for its count window exactly once.

And without a crash: windowed counts behind a ``key_by``, so a repartition topic, with a grace
so long that no record can be late (the result does not depend on how the source partitions
interleave in the repartition topic); one far-future reading per key closes every window.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.partitioner import partition_for
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import topic_codecs
from tests.integration import kafka_window_jobs as jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    POSITION_HEADER,
    Done,
    committed,
    crash_run,
    flowgraph_run,
    high_watermarks,
    owned,
    read_topic,
    run_async,
    write_input,
)
from tests.kafka_broker import Broker
from tests.window_oracle import Aggregation, Oracle

pytestmark = pytest.mark.integration

JOBS = jobs.__name__
"""The jobs module by its dotted name (`flowgraph run` runs from the repository root), not by
its path: a worker then registers ``Reading`` under the same name as this process, and the
sliding aggregate's buffers, which hold readings, decode here (``fg.run`` restoring them)."""
PARTITIONS = 4
N = 80_000
"""Readings per test: 800 s of event time at 100 a second, 40 sensors, 4 partitions."""
SENSORS = 40
T0 = 1_700_000_000.0
"""First event time; a multiple of every window size, so window bounds are exact floats."""
TICK = 0.25
"""Event times are multiples of a quarter second: exact floats, so bounds are hit exactly."""

W = tuple[str, float, float]
"""A window as (key, start, end)."""


# -- input ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    sensor: str
    ts: float
    amount: int

    def encode(self) -> bytes:
        return json.dumps({"sensor": self.sensor, "ts": self.ts, "amount": self.amount}).encode()


def make_readings(n: int, seed: int) -> list[Reading]:
    """`n` readings, 100 per second of event time on a quarter-second grid. About 10 % come
    up to 3 s early in event time (out of order: within the 2 s grace of the count, or just
    past it) and 1 % 20 to 40 s early (late for their count window, still in some open
    hopping windows)."""
    rng = random.Random(seed)
    per_tick = round(100 * TICK)
    out = []
    for i in range(n):
        t = T0 + (i // per_tick) * TICK
        roll = rng.random()
        if roll < 0.01:
            t -= rng.randint(80, 160) * TICK
        elif roll < 0.11:
            t -= rng.randint(1, 12) * TICK
        out.append(Reading(f"sensor-{rng.randrange(SENSORS):02d}", max(t, T0), rng.randint(1, 99)))
    return out


# -- the oracle -------------------------------------------------------------------------------


def count_window(t: float) -> tuple[float, float]:
    start = math.floor(t / jobs.COUNT_SIZE) * jobs.COUNT_SIZE
    return start, start + jobs.COUNT_SIZE


def hop_windows(t: float, size: float, step: float) -> list[tuple[float, float]]:
    """[k*step, k*step + size) holding t, k >= 0, by increasing start."""
    first = max(math.floor((t - size) / step) + 1, 0)
    last = math.floor(t / step)
    return [(k * step, k * step + size) for k in range(first, last + 1)]


def sum_windows(t: float) -> list[tuple[float, float]]:
    return hop_windows(t, jobs.SUM_SIZE, jobs.SUM_STEP)


def sessions(times: list[float], gap: float) -> list[tuple[tuple[float, float], int]]:
    """Sort, split where neighbours are `gap` or more apart: ``((first, last + gap), n)``."""
    out: list[tuple[tuple[float, float], int]] = []
    for t in sorted(times):
        if out and t < out[-1][0][1]:  # less than gap after the last reading
            (start, _), n = out[-1]
            out[-1] = ((start, t + gap), n + 1)
        else:
            out.append(((t, t + gap), 1))
    return out


@dataclass
class Expected:
    """What the graph must end with, from the input alone."""

    counts: dict[W, int] = field(default_factory=dict)
    """Final count of every count window ever opened."""
    sums: dict[W, int] = field(default_factory=dict)
    closed: dict[W, int] = field(default_factory=dict)
    """Count windows closed by the end of the input: each on the sink once, with this count."""
    held_counts: dict[W, int] = field(default_factory=dict)
    """Count windows still held at the end (closed ones inside their retention included)."""
    held_sums: dict[W, int] = field(default_factory=dict)
    held_slides: dict[W, int] = field(default_factory=dict)
    held_sessions: dict[W, int] = field(default_factory=dict)
    """Session counts: nothing is late for them, so sorting each sensor's readings says."""
    """Sliding windows held at the end (the oracle of tests/window_oracle.py)."""
    late: collections.Counter[tuple[str, float, int]] = field(default_factory=collections.Counter)
    stream_time: dict[int, float] = field(default_factory=dict)
    slide_stream_time: dict[int, float] = field(default_factory=dict)
    """The sliding aggregate's stream time: of the small readings only (they alone reach it)."""
    slide_cases: collections.Counter[str] = field(default_factory=collections.Counter)


SLIDING = fg.Sliding(jobs.SLIDE_SIZE, grace=jobs.SLIDE_GRACE, retention=jobs.SLIDE_RETENTION)


def slide_oracle(ex: Expected, p: int, part: Sequence[Reading]) -> None:
    """The sliding aggregate of one input partition, by `tests.window_oracle.Oracle`."""
    o = Oracle(SLIDING, Aggregation("mix", 0, jobs.mix))
    horizon = SLIDING.size + SLIDING.grace
    cases = ex.slide_cases
    for r in part:
        if not jobs.small(r):
            continue
        late_before = len(o.late)
        changed = o.send(r.sensor, r.ts, r.amount)
        late = len(o.late) > late_before
        cases["records"] += 1
        cases["late for its own window"] += late
        cases["late, joined open windows"] += late and bool(changed)
        cases["too late for any window"] += r.ts + horizon < o.stream_time
        cases["out of order, joined later windows"] += not late and len(changed) > 1
        if len(o.history) > 256:
            # The oracle keeps every record; none that is `horizon` older than stream time
            # can be in a window made from now on (its end would be closed), so drop those.
            o.history = [h for h in o.history if h[1] + horizon >= o.stream_time]
    ex.held_slides.update(o.held)
    ex.slide_stream_time[p] = o.stream_time


def oracle(by_partition: Mapping[int, Sequence[Reading]], *, sliding: bool = True) -> Expected:
    """The contract applied record by record, in offset order, per input partition."""
    ex = Expected()
    for p, part in by_partition.items():
        if sliding:
            slide_oracle(ex, p, part)
        st = -math.inf
        counts: dict[W, int] = {}
        sums: dict[W, int] = {}
        for r in part:
            st = max(st, r.ts)  # stream time moves before the lateness check
            start, end = count_window(r.ts)
            if st >= end + jobs.COUNT_GRACE:
                ex.late[(r.sensor, r.ts, r.amount)] += 1
            else:
                w = (r.sensor, start, end)
                counts[w] = counts.get(w, 0) + 1
            for start, end in sum_windows(r.ts):
                if st < end + jobs.SUM_GRACE:
                    w = (r.sensor, start, end)
                    sums[w] = sums.get(w, 0) + r.amount
        ex.stream_time[p] = st
        for w, n in counts.items():
            if st >= w[2] + jobs.COUNT_GRACE:
                ex.closed[w] = n
            if st < w[2] + jobs.COUNT_GRACE + jobs.COUNT_RETENTION:
                ex.held_counts[w] = n
        for w, n in sums.items():
            if st < w[2] + jobs.SUM_GRACE + jobs.SUM_RETENTION:
                ex.held_sums[w] = n
        ex.counts.update(counts)
        ex.sums.update(sums)
        for sensor in sorted({r.sensor for r in part}):
            times = [r.ts for r in part if r.sensor == sensor]
            for (start, end), n in sessions(times, jobs.SESSION_GAP):
                ex.held_sessions[(sensor, start, end)] = n
    return ex


def test_oracle_sees_every_case_it_should() -> None:
    """The input exercises what the crash tests rely on: out of order within grace, late
    records, closed and deleted windows, and windows held at the end."""
    readings = make_readings(N, seed=11)
    by_partition = collections.defaultdict(list)
    for r in readings:
        by_partition[partition_of(r.sensor)].append(r)
    assert sorted(by_partition) == list(range(PARTITIONS))
    ex = oracle(by_partition)
    accepted = sum(ex.counts.values())
    assert accepted + sum(ex.late.values()) == N
    assert 0.005 * N < sum(ex.late.values()) < 0.05 * N
    out_of_order = sum(
        1 for part in by_partition.values() for a, b in itertools.pairwise(part) if b.ts < a.ts
    )
    assert out_of_order > 0.05 * N
    assert len(ex.held_counts) < len(ex.closed) < len(ex.counts)  # some still open
    assert any(w not in ex.held_counts for w in ex.closed)  # retention deleted some
    assert any(w in ex.held_counts for w in ex.closed)  # and holds closed ones
    assert 0 < len(ex.held_sums) < len(ex.sums)
    assert sum(ex.sums.values()) > sum(r.amount for r in readings)  # hopping: 3 windows each
    cases = ex.slide_cases
    assert 0.05 * N < cases["records"] < 0.2 * N, cases
    assert all(cases[c] > 10 for c in list(cases)), cases  # each sliding case, several times
    assert len(cases) == 5, cases
    assert 0 < len(ex.held_slides) < 0.1 * cases["records"], cases  # retention deleted most
    assert set(ex.slide_stream_time) == set(ex.stream_time)  # small readings in every partition
    assert sum(ex.held_sessions.values()) == N  # every reading in one session
    assert 0.1 * N < len(ex.held_sessions) < 0.9 * N, len(ex.held_sessions)


# -- jobs -------------------------------------------------------------------------------------


def partition_of(key: str) -> int:
    return partition_for(key.encode(), PARTITIONS)


@dataclass(frozen=True)
class Job:
    graph_id: str
    topic: str
    factory: str = "make_graph"

    @classmethod
    def new(cls, name: str, factory: str = "make_graph") -> Job:
        suffix = uuid.uuid4().hex[:8]
        return cls(f"kw-{name}-{suffix}", f"kw-{name}-{suffix}-readings", factory)

    @property
    def target(self) -> str:
        return f"{JOBS}:{self.factory}({self.graph_id!r}, {self.topic!r}, {PARTITIONS})"

    def graph(self) -> fg.Graph:
        graph: fg.Graph = getattr(jobs, self.factory)(self.graph_id, self.topic, PARTITIONS)
        return graph

    def store(self, step: str) -> str:
        return next(s.name for s in self.graph().plan().stores if s.step == step)

    def changelog(self, step: str) -> str:
        return next(s.changelog for s in self.graph().plan().stores if s.step == step)


# -- reading results --------------------------------------------------------------------------


def as_window(key: Any) -> W | None:
    """(key, start, end) of a `fg.WindowKey`, or None for anything else."""
    if all(hasattr(key, a) for a in ("key", "start", "end")):
        return (key.key, float(key.start), float(key.end))
    return None


def windows_of(table: Any, what: str) -> dict[W, Any]:
    """A windowed table view's windows (``.windows()``), keyed by (key, start, end)."""
    assert hasattr(table, "windows"), f"{what}: not a windowed table view: {type(table)!r}"
    out: dict[W, Any] = {}
    for wk, value in table.windows().items():
        w = as_window(wk)
        assert w is not None, f"{what}: window key {wk!r} is no WindowKey"
        out[w] = value
    return out


def restored_run(job: Job, kafka: Broker, state: Path) -> fg.RunResult:
    """A bounded run on a fresh store: its tables are restored from the changelogs."""
    assert not state.exists()
    broker = f"{kafka.url}?{FAST_GROUP}"
    result = fg.run(job.graph(), broker=broker, store=f"rocksdb://{state}", until_idle=True)
    assert result.events == 0, "the workers left input unprocessed"
    return result


def restored_tables(
    job: Job, kafka: Broker, state: Path, ex: Expected
) -> tuple[dict[W, int], dict[W, int], dict[W, int], dict[W, int]]:
    """The four tables as a bounded run on a fresh store sees them."""
    result = restored_run(job, kafka, state)
    finals = {
        jobs.COUNT: max(ex.stream_time.values()),
        jobs.SUM: max(ex.stream_time.values()),
        jobs.SLIDE: max(ex.slide_stream_time.values()),
        jobs.SESSION: max(ex.stream_time.values()),
    }
    for name, final in finals.items():  # restored with the windows, from the changelog
        assert result.table(name).stream_time == final, (name, result.table(name).stream_time)
    return (
        windows_of(result.table(jobs.COUNT), "restored count"),
        windows_of(result.table(jobs.SUM), "restored sum"),
        windows_of(result.table(jobs.SLIDE), "restored sliding"),
        windows_of(result.table(jobs.SESSION), "restored sessions"),
    )


def internal_window(key: Any, value: Any) -> tuple[W, Any] | None:
    """A windowed store's (internal key, value) as ((key, start, end), aggregate value).

    The store (and so its changelog) holds ``(key, start, end)`` per window, ``(key,)`` per
    sliding buffer (the records later sliding windows may cover) and ``()`` for the
    partition's stream time and position (None for both of these).
    """
    assert isinstance(key, list | tuple) and len(key) in (0, 1, 3), f"unexpected key {key!r}"
    if len(key) < 3:
        return None
    k, start, end = key
    return (k, float(start), float(end)), value


def changelog_windows(kafka: Broker, job: Job, step: str) -> dict[W, Any]:
    """The windows a table's changelog holds at its end: last record per key, tombstones
    delete; decoded with the plan's codecs."""
    plan = job.graph().plan()
    changelog = job.changelog(step)
    kc, vc = topic_codecs(plan, in_process=False)[changelog]
    assert kc is not None and vc is not None
    table: dict[Any, Any] = {}
    for records in run_async(read_topic(kafka, changelog)).values():
        for r in records:
            key = kc.decode(r.key)
            hashable = _hashable(key)
            if r.value is None:
                table.pop(hashable, None)
                continue
            value = vc.decode(r.value)
            if not any(name == POSITION_HEADER for name, _ in r.headers):
                _position, value = value
            table[hashable] = (key, value)
    out: dict[W, Any] = {}
    for key, value in table.values():
        found = internal_window(key, value)
        if found is not None:
            out[found[0]] = found[1]
    return out


def stored_windows(state: Path, store: str) -> dict[W, Any]:
    """A worker's RocksDB directory read directly (the worker must have exited), with the
    codecs a worker opens it with."""
    backend = open_backend(f"rocksdb://{state}")
    try:
        out: dict[W, Any] = {}
        for p in range(PARTITIONS):
            if (state / store / str(p)).exists():
                for key, value in backend.open(store, p).items():
                    found = internal_window(key, value)
                    if found is not None:
                        out[found[0]] = found[1]
        return out
    finally:
        backend.close()


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def sink_records(kafka: Broker, job: Job, topic: str) -> list[tuple[Any, Any]]:
    """Every (key, value) of a sink topic, decoded with the plan's codecs."""
    kc, vc = topic_codecs(job.graph().plan(), in_process=False)[topic]
    out = []
    for records in run_async(read_topic(kafka, topic)).values():
        for r in records:
            key = r.key if kc is None or r.key is None else kc.decode(r.key)
            value = r.value if vc is None or r.value is None else vc.decode(r.value)
            out.append((key, value))
    return out


def emitted_windows(kafka: Broker, job: Job) -> collections.Counter[tuple[W, Any]]:
    """(window, value) records on the closed-window sink, with how often each came."""
    out: collections.Counter[tuple[W, Any]] = collections.Counter()
    for key, value in sink_records(kafka, job, jobs.closed_topic(job.graph_id)):
        w = as_window(key)
        assert w is not None, f"closed sink: key {key!r} is no WindowKey"
        out[(w, value)] += 1
    return out


def late_readings(kafka: Broker, job: Job) -> collections.Counter[tuple[str, float, int]]:
    out: collections.Counter[tuple[str, float, int]] = collections.Counter()
    for key, value in sink_records(kafka, job, jobs.late_topic(job.graph_id)):
        assert key == value.sensor, (key, value)
        out[(value.sensor, float(value.ts), value.amount)] += 1
    return out


# -- comparing ----------------------------------------------------------------------------------


def assert_windows(
    got: Mapping[W, Any], expected: Mapping[W, Any], what: str, ex: Expected
) -> None:
    if dict(got) == dict(expected):
        return
    wrong = {w: (got.get(w), expected.get(w)) for w in got.keys() | expected.keys()}
    wrong = {w: v for w, v in wrong.items() if v[0] != v[1]}
    missing = sum(1 for g, _ in wrong.values() if g is None)
    extra = sum(1 for _, e in wrong.values() if e is None)
    sample = {
        f"p{partition_of(w[0])} {w[0]} [{w[1] - T0:g}, {w[2] - T0:g})": v
        for w, v in sorted(wrong.items())[:8]
    }
    raise AssertionError(
        f"{what}: {len(wrong)} of {len(expected)} windows differ ({missing} missing, {extra} "
        f"not expected); times from T0, stream time per partition "
        f"{ {p: st - T0 for p, st in sorted(ex.stream_time.items())} }; (got, expected): {sample}"
    )


def assert_once(
    got: collections.Counter[Any], expected: Iterable[Any], what: str, show: Any = repr
) -> None:
    want = collections.Counter(expected)
    if got == want:
        return
    twice = {k: n for k, n in got.items() if n > 1 and want.get(k, 0) < n}
    extra = got - want
    missing = want - got
    raise AssertionError(
        f"{what}: {sum(got.values())} records, {sum(want.values())} expected; "
        f"{len(twice)} came more than once, e.g. {[show(k) for k in list(twice)[:5]]}; "
        f"{sum(extra.values())} not expected, e.g. {[show(k) for k in list(extra)[:5]]}; "
        f"{sum(missing.values())} missing, e.g. {[show(k) for k in list(missing)[:5]]}"
    )


def show_window(item: tuple[W, Any]) -> str:
    (k, start, end), value = item
    return f"p{partition_of(k)} {k} [{start - T0:g}, {end - T0:g}) = {value}"


def tail(done: Done, lines: int = 15) -> str:
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-lines:])


# -- kill -9 at every crash point ---------------------------------------------------------------

CRASHES = {
    # point: n, so that the crash falls mid-run of 80,000 readings. A commit comes every
    # 20,000 records or second; a batch is up to 2,000 records of one partition.
    "in-batch": 16,
    "after-produce": 2,
    "after-store": 2,
    "after-commit": 2,
    "in-restore": 2,  # the second changelog chunk restored: some store partitions are back
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(CRASHES))
def test_kill_9_keeps_windowed_state_exact(kafka: Broker, tmp_path: Path, point: str) -> None:
    job = Job.new(point)
    readings = make_readings(N, seed=sum(map(ord, point)))
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"  # the restart must not wait long for the dead member
    started = time.monotonic()
    by_partition = write_input(kafka, job.topic, readings, PARTITIONS, key="sensor")
    ex = oracle(by_partition)
    timings = [f"produce {time.monotonic() - started:.1f} s"]

    crashed = crash_run(job.target, broker, state, f"{point}:{CRASHES[point]}", N, timings)
    stores = [
        job.store(jobs.COUNT),
        job.store(jobs.SUM),
        job.store(jobs.SLIDE),
        job.store(jobs.SESSION),
    ]
    if point == "in-restore":
        assert any(owned(state, s) for s in stores), "not killed mid-restore"
    source_committed = committed(kafka, job.graph_id, job.topic, PARTITIONS)
    done_before = sum(source_committed.values())
    assert done_before < N, "the crash came after the last commit: not mid-run"
    if point in ("after-commit", "in-restore"):
        assert done_before > 0
    # Closed windows already on the sink: at least those of the committed input; after
    # produce and after store, also some whose input the restart reads again (and must not
    # emit again).
    emitted_before = sum(high_watermarks(kafka, jobs.closed_topic(job.graph_id)).values())
    prefix = {p: part[: source_committed[p]] for p, part in by_partition.items()}
    from_committed = len(oracle(prefix, sliding=False).closed)
    assert emitted_before >= from_committed, (emitted_before, from_committed)
    if point in ("after-produce", "after-store"):
        assert emitted_before > from_committed, "crash window missed: no emits to replay"

    done = flowgraph_run(job.target, broker, state, "--until-idle")
    assert done.returncode == 0, done.why()
    timings.append(f"restart {done.seconds:.1f} s")
    assert done.summary_number("events") == N - done_before, done.why()

    context = f"crash at {point}:{CRASHES[point]}, {done_before} of {N} committed before"
    try:
        # the public path: a fresh store restored from the changelogs, queried
        counts, sums, slides, sessions = restored_tables(job, kafka, tmp_path / "reader", ex)
        assert_windows(counts, ex.held_counts, f"{context}: count, restored", ex)
        assert_windows(sums, ex.held_sums, f"{context}: sum, restored", ex)
        assert_windows(slides, ex.held_slides, f"{context}: sliding, restored", ex)
        assert_windows(sessions, ex.held_sessions, f"{context}: sessions, restored", ex)
        # what the sinks got: each closed window once, each late reading once
        assert_once(
            emitted_windows(kafka, job), ex.closed.items(), f"{context}: closed sink", show_window
        )
        assert_once(late_readings(kafka, job), ex.late.elements(), f"{context}: late sink")
        # the changelogs and the worker's own store, read directly
        assert_windows(
            changelog_windows(kafka, job, jobs.COUNT), ex.held_counts, f"{context}: count log", ex
        )
        assert_windows(
            changelog_windows(kafka, job, jobs.SUM), ex.held_sums, f"{context}: sum log", ex
        )
        assert_windows(
            changelog_windows(kafka, job, jobs.SLIDE), ex.held_slides, f"{context}: slide log", ex
        )
        assert_windows(stored_windows(state, stores[0]), ex.held_counts, f"{context}: count db", ex)
        assert_windows(stored_windows(state, stores[1]), ex.held_sums, f"{context}: sum db", ex)
        assert_windows(stored_windows(state, stores[2]), ex.held_slides, f"{context}: slide db", ex)
        assert_windows(
            changelog_windows(kafka, job, jobs.SESSION),
            ex.held_sessions,
            f"{context}: session log",
            ex,
        )
        assert_windows(
            stored_windows(state, stores[3]), ex.held_sessions, f"{context}: session db", ex
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- crashed run\n{tail(crashed)}\n--- restart\n{tail(done)}"
        ) from None
    print(
        f"[kafka] windows, {context}: {len(ex.held_counts)} count, {len(ex.held_sums)} sum and "
        f"{len(ex.held_slides)} sliding windows and {len(ex.held_sessions)} sessions held, "
        f"{len(ex.closed)} closed ({emitted_before} "
        f"emitted before the restart, {from_committed} from committed input), "
        f"{sum(ex.late.values())} late; restart restored {done.summary_number('restored')}, "
        f"skipped {done.summary_number('skipped')}; "
        f"{', '.join(timings)}"
    )


# -- behind a repartition topic, no crash -------------------------------------------------------

KEYED_N = 20_000
"""200 s of event time: far less than the grace of `make_keyed_graph`."""


@pytest.mark.slow
def test_windows_behind_a_repartition_topic_are_exact(kafka: Broker, tmp_path: Path) -> None:
    """Counts per zone, a key the input is not partitioned by: the records reach the windows
    through a repartition topic, in which the four source partitions interleave as they
    happen to. No record can be late (the grace is longer than the whole input), so the
    windows are exact whatever the interleaving. A second run then reads one far-future
    reading per zone, which moves the stream time of every repartition partition holding a
    zone past every window: each closed hopping window is emitted once, final."""
    job = Job.new("keyed", factory="make_keyed_graph")
    [repartition] = [t for t in job.graph().plan().topics if t.role == "repartition"]
    assert repartition.partitions == PARTITIONS
    readings = make_readings(KEYED_N, seed=5)
    times = [r.ts for r in readings]
    assert max(times) - min(times) < jobs.KEYED_GRACE  # so nothing can be late
    zones = sorted({jobs.zone(r) for r in readings})
    assert len(zones) == jobs.ZONES
    # every repartition partition holds zones (str keys: murmur2 of their UTF-8 bytes)
    assert len({partition_of(z) for z in zones}) == PARTITIONS
    far = max(times) + jobs.KEYED_HOP_SIZE + jobs.KEYED_GRACE  # closes every window of the input
    last = [  # one per zone, so every repartition partition with a window gets one
        Reading(f"sensor-{z:02d}", far, z + jobs.ZONES) for z in range(jobs.ZONES)
    ]
    assert sorted(jobs.zone(r) for r in last) == zones

    def expected(rs: Sequence[Reading], size: float, step: float) -> dict[W, int]:
        out: collections.Counter[W] = collections.Counter()
        for r in rs:
            for start, end in hop_windows(r.ts, size, step):
                out[(jobs.zone(r), start, end)] += 1
        return dict(out)

    counts = expected([*readings, *last], jobs.KEYED_SIZE, jobs.KEYED_SIZE)
    hops = expected([*readings, *last], jobs.KEYED_HOP_SIZE, jobs.KEYED_HOP_STEP)
    closed = expected(readings, jobs.KEYED_HOP_SIZE, jobs.KEYED_HOP_STEP)
    state = tmp_path / "state"
    broker = f"{kafka.url}?{FAST_GROUP}"
    started = time.monotonic()
    write_input(kafka, job.topic, readings, PARTITIONS, key="sensor")

    first = flowgraph_run(job.target, broker, state, "--until-idle")
    assert first.returncode == 0, first.why()
    assert first.summary_number("events") >= KEYED_N, first.why()
    assert "late:" not in first.stdout, first.why()
    assert emitted_windows(kafka, job) == collections.Counter(), "closed within the grace"
    write_input(kafka, job.topic, last, PARTITIONS, create=False, key="sensor")
    second = flowgraph_run(job.target, broker, state, "--until-idle")
    assert second.returncode == 0, second.why()
    assert "late:" not in second.stdout, second.why()

    ex = Expected(stream_time={p: far for p in range(PARTITIONS)})
    context = "behind a repartition topic"
    try:
        result = restored_run(job, kafka, tmp_path / "reader")
        for name in (jobs.KEYED_COUNT, jobs.KEYED_CLOSE):
            assert result.table(name).stream_time == far, (name, result.table(name).stream_time)
        got = windows_of(result.table(jobs.KEYED_COUNT), "restored count")
        assert_windows(got, counts, f"{context}: tumbling count, restored", ex)
        got = windows_of(result.table(jobs.KEYED_CLOSE), "restored hopping")
        assert_windows(got, hops, f"{context}: hopping count, restored", ex)
        assert_once(
            emitted_windows(kafka, job), closed.items(), f"{context}: closed sink", show_window
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- first run\n{tail(first)}\n--- second run\n{tail(second)}"
        ) from None
    print(
        f"[kafka] windows {context}: {len(counts)} tumbling and {len(hops)} hopping windows, "
        f"{len(closed)} closed and emitted once; first run {first.seconds:.1f} s, second "
        f"{second.seconds:.1f} s, all {time.monotonic() - started:.1f} s"
    )


# -- a catch-up in timestamp order ------------------------------------------------------------

ORDERED_N = 20_000


@pytest.mark.slow
def test_a_catch_up_in_timestamp_order_has_no_late_record(kafka: Broker, tmp_path: Path) -> None:
    """20,000 readings in event-time order, written over four partitions before the worker
    starts (so each fetch could hold one partition's records far ahead of the others): the
    worker runs them in timestamp order across the partitions, so behind the `key_by` no
    reading is late although the grace (30 s) is far shorter than a fetch spans, and every
    window is exact."""
    job = Job.new("ordered", factory="make_ordered_graph")
    readings = [
        Reading(f"sensor-{i % SENSORS:02d}", T0 + i * 0.75, 1 + i % 97) for i in range(ORDERED_N)
    ]
    expected: collections.Counter[W] = collections.Counter()
    for r in readings:
        start = math.floor(r.ts / jobs.ORDERED_SIZE) * jobs.ORDERED_SIZE
        expected[(jobs.zone(r), start, start + jobs.ORDERED_SIZE)] += 1
    write_input(kafka, job.topic, readings, PARTITIONS, key="sensor")
    broker = f"{kafka.url}?{FAST_GROUP}"
    run = flowgraph_run(job.target, broker, tmp_path / "state", "--until-idle")
    assert run.returncode == 0, run.why()
    assert run.summary_number("events") == ORDERED_N, run.why()
    assert "late:" not in run.stdout, run.why()
    result = restored_run(job, kafka, tmp_path / "reader")
    got = windows_of(result.table(jobs.ORDERED), "restored count")
    assert got == dict(expected), f"{len(got)} windows, {len(expected)} expected\n{tail(run)}"
