"""Global tables: every worker holds all partitions of the table, restored before any record
is processed and followed in the background; lookups from any step, both faces."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import flowgraph as fg
from flowgraph.runtime.memory import MemoryBroker, MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.worker import Worker
from flowgraph.testing import TestDriver


def lookup_graph(graph_id: str = "shop") -> tuple[fg.Graph, fg.GlobalTable[str, str]]:
    """Orders (2 partitions) enriched from a global table of users (3 partitions)."""
    g = fg.Graph(graph_id)
    users = g.global_table("users", key_type=str, value_type=str, partitions=3)
    orders = g.source("orders", key_type=str, value_type=str, partitions=2)

    def enrich(user: str) -> str:
        return f"{user}:{users.get(user, '?')}:{user in users}"

    orders.map(enrich).to("enriched")
    return g, users


@pytest.mark.parametrize("encode", [True, False])
def test_a_step_looks_up_keys_of_every_partition(encode: bool) -> None:
    g, _ = lookup_graph()
    with TestDriver(g, encode=encode) as driver:
        for i in range(9):
            driver.send("users", f"u{i}", f"name{i}")
        driver.send("users", "u3", None)  # a tombstone deletes
        driver.send("users", "u4", "renamed")
        for i in range(9):
            driver.send("orders", f"o{i}", f"u{i}")
        got = sorted(v for _, v in driver.output("enriched"))
        expected = sorted(
            f"u{i}:{'?' if i == 3 else 'renamed' if i == 4 else f'name{i}'}:{i != 3}"
            for i in range(9)
        )
        assert got == expected
        # the users' partitions are spread over all 3 partitions, read by one step
        table = driver.table("users")
        assert table == {f"u{i}": f"name{i}" for i in range(9) if i != 3} | {"u4": "renamed"}
        worker = driver._worker
        assert worker.global_table("users") == table
        assert len(worker.global_tables.stores["users"]) == 3
        assert all(lag == 0 for lag in worker.global_tables.lag().values())


def test_a_lookup_outside_a_run_says_so_in_one_sentence() -> None:
    _, users = lookup_graph()
    with pytest.raises(fg.ConfigurationError, match="outside a running worker"):
        users["u1"]
    with pytest.raises(fg.ConfigurationError, match="outside a running worker"):
        users.get("u1")


def test_an_aggregation_made_global_is_read_whole_by_another_stream() -> None:
    g = fg.Graph("tg")
    totals = (
        g.source("payments", key_type=str, value_type=int, partitions=4)
        .sum(name="spent")
        .to_global()
    )
    g.source("checks", key_type=str, value_type=str).map(
        lambda user: totals.get(user, 0) >= 100, name="vip"
    ).to("vips")
    plan = g.plan()
    assert [s.is_global for s in plan.stores] == [True]
    assert "every worker holds all 4 partitions" in plan.explain()
    with TestDriver(g) as driver:
        for user, amount in [("ann", 60), ("bob", 20), ("ann", 50), ("cid", 200)]:
            driver.send("payments", user, amount)
        for user in ("ann", "bob", "cid", "dan"):
            driver.send("checks", user, user)
        assert [v for _, v in driver.output("vips")] == [True, False, True, False]
        assert driver.table("spent") == {"ann": 110, "bob": 20, "cid": 200}


def test_a_windowed_table_cannot_be_global() -> None:
    g = fg.Graph("w")
    table = g.source("in", key_type=str, value_type=int).window(fg.Tumbling(10)).count(name="n")
    with pytest.raises(fg.GraphDefinitionError, match="windowed"):
        table.to_global()


def test_run_returns_the_whole_table() -> None:
    g = fg.Graph("rates")
    rates = (
        g.source_from([("EUR", 1.1), ("GBP", 1.3), ("EUR", 1.2)], name="feed", partitions=2)
        .key_by(lambda kv: kv[0], name="currency")
        .map(lambda kv: kv[1], name="rate")
        .to_table(name="rate_of")
        .to_global()
    )
    result = fg.run(g)
    assert result.table("rate_of") == {"EUR": 1.2, "GBP": 1.3}
    assert rates.name == "rate_of" and rates.store == "rates-rate_of"


def test_updates_reach_a_running_worker_in_the_background() -> None:
    """No catch-up is asked for: the tailer applies committed writes while the worker runs."""
    g, _ = lookup_graph("bg")
    broker = MemoryBroker()

    async def main() -> dict[str, Any]:
        worker = Worker(g.plan(), MemoryTransport(broker, encoded=True), open_backend("memory://"))
        await worker.start()
        try:
            kc, vc = worker.codecs["users"]
            assert kc is not None and vc is not None
            broker.append(
                "users", [(p, kc.encode(f"k{p}"), vc.encode("v"), 0.0, None) for p in range(3)]
            )
            while await worker.step():
                pass
            await worker.commit()
            for _ in range(100):  # the tailer polls every 0.2 s
                if len(worker.global_table("users")) == 3:
                    break
                await asyncio.sleep(0.05)
            return worker.global_table("users")
        finally:
            await worker.stop()

    assert asyncio.run(main()) == {"k0": "v", "k1": "v", "k2": "v"}


def test_a_restart_on_local_rocksdb_restores_only_the_tail(tmp_path: Path) -> None:
    g, _ = lookup_graph("tail")
    broker = MemoryBroker()
    store = "rocksdb://" + str(tmp_path)

    async def run_once(keys: range) -> tuple[int, int, dict[str, Any]]:
        """Start (restoring), process `keys` of users, stop: records applied at start, in
        all, and the table."""
        worker = Worker(g.plan(), MemoryTransport(broker, encoded=True), open_backend(store))
        await worker.start()
        at_start = worker.global_tables.applied
        try:
            kc, vc = worker.codecs["users"]
            assert kc is not None and vc is not None
            broker.append(
                "users", [(i % 3, kc.encode(f"u{i}"), vc.encode(f"n{i}"), 0.0, None) for i in keys]
            )
            while await worker.step():
                pass
            await worker.commit()
            await worker.global_tables.catch_up()
            return at_start, worker.global_tables.applied, worker.table("users")
        finally:
            await worker.stop()

    first = asyncio.run(run_once(range(10)))
    assert first[:2] == (0, 10)
    second = asyncio.run(run_once(range(10, 13)))
    # the copies on disk were at the changelog's end: nothing restored, the 3 new applied
    assert second[:2] == (0, 3)
    assert second[2] == {f"u{i}": f"n{i}" for i in range(13)}
    assert (tmp_path / "tail-users.global").is_dir()
    # a fresh directory restores the whole changelog at start
    fresh = f"rocksdb://{tmp_path / 'other'}"

    async def restored_fresh() -> int:
        worker = Worker(g.plan(), MemoryTransport(broker, encoded=True), open_backend(fresh))
        await worker.start()
        try:
            return worker.global_tables.applied
        finally:
            await worker.stop()

    assert asyncio.run(restored_fresh()) == 13


# -- the Faust face ---------------------------------------------------------------------


def faust_app() -> tuple[fg.App, list[Any]]:
    app = fg.App("fa", topic_partitions=2)
    updates = app.topic("updates", key_type=str, value_type=int)
    lookups = app.topic("lookups", key_type=str, value_type=str)
    found = app.topic("found", key_type=str, value_type=int)
    prices = app.GlobalTable(
        "prices", default=int, key_type=str, value_type=int, recovery_buffer_size=1
    )
    seen: list[Any] = []

    @app.agent(updates)
    async def write(stream: Any) -> None:
        async for event in stream.events():
            prices[event.key] = event.value
            # its own write, uncommitted yet, and a key written from the other partition
            seen.append((event.key, prices[event.key], "k0" in prices))

    @app.agent(lookups)
    async def read(stream: Any) -> None:
        async for event in stream.events():
            await found.send(key=event.value, value=prices[event.value])

    @app.timer(10)
    async def tick() -> None:
        seen.append(("timer", dict(prices.items())))

    return app, seen


def test_faust_global_table_written_by_one_agent_read_by_another_and_a_timer() -> None:
    app, seen = faust_app()
    plan = app.plan()
    assert [(s.step, s.is_global) for s in plan.stores] == [("prices", True)]
    with TestDriver(app) as driver:
        for i in range(5):
            driver.send("updates", f"k{i}", i * 10)
        assert seen == [(f"k{i}", i * 10, True) for i in range(5)]
        for i in range(6):
            driver.send("lookups", "x", f"k{i}")
        assert sorted(driver.output("found")) == [
            (f"k{i}", i * 10 if i < 5 else 0) for i in range(6)
        ]
        assert driver.table("prices") == {f"k{i}": i * 10 for i in range(5)}
        driver.advance_time(11)
    assert seen[-1] == ("timer", {f"k{i}": i * 10 for i in range(5)})


def test_faust_global_table_written_by_a_reading_agent_stops_the_run() -> None:
    app = fg.App("fb", topic_partitions=2)
    a = app.topic("a", key_type=str, value_type=int)
    b = app.topic("b", key_type=str, value_type=int)
    table = app.GlobalTable("t", key_type=str, value_type=int)

    @app.agent(a)
    async def first(stream: Any) -> None:
        async for event in stream.events():
            table[event.key] = event.value

    @app.agent(b)
    async def second(stream: Any) -> None:
        async for event in stream.events():
            table[event.key] = event.value

    with TestDriver(app) as driver:
        driver.send("a", "x", 1)
        with pytest.raises(fg.ConfigurationError, match="agent 'first' writes"):
            driver.send("b", "y", 2)


def test_faust_global_table_cannot_be_windowed() -> None:
    app = fg.App("fc")
    with pytest.raises(fg.ConfigurationError, match="cannot be windowed"):
        app.GlobalTable("t").tumbling(10)


def test_faust_global_table_no_agent_writes_says_so_when_read() -> None:
    app = fg.App("fd")
    table = app.GlobalTable("t", key_type=str, value_type=int)
    seen: list[str] = []

    @app.task
    async def read() -> None:
        try:
            table["x"]
        except fg.ConfigurationError as exc:
            seen.append(str(exc))

    with TestDriver(app):
        pass
    assert seen == [
        "global table 't' is written by no agent, so no worker holds it; name it in the code "
        "of the agent that writes it"
    ]


def test_the_live_view_line_shows_the_global_tables_lag() -> None:
    import io

    from flowgraph._live import LiveView

    g, _ = lookup_graph("live")
    with TestDriver(g) as driver:
        driver.send("users", "u1", "Ann")
        view = LiveView(driver.plan, out=io.StringIO(), interactive=False)
        view._worker = driver._worker
        assert "global tables lag 0" in view._log_line()
    plain = fg.Graph("plain")
    plain.source("in", key_type=str, value_type=int).count(name="n")
    with TestDriver(plain) as driver:
        view = LiveView(driver.plan, out=io.StringIO(), interactive=False)
        view._worker = driver._worker
        assert "global" not in view._log_line()
