"""An App runs its agents and the builder steps of `app.graph` in one job."""

from __future__ import annotations

from collections import Counter

import flowgraph as fg


def make_app() -> fg.App:
    app = fg.App("mixed", topic_partitions=4)
    clicks = app.topic("clicks", key_type=str, value_type=int)
    counts = app.Table("click_counts", default=int)

    @app.agent(clicks)
    async def count_click(stream):
        async for url, n in stream.items():
            counts[url] += n

    app.graph.source("views", key_type=str, value_type=int, partitions=2).sum(name="viewed")
    return app


def test_agents_and_builder_steps_share_the_job():
    app = make_app()
    with fg.testing.TestDriver(app) as driver:
        sent: Counter[str] = Counter()
        for i in range(40):
            url = f"u{i % 7}"
            driver.send("clicks", url, i)
            sent[url] += i
            driver.send("views", url, 1)
        assert driver.table("click_counts") == dict(sent)
        assert driver.table("viewed") == dict(Counter(f"u{i % 7}" for i in range(40)))


def test_fg_run_takes_an_app_and_uses_the_embedded_broker_by_default():
    app = make_app()

    def feed(worker: fg.Worker) -> None:
        broker = worker.transport.broker  # type: ignore[attr-defined]
        broker.append("clicks", [(p, b"u%d" % p, b"%d" % (p + 1), 0.0, None) for p in range(4)])

    result = fg.run(app, on_start=feed)
    assert result.dead_letters == 0
    assert result.table("click_counts") == {f"u{p}": p + 1 for p in range(4)}
