"""The asyncio executor: transports, stores, tasks and the worker that runs a physical plan."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.transport import Transport

__all__ = ["open_transport"]


def open_transport(
    url: str,
    *,
    kafka_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    create_topics: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> Transport:
    """The transport a broker URL names: ``memory://`` (embedded) or ``kafka://host:port``.

    For Kafka, settings come from the URL's query, then ``FLOWGRAPH_KAFKA_*`` variables of
    `env` (default: the process environment), then `kafka_config` (a TOML file or its
    contents; default: the file ``FLOWGRAPH_KAFKA_CONFIG`` names); `create_topics` (when
    not None) wins over all for ``create_source_topics``. See `kafka_config`. ``memory://``
    creates every topic it needs and takes no settings.
    """
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if sep and scheme == "memory" and not rest:
        return MemoryTransport()
    if sep and scheme == "kafka":
        from flowgraph.runtime.kafka import KafkaTransport  # aiokafka is only needed here
        from flowgraph.runtime.kafka_config import parse

        settings = parse(
            url,
            os.environ if env is None else env,
            kafka_config,
            create_source_topics=create_topics,
        )
        return KafkaTransport(settings)
    shown = url if not isinstance(url, str) else url.partition("?")[0]
    msg = (
        f"unsupported broker URL {shown!r}; expected 'memory://' or 'kafka://host:port[,host:port]'"
    )
    raise ConfigurationError(msg)
