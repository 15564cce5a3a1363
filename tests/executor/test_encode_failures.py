"""A record the runtime cannot store goes to the dead-letter topic; the pipeline goes on.

Checked where records are encoded as on Kafka: the `TestDriver` (bytes mode, its default) and
workers on a `MemoryBroker` in bytes mode, restarted on the same broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime.faults import InjectedCrash, raise_at
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state.memory import MemoryBackend
from flowgraph.runtime.worker import Worker, topic_codecs
from flowgraph.testing import TestDriver


def keyless_count() -> fg.Graph:
    g = fg.Graph("t")
    g.source("in", key_type=str, value_type=int).count(name="c")
    return g


def test_a_keyless_record_into_a_count_by_source_key_is_dead_lettered():
    with TestDriver(keyless_count()) as d:
        d.send("in", "a", 1)
        d.send("in", None, 2)
        d.send("in", "a", 3)
        assert d.table("c") == {"a": 2}
        (letter,) = d.dead_letters()
        assert letter.headers["error.step"] == "c"
        assert letter.headers["error.type"] == "SerializationError"
        assert letter.headers["source.topic"] == "in"
        assert letter.headers["source.offset"] == "1"
        message = letter.headers["error.message"]
        assert message.startswith("cannot encode key of topic 't-c-changelog': ")
        assert "key None of table 'c'" in message
        assert (letter.key, letter.value) == (None, b"2")


def test_objects_mode_keeps_a_none_key():
    """Without encoding (`encode=False`), as on memory://, a table may hold a None key."""
    with TestDriver(keyless_count(), encode=False) as d:
        d.send("in", None, 2)
        assert d.table("c") == {None: 1}
        assert d.dead_letters() == []


class Opaque:
    """A value no codec encodes."""


def opaque_aggregate() -> fg.Graph:
    def add(acc: Any, v: int) -> Any:
        return Opaque() if v < 0 else acc + v

    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    src.aggregate(0, add, name="total").changes().to("out", value_type=int)
    return g


def test_a_value_that_cannot_be_stored_is_dead_lettered_and_its_key_reverts():
    with TestDriver(opaque_aggregate()) as d:
        d.send("in", "a", 5)
        d.send("in", "b", 1)
        d.send("in", "a", -1)  # the total becomes an Opaque: the commit cannot store it
        assert d.table("total") == {"a": 5, "b": 1}
        d.send("in", "a", 2)  # from the stored total
        assert d.table("total") == {"a": 7, "b": 1}
        steps = [dl.headers["error.step"] for dl in d.dead_letters()]
        # the Opaque update reaches the int sink first, then the commit fails to store it
        assert steps == ["to-out", "total"]
        stored = d.dead_letters()[1]
        assert stored.headers["error.type"] == "SerializationError"
        assert (
            "cannot encode value of topic 't-total-changelog'" in (stored.headers["error.message"])
        )
        assert stored.headers["source.offset"] == "2"
        assert d.output("out") == [("a", 5), ("b", 1), ("a", 7)]


def test_a_sink_value_that_does_not_fit_its_type_is_dead_lettered():
    g = fg.Graph("t")
    g.source("in", key_type=str, value_type=str).to("out", value_type=int)
    with TestDriver(g) as d:
        d.send("in", "a", "x")
        assert d.output("out") == []
        (letter,) = d.dead_letters()
        assert letter.headers["error.step"] == "to-out"


def test_a_window_value_that_cannot_be_stored_is_dead_lettered_and_reverts():
    def add(acc: Any, v: int) -> Any:
        return Opaque() if v < 0 else acc + v

    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Tumbling(10), timestamp=lambda v: 1.0).aggregate(0, add, name="w")
    with TestDriver(g) as d:
        d.send("in", "a", 1)
        d.send("in", "a", -1)
        d.send("in", "a", 3)
        assert {(w.key, w.start): v for w, v in d.table("w").windows().items()} == {("a", 0.0): 4}
        (letter,) = d.dead_letters()
        assert letter.headers["error.step"] == "w"
        assert "cannot encode value of topic 't-w-changelog'" in letter.headers["error.message"]


def test_a_keyless_record_into_a_windowed_count_is_counted():
    """Windowed stores key by (key, start, end) with the auto codec, which takes None."""
    g = fg.Graph("t")
    src = g.source("in", key_type=str, value_type=int)
    src.window(fg.Tumbling(10), timestamp=float).count(name="n")
    with TestDriver(g) as d:
        d.send("in", None, 2)
        assert {(w.key, w.start): v for w, v in d.table("n").windows().items()} == {(None, 0.0): 1}
        assert d.dead_letters() == []


# -- on a memory broker in bytes mode, over restarts --------------------------------------------


async def _run(broker: MemoryBroker, backend: MemoryBackend, plan: Any) -> Worker:
    worker = Worker(plan, MemoryTransport(broker, encoded=True), backend, commit_every=2)
    await worker.start()
    try:
        await worker.run(until_idle=True, idle_wait=0.0)
    finally:
        await worker.stop()
    return worker


def test_keyless_records_on_a_bytes_broker_are_dead_lettered_once_over_restarts():
    plan = keyless_count().plan()
    codecs = topic_codecs(plan, in_process=False)
    kc, vc = codecs["in"]
    broker = MemoryBroker()
    broker.ensure("in", 1)
    records = [
        (0, None if i % 3 == 0 else kc.encode(f"k{i % 2}"), vc.encode(i), 0.0, None)
        for i in range(30)
    ]
    broker.append("in", records[:15])
    first = asyncio.run(_run(broker, MemoryBackend(), plan))
    assert first.stats.dead_letters == 5
    broker.append("in", records[15:])
    second = asyncio.run(_run(broker, MemoryBackend(), plan))  # a fresh store: restored
    assert second.stats.dead_letters == 5
    expected = {"k0": 0, "k1": 0}
    for i in range(30):
        if i % 3:
            expected[f"k{i % 2}"] += 1
    assert second.table("c") == expected
    offsets = [dict(m[4])["source.offset"] for m in broker.records(plan.dlq)]
    assert offsets == [str(i).encode() for i in range(0, 30, 3)]


def test_a_value_dead_lettered_at_a_commit_is_written_once_across_a_crash():
    """A crash after the commit produced its records (dead letters included) and before it
    stored them: the restart finds the same value again and does not dead-letter it twice."""
    plan = opaque_aggregate().plan()
    kc, vc = topic_codecs(plan, in_process=False)["in"]
    broker = MemoryBroker()
    broker.ensure("in", 1)
    broker.append(
        "in",
        [
            (0, kc.encode(k), vc.encode(v), 0.0, None)
            for k, v in [("a", 5), ("b", 1), ("a", -1), ("b", 2)]
        ],
    )

    async def crashing() -> None:
        worker = Worker(
            plan,
            MemoryTransport(broker, encoded=True),
            MemoryBackend(),
            crash_point=raise_at("after-produce"),
        )
        await worker.start()
        with pytest.raises(InjectedCrash):
            await worker.run(until_idle=True, idle_wait=0.0)

    asyncio.run(crashing())
    steps = [dict(m[4])["error.step"] for m in broker.records(plan.dlq)]
    assert steps == [b"to-out", b"total"]
    worker = asyncio.run(_run(broker, MemoryBackend(), plan))
    # one commit covers all four records: "a" goes back to its stored state, which is none
    assert worker.table("total") == {"b": 3}
    steps = [dict(m[4])["error.step"] for m in broker.records(plan.dlq)]
    assert steps == [b"to-out", b"total"]
