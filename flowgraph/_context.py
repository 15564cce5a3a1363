"""`RecordContext`: what a step asked for with ``context=True`` learns about its record.

A step built with ``context=True`` is called with one of these as its last argument. It is
made per record only for such steps, so steps that do not ask pay nothing for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RecordContext"]

_RESERVED = "fg."
"""Header names flowgraph writes for itself (the ``fg.o`` origin); hidden from steps."""


class RecordContext:
    """The record a step is processing: its key and timestamp, and where it was read.

    - `key`: the record's key at this step (after a `key_by`, the new key).
    - `timestamp`: its timestamp in seconds since the epoch (the Kafka timestamp, or the
      source's ``timestamp=`` result).
    - `headers`: its headers as read, ``(name, bytes)`` pairs in order, without the ``fg.*``
      headers flowgraph writes for itself.
    - `topic`, `partition`, `offset`: where the input record was read: the source topic,
      or after a repartition the repartition topic. Records a `flat_map` makes, or a table's
      `changes()`, carry the context of the input record they came from.
    """

    __slots__ = ("_headers", "key", "offset", "partition", "timestamp", "topic")

    def __init__(
        self, key: Any, timestamp: float, headers: Any, topic: str, partition: int, offset: int
    ) -> None:
        self.key = key
        self.timestamp = timestamp
        self._headers = headers
        self.topic = topic
        self.partition = partition
        self.offset = offset

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        """The record's headers as ``(name, value)`` pairs (a name may repeat)."""
        h = self._headers
        if not h:
            return ()
        return tuple((n, v) for n, v in h if not n.startswith(_RESERVED))

    def header(self, name: str) -> bytes | None:
        """The value of the last header called `name`, or None when there is none."""
        found = None
        for n, v in self._headers or ():
            if n == name and not n.startswith(_RESERVED):
                found = v
        return found

    def __repr__(self) -> str:
        return (
            f"RecordContext(key={self.key!r}, timestamp={self.timestamp!r}, "
            f"headers={self.headers!r}, topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset})"
        )
