"""The asyncio executor: transports, stores, tasks and the worker that runs a physical plan."""

from __future__ import annotations

import urllib.parse
from typing import Any

from flowgraph.errors import ConfigurationError
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.transport import Transport

__all__ = ["open_transport"]


def open_transport(url: str) -> Transport:
    """The transport a broker URL names: ``memory://`` (embedded) or ``kafka://host:port``."""
    scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
    if sep and scheme == "memory" and not rest:
        return MemoryTransport()
    servers, _, query = rest.partition("?")
    if sep and scheme == "kafka" and servers and all(_host_port(a) for a in servers.split(",")):
        from flowgraph.runtime.kafka import KafkaTransport  # aiokafka is only needed here

        return KafkaTransport(servers, **_options(url, query, KafkaTransport.OPTIONS))
    msg = f"unsupported broker URL {url!r}; expected 'memory://' or 'kafka://host:port[,host:port]'"
    raise ConfigurationError(msg)


def _host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit())


def _options(url: str, query: str, known: frozenset[str]) -> dict[str, Any]:
    """``a=1&b=2`` -> ``{"a": 1, "b": 2}``; unknown names or non-numbers: one clear sentence."""
    options: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in known:
            msg = (
                f"broker URL {url!r} has unknown option {name!r}; known: {', '.join(sorted(known))}"
            )
            raise ConfigurationError(msg)
        try:
            options[name] = float(value) if "." in value else int(value)
        except ValueError:
            msg = f"broker URL {url!r} option {name!r} needs a number, got {value!r}"
            raise ConfigurationError(msg) from None
    return options
