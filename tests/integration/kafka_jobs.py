"""Graphs the Kafka end-to-end tests (test_kafka.py) run in `flowgraph run` subprocesses.

Targets name a factory with literal arguments, so every test gets its own graph id (the
consumer group and the prefix of internal topics) and its own input topic on the shared
broker, e.g. ``tests/integration/kafka_jobs.py:make_graph('g-1a2b', 'clicks-1a2b')``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import flowgraph as fg
from flowgraph.partitioner import partition_for

TABLE = "per_url"
"""Name of the count step, so of the table the tests read."""


class Click(fg.Record):
    """One page view, JSON on the input topic."""

    url: str
    user: str
    ts: float


def drop_bots(click: Click) -> bool:
    """Keep the clicks of people."""
    return not click.user.startswith("bot-")


def by_url(click: Click) -> str:
    """The key to count by (names the repartition topic)."""
    return click.url


def make_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Clicks keyed by URL when produced: counted per URL with no repartition."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(drop_bots).count(name=TABLE)
    return g


def make_repartition_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Clicks keyed by user when produced: re-keyed by URL through a repartition topic."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(drop_bots).key_by(by_url).count(name=TABLE)
    return g


DELETE_AT = 7
"""`make_delete_graph` deletes a URL's count when it reaches this, and counts again from 0."""


def count_to_seven(seen: int, click: Click) -> object:
    """Count a URL's clicks, deleting the key at DELETE_AT: a delete decided by the count."""
    n = seen + 1
    return fg.DELETE if n == DELETE_AT else n


def make_delete_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Like `make_graph`, but the table deletes keys (``fg.DELETE``) as it goes."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(drop_bots).aggregate(0, count_to_seven, name=TABLE, value_type=int)
    return g


def reject_bots(click: Click) -> Click:
    """Raise on a bot's click, so it goes to the dead-letter topic."""
    if click.user.startswith("bot-"):
        msg = f"bot click {click.user!r}"
        raise ValueError(msg)
    return click


def make_dead_letter_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Clicks of bots raise (dead letters); the others are counted per URL."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.map(reject_bots, name="reject_bots").count(name=TABLE)
    return g


async def reject_bots_later(click: Click) -> Click:
    """`reject_bots` as an async call that waits 0 to 2 ms, so calls are in flight at a kill
    and later clicks often finish first."""
    await asyncio.sleep(0.001 * (partition_for(click.user.encode(), 3)))
    return reject_bots(click)


def make_async_dead_letter_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """`make_dead_letter_graph` with the rejecting step ``async def`` (8 calls in flight)."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.map(reject_bots_later, name="reject_bots", concurrency=8).count(name=TABLE)
    return g


def make_two_sources_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Two sources (`topic` and ``<topic>-b``) written to one sink topic, ``<graph>-out``."""
    g = fg.Graph(graph_id)
    for name, source in (("a", topic), ("b", f"{topic}-b")):
        clicks = g.source(source, key_type=str, value_type=Click, partitions=partitions)
        clicks.to(f"{graph_id}-out", name=f"to_out_{name}", value_type=Click)
    return g


def drop_bots_slowly(click: Click) -> bool:
    """`drop_bots` at about 5,000 records a second: a worker with many records stays busy."""
    time.sleep(0.0002)
    return drop_bots(click)


def make_slow_repartition_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """`make_repartition_graph` with a slow filter, so a busy worker keeps writing
    repartition records for seconds after a less busy one has read its own partitions."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(drop_bots_slowly).key_by(by_url).count(name=TABLE)
    return g


def make_blocking_graph(
    graph_id: str, topic: str, partitions: int, trigger: str, seconds: float
) -> fg.Graph:
    """`make_repartition_graph` whose filter blocks the event loop for `seconds` (no
    heartbeat goes out meanwhile) at the first click it sees once the file `trigger` exists;
    only once in all the workers sharing `trigger`: ``<trigger>.done`` says one did. The
    rebalance tests (test_kafka_rebalance.py) expel a worker with it.
    """
    done = Path(trigger + ".done")

    def keep(click: Click) -> bool:
        if os.path.exists(trigger) and not done.exists():
            done.write_text(str(os.getpid()))
            time.sleep(seconds)  # a step stuck in sync code longer than the session
        return drop_bots(click)

    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(keep).key_by(by_url).count(name=TABLE)
    return g


def make_global_lookup_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """Lookups (``round:user`` values on ``<topic>-lookups``) answered from a global table of
    the users on `topic`: ``round|user|name|pid`` on ``<topic>-out`` (name ``-`` when the
    user is unknown), so a test sees which worker answered and what its copy held."""
    g = fg.Graph(graph_id)
    users = g.global_table(topic, key_type=str, value_type=str, partitions=partitions, name="users")

    def answer(value: str) -> str:
        round_, user = value.split(":", 1)
        return f"{round_}|{user}|{users.get(user, '-')}|{os.getpid()}"

    lookups = g.source(f"{topic}-lookups", key_type=str, value_type=str, partitions=partitions)
    lookups.map(answer).to(f"{topic}-out", value_type=str)
    return g


def make_changes_graph(graph_id: str, topic: str, partitions: int = 4) -> fg.Graph:
    """`make_graph` whose every count change also goes to a sink, ``<graph>-out``: each URL's
    counts 1, 2, 3, ... once each when nothing is lost or written twice."""
    g = fg.Graph(graph_id)
    clicks = g.source(topic, key_type=str, value_type=Click, partitions=partitions)
    clicks.filter(drop_bots).count(name=TABLE).changes().to(f"{graph_id}-out", value_type=int)
    return g
