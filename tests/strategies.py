"""Hypothesis strategies: random valid graphs over ints, and input records for them.

`cases()` draws a `Case`: a `flowgraph.Graph` with 1-2 keyed sources (1-4 partitions) and a
random mix of map / filter / flat_map / peek / key_by / merge, keyed count / sum / reduce /
aggregate (some per tumbling or hopping window with grace 0, some followed by ``changes()``),
sinks to topics and to callables, plus a list of input records. Every function is deterministic
and total over ints (no step ever raises), keys are small ints, and every non-terminal step has
a consumer, so the graph always plans.

Two restrictions keep the expected output well defined without modelling the executor:

* a merge only joins streams with no source in common, so one input record never reaches a
  step along two paths (the order of such twins is not part of the contract);
* after ``changes()`` only key-keeping stateless steps and sinks follow;
* input record ``i`` has timestamp `timestamp(i)`, increasing in send order, and windows keep
  their values (`RETENTION` outlives every input), so a run that processes records in
  timestamp order finds no record late and every window still in its table at the end.

Functions whose fold does not depend on the order of records carry ``commutative = True``; the
equivalence test uses it to decide what a batched run must reproduce exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import strategies as st

import flowgraph as fg

MOD = 97
"""Values stay in ``range(MOD)``."""
KEYS = 5
"""Keys stay in ``range(KEYS)``."""

RETENTION = 1_000.0
"""Retention of every window: longer than the inputs span, so no window is ever deleted."""

Draw = Callable[[st.SearchStrategy[Any]], Any]


class Collector:
    """A sink callable that records ``(key, value)``; `items` is reset before each run."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []

    def __call__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))


@attrs.define
class Case:
    """A random graph, its inputs ``(topic, key, value)`` in send order, and its callables."""

    graph: fg.Graph
    inputs: list[tuple[str, int, int]]
    collectors: dict[str, Collector]
    """Sink step id -> the collector it calls."""
    script: list[str]
    """The graph as builder calls, for reading a falsifying example."""

    def __repr__(self) -> str:
        lines = "\n    ".join(self.script)
        return f"Case(\n    {lines}\n    inputs={self.inputs!r})"

    def records(self) -> list[tuple[str, int, int, float]]:
        """The inputs with their timestamps: ``(topic, key, value, timestamp)``."""
        return [(t, k, v, timestamp(i)) for i, (t, k, v) in enumerate(self.inputs)]

    def reset(self) -> None:
        for c in self.collectors.values():
            c.items.clear()


def timestamp(i: int) -> float:
    """The timestamp of input record `i`: one second apart, from 1."""
    return float(i + 1)


@attrs.define
class _Handle:
    stream: fg.Stream
    origins: frozenset[str]
    after_changes: bool = False
    rekeyed: bool = False


def _mark(fn: Callable[..., Any], commutative: bool) -> Callable[..., Any]:
    fn.commutative = commutative  # type: ignore[attr-defined]
    return fn


def _delete_at_multiples_of_5(acc: int, v: int) -> Any:
    """A fold that deletes its key depending on the accumulator (so replays must be exact)."""
    total = (acc + v) % MOD
    return fg.DELETE if total % 5 == 0 else total


def _larger(a: int, b: int) -> int:
    return max(a, b)


