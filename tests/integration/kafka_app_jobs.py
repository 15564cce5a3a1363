"""Faust-style apps the Kafka crash tests (test_kafka_app_crash.py) run in `flowgraph run`.

Targets name a factory with literal arguments, so every test gets its own app id (the
consumer group and the prefix of the changelog) and its own topics on the shared broker, e.g.
``tests/integration/kafka_app_jobs.py:make_app('a-1a2b', 'clicks-1a2b', 'out-1a2b')``.
"""

from __future__ import annotations

from typing import Any

import flowgraph as faust

TABLE = "click_counts"
"""The agent's table: the tests read its changelog ``<app id>-click_counts-changelog``."""


def make_app(
    app_id: str, clicks_topic: str, out_topic: str, partitions: int = 4, take: int = 0
) -> faust.App:
    """Clicks (str URL -> int count) summed per URL in a table; every click also sent on;
    in ``take(take)`` lists when `take` is set."""
    app = faust.App(app_id, topic_partitions=partitions)
    clicks = app.topic(clicks_topic, key_type=str, value_type=int)
    out = app.topic(out_topic, key_type=str, value_type=int)
    counts = app.Table(TABLE, default=int)

    if take:

        @app.agent(clicks)
        async def count_lists(stream: Any) -> None:
            async for batch in stream.items().take(take, within=0.05):
                for url, count in batch:
                    counts[url] += count
                    await out.send(key=url, value=count)

        return app

    @app.agent(clicks)
    async def count_clicks(stream: Any) -> None:
        async for url, count in stream.items():
            counts[url] += count
            await out.send(key=url, value=count)

    return app
