"""Faust-style apps the Kafka agent tests (test_kafka_agents.py) run in `flowgraph run`.

Targets call a factory with literal arguments, so every test gets its own app id (consumer
group, prefix of internal topics) and its own topics on the shared broker.
"""

from __future__ import annotations

from typing import Any

import flowgraph as fg


def make_app(app_id: str, topic: str, out: str) -> fg.App:
    """Per key, ``counts[key] += value`` and each value sent on to `out`; values that are
    multiples of 97 raise (dead letters)."""
    app = fg.App(app_id, topic_partitions=4)
    clicks = app.topic(topic, key_type=str, value_type=int)
    sent = app.topic(out, key_type=str, value_type=int)
    counts = app.Table("counts", default=int)

    @app.agent(clicks)
    async def count(stream: Any) -> None:
        async for key, value in stream.items():
            if value % 97 == 0:
                raise ValueError(f"bad {value}")
            counts[key] += value
            await sent.send(key=key, value=value)

    return app


def main(argv: list[str]) -> None:
    """``python kafka_agent_jobs.py APP TOPIC OUT BROKER STORE [POINT:N]``: run the app until
    idle with a commit every 2,000 records, killing itself with SIGKILL at POINT the N-th time
    (`flowgraph.runtime.faults.kill_at`). (The app runs through `fg.run`: the `flowgraph`
    command takes graphs.)"""
    from flowgraph.runtime.faults import kill_at

    app_id, topic, out, broker, store, *crash = argv
    hook = None
    if crash:
        point, _, n = crash[0].partition(":")
        hook = kill_at(point, int(n))
    result = fg.run(
        make_app(app_id, topic, out),
        broker=broker,
        store=store,
        until_idle=True,
        commit_every=2000,
        crash_point=hook,
    )
    print(f"events: {result.events}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
