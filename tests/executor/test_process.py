"""`stream.process`: keyed state of the user's own, run through TestDriver and fg.run.

Also the proof that the built-in stateful steps are expressible with it: a stream-table left
join written as a `process` over the merged, tagged inputs, and a count written as one, give
what the built-in `join` and `count` give on random input over several partitions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.testing import TestDriver
from tests.executor.harness import EXECUTORS, Cluster


@pytest.fixture(params=sorted(EXECUTORS))
def execute(request):
    return EXECUTORS[request.param]


VALUES = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]


def mod3(v: int) -> int:
    return v % 3


def per_key(values: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for v in values:
        groups.setdefault(v % 3, []).append(v)
    return groups


GROUPS = per_key(VALUES)


def dedupe(seen: list[int], v: int) -> tuple[list[int], list[int]]:
    if v in seen:
        return seen, []
    return [*seen, v], [v]


def running_max(top: int | None, v: int) -> tuple[int, list[int]]:
    if top is None or v > top:
        return v, [v]  # emits only when the maximum changes
    return top, []


def batches_of_four(held: list[int], v: int) -> tuple[list[int] | None, list[Any] | None]:
    """Holds values until four arrived, then emits their sum and deletes the state."""
    held = [*held, v]
    if len(held) == 4:
        return None, [sum(held)]
    return held, None


def first_seen(values: list[int]) -> list[int]:
    return list(dict.fromkeys(values))


def test_dedupe_by_id(execute):
    out = execute(lambda s: s.key_by(mod3).process(dedupe, list).to("out"), VALUES)
    assert out.by_key("out") == {k: first_seen(vs) for k, vs in GROUPS.items()}
    assert out.tables == {"dedupe": {k: first_seen(vs) for k, vs in GROUPS.items()}}
    assert not out.dead_letters


def test_a_running_max_emits_on_change(execute):
    out = execute(lambda s: s.key_by(mod3).process(running_max).to("out"), VALUES)
    expected: dict[int, list[int]] = {}
    for k, vs in GROUPS.items():
        top = None
        for v in vs:
            if top is None or v > top:
                top = v
                expected.setdefault(k, []).append(v)
    assert out.by_key("out") == expected
    assert out.tables == {"running_max": {k: max(vs) for k, vs in GROUPS.items()}}


def test_a_state_deleted_by_returning_none_starts_again_from_the_initial(execute):
    out = execute(lambda s: s.key_by(mod3).process(batches_of_four, list).to("out"), VALUES)
    sums = {k: [sum(vs[i : i + 4]) for i in range(0, len(vs) - 3, 4)] for k, vs in GROUPS.items()}
    assert out.by_key("out") == {k: v for k, v in sums.items() if v}
    left = {k: vs[len(vs) - len(vs) % 4 :] for k, vs in GROUPS.items()}
    assert out.tables == {"batches_of_four": {k: v for k, v in left.items() if v}}
    assert any(len(vs) % 4 == 0 for vs in GROUPS.values())  # some key ends deleted
    assert any(len(vs) % 4 and len(vs) > 4 for vs in GROUPS.values())  # one started again


def test_delete_is_also_a_new_state_of_fg_delete(execute):
    def until_two(n: int, v: int) -> tuple[object, list[int]]:
        return (fg.DELETE, [n + 1]) if n + 1 == 2 else (n + 1, [n + 1])

    out = execute(lambda s: s.key_by(mod3).process(until_two, 0).to("out"), VALUES)
    assert out.by_key("out") == {
        k: [1, 2] * (len(vs) // 2) + [1] * (len(vs) % 2) for k, vs in GROUPS.items()
    }
    assert out.tables == {"until_two": {k: 1 for k, vs in GROUPS.items() if len(vs) % 2}}


@pytest.mark.parametrize("partitions", [2, 3])
def test_several_partitions_with_a_key_by_repartition(execute, partitions):
    def spread(total: int, v: int) -> tuple[int, list[tuple[int, int]]]:
        return total + v, [(v, total + v), (v, -1)]  # two outputs per record, in order

    out = execute(
        lambda s: s.key_by(mod3).process(spread, 0, value_type="json").to("out"),
        VALUES,
        partitions=partitions,
    )
    assert out.tables == {"spread": {k: sum(vs) for k, vs in GROUPS.items()}}
    by_key = out.by_key("out")
    for k, vs in GROUPS.items():
        # per key, records arrive in the order of their input partition: the totals are
        # each prefix sum of some order of the key's values, each followed by its -1
        got = [tuple(x) for x in by_key[k]]
        assert got[1::2] == [(v, -1) for v, _ in got[0::2]]
        assert Counter(v for v, _ in got[0::2]) == Counter(vs)
        running = 0
        for v, total in got[0::2]:
            running += v
            assert total == running


def test_rocksdb_run_matches_memory(execute, tmp_path: Path):
    def build(s: fg.Stream) -> None:
        s.key_by(mod3).process(batches_of_four, list).to("out")

    memory = execute(build, VALUES)
    rocks = execute(build, VALUES, store="rocksdb://" + str(tmp_path))
    assert rocks.tables == memory.tables
    assert rocks.outputs == memory.outputs
    assert list(tmp_path.rglob("CURRENT"))  # real RocksDB files were written


def test_bad_outputs_and_raising_functions_go_to_the_dead_letter_topic(execute):
    def picky(n: int, v: int) -> tuple[int, Any]:
        if v == 9:
            raise ValueError("nine is not allowed")
        if v == 5:
            return n + 100, "five"  # a str: never iterated
        return n + 1, [v]

    out = execute(lambda s: s.key_by(mod3).process(picky, 0).to("out"), VALUES)
    good = [v for v in VALUES if v not in (5, 9)]
    assert out.by_key("out") == per_key(good)
    assert out.tables == {"picky": {k: len(vs) for k, vs in per_key(good).items()}}
    letters = Counter(
        (d.value, d.headers["error.type"], d.headers["error.step"]) for d in out.dead_letters
    )
    assert letters == {
        (b"9", "ValueError", "picky"): VALUES.count(9),
        (b"5", "ProcessResultError", "picky"): VALUES.count(5),
    }
    messages = {d.headers["error.message"] for d in out.dead_letters}
    assert any("returned outputs of type str; return a list of values" in m for m in messages)


def test_context_gives_the_record_key():
    def keyed(n: int, v: int, ctx: fg.RecordContext) -> tuple[int, list[str]]:
        return n + 1, [f"{ctx.key}:{n + 1}:{ctx.header('h')!r}"]

    g = fg.Graph("t")
    g.source("in", key_type=str, value_type=int).process(keyed, 0, context=True).to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 1, headers={"h": b"x"})
        d.send("in", "a", 2)
        d.send("in", "b", 3)
        assert d.output("out") == [("a", "a:1:b'x'"), ("a", "a:2:None"), ("b", "b:1:None")]
        assert d.table("keyed") == {"a": 2, "b": 1}


@pytest.mark.parametrize("context", [False, True])
def test_an_async_function_gives_what_the_plain_one_gives(execute, context):
    async def slow_dedupe(seen: list[int], v: int, *ctx: Any) -> tuple[list[int], list[int]]:
        if ctx and not isinstance(ctx[0], fg.RecordContext):
            raise TypeError("no context")
        return dedupe(seen, v)

    out = execute(
        lambda s: s.key_by(mod3).process(slow_dedupe, list, context=context).to("out"), VALUES
    )
    plain = execute(
        lambda s: s.key_by(mod3).process(dedupe, list, name="slow_dedupe").to("out"), VALUES
    )
    assert out.by_key("out") == plain.by_key("out")
    assert out.tables == plain.tables
    assert not out.dead_letters


def test_mutable_initial_state_is_copied_per_key(execute):
    def append(seen: list[int], v: int) -> tuple[list[int], list[int]]:
        seen.append(v)  # mutates: each key must have its own list
        return seen, [len(seen)]

    out = execute(lambda s: s.key_by(mod3).process(append, []).to("out"), VALUES)
    assert out.tables == {"append": GROUPS}


# -- built-in stateful steps written with process ---------------------------------------------


def priced(order: int, price: int | None) -> str:
    return f"{order}@{price}"


def join_by_hand(price: int | None, tagged: list[Any]) -> tuple[int | None, list[str]]:
    """A stream-table left join: the table's records set the state, the stream's read it."""
    side, value = tagged
    if side == "table":
        return value, []  # None (a tombstone) deletes the key's state, as it deletes a row
    return price, [priced(value, price)]


Event = tuple[bool, str, int | None]
"""(to the table?, key, value): a value None on the table's side deletes the key."""

events = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.one_of(st.none(), st.integers(0, 99)),
    ),
    max_size=40,
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_join(events_: list[Event], partitions: int, by_hand: bool) -> tuple[list[Any], dict]:
    g = fg.Graph("j")
    orders = g.source("orders", key_type=str, value_type=int, partitions=partitions)
    prices = g.source("prices", key_type=str, value_type=int, partitions=partitions)
    if by_hand:
        tagged_orders = orders.map(lambda v: ["stream", v], name="tag-orders")
        tagged_prices = prices.map(lambda v: ["table", v], name="tag-prices")
        joined = tagged_orders.merge(tagged_prices).process(join_by_hand, value_type=str)
    else:
        joined = orders.join(prices.to_table(name="price"), priced, how="left", value_type=str)
    joined.to("out")
    with TestDriver(g) as d:
        for to_table, key, value in events_:
            if to_table:
                d.send("prices", key, value)
            elif value is not None:
                d.send("orders", key, value)
        table = d.table("join_by_hand" if by_hand else "price")
        return d.output("out"), table


@SETTINGS
@given(events_=events, partitions=st.sampled_from([2, 3]))
def test_a_stream_table_join_written_with_process_equals_the_built_in_one(events_, partitions):
    built_in, table = run_join(events_, partitions, by_hand=False)
    by_hand, state = run_join(events_, partitions, by_hand=True)
    assert by_hand == built_in
    assert state == table


