"""Topics on a real broker: made as the plan says, never auto-created, and a lost cluster.

- A missing source topic stops the start in one sentence (and nothing gets created), unless
  the run is asked to create it.
- Internal topics get the plan's partitions and the configured topic configs; an empty one
  with another partition count is recreated, one holding data is refused.
- A broker restarted empty on the same port (tansu keeps everything in memory) stops a
  running worker with `BrokerDataLost`; a restart then makes the topics again.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

import flowgraph as fg
from flowgraph.errors import ConfigurationError
from tests.integration import kafka_jobs
from tests.integration.test_kafka import (
    FAST_GROUP,
    FLOWGRAPH,
    JOBS,
    admin,
    create_topic,
    make_clicks,
    produce,
    run_async,
)
from tests.kafka_broker import Broker, start_broker

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def topics_of(kafka: Broker) -> dict[str, int]:
    """Every topic on the broker and its partition count (a metadata request creates none)."""
    async with admin(kafka) as client:
        return {t["topic"]: len(t["partitions"]) for t in await client.describe_topics()}


async def topic_config(kafka: Broker, topic: str) -> dict[str, Any]:
    async with admin(kafka) as client:
        [configs] = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [(_, _, _, _, entries)] = configs.resources
    return {e[0]: e[1] for e in entries}


def test_missing_source_topic_stops_the_start_and_creates_nothing(kafka: Broker) -> None:
    gid, topic = unique("nosrc"), unique("nosrc-clicks")
    with pytest.raises(ConfigurationError) as info:
        fg.run(
            kafka_jobs.make_repartition_graph(gid, topic),
            broker=kafka.url,
            store="memory://",
            until_idle=True,
        )
    text = str(info.value)
    assert f"source topic '{topic}' does not exist on {kafka.url}" in text
    assert "--partitions 4" in text and "--create-topics" in text
    have = run_async(topics_of(kafka))
    assert not [t for t in have if t == topic or t.startswith(gid)], have


def test_create_topics_makes_the_plan_s_topics(kafka: Broker) -> None:
    gid, topic = unique("mk"), unique("mk-clicks")
    graph = kafka_jobs.make_repartition_graph(gid, topic, partitions=3)
    plan = graph.plan()
    result = fg.run(
        graph,
        broker=f"{kafka.url}?{FAST_GROUP}",
        store="memory://",
        until_idle=True,
        create_topics=True,
        kafka_config={"topic_configs": {"retention.ms": 3_600_000}},
    )
    assert result.events == 0
    have = run_async(topics_of(kafka))
    assert {t.name: have.get(t.name) for t in plan.topics} == {
        t.name: t.partitions for t in plan.topics
    }
    changelog = run_async(topic_config(kafka, plan.stores[0].changelog))
    assert (changelog["cleanup.policy"], changelog["retention.ms"]) == ("compact", "3600000")
    [repartition] = [t.name for t in plan.topics if t.role == "repartition"]
    assert run_async(topic_config(kafka, repartition))["retention.ms"] == "3600000"
    assert run_async(topic_config(kafka, topic)).get("retention.ms") != "3600000"  # theirs


def test_source_topic_with_other_partitions_is_not_deleted(kafka: Broker) -> None:
    gid, topic = unique("parts"), unique("parts-clicks")
    run_async(create_topic(kafka, topic, 3))
    with pytest.raises(ConfigurationError) as info:
        fg.run(kafka_jobs.make_graph(gid, topic, 4), broker=kafka.url, store="memory://")
    text = str(info.value)
    assert f"topic '{topic}'" in text and "has 3 partitions" in text
    assert "partitions=3" in text and "delete" not in text
    assert run_async(topics_of(kafka))[topic] == 3


def test_internal_topic_with_other_partitions(kafka: Broker) -> None:
    """Empty (a client made it): recreated as planned. Holding data: refused."""
    topic = unique("int-clicks")
    clicks = make_clicks(200, seed=3)
    run_async(create_topic(kafka, topic, 2))
    run_async(produce(kafka, topic, clicks, 2))
    empty = kafka_jobs.make_graph(unique("int"), topic, 2)
    changelog = empty.plan().stores[0].changelog
    run_async(create_topic(kafka, changelog, 5))
    result = fg.run(empty, broker=f"{kafka.url}?{FAST_GROUP}", store="memory://", until_idle=True)
    assert result.events == len(clicks)
    assert run_async(topics_of(kafka))[changelog] == 2
    assert run_async(topic_config(kafka, changelog))["cleanup.policy"] == "compact"

    full = kafka_jobs.make_graph(unique("int"), topic, 2)
    changelog = full.plan().stores[0].changelog
    run_async(create_topic(kafka, changelog, 1))
    run_async(produce(kafka, changelog, clicks[:1], 1))
    with pytest.raises(ConfigurationError) as info:
        fg.run(full, broker=kafka.url, store="memory://")
    text = str(info.value)
    assert f"internal topic '{changelog}'" in text and "partitions changed" in text
    assert run_async(topics_of(kafka))[changelog] == 1


def test_cli_settings_errors_exit_2_in_one_line(kafka: Broker, tmp_path: Path) -> None:
    secret = "do-not-print-me"
    target = f"{JOBS}:make_graph('{unique('cli')}', '{unique('cli-clicks')}')"
    env = {**os.environ, "FLOWGRAPH_KAFKA_SASL_PASSWORD": secret}
    cases = [
        (["--broker", kafka.url], "needs security_protocol SASL_PLAINTEXT or SASL_SSL"),
        (["--broker", f"{kafka.url}?security_protocol=SSL&ssl_cafile={tmp_path}/no.pem"], None),
        (["--broker", kafka.url, "--kafka-config", str(tmp_path / "none.toml")], "cannot read"),
    ]
    for options, words in cases:
        done = subprocess.run(
            [*FLOWGRAPH, "run", target, "--store", "memory://", *options],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert secret not in done.stderr + done.stdout
        assert (words or "'ssl_cafile'") in done.stderr
    done = subprocess.run(
        [*FLOWGRAPH, "run", target, "--store", "memory://", "--broker", kafka.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cli_create_topics_with_a_config_file_from_the_environment(
    kafka: Broker, tmp_path: Path
) -> None:
    gid, topic = unique("climk"), unique("climk-clicks")
    config = tmp_path / "kafka.toml"
    config.write_text(
        'client_id = "cli-test"\nsession_timeout_ms = 2000\nheartbeat_interval_ms = 300\n'
        '[topic_configs]\n"retention.ms" = 7200000\n'
    )
    done = subprocess.run(
        [
            *FLOWGRAPH,
            *("run", f"{JOBS}:make_graph('{gid}', '{topic}', 3)", "--store", "memory://"),
            *("--broker", kafka.url, "--create-topics", "--until-idle"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLOWGRAPH_KAFKA_CONFIG": str(config)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    have = run_async(topics_of(kafka))
    assert have[topic] == 3
    changelog = kafka_jobs.make_graph(gid, topic, 3).plan().stores[0].changelog
    assert run_async(topic_config(kafka, changelog))["retention.ms"] == "7200000"


@pytest.mark.slow
def test_broker_that_lost_its_data_stops_the_run_and_a_restart_recovers(
    tmp_path: Path,
) -> None:
    """The worker runs as `flowgraph run` (exit code and message as a user sees them)."""
    broker = start_broker(log_dir=tmp_path)
    port = broker.port
    gid, topic = unique("lost"), unique("lost-clicks")
    graph = kafka_jobs.make_repartition_graph(gid, topic, 2)
    url = f"{broker.url}?{FAST_GROUP}"
    clicks = make_clicks(300, seed=5)
    worker = None
    try:
        run_async(create_topic(broker, topic, 2))
        run_async(produce(broker, topic, clicks, 2, key="user"))
        target = f"{JOBS}:make_repartition_graph('{gid}', '{topic}', 2)"
        worker = subprocess.Popen(
            [*FLOWGRAPH, "run", target, "--broker", url, "--store", "memory://"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

        async def committed() -> int:
            async with admin(broker) as client:
                found = await client.list_consumer_group_offsets(
                    gid, partitions=[TopicPartition(topic, p) for p in range(2)]
                )
            return sum(m.offset for m in found.values() if m.offset > 0)

        deadline = time.monotonic() + 60
        while run_async(committed()) < len(clicks):  # until the records went through
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.2)
        broker.kill()
        broker = start_broker(tmp_path, port=port)
        lost_at = time.monotonic()
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 1, err
        assert time.monotonic() - lost_at < 30
        assert err.count("\n") == 1 and err.startswith("flowgraph: error: "), err
        assert "lost its data" in err and "vanished" in err, err
        # a restart on the empty cluster: the source is the user's to create, the rest is made
        with pytest.raises(ConfigurationError, match="does not exist"):
            fg.run(graph, broker=url, store="memory://")
        run_async(create_topic(broker, topic, 2))
        run_async(produce(broker, topic, clicks[:50], 2, key="user"))
        result = fg.run(graph, broker=url, store="memory://", until_idle=True)
        assert result.events == 50
        want = {c.url for c in clicks[:50] if not c.bot}
        assert set(result.table(kafka_jobs.TABLE)) == want
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.communicate()
        broker.stop()
