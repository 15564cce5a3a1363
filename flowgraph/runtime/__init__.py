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
    if sep and scheme == "kafka" and rest and all(_host_port(a) for a in rest.split(",")):
        from flowgraph.runtime.kafka import KafkaTransport  # aiokafka is only needed here

        return KafkaTransport(rest)
    msg = f"unsupported broker URL {url!r}; expected 'memory://' or 'kafka://host:port[,host:port]'"
    raise ConfigurationError(msg)


def _host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit())