def count_by_hand(n: int, _v: object) -> tuple[int, list[int]]:
    return n + 1, [n + 1]


@SETTINGS
@given(
    records=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers()), max_size=40),
    partitions=st.sampled_from([2, 3]),
)
def test_a_count_written_with_process_equals_the_built_in_one(records, partitions):
    results = []
    for by_hand in (False, True):
        g = fg.Graph("c")
        s = g.source("in", key_type=str, value_type=int, partitions=partitions)
        if by_hand:
            s.process(count_by_hand, 0, name="n").to("out")
        else:
            s.count(name="n").changes().to("out")
        with TestDriver(g) as d:
            d.send_many("in", records)
            results.append((d.output("out"), d.table("n")))
    assert results[1] == results[0]
    assert results[0][1] == dict(Counter(k for k, _ in records))


def test_step_counts_count_what_a_process_step_emits():
    g = fg.Graph("t")
    s = g.source_from(VALUES, name="in", value_type=int)
    s.key_by(mod3).process(batches_of_four, list).to("out")
    result = fg.run(g)
    emitted = sum(len(vs) // 4 for vs in GROUPS.values())
    assert result.step_counts["batches_of_four"] == emitted
    assert result.step_counts["to-out"] == emitted


@pytest.mark.parametrize("merged", [False, True])
def test_the_records_a_flat_map_makes_from_one_input_all_count(merged: bool) -> None:
    # they share their input's offset: only the stored position, not the latest, skips them
    g = fg.Graph("g")
    src = g.source("in", key_type=str, value_type=int)
    if merged:
        src = src.merge(g.source("in2", key_type=str, value_type=int))
    twice = src.flat_map(lambda v: [v, v], name="twice")
    twice.process(count_by_hand, 0, name="n").to("out")
    with TestDriver(g) as d:
        d.send("in", "k", 1)
        d.send("in", "k", 2)
        if merged:
            d.send("in2", "k", 3)
        assert d.table("n") == {"k": 6 if merged else 4}
        assert d.output("out") == [("k", i) for i in range(1, 7 if merged else 5)]


def test_a_record_whose_key_cannot_be_stored_is_dead_lettered_whole() -> None:
    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).process(dedupe, list, name="d").to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 1)
        d.send("in", None, 2, timestamp=7.0)  # no key to store
        d.send("in", "a", 3)
        assert d.output("out") == [("a", 1), ("a", 3)]
        (letter,) = d.dead_letters()
        ((*_, ts, _o, _h),) = [m for part in d._transport.broker.logs["g-dlq"] for m in part]
    assert (letter.key, letter.value, ts) == (None, b"2", 7.0)
    assert letter.headers["source.offset"] == "1"
    assert "key None of table 'd'" in letter.headers["error.message"]


def test_a_bad_result_names_the_function_that_returned_it() -> None:
    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).process(bad_outputs, 0).to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 1)
        (letter,) = d.dead_letters()
    line = bad_outputs.__code__.co_firstlineno
    assert letter.headers["error.message"].startswith(
        f"process function tests.executor.test_process.bad_outputs line {line} returned "
        "outputs of type str; "
    )


