"""The planner on agents: their tables, sends and group_by repartitions, from logical nodes."""

from __future__ import annotations

import pytest

from planner import plan
from planner.errors import GraphValidationError
from planner.logical import (
    Agent,
    AgentTable,
    KeyBy,
    LogicalPlan,
    Repartition,
    Send,
    Service,
    Sink,
    Source,
    TopicDecl,
)


async def count(stream):  # the planner never calls it
    async for _ in stream:
        pass


def by_account(v):
    return v["account"]


def _app(*nodes, **kw) -> LogicalPlan:
    return LogicalPlan(graph_id="shop", nodes=nodes, **kw)


SRC = Source(id="orders", topic="orders", partitions=4)
AGENT = Agent(
    id="tally", inputs=("orders",), fn=count, is_async=True, concurrency=1, topic="orders"
)


def test_a_table_after_an_agent_on_a_keyed_topic_needs_no_repartition():
    p = plan(_app(SRC, AGENT, AgentTable(id="totals", inputs=("tally",))))
    assert [s.source_topics for s in p.subtopologies] == [("orders",)]
    store = p.store_for("totals")
    assert (store.name, store.changelog, store.partitions) == (
        "shop-totals",
        "shop-totals-changelog",
        4,
    )


def test_group_by_before_an_agent_is_a_repartition_even_without_a_table():
    key = KeyBy(id="tally-account", inputs=("orders",), fn=by_account)
    agent = Agent(id="tally", inputs=("tally-account",), fn=count, is_async=True, topic="orders")
    p = plan(_app(SRC, key, agent))
    assert [s.source_topics for s in p.subtopologies] == [
        ("orders",),
        ("shop-tally-account-repartition",),
    ]
    rep = next(s for s in p.subtopologies[1].steps if isinstance(s, Repartition))
    assert rep.reason.startswith("group_by")


def test_a_table_of_an_agent_on_an_unkeyed_stream_names_group_by():
    feed = Source(id="feed", topic="feed", partitions=3, feed=[1, 2, 3])
    agent = Agent(id="tally", inputs=("feed",), fn=count, is_async=True)
    with pytest.raises(GraphValidationError, match=r"table 'totals'.*group_by"):
        plan(_app(feed, agent, AgentTable(id="totals", inputs=("tally",))))


def test_a_table_with_other_partitions_than_its_agent_input_is_refused():
    table = AgentTable(id="totals", inputs=("tally",), partitions=8)
    with pytest.raises(GraphValidationError, match=r"8 partitions.*stream of 4.*group_by"):
        plan(_app(SRC, AGENT, table))


def test_an_agent_may_send_to_a_topic_the_app_reads_but_a_builder_sink_may_not():
    other = Source(id="confirmed", topic="confirmed", partitions=2)
    reader = Agent(id="mail", inputs=("confirmed",), fn=count, is_async=True)
    send = Send(id="tally->confirmed", inputs=("tally",), topic="confirmed")
    p = plan(_app(SRC, AGENT, send, other, reader))
    assert p.topic("confirmed").role == "source"
    yields = Send(id="tally->sink", inputs=("tally",), topic="confirmed", yields=True)
    assert plan(_app(SRC, AGENT, yields, other, reader)).topic("confirmed").role == "source"
    copy = Sink(id="copy", inputs=("orders",), topic="confirmed")  # a builder step
    with pytest.raises(GraphValidationError, match="may not feed its own input"):
        plan(_app(SRC, AGENT, copy, other, reader))


def test_table_and_send_must_read_an_agent():
    with pytest.raises(GraphValidationError, match="table 'totals' must read from an agent"):
        plan(
            _app(
                SRC,
                AgentTable(id="totals", inputs=("orders",)),
                Sink(id="s", inputs=("orders",), topic="x"),
            )
        )


def test_services_and_declared_topics_travel_with_the_plan():
    timer = Service(id="tick", fn=count, service="timer", interval=5.0)
    p = plan(_app(SRC, AGENT, services=[timer], topics=[TopicDecl(name="pings", partitions=3)]))
    assert p.logical.services == (timer,)
    assert (p.topic("pings").role, p.topic("pings").partitions) == ("sink", 3)
