"""The asyncio executor: transports, stores, tasks and the worker that runs a physical plan."""

from __future__ import annotations

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.transport import Transport

__all__ = ["open_transport"]


def open_transport(url: str) -> Transport:
    """The transport a broker URL names: ``memory://`` (embedded) or ``kafka://host:port``."""
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if sep and scheme == "memory" and not rest:
        return MemoryTransport()
    if sep and scheme == "kafka" and rest:
        try:
            from flowgraph.runtime.kafka import (  # type: ignore[import-not-found]
                KafkaTransport,  # aiokafka is only needed here
            )
        except ImportError:
            msg = (
                f"broker {url!r} needs the Kafka transport, which this version does not have "
                "yet; use 'memory://' for now"
            )
            raise ConfigurationError(msg) from None
        return KafkaTransport(rest)  # type: ignore[no-any-return]
    msg = f"unsupported broker URL {url!r}; expected 'memory://' or 'kafka://host:port[,host:port]'"
    raise ConfigurationError(msg)