def bad_outputs(n: int, v: int) -> tuple[int, Any]:
    return n, "no"


def test_a_replayed_key_that_was_not_deleted_is_kept_when_the_cache_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a cache dropped at every flush: a replayed record must not mark a live key as a grave
    from flowgraph.runtime import aggregate
    from tests.executor.test_deletes import Crash, crashing_at

    monkeypatch.setattr(aggregate, "CACHE_KEYS", 0)
    g = fg.Graph("t")
    g.source("moves", key_type=str, value_type=int).process(count_by_hand, 0, name="n")
    cluster = Cluster(g)
    cluster.run({"moves": [(0, b"a", b"1")]})
    crashing_at(monkeypatch, "after-store")
    with pytest.raises(Crash):
        cluster.run({"moves": [(0, b"a", b"2"), (0, b"b", b"3")]})
    monkeypatch.undo()
    monkeypatch.setattr(aggregate, "CACHE_KEYS", 0)
    worker = cluster.run()
    assert worker.stats.skipped == 2
    cluster.run({"moves": [(0, b"b", b"4")]})
    assert cluster.last_tables == {"n": {"a": 2, "b": 2}}


def test_context_gives_the_value_timestamp_and_offset_and_outputs_keep_time_and_headers():
    def stamped(n: int, v: int, ctx: fg.RecordContext) -> tuple[int, list[str]]:
        return n + v, [f"{v}@{ctx.timestamp}#{ctx.offset}"]

    g = fg.Graph("t")
    g.source("in", key_type=str, value_type=int).process(stamped, 0, context=True).to("out")
    with TestDriver(g) as d:
        d.send("in", "a", 5, timestamp=3.5, headers={"h": b"x"})
        d.send("in", "a", 7, timestamp=4.0)
        assert d.output("out") == [("a", "5@3.5#0"), ("a", "7@4.0#1")]
        assert d.table("stamped") == {"a": 12}
        out = [m for part in d._transport.broker.logs["out"] for m in part]
    assert [ts for _k, _v, ts, _o, _h in out] == [3.5, 4.0]
    assert [dict(h or ()).get("h") for *_, h in out] == [b"x", None]


def three(n: int, v: int) -> Any:
    return (n, [v], "extra") if v == 2 else [n + 1, [v]]  # a list pair is a pair too


def test_a_result_that_is_not_a_pair_is_dead_lettered_as_such_whatever_its_length():
    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).process(three, 0).to("out")
    with TestDriver(g) as d:
        for v in (1, 2, 3):
            d.send("in", "a", v)
        assert d.output("out") == [("a", 1), ("a", 3)]
        assert d.table("three") == {"a": 2}
        (letter,) = d.dead_letters()
    line = three.__code__.co_firstlineno
    assert letter.headers["error.type"] == "ProcessResultError"
    assert letter.headers["error.message"].startswith(
        f"process function tests.executor.test_process.three line {line} returned "
        "tuple (1, [2], 'extra'); it must return a pair"
    )


def test_returning_none_is_dead_lettered_as_not_a_pair():
    g = fg.Graph("g")
    g.source("in", key_type=str, value_type=int).process(lambda n, v: None, 0, name="p")
    with TestDriver(g) as d:
        d.send("in", "a", 1)
        (letter,) = d.dead_letters()
    assert letter.headers["error.type"] == "ProcessResultError"
    assert " returned NoneType None; it must return a pair" in letter.headers["error.message"]


def test_a_process_over_two_inputs_stores_one_position_per_input(tmp_path: Path) -> None:
    from flowgraph.runtime.state import RocksDBBackend

    g = fg.Graph("g")
    src = g.source("in", key_type=str, value_type=int)
    src.merge(g.source("in2", key_type=str, value_type=int)).process(count_by_hand, 0, name="n")
    with TestDriver(g, store="rocksdb://" + str(tmp_path)) as d:
        d.send("in", "k", 1)
        d.send("in2", "k", 2)
        d.send("in2", "k", 3)
        d.send("in", "k", 4)
    backend = RocksDBBackend(tmp_path)
    try:
        assert backend.open("g-n", 0).get("k") == ((1, 1), 4)
    finally:
        backend.close()
