"""Bounded in-process sources (`Graph.source_from`): their items go to a feed topic in chunks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

from flowgraph.runtime.transport import OutRecord
from flowgraph.serde import Codec
from planner import logical as lg
from planner.physical import TopicSpec

__all__ = ["Feeder"]


class Feeder:
    """Writes a bounded in-process source into its feed topic, a chunk at a time."""

    def __init__(self, node: lg.Source, spec: TopicSpec, codec: Codec | None) -> None:
        self.topic = spec.name
        self.partitions = spec.partitions
        self.items: Iterator[Any] = iter(node.feed)  # type: ignore[call-overload]
        self.codec = codec
        self.done = False
        self._rr = itertools.cycle(range(self.partitions))

    def chunk(self, n: int) -> list[OutRecord]:
        now = time.time()
        encode = self.codec.encode if self.codec is not None else None
        out: list[OutRecord] = []
        for item in itertools.islice(self.items, n):
            out.append((next(self._rr), None, item if encode is None else encode(item), now, None))
        if len(out) < n:
            self.done = True
        return out