def _maybe_async(draw: Draw, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, or an ``async def`` doing the same (about one in four)."""
    if draw(st.integers(0, 3)) != 0:
        return fn

    async def run(*args: Any) -> Any:
        return fn(*args)

    run.commutative = getattr(fn, "commutative", False)  # type: ignore[attr-defined]
    run.deletes = getattr(fn, "deletes", False)  # type: ignore[attr-defined]
    return run


class _Builder:
    def __init__(self, draw: Draw) -> None:
        self.draw = draw
        self.g = fg.Graph("eq")
        self.n = 0
        self.pool: list[_Handle] = []
        self.consumed: set[str] = set()
        self.collectors: dict[str, Collector] = {}
        self.script: list[str] = []

    def name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def ints(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def add(self, handle: _Handle, line: str) -> None:
        self.pool.append(handle)
        self.script.append(f"{handle.stream.step} = {line}")

    def use(self, h: _Handle) -> fg.Stream:
        self.consumed.add(h.stream.step)
        return h.stream

    # -- operators --------------------------------------------------------------------------

    def stateless(self, h: _Handle, kind: str) -> None:
        name = self.name(kind)
        wrap = lambda f: _maybe_async(self.draw, f)  # noqa: E731
        src = self.use(h)
        if kind == "map":
            a, b = self.ints(1, 9), self.ints(0, 9)
            out = src.map(wrap(lambda v: (v * a + b) % MOD), name=name)
            text = f"map(v * {a} + {b})"
        elif kind == "filter":
            m = self.ints(2, 4)
            r = self.ints(0, m - 1)
            out = src.filter(wrap(lambda v: v % m != r), name=name)
            text = f"filter(v % {m} != {r})"
        elif kind == "flat_map":
            c = self.ints(0, 2)
            out = src.flat_map(
                wrap(lambda v: [(v + i) % MOD for i in range((v + c) % 3)]), name=name
            )
            text = f"flat_map([v + i for i in range((v + {c}) % 3)])"
        elif kind == "peek":
            out = src.peek(wrap(lambda v: v + 1), name=name)
            text = "peek(v + 1)"
        else:
            a, b = self.ints(1, 9), self.ints(0, 9)
            out = src.key_by(wrap(lambda v: (v * a + b) % KEYS), name=name)
            text = f"key_by((v * {a} + {b}) % {KEYS})"
        rekeyed = kind == "key_by" or h.rekeyed
        self.add(_Handle(out, h.origins, h.after_changes, rekeyed), f"{h.stream.step}.{text}")

    def merge(self, h: _Handle, other: _Handle) -> None:
        out = self.use(h).merge(self.use(other), name=self.name("merge"))
        self.add(
            _Handle(out, h.origins | other.origins), f"{h.stream.step}.merge({other.stream.step})"
        )

    def window(self) -> tuple[Any, str]:
        """A tumbling or hopping spec with grace 0 (`RETENTION` keeps every window)."""
        if self.draw(st.booleans()):
            size = self.ints(1, 5)
            return fg.Tumbling(size, retention=RETENTION), f"Tumbling({size})"
        step = self.ints(1, 3)
        size = step * self.ints(1, 3) + self.draw(st.sampled_from([0, 0, 0.5]))
        return fg.Hopping(size, step, retention=RETENTION), f"Hopping({size}, {step})"

    def aggregate(self, h: _Handle) -> None:
        name = self.name("agg")
        src: Any = self.use(h)
        prefix = ""
        if self.draw(st.integers(0, 2)) == 0:
            spec, text = self.window()
            src, prefix = src.window(spec), f"window({text})."
        wrap = lambda f: _maybe_async(self.draw, f)  # noqa: E731
        kinds = ["count", "sum", "sum_fn", "reduce", "aggregate", "history"]
        if not prefix:  # windowed streams have no to_table, and their folds may not delete
            kinds += ["latest", "deleting"]
        kind = self.draw(st.sampled_from(kinds))
        commutative = self.draw(st.booleans())
        if kind == "count":
            table, text = src.count(name=name), "count()"
        elif kind == "sum":
            table, text = src.sum(name=name), "sum()"
        elif kind == "sum_fn":
            table = src.sum(wrap(_mark(lambda v: v % 7, True)), name=name)
            text = "sum(v % 7)"
        elif kind == "reduce":
            if commutative:
                fn, text = _mark(_larger, True), "reduce(max)"
            else:
                fn, text = _mark(lambda a, b: (a * 3 + b) % MOD, False), "reduce(a * 3 + b)"
            table = src.reduce(wrap(fn), name=name)
        elif kind == "aggregate":
            initial = self.ints(0, 5)
            if commutative:
                fn, how = _mark(lambda acc, v: (acc + v) % MOD, True), "acc + v"
            else:
                fn, how = _mark(lambda acc, v: (acc * 2 + v) % MOD, False), "acc * 2 + v"
            table = src.aggregate(initial, wrap(fn), name=name)
            text = f"aggregate({initial}, {how})"
        elif kind == "latest":
            table, text = src.to_table(name=name), "to_table()"
        elif kind == "deleting":
            fn = _mark(_delete_at_multiples_of_5, False)
            fn.deletes = True  # type: ignore[attr-defined]
            table = src.aggregate(0, wrap(fn), name=name)
            text = "aggregate(0, acc + v, fg.DELETE at multiples of 5)"
        else:
            fn = _mark(lambda acc, v: [*acc, v][-4:], False)
            table = src.aggregate(list, wrap(fn), name=name)
            text = "aggregate(list, [*acc, v][-4:])"
        self.script.append(f"{name} = {h.stream.step}.{prefix}{text}")
        if kind not in ("history", "deleting") and self.draw(st.booleans()):  # no None values
            updates = table.changes(name=f"{name}-changes")
            self.add(_Handle(updates, h.origins, after_changes=True), f"{name}.changes()")

    def sink(self, h: _Handle) -> None:
        src = self.use(h)
        name = self.name("sink")
        if self.draw(st.integers(0, 3)) == 0:
            collector = self.collectors[name] = Collector()
            target: Any = collector
            if self.draw(st.booleans()):

                async def call(k: Any, v: Any) -> None:
                    collector(k, v)

                target = call
            src.to(target, name=name)
            self.script.append(f"{h.stream.step}.to(callable, name={name!r})")
        else:
            src.to(f"t-{name}", name=name)
            self.script.append(f"{h.stream.step}.to('t-{name}')")

    def step(self) -> None:
        # Half the time grow the newest stream, so chains (key_by -> ... -> count) are common.
        h = self.pool[-1] if self.draw(st.booleans()) else self.draw(st.sampled_from(self.pool))
        kinds = ["map", "filter", "flat_map", "peek", "sink"]
        partners = [o for o in self.pool if not o.after_changes and not (o.origins & h.origins)]
        if not h.after_changes:
            kinds += ["key_by"] * 2 + ["aggregate"] * (5 if h.rekeyed else 2)
            if partners:
                kinds += ["merge"] * 3
        kind = self.draw(st.sampled_from(kinds))
        if kind == "merge":
            self.merge(h, self.draw(st.sampled_from(partners)))
        elif kind == "aggregate":
            self.aggregate(h)
        elif kind == "sink":
            self.sink(h)
        else:
            self.stateless(h, kind)

    def finish(self) -> None:
        """Give every stream that nothing reads a sink, so no output is dropped."""
        for h in list(self.pool):
            if h.stream.step not in self.consumed:
                self.sink(h)


@st.composite
def cases(draw: Draw, max_steps: int = 10, max_records: int = 20) -> Case:
    """A random valid graph and input records for it."""
    b = _Builder(draw)
    topics = []
    for i in range(draw(st.sampled_from([1, 2, 2]))):
        parts = draw(st.integers(1, 4))
        topic = f"src{i}"
        topics.append(topic)
        stream = b.g.source(topic, key_type=int, value_type=int, partitions=parts)
        b.add(_Handle(stream, frozenset({topic})), f"g.source({topic!r}, partitions={parts})")
    for _ in range(draw(st.integers(1, max_steps))):
        b.step()
    b.finish()
    inputs = draw(
        st.lists(
            st.tuples(st.sampled_from(topics), st.integers(0, KEYS - 1), st.integers(0, MOD - 1)),
            max_size=max_records,
        )
    )
    return Case(graph=b.g, inputs=inputs, collectors=b.collectors, script=b.script)
