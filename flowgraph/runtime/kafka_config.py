"""Settings of the `kafka://` transport, read from the URL, the environment and a TOML file.

Pure: `parse` reads only what it is given (plus the files a setting names, to check they
exist), so the same inputs always give the same `KafkaSettings`, and tests need no broker.

Precedence, highest first (what a Kafka user expects: the most specific source wins):

1. the broker URL's query, ``kafka://h1:9092,h2:9092?security_protocol=SASL_SSL&...``;
2. environment variables ``FLOWGRAPH_KAFKA_<SETTING>`` (``FLOWGRAPH_KAFKA_SASL_PASSWORD``),
   so secrets need sit neither in a URL nor in a file;
3. the TOML config file (``--kafka-config FILE``, ``fg.run(kafka_config=...)`` or
   ``FLOWGRAPH_KAFKA_CONFIG=FILE``);
4. the defaults below.

Topic configs for internal topics merge by config name across the sources, with the same
precedence. Secrets (`SECRETS`) never appear in an error message or a `repr`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import ssl
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowgraph.errors import ConfigurationError

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SECRETS",
    "KafkaSettings",
    "parse",
    "redact_url",
]

ENV_PREFIX = "FLOWGRAPH_KAFKA_"
"""Environment variables ``FLOWGRAPH_KAFKA_<SETTING>`` set settings (upper-case name)."""
CONFIG_ENV = "FLOWGRAPH_KAFKA_CONFIG"
"""Environment variable naming the TOML config file (when no file is passed explicitly)."""
TOPIC_PREFIX = "topic."
"""``topic.retention.ms=...``: a config of the internal topics flowgraph creates."""

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
OFFSET_RESETS = ("earliest", "latest")
SECRETS = frozenset({"sasl_password", "ssl_key_password"})
"""Settings whose values are never shown."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    """Everything the transport needs to talk to one Kafka cluster.

    The field names are the setting names in the URL query, the config file and (upper-case,
    after ``FLOWGRAPH_KAFKA_``) the environment.
    """

    servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_check_hostname: bool = True
    client_id: str = "flowgraph"
    group_id: str | None = None
    """The consumer group; None: the graph id."""
    auto_offset_reset: str = "earliest"
    """Where a group without committed offsets starts reading: earliest or latest."""
    replication_factor: int | None = None
    """Of the topics flowgraph creates; None: min(3, brokers in the cluster)."""
    topic_configs: tuple[tuple[str, str], ...] = ()
    """Configs of the internal topics flowgraph creates (``retention.ms`` and the like)."""
    create_source_topics: bool = False
    """Create missing source and sink topics instead of stopping at start."""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    connect_timeout: float = 15.0
    """Seconds to keep trying to reach the brokers at start."""
    standby_replicas: int | None = None
    """Standby copies of each stateful task's state kept by other workers; None: one when the
    group has two workers or more."""
    group_instance_id: str | None = None
    """Static group membership (KIP-345): a worker restarted with the same id within
    `session_timeout_ms` gets its partitions back without a rebalance."""

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL and SASL_SSL (made once), None for plaintext."""
        if "SSL" not in self.security_protocol:
            return None
        from aiokafka.helpers import create_ssl_context

        try:
            context = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_key_password,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            files = ", ".join(
                f"{name}={value!r}"
                for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
                if (value := getattr(self, name))
            )
            why = getattr(exc, "reason", None) or type(exc).__name__
            msg = (
                f"kafka settings {files or 'ssl_*'} do not make a TLS context ({why}); check "
                "that they are PEM files and that ssl_key_password opens the key"
            )
            raise ConfigurationError(msg) from None
        context.check_hostname = self.ssl_check_hostname
        made: ssl.SSLContext = context
        return made

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka keyword arguments every client (producer, consumer, admin) needs."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def group_kwargs(self, group: str) -> dict[str, Any]:
        """`client_kwargs` plus what the group consumer needs; `group` unless overridden."""
        kwargs = {
            **self.client_kwargs(),
            "group_id": self.group_id or group,
            "auto_offset_reset": self.auto_offset_reset,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
        }
        if self.group_instance_id is not None:
            kwargs["group_instance_id"] = self.group_instance_id
        return kwargs

    def describe(self) -> str:
        """One line for logs and views: the cluster and how it is reached, no secrets."""
        how = self.security_protocol
        if how.startswith("SASL_"):
            how += f" {self.sasl_mechanism} as {self.sasl_username!r}"
        return f"kafka://{self.servers} ({how})"


