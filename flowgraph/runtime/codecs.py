"""Which codec each topic of a plan uses, on a given transport.

In process, internal topics (repartition, changelog, feed) carry Python objects and need no
codec; on Kafka every topic carries bytes: sources and sinks by their declared types (JSON
when a sink declares none), internal topics by the self-describing "auto" codec.
"""

from __future__ import annotations

from flowgraph.errors import ConfigurationError
from flowgraph.serde import AutoCodec, Codec, JsonCodec, RawCodec, codec_for
from planner.physical import PhysicalPlan

__all__ = ["codec_or", "topic_codecs"]


def codec_or(spec: object, default: Codec) -> Codec:
    """The codec of a declared type, or `default` when none is declared or none fits it."""
    if spec is None:
        return default
    try:
        return codec_for(spec)
    except ConfigurationError:
        return default


def topic_codecs(
    plan: PhysicalPlan, in_process: bool
) -> dict[str, tuple[Codec | None, Codec | None]]:
    """Key and value codec per topic; (None, None) where records stay Python objects."""
    result: dict[str, tuple[Codec | None, Codec | None]] = {}
    for t in plan.topics:
        if t.internal and in_process:
            result[t.name] = (None, None)
        elif t.role == "source":
            result[t.name] = (codec_for(t.key_type), codec_for(t.value_type))
        elif t.role == "dlq":
            result[t.name] = (RawCodec(), RawCodec())
        elif t.role == "sink":
            result[t.name] = (
                codec_or(t.key_type, JsonCodec()),
                codec_or(t.value_type, JsonCodec()),
            )
        else:
            result[t.name] = (codec_or(t.key_type, AutoCodec()), AutoCodec())
    return result
