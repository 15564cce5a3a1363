"""Failures are visible: dead letters by step and error type, the dead-letter limit, the
JSON-lines log of an embedded run, and records out of every step (through a revoke too)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.stats import FRACTION_MIN_EVENTS
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver


def parse(s: str) -> int:
    return int(s)


def lookup(n: int) -> int:
    if n % 7 == 0:
        raise KeyError(f"no entry for {n}")
    return n


def two_failing_steps(lines: list[str]) -> fg.Graph:
    g = fg.Graph("vis")
    (
        g.source_from(lines, name="lines")
        .map(parse, name="parse")
        .map(lookup, name="lookup")
        .key_by(lambda n: n % 3, name="mod")
        .count(name="total")
    )
    return g


LINES = [str(i) if i % 10 else f"x{i}" for i in range(1, 101)]
"""100 lines: the 10 multiples of 10 do not parse; of the others, 13 multiples of 7 fail lookup."""


def test_dead_letters_by_step_and_error_type_with_the_first_as_example() -> None:
    result = fg.run(two_failing_steps(LINES))
    bad_parse = [i for i in range(1, 101) if i % 10 == 0]
    bad_lookup = [i for i in range(1, 101) if i % 10 and i % 7 == 0]
    kinds = {(k.step, k.error_type): k for k in result.dead_letters_by_step}
    assert set(kinds) == {("parse", "ValueError"), ("lookup", "KeyError")}
    parse_kind, lookup_kind = kinds["parse", "ValueError"], kinds["lookup", "KeyError"]
    assert (parse_kind.count, lookup_kind.count) == (len(bad_parse), len(bad_lookup))
    assert result.dead_letters == len(bad_parse) + len(bad_lookup)
    # the first of each kind, as read: offset, message, the value as a short repr
    assert parse_kind.offset == bad_parse[0] - 1
    assert parse_kind.message == "invalid literal for int() with base 10: 'x10'"
    assert parse_kind.example == "'x10'"
    assert lookup_kind.offset == bad_lookup[0] - 1
    assert lookup_kind.message == "'no entry for 7'"
    assert lookup_kind.example == "7"
    assert result.dead_letters_by_step[0] is lookup_kind  # met first (offset 6)


def test_a_long_example_is_cut_short() -> None:
    g = fg.Graph("long")
    g.source_from(["y" * 500], name="lines").map(parse, name="parse").to("out")
    [kind] = fg.run(g).dead_letters_by_step
    assert len(kind.example) <= 60 and kind.example.endswith("…")
    assert len(kind.message) <= 160


def test_the_limit_stops_the_run_after_committing_what_it_processed() -> None:
    lines = ["x"] * 5_000
    g = fg.Graph("limit")
    g.source_from(lines, name="lines").map(parse, name="parse").count(name="total")
    started: list[Worker] = []
    with pytest.raises(fg.DeadLetterLimitError) as caught:
        fg.run(g, max_dead_letters=10, max_batch=100, on_start=started.append)
    exc = caught.value
    result = exc.result
    assert exc.count == result.dead_letters > 10
    assert result.events < len(lines)  # stopped early, not at the end of the input
    assert str(exc).startswith(f"stopped: {exc.count} dead letters exceed max_dead_letters=10")
    assert "the first: parse: ValueError" in str(exc) and "offset 0" in str(exc)
    (worker,) = started
    broker = worker.transport.broker  # type: ignore[attr-defined]
    committed = broker.committed[g.id]
    assert sum(committed.values()) == result.events  # everything processed is committed


def test_a_count_at_the_limit_does_not_stop() -> None:
    result = fg.run(two_failing_steps(LINES), max_dead_letters=23)
    assert result.dead_letters == 23 and result.events == 100


def ten_percent_bad(n: int) -> list[str]:
    return ["x" if i % 10 == 0 else str(i) for i in range(n)]


def test_a_fraction_of_the_source_records() -> None:
    def graph() -> fg.Graph:
        g = fg.Graph("fraction")
        g.source_from(ten_percent_bad(3_000), name="lines").map(parse, name="parse").to("out")
        return g

    with pytest.raises(fg.DeadLetterLimitError) as caught:
        fg.run(graph(), max_dead_letters=0.05, max_batch=200)
    result = caught.value.result
    assert result.events < 3_000
    assert result.dead_letters > 0.05 * result.events
    assert "0.05 (5% of the source records)" in str(caught.value)
    assert fg.run(graph(), max_dead_letters=0.2).dead_letters == 300


def test_a_fraction_is_judged_only_after_enough_records() -> None:
    n = FRACTION_MIN_EVENTS // 2
    g = fg.Graph("few")
    g.source_from(["x"] * n, name="lines").map(parse, name="parse").to("out")
    assert fg.run(g, max_dead_letters=0.01).dead_letters == n


@pytest.mark.parametrize("bad", [-1, 1.5, 0.0, 1.0, True, "10", float("nan")])
def test_a_bad_limit_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(fg.ConfigurationError, match="max_dead_letters must be a count"):
        fg.run(two_failing_steps(LINES), max_dead_letters=bad)  # type: ignore[arg-type]


def test_an_embedded_run_writes_its_dead_letters_next_to_a_rocksdb_store(tmp_path: Path) -> None:
    g = fg.Graph("log")
    values = [b"\xff\x00", b"ok"]
    g.source_from(values, name="raw", value_type=bytes).map(bytes.decode, name="text").to("out")
    result = fg.run(g, store=f"rocksdb://{tmp_path / 'state'}")
    path = tmp_path / "state" / "log-dead-letters.jsonl"
    assert result.dead_letter_file == str(path)
    [line] = path.read_text().splitlines()
    got = json.loads(line)
    assert got["step"] == "text" and got["error_type"] == "UnicodeDecodeError"
    assert "can't decode byte 0xff" in got["error"]
    assert (got["topic"], got["partition"], got["offset"]) == ("log-raw-feed", 0, 0)
    assert got["value_format"] == "base64"
    assert base64.b64decode(got["value"]) == values[0]
    assert got["key"] is None and got["key_format"] is None
    assert isinstance(got["timestamp"], float) and got["headers"] == []
    fg.run(g, store=f"rocksdb://{tmp_path / 'state'}")  # appended to, not overwritten
    assert len(path.read_text().splitlines()) == 2


def test_no_file_without_dead_letters_and_a_named_file_on_request(tmp_path: Path) -> None:
    g = fg.Graph("clean")
    g.source_from(["1", "2"], name="lines").map(parse, name="parse").to("out")
    result = fg.run(g, store=f"rocksdb://{tmp_path}", dead_letters_file=tmp_path / "dl.jsonl")
    assert result.dead_letter_file is None
    assert list(tmp_path.glob("*.jsonl")) == []
    bad = fg.run(two_failing_steps(LINES), dead_letters_file=tmp_path / "sub" / "dl.jsonl")
    lines = (tmp_path / "sub" / "dl.jsonl").read_text().splitlines()
    assert len(lines) == bad.dead_letters == 23
    assert {json.loads(x)["step"] for x in lines} == {"parse", "lookup"}
    assert fg.run(two_failing_steps(LINES)).dead_letter_file is None  # memory://: asked only


# -- records out of every step -----------------------------------------------------------------


async def twice_async(n: int) -> list[int]:
    return [n, n]


async def keep_async(n: int) -> bool:
    return n % 4 != 0


def every_kind(values: list[int]) -> fg.Graph:
    g = fg.Graph("steps")
    s = g.source_from(values, name="in", partitions=2)
    evens = s.filter(lambda n: n % 2 == 0, name="evens")
    odd = s.filter(lambda n: n % 2 == 1, name="odds").map(lookup, name="look")
    both = evens.merge(odd, name="both")
    pairs = both.flat_map(lambda n: [n] * (n % 3), name="pairs").peek(lambda n: None, name="see")
    pairs.to("out", name="sink")
    pairs.flat_map(twice_async, name="atwice").filter(keep_async, name="akeep").to("out2")
    table = pairs.key_by(lambda n: n % 5, name="mod").sum(lambda n: 100 // (n % 11), name="sum")
    table.changes(name="changes").to("changed")
    return g


def expected_counts(values: list[int]) -> dict[str, int]:
    evens = [n for n in values if n % 2 == 0]
    odds = [n for n in values if n % 2 == 1]
    looked = [n for n in odds if n % 7]
    both = evens + looked
    pairs = [n for n in both for _ in range(n % 3)]
    atwice = [m for n in pairs for m in (n, n)]
    akeep = [n for n in atwice if n % 4]
    summed = [n for n in pairs if n % 11]
    return {
        "in": len(values),
        "evens": len(evens),
        "odds": len(odds),
        "look": len(looked),
        "both": len(both),
        "pairs": len(pairs),
        "see": len(pairs),
        "sink": len(pairs),
        "atwice": len(atwice),
        "akeep": len(akeep),
        "mod": len(pairs),
        "sum": len(summed),
        "changes": len(summed),
    }


def test_every_step_is_counted() -> None:
    values = list(range(1, 300))
    counts = fg.run(every_kind(values)).step_counts
    expected = expected_counts(values)
    assert {k: counts[k] for k in expected} == expected
    assert counts["mod-repartition"] == expected["mod"]
    assert (counts["to-out2"], counts["to-changed"]) == (expected["akeep"], expected["sum"])


def test_every_step_is_counted_under_the_driver() -> None:
    values = list(range(1, 60))
    g = fg.Graph("driven")
    src = g.source("in", value_type=int)
    src.filter(lambda n: n % 3 == 0, name="threes").map(lookup, name="look").to("out")
    with TestDriver(g) as driver:
        for v in values:
            driver.send("in", None, v)
        counts = driver._worker.step_counts()
    threes = [n for n in values if n % 3 == 0]
    assert counts["in"] == len(values)
    assert counts["threes"] == len(threes)
    assert counts["look"] == counts["to-out"] == len([n for n in threes if n % 7])


@pytest.mark.parametrize("encode", [True, False])
def test_context_steps_are_counted_like_the_others(encode: bool) -> None:
    """A ``context=True`` filter counts its drops and a flat_map its outputs, as plain ones do."""
    values = list(range(1, 60))
    g = fg.Graph("ctx-counted")
    src = g.source("in", value_type=int)
    kept = src.filter(lambda n, ctx: n % 3 == 0 and ctx.offset >= 0, name="threes", context=True)
    kept.flat_map(lambda n, ctx: [n] * (n % 4), name="copies", context=True).to("out")
    with TestDriver(g, encode=encode) as driver:
        for v in values:
            driver.send("in", None, v)
        counts = driver._worker.step_counts()
    threes = [n for n in values if n % 3 == 0]
    assert counts["threes"] == len(threes)
    assert counts["copies"] == counts["to-out"] == sum(n % 4 for n in threes)


def test_step_counts_survive_a_revoke_and_a_reassignment() -> None:
    """A rebalance drops the tasks of revoked partitions; their counts stay on the worker."""
    g = fg.Graph("moved")
    g.source("in", value_type=int, partitions=3).filter(lambda n: n % 2 == 0, name="even").map(
        lookup, name="look"
    ).key_by(lambda n: n % 4, name="mod").count(name="total")
    plan = g.plan()
    broker = MemoryBroker()
    codec_values = list(range(1, 301))

    async def main() -> dict[str, int]:
        worker = Worker(plan, MemoryTransport(broker), open_backend("memory://"))
        await worker.start()

        def send(values: list[int]) -> None:
            broker.append(
                "in", [(v % 3, None, worker.codecs["in"][1].encode(v), 0.0, None) for v in values]
            )

        send(codec_values[:150])
        await worker.run(until_idle=True, idle_wait=0.0)
        assert worker._consumer is not None
        assignment = worker._consumer.assignment()
        await worker._on_revoked(assignment)
        assert not worker._all_tasks  # every task dropped
        await worker._on_assigned(assignment)
        send(codec_values[150:])
        await worker.run(until_idle=True, idle_wait=0.0)
        counts = worker.step_counts()
        await worker.stop()
        return counts

    counts = asyncio.run(main())
    even = [n for n in codec_values if n % 2 == 0]
    looked = [n for n in even if n % 7]
    assert counts["in"] == len(codec_values)
    assert counts["even"] == len(even)
    assert counts["look"] == counts["mod"] == counts["total"] == len(looked)


def test_a_file_that_cannot_be_written_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a directory")
    with pytest.raises(fg.FlowgraphError, match=r"cannot write dead letters to .*taken/dl\.jsonl"):
        fg.run(two_failing_steps(LINES), dead_letters_file=tmp_path / "taken" / "dl.jsonl")


def test_a_windowed_table_counts_what_it_applied_and_late_counts_the_late() -> None:
    g = fg.Graph("windowed")
    per_10s = g.source("in", value_type=int).window(fg.Tumbling(10)).count(name="w")
    per_10s.late(name="late").to("late-out", name="late_sink")
    with TestDriver(g) as driver:
        for t in (1.0, 2.0, 15.0, 3.0, 25.0, 4.0):  # 3.0 and 4.0 come after [0, 10) closed
            driver.send("in", None, 1, timestamp=t)
        counts = driver._worker.step_counts()
    assert (counts["in"], counts["w"]) == (6, 4)
    assert counts["late"] == counts["late_sink"] == 2


def test_late_records_and_window_counts_survive_a_revoke() -> None:
    g = fg.Graph("windowed-moved")
    g.source("in", value_type=int).window(fg.Tumbling(10)).count(name="w").late().to("late-out")
    with TestDriver(g) as driver:
        for t in (1.0, 15.0, 3.0):  # 3.0 is late
            driver.send("in", None, 1, timestamp=t)
        worker = driver._worker
        assert worker._consumer is not None
        assignment = worker._consumer.assignment()
        driver._run(worker._on_revoked(assignment))
        driver._run(worker._on_assigned(assignment))
        for t in (25.0, 4.0):  # 4.0 is late
            driver.send("in", None, 1, timestamp=t)
        counts = worker.step_counts()
        assert worker.stats.late == 2
    assert (counts["in"], counts["w"], counts["w-late"]) == (5, 3, 2)
