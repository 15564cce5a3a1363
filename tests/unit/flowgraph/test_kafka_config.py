"""`kafka_config.parse`: sources, precedence, validation, and the aiokafka kwargs it makes."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from flowgraph.errors import ConfigurationError
from flowgraph.runtime import open_transport
from flowgraph.runtime.kafka_config import KafkaSettings, parse, redact_url

URL = "kafka://h1:9092,h2:9092"
SASL = "security_protocol=SASL_PLAINTEXT&sasl_mechanism=SCRAM-SHA-512&sasl_username=app"


def test_defaults_give_plaintext_kwargs() -> None:
    settings = parse(URL, {})
    assert settings == KafkaSettings(servers="h1:9092,h2:9092")
    assert settings.client_kwargs() == {
        "bootstrap_servers": "h1:9092,h2:9092",
        "client_id": "flowgraph",
        "security_protocol": "PLAINTEXT",
    }
    assert settings.group_kwargs("graph") == {
        **settings.client_kwargs(),
        "group_id": "graph",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }


def test_sasl_kwargs_and_group_override() -> None:
    env = {"FLOWGRAPH_KAFKA_SASL_PASSWORD": "s3cret"}
    settings = parse(
        f"{URL}?{SASL}&client_id=billing&group_id=billing-v2&auto_offset_reset=latest", env
    )
    assert settings.client_kwargs() == {
        "bootstrap_servers": "h1:9092,h2:9092",
        "client_id": "billing",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": "s3cret",
    }
    group = settings.group_kwargs("graph")
    assert (group["group_id"], group["auto_offset_reset"]) == ("billing-v2", "latest")


def test_precedence_url_then_env_then_file(tmp_path: Path) -> None:
    file = tmp_path / "kafka.toml"
    file.write_text(
        'client_id = "from-file"\ngroup_id = "file-group"\nreplication_factor = 2\n'
        'session_timeout_ms = 30000\n[topic_configs]\n"retention.ms" = 1000\n'
        '"segment.bytes" = "1048576"\n'
    )
    env = {
        "FLOWGRAPH_KAFKA_CONFIG": str(file),
        "FLOWGRAPH_KAFKA_CLIENT_ID": "from-env",
        "FLOWGRAPH_KAFKA_GROUP_ID": "env-group",
        "FLOWGRAPH_KAFKA_TOPIC_RETENTION_MS": "2000",
    }
    settings = parse(f"{URL}?client_id=from-url&topic.segment.bytes=4096", env)
    assert settings.client_id == "from-url"
    assert settings.group_id == "env-group"
    assert settings.replication_factor == 2
    assert settings.session_timeout_ms == 30_000
    assert settings.topic_configs == (("retention.ms", "2000"), ("segment.bytes", "4096"))
    # an explicit file wins over the one the environment names; arguments win over all
    other = tmp_path / "other.toml"
    other.write_text("create_source_topics = true\nclient_id = 'other'\n")
    explicit = parse(URL, {"FLOWGRAPH_KAFKA_CONFIG": str(file)}, other)
    assert (explicit.client_id, explicit.create_source_topics) == ("other", True)
    assert parse(URL, {}, other, create_source_topics=False).create_source_topics is False
    assert parse(URL, {}, {"auto_offset_reset": "LATEST"}).auto_offset_reset == "latest"


def test_standbys_and_static_membership() -> None:
    assert parse(URL, {}).standby_replicas is None
    settings = parse(f"{URL}?standby_replicas=0&group_instance_id=worker-a", {})
    assert (settings.standby_replicas, settings.group_instance_id) == (0, "worker-a")
    assert settings.group_kwargs("graph")["group_instance_id"] == "worker-a"
    assert "group_instance_id" not in parse(URL, {}).group_kwargs("graph")
    env = {"FLOWGRAPH_KAFKA_STANDBY_REPLICAS": "2", "FLOWGRAPH_KAFKA_GROUP_INSTANCE_ID": "w-b"}
    from_env = parse(URL, env)
    assert (from_env.standby_replicas, from_env.group_instance_id) == (2, "w-b")
    assert parse(URL, {}, {"standby_replicas": 3}).standby_replicas == 3


@pytest.mark.parametrize(
    ("query", "env", "words"),
    [
        ("sasl_mechansim=PLAIN", {}, ["unknown kafka setting 'sasl_mechansim'", "broker URL"]),
        ("", {"FLOWGRAPH_KAFKA_SASL_PASWORD": "x"}, ["FLOWGRAPH_KAFKA_SASL_PASWORD"]),
        ("security_protocol=TLS", {}, ["'security_protocol'", "SASL_SSL"]),
        ("auto_offset_reset=none", {}, ["'auto_offset_reset'", "earliest, latest"]),
        ("replication_factor=0", {}, ["'replication_factor'", "positive whole number"]),
        ("session_timeout_ms=abc", {}, ["'session_timeout_ms'"]),
        ("connect_timeout=-1", {}, ["'connect_timeout'", "seconds"]),
        ("create_source_topics=maybe", {}, ["'create_source_topics'", "true or false"]),
        ("standby_replicas=-1", {}, ["'standby_replicas'", "whole number >= 0"]),
        ("", {"FLOWGRAPH_KAFKA_STANDBY_REPLICAS": "one"}, ["FLOWGRAPH_KAFKA_STANDBY_REPLICAS"]),
        ("group_instance_id=", {}, ["'group_instance_id'", "non-empty string"]),
        ("security_protocol=SASL_SSL&sasl_username=u", {}, ["'sasl_password' is needed"]),
        ("sasl_username=u", {}, ["'sasl_username'", "needs security_protocol SASL_"]),
        ("ssl_cafile=/nonexistent/ca.pem", {}, ["'ssl_cafile'", "not a file"]),
        ("heartbeat_interval_ms=20000", {}, ["'heartbeat_interval_ms'", "below"]),
        ("", {"FLOWGRAPH_KAFKA_CONFIG": "/nonexistent/kafka.toml"}, ["cannot read", "kafka.toml"]),
    ],
)
def test_bad_settings_are_one_sentence(query: str, env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(f"{URL}?{query}", env)
    text = str(info.value)
    assert "\n" not in text
    for word in words:
        assert word in text


def test_bad_toml_and_bad_table(tmp_path: Path) -> None:
    file = tmp_path / "k.toml"
    file.write_text("client_id = \n")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        parse(URL, {}, file)
    with pytest.raises(ConfigurationError, match="topic_configs in the kafka config"):
        parse(URL, {}, {"topic_configs": 3})
    with pytest.raises(ConfigurationError, match="unknown kafka setting 'bootstrap'"):
        parse(URL, {}, {"bootstrap": "x"})


def test_passwords_never_shown() -> None:
    secret = "hunter2-do-not-show"
    settings = parse(f"{URL}?{SASL}&sasl_password={secret}", {})
    assert secret not in repr(settings)
    assert secret not in settings.describe()
    assert secret not in redact_url(f"{URL}?{SASL}&sasl_password={secret}")
    with pytest.raises(ConfigurationError) as info:  # a bad value elsewhere in the same URL
        parse(f"{URL}?{SASL}&sasl_password={secret}&replication_factor=x", {})
    assert secret not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        open_transport(f"kafka://nohost?sasl_password={secret}", env={})
    assert secret not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        parse(URL, {}, {"sasl_password": 12345})
    assert "12345" not in str(info.value) and "(hidden)" in str(info.value)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a client certificate signed by it, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    d = tmp_path_factory.mktemp("pem")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-days", "1", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=x",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-passout", "pass:keypw", "-subj", "/CN=client",
        "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", "client.pem")  # fmt: skip
    return d


def test_ssl_context_from_files(pem: Path) -> None:
    env = {"FLOWGRAPH_KAFKA_SSL_KEY_PASSWORD": "keypw"}
    query = (
        f"security_protocol=SSL&ssl_cafile={pem / 'ca.pem'}&ssl_certfile={pem / 'client.pem'}"
        f"&ssl_keyfile={pem / 'client.key'}&ssl_check_hostname=false"
    )
    settings = parse(f"{URL}?{query}", env)
    kwargs = settings.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "bootstrap_servers": "h1:9092,h2:9092",
        "client_id": "flowgraph",
        "security_protocol": "SSL",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "x"),),)]
    assert settings.client_kwargs()["ssl_context"] is context  # made once
    assert "keypw" not in repr(settings)


def test_wrong_key_password_is_one_sentence(pem: Path) -> None:
    query = (
        f"security_protocol=SASL_SSL&sasl_username=u&sasl_password=p&ssl_cafile={pem / 'ca.pem'}"
        f"&ssl_certfile={pem / 'client.pem'}&ssl_keyfile={pem / 'client.key'}"
        "&ssl_key_password=wrong"
    )
    with pytest.raises(ConfigurationError, match="do not make a TLS context") as info:
        parse(f"{URL}?{query}", {})
    assert "wrong" not in str(info.value)


def test_open_transport_reads_the_environment() -> None:
    transport = open_transport(
        "kafka://h:1?session_timeout_ms=3000",
        env={"FLOWGRAPH_KAFKA_HEARTBEAT_INTERVAL_MS": "500"},
        create_topics=True,
    )
    settings = transport.settings  # type: ignore[attr-defined]
    assert (settings.session_timeout_ms, settings.heartbeat_interval_ms) == (3000, 500)
    assert settings.create_source_topics is True
    assert transport.session_timeout == 3.0


def test_a_redacted_url_hides_only_the_secrets_and_keeps_the_rest_as_written() -> None:
    url = (
        "kafka://h1:9092,h2:9092?sasl_username=ann&sasl_password=p%26w"
        "&client_id=a/b&ssl_key_password="
    )
    assert redact_url(url) == (
        "kafka://h1:9092,h2:9092?sasl_username=ann&sasl_password=***"
        "&client_id=a/b&ssl_key_password=***"
    )
    assert redact_url("kafka://h1:9092") == "kafka://h1:9092"
