"""Clicks per URL: the example the README's first command runs.

A synthetic, seeded click source (JSON bytes, a few percent bots, a handful of malformed
records) is decoded into `Click` records, bots are dropped, clicks are keyed by URL and counted
per URL. Malformed records go to the dead-letter topic ``clickstream-dlq``; the run goes on.

Run it to the end and print the top URLs::

    python examples/clickstream.py

or with the CLI, which shows a live view and a summary (and keeps the counts in RocksDB)::

    flowgraph run examples/clickstream.py:graph
    flowgraph explain examples/clickstream.py:graph
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator

import flowgraph as fg

CLICKS = 200_000
"""Clicks the module-level `graph` reads."""
SEED = 2024
URLS = 500
"""Distinct URLs; popularity falls off like 1/rank (Zipf)."""
USERS = 5_000
BOT_SHARE = 0.04
MALFORMED_EVERY = 25_000
"""One malformed record per this many clicks (the dead-letter topic shows them)."""
START = 1_700_000_000.0
"""Event time of the first click, seconds since the epoch."""

_MALFORMED = (
    b'{"url": "/home", "user": "user-1", "ts": ',  # truncated JSON
    b"GET /home HTTP/1.1",  # not JSON at all
    b'{"url": "/home", "ts": 1700000000.0}',  # no user
    b'{"url": 404, "user": "user-2", "ts": 1700000000.0}',  # url is not a string
)


class Click(fg.Record):
    """One page view."""

    url: str
    user: str
    ts: float
    """Event time, seconds since the epoch."""


class SyntheticClicks:
    """`n` clicks as JSON bytes, the same ones on every iteration (seeded random).

    Re-iterable, so the module-level graph can run more than once in one process.
    """

    def __init__(
        self, n: int = CLICKS, *, seed: int = SEED, malformed_every: int = MALFORMED_EVERY
    ) -> None:
        self.n = n
        self.seed = seed
        self.malformed_every = malformed_every

    def __iter__(self) -> Iterator[bytes]:
        rng = random.Random(self.seed)
        urls = ["/"] + [f"/page/{i}" for i in range(1, URLS)]
        weights = [1 / rank for rank in range(1, URLS + 1)]
        picks = rng.choices(urls, weights=weights, k=self.n)
        every = self.malformed_every
        for i, url in enumerate(picks):
            if i % every == every // 2:
                yield _MALFORMED[(i // every) % len(_MALFORMED)]
                continue
            if rng.random() < BOT_SHARE:
                user = f"bot-{rng.randrange(20)}"
            else:
                user = f"user-{rng.randrange(USERS)}"
            click = {"url": url, "user": user, "ts": START + i * 0.01}
            yield json.dumps(click).encode()


def parse(raw: bytes) -> Click:
    """Decode one click; a record that does not decode goes to the dead-letter topic."""
    return Click.decode(raw)


def drop_bots(click: Click) -> bool:
    """Keep the clicks of people."""
    return not click.user.startswith("bot-")


def by_url(click: Click) -> str:
    """The key to count by (a named function: it names the repartition topic)."""
    return click.url


def build_graph(clicks: Iterable[bytes]) -> fg.Graph:
    """The clickstream graph over any iterable of JSON click bytes."""
    g = fg.Graph("clickstream")
    (
        g.source_from(clicks, name="clicks", value_type=bytes, partitions=4)
        .map(parse)
        .filter(drop_bots)
        .key_by(by_url)
        .count(name="per_url")
    )
    return g


graph = build_graph(SyntheticClicks())


def top(counts: dict[str, int], n: int = 10) -> list[tuple[str, int]]:
    """The `n` most clicked URLs, most clicked first (ties by URL)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def main() -> int:
    """Run the graph to the end on the embedded broker and print the top 10 URLs."""
    result = fg.run(graph)
    per_url = result.table("per_url")
    print(
        f"{result.events} clicks in {result.stats.elapsed:.2f} s, "
        f"{result.dead_letters} malformed (sent to {graph.id}-dlq), "
        f"{sum(per_url.values())} counted from people, {len(per_url)} URLs"
    )
    print("top 10 URLs:")
    for url, count in top(per_url):
        print(f"  {count:>7}  {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
