"""``flowgraph run --input TOPIC=FILE``: JSON-lines files as the records of source topics.

A topic-sourced graph can then be tried on the embedded broker without Kafka. The files are
read and checked whole before the run starts, so a mistake in one stops it with one sentence
(file and line) before anything is processed. A line that is valid JSON but does not fit the
topic's declared type is not checked here: it goes to the topic as it is and, as a record
from Kafka would, fails to decode in the run and becomes a dead letter.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from flowgraph.errors import ConfigurationError
from flowgraph.partitioner import partition_for
from flowgraph.runtime.transport import OutRecord
from flowgraph.serde import Codec, RawCodec, StrCodec
from planner.physical import PhysicalPlan

__all__ = ["FORMATS", "read_inputs"]

FORMATS = ("values", "records")
"""``values``: each line is a record's value. ``records``: each line is an object with
``value`` and optionally ``key`` and ``timestamp`` (seconds since the epoch)."""
_FIELDS = frozenset({"key", "value", "timestamp"})


def read_inputs(
    plan: PhysicalPlan,
    specs: Iterable[str],
    codecs: dict[str, tuple[Codec | None, Codec | None]],
    fmt: str = "values",
) -> dict[str, list[OutRecord]]:
    """Per source topic, the records of its ``--input`` files, ready to append to it.

    Raises `ConfigurationError` (one sentence) for a malformed ``TOPIC=FILE``, a topic the
    graph does not read, a file that cannot be read, or a line that is no JSON (or, in the
    ``records`` format, no object with a ``value``).
    """
    sources = {t.name: t for t in plan.topics if t.role == "source"}
    out: dict[str, list[OutRecord]] = {}
    for spec in specs:
        topic, sep, path = spec.partition("=")
        if not sep or not topic or not path:
            msg = f"--input {spec!r} is not TOPIC=FILE; give e.g. --input clicks=clicks.jsonl"
            raise ConfigurationError(msg)
        if topic not in sources:
            known = ", ".join(map(repr, sources)) or "none (it reads only source_from feeds)"
            msg = (
                f"--input names topic {topic!r}, which graph {plan.graph_id!r} does not "
                f"read; its source topics: {known}"
            )
            raise ConfigurationError(msg)
        kc, vc = codecs[topic]
        partitions = sources[topic].partitions
        records = out.setdefault(topic, [])
        turn = itertools.cycle(range(partitions))
        name = "<stdin>" if path == "-" else path
        for number, line in _lines(path):
            if not line.strip():
                continue
            where = f"{name}:{number}"
            key, value, ts = _parse(line, fmt, where)
            kb = _as_bytes(key, kc)
            vb = _as_bytes(value, vc)
            p = next(turn) if kb is None else partition_for(kb, partitions)
            records.append((p, kb, vb, ts, None))
    return out


def _lines(path: str) -> Iterable[tuple[int, str]]:
    if path == "-":
        return enumerate(sys.stdin.read().splitlines(), 1)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        msg = f"--input file {path!r} cannot be read: {reason}"
        raise ConfigurationError(msg) from None
    return enumerate(text.splitlines(), 1)


def _parse(line: str, fmt: str, where: str) -> tuple[Any, Any, float]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        msg = (
            f"{where}: not a JSON value ({exc.msg} at column {exc.colno}); "
            "each line of an --input file is one JSON value"
        )
        raise ConfigurationError(msg) from None
    if fmt == "values":
        return None, obj, time.time()
    if not isinstance(obj, dict) or "value" not in obj or not set(obj) <= _FIELDS:
        msg = (
            f"{where}: with --input-format records each line is an object with "
            '"value" and optionally "key" and "timestamp", nothing else'
        )
        raise ConfigurationError(msg)
    ts = obj.get("timestamp", time.time())
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts < float("inf"):
        msg = f'{where}: "timestamp" is {ts!r}; give seconds since the epoch (a number >= 0)'
        raise ConfigurationError(msg)
    return obj.get("key"), obj["value"], float(ts)


def _as_bytes(obj: Any, codec: Codec | None) -> bytes | None:
    """What a producer would have written: a JSON string as its text for str and bytes
    topics, else the JSON text, which the topic's codec decodes in the run."""
    if obj is None:
        return None
    if isinstance(obj, str) and isinstance(codec, StrCodec | RawCodec):
        return obj.encode()
    return json.dumps(obj, ensure_ascii=False).encode()
