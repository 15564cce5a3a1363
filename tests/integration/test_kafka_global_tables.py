"""Global tables on Kafka: two `flowgraph run` workers each hold every partition of the table.

Each worker answers lookups from its own copy, including keys of partitions another worker
owns, and updates written while they run reach both copies in the background.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

import flowgraph as fg
from tests.integration.kafka_jobs import __file__ as JOBS_FILE
from tests.integration.test_kafka import (
    FAST_GROUP,
    create_topic,
    owned,
    partition_of,
    read_topic,
    run_async,
    start_worker,
    stop_all,
    wait_for,
)
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

PARTITIONS = 4
USERS = [f"u{i}" for i in range(40)]


async def _send(kafka: Broker, topic: str, records: Sequence[tuple[int, str, str | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                key=key.encode(),
                value=None if value is None else value.encode(),
                partition=p,
            )
            for p, key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def send(kafka: Broker, topic: str, records: Sequence[tuple[int, str, str | None]]) -> None:
    run_async(_send(kafka, topic, records))


def answers(kafka: Broker, topic: str, round_: int) -> dict[int, dict[str, str]]:
    """Per worker pid, what its copy said for each user in lookup round `round_`."""
    out: dict[int, dict[str, str]] = {}
    for records in run_async(read_topic(kafka, topic)).values():
        for r in records:
            got, user, name, pid = r.value.decode().split("|")
            if int(got) == round_:
                out.setdefault(int(pid), {})[user] = name
    return out


@pytest.mark.slow
def test_two_workers_each_hold_the_whole_table_and_follow_its_updates(
    kafka: Broker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    graph_id, topic = f"kt-global-{suffix}", f"kt-global-{suffix}-users"
    lookups, out = f"{topic}-lookups", f"{topic}-out"
    target = f"{Path(JOBS_FILE).resolve()}:make_global_lookup_graph({graph_id!r}, {topic!r}, 4)"
    run_async(create_topic(kafka, topic, PARTITIONS))
    run_async(create_topic(kafka, lookups, PARTITIONS))
    send(kafka, topic, [(partition_of(u, PARTITIONS), u, f"first-{u}") for u in USERS])
    # no standbys: a worker's store directories are then exactly the shards it owns
    broker = f"{kafka.url}?{FAST_GROUP}&standby_replicas=0"
    states = [tmp_path / "w1", tmp_path / "w2"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [start_worker(target, broker, s, log) for s, log in zip(states, logs, strict=True)]
    store = f"{graph_id}-users"
    rounds = iter(range(1, 1000))

    def every_worker_sees(expected: dict[str, str]) -> bool:
        """Ask every user on every lookup partition; True once both workers answered all
        of them as `expected` says (a copy may lag a little behind the changelog)."""
        round_ = next(rounds)
        send(
            kafka,
            lookups,
            [(p, f"l{p}", f"{round_}:{u}") for p in range(PARTITIONS) for u in USERS],
        )
        wait_for(
            f"round {round_} answered",
            lambda: sum(map(len, answers(kafka, out, round_).values())) >= len(USERS) * 2,
            60,
            logs,
        )
        got = answers(kafka, out, round_)
        return set(got) == {p.pid for p in procs} and all(g == expected for g in got.values())

    try:
        wait_for(
            "both workers own partitions of the table",
            lambda: all(owned(s, store) for s in states),
            60,
            logs,
        )
        first = {u: f"first-{u}" for u in USERS}
        wait_for("both copies hold every user", lambda: every_worker_sees(first), 90, logs)
        # neither worker owns every partition of the table, yet each answered for every user
        mine = [owned(s, store) for s in states]
        assert all(m != set(range(PARTITIONS)) for m in mine), mine
        # updates while both run: renames and a delete reach both copies in the background
        renamed = USERS[:10]
        send(kafka, topic, [(partition_of(u, PARTITIONS), u, f"second-{u}") for u in renamed])
        send(kafka, topic, [(partition_of("u39", PARTITIONS), "u39", None)])
        second = {u: (f"second-{u}" if u in renamed else f"first-{u}") for u in USERS}
        second["u39"] = "-"
        wait_for("both copies follow the updates", lambda: every_worker_sees(second), 60, logs)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        stop_all(procs)
    for state, log in zip(states, logs, strict=True):
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        # every worker kept a copy of every partition on disk
        assert {int(p.name) for p in (state / f"{store}.global").iterdir()} == set(
            range(PARTITIONS)
        )


def test_a_restart_on_local_rocksdb_restores_only_the_tail_of_the_changelog(
    kafka: Broker, tmp_path: Path
) -> None:
    from tests.integration.kafka_jobs import make_global_lookup_graph

    suffix = uuid.uuid4().hex[:8]
    graph_id, topic = f"kt-global-tail-{suffix}", f"kt-global-tail-{suffix}-users"
    run_async(create_topic(kafka, topic, PARTITIONS))
    run_async(create_topic(kafka, f"{topic}-lookups", PARTITIONS))
    graph = make_global_lookup_graph(graph_id, topic, PARTITIONS)
    broker = f"{kafka.url}?{FAST_GROUP}"

    def run(state: Path) -> tuple[int, int, dict[str, str]]:
        """One until-idle run: records applied to the copies at start, in all, the table."""
        workers: list[fg.Worker] = []
        at_start: list[int] = []
        result = fg.run(
            graph,
            broker=broker,
            store=f"rocksdb://{state}",
            until_idle=True,
            on_worker=workers.append,
            on_start=lambda w: at_start.append(w.global_tables.applied),
        )
        return at_start[0], workers[0].global_tables.applied, result.table("users")

    send(kafka, topic, [(partition_of(u, PARTITIONS), u, f"first-{u}") for u in USERS])
    state = tmp_path / "state"
    first = run(state)
    assert first == (0, len(USERS), {u: f"first-{u}" for u in USERS})
    send(kafka, topic, [(partition_of(u, PARTITIONS), u, f"second-{u}") for u in USERS[:5]])
    at_start, applied, table = run(state)
    assert (at_start, applied) == (0, 5)  # the copies on disk were at the changelog's end
    assert table == {u: f"{'second' if u in USERS[:5] else 'first'}-{u}" for u in USERS}
    # a worker without local state restores the whole changelog at start
    changelog = run_async(read_topic(kafka, f"{graph_id}-users-changelog"))
    at_start, _, fresh = run(tmp_path / "fresh")
    assert at_start == sum(map(len, changelog.values())) >= len(USERS)
    assert fresh == table