_FIELDS = {f.name: f for f in dataclasses.fields(KafkaSettings) if f.name != "servers"}
_INTS = {"replication_factor", "session_timeout_ms", "heartbeat_interval_ms"}
_BOOLS = {"ssl_check_hostname", "create_source_topics"}
_FILES = {"ssl_cafile", "ssl_certfile", "ssl_keyfile"}
KNOWN = frozenset(_FIELDS) - {"topic_configs"}
"""Setting names (``topic.<config>`` and a file's ``[topic_configs]`` table come on top)."""


def parse(
    url: str,
    env: Mapping[str, str] | None = None,
    file: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> KafkaSettings:
    """The settings of ``kafka://host:port[,host:port][?query]``, `env` and `file`.

    `file` is a TOML file's path or its contents already parsed; None reads the file named
    by ``FLOWGRAPH_KAFKA_CONFIG`` in `env`, if any. `overrides` (not None) win over all,
    for settings given as arguments (``fg.run(create_topics=True)``). Raises
    `ConfigurationError` in one sentence that names the setting and where it came from.
    """
    env = {} if env is None else env
    scheme, sep, rest = url.partition("://")
    servers, _, query = rest.partition("?")
    if scheme != "kafka" or not sep or not servers or not all(map(_host_port, servers.split(","))):
        msg = (
            f"unsupported broker URL {redact_url(url)!r}; expected 'kafka://host:port[,host:port]'"
        )
        raise ConfigurationError(msg)
    raw: dict[str, tuple[Any, str]] = {}
    """Setting -> (value, where it came from), lowest precedence first, overwritten."""
    topics: dict[str, tuple[Any, str]] = {}
    if file is None and env.get(CONFIG_ENV):
        file = env[CONFIG_ENV]
    if file is not None:
        _from_file(file, raw, topics)
    _from_env(env, raw, topics)
    where = "the broker URL"
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        _put(name, value, where, raw, topics)
    for name, value in overrides.items():
        if value is not None:
            _put(name, value, "the arguments", raw, topics)
    values: dict[str, Any] = {name: _convert(name, *raw[name]) for name in raw}
    values["topic_configs"] = tuple(
        sorted((name, _topic_value(name, *topics[name])) for name in topics)
    )
    settings = KafkaSettings(servers=servers, **values)
    _check(settings, raw)
    return settings


def redact_url(url: str) -> str:
    """`url` with the values of secret query settings replaced by ``***``."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    shown = [(k, "***" if k in SECRETS else v) for k, v in pairs]
    return f"{base}?{urllib.parse.urlencode(shown, safe='*/:,')}"


def _host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit())


def _put(
    name: str,
    value: Any,
    where: str,
    raw: dict[str, tuple[Any, str]],
    topics: dict[str, tuple[Any, str]],
) -> None:
    if name.startswith(TOPIC_PREFIX) and len(name) > len(TOPIC_PREFIX):
        topics[name.removeprefix(TOPIC_PREFIX)] = (value, where)
    elif name in KNOWN:
        raw[name] = (value, where)
    else:
        known = ", ".join(sorted(KNOWN))
        msg = (
            f"unknown kafka setting {name!r} in {where}; known: {known}, and topic.<config> "
            "for the internal topics' configs"
        )
        raise ConfigurationError(msg)


def _from_file(
    file: str | os.PathLike[str] | Mapping[str, Any],
    raw: dict[str, tuple[Any, str]],
    topics: dict[str, tuple[Any, str]],
) -> None:
    if isinstance(file, Mapping):
        data: Mapping[str, Any] = file
        where = "the kafka config"
    else:
        where = f"kafka config file {os.fspath(file)!r}"
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            msg = f"cannot read {where}: {exc.strerror or exc}"
            raise ConfigurationError(msg) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            msg = f"{where} is not valid TOML: {exc}"
            raise ConfigurationError(msg) from None
    for name, value in data.items():
        if name == "topic_configs":
            if not isinstance(value, Mapping):
                msg = f"topic_configs in {where} must be a table of config names and values"
                raise ConfigurationError(msg)
            for config, setting in value.items():
                topics[str(config)] = (setting, where)
        else:
            _put(str(name), value, where, raw, topics)


def _from_env(
    env: Mapping[str, str], raw: dict[str, tuple[Any, str]], topics: dict[str, tuple[Any, str]]
) -> None:
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        name = var.removeprefix(ENV_PREFIX).lower()
        if name.startswith("topic_"):  # Kafka's config names use dots, never underscores
            name = TOPIC_PREFIX + name.removeprefix("topic_").replace("_", ".")
        if not (name.startswith(TOPIC_PREFIX) or name in KNOWN):
            known = ", ".join(ENV_PREFIX + k.upper() for k in sorted(KNOWN))
            msg = f"unknown kafka setting in environment variable {var}; known: {known}"
            raise ConfigurationError(msg)
        _put(name, value, f"environment variable {var}", raw, topics)


def _shown(name: str, value: Any) -> str:
    return "(hidden)" if name in SECRETS else repr(value)


def _convert(name: str, value: Any, where: str) -> Any:
    """`value` as the setting's type; a bad one is one sentence naming setting and source."""
    shown = _shown(name, value)
    if name in _BOOLS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        msg = f"kafka setting {name!r} in {where} must be true or false, got {shown}"
        raise ConfigurationError(msg)
    if name == "standby_replicas":
        try:
            number = value if type(value) is int else int(str(value).strip())
        except ValueError:
            number = -1
        if number < 0:
            msg = f"kafka setting {name!r} in {where} must be a whole number >= 0, got {shown}"
            raise ConfigurationError(msg)
        return number
    if name in _INTS:
        try:
            number = value if type(value) is int else int(str(value).strip())
        except ValueError:
            number = 0
        if number <= 0:
            msg = f"kafka setting {name!r} in {where} must be a positive whole number, got {shown}"
            raise ConfigurationError(msg)
        return number
    if name == "connect_timeout":
        try:
            seconds = float(value) if not isinstance(value, bool) else 0.0
        except (TypeError, ValueError):
            seconds = 0.0
        if not seconds > 0:
            msg = (
                f"kafka setting {name!r} in {where} must be a positive number of seconds, "
                f"got {shown}"
            )
            raise ConfigurationError(msg)
        return seconds
    if not isinstance(value, str) or not value.strip():
        msg = f"kafka setting {name!r} in {where} must be a non-empty string, got {shown}"
        raise ConfigurationError(msg)
    text = value.strip() if name not in SECRETS else value
    choices = {
        "security_protocol": PROTOCOLS,
        "sasl_mechanism": MECHANISMS,
        "auto_offset_reset": OFFSET_RESETS,
    }.get(name)
    if choices is not None:
        text = text.lower() if name == "auto_offset_reset" else text.upper()
        if text not in choices:
            msg = (
                f"kafka setting {name!r} in {where} must be one of {', '.join(choices)}, "
                f"got {shown}"
            )
            raise ConfigurationError(msg)
    if name in _FILES and not Path(text).is_file():
        msg = f"kafka setting {name!r} in {where} names {text!r}, which is not a file"
        raise ConfigurationError(msg)
    if name in _FILES and not os.access(text, os.R_OK):
        msg = f"kafka setting {name!r} in {where} names {text!r}, which cannot be read"
        raise ConfigurationError(msg)
    return text


def _topic_value(name: str, value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str) and str(value).strip():
        return str(value).strip()
    msg = f"topic config {name!r} in {where} must be a string or a number, got {value!r}"
    raise ConfigurationError(msg)


def _check(settings: KafkaSettings, raw: Mapping[str, tuple[Any, str]]) -> None:
    """Settings that are valid alone but not together."""
    protocol = settings.security_protocol
    if protocol.startswith("SASL_"):
        for name in ("sasl_username", "sasl_password"):
            if getattr(settings, name) is None:
                msg = (
                    f"kafka setting {name!r} is needed with security_protocol {protocol} "
                    f"(set it in the URL, as {ENV_PREFIX}{name.upper()} or in the config file)"
                )
                raise ConfigurationError(msg)
    else:
        for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if name in raw:
                msg = (
                    f"kafka setting {name!r} in {raw[name][1]} needs security_protocol "
                    f"SASL_PLAINTEXT or SASL_SSL, not {protocol}"
                )
                raise ConfigurationError(msg)
    if "SSL" not in protocol:
        for name in sorted(_FILES | {"ssl_key_password", "ssl_check_hostname"}):
            if name in raw:
                msg = (
                    f"kafka setting {name!r} in {raw[name][1]} needs security_protocol "
                    f"SSL or SASL_SSL, not {protocol}"
                )
                raise ConfigurationError(msg)
    _ = settings.ssl_context  # bad PEM files or key password: say so now, not at connect
    if settings.heartbeat_interval_ms >= settings.session_timeout_ms:
        msg = (
            f"kafka setting 'heartbeat_interval_ms' ({settings.heartbeat_interval_ms}) must be "
            f"below session_timeout_ms ({settings.session_timeout_ms})"
        )
        raise ConfigurationError(msg)
