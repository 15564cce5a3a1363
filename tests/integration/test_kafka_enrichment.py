"""The enrichment how-to on Kafka: the graph of docs/how-to/enrichment.md (part 2, the lines
tools/doc_pictures.py draws and tests/unit/test_doc_pictures.py finds in the page), run by the
`flowgraph` command against a real broker as the page's "Run it on Kafka" says. Clicks keyed
by session are re-keyed by user and joined with profiles another producer wrote by user id."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.test_cli import FLOWGRAPH, TIMEOUT
from tests.integration.test_kafka import (
    FAST_GROUP,
    create_topic,
    partition_of,
    read_topic,
    run_async,
)
from tests.integration.test_kafka_global_tables import send
from tests.kafka_broker import Broker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROFILES = {"ann": "NL", "bob": "BE", "eve": "FR"}
CLICKS = [(f"s{n}", user, f"/page{n}") for n, user in enumerate(["ann", "bob", "cid"] * 4)]


def how_to_source(suffix: str) -> str:
    """The page's graph, with topic and graph names of this test's own."""
    spec = importlib.util.spec_from_file_location(
        "doc_pictures", ROOT / "tools" / "doc_pictures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source: str = module.EXAMPLES["enrich-clicks"].source
    for name in ("profiles", "clicks", "enriched-clicks"):
        assert f'"{name}"' in source
        source = source.replace(f'"{name}"', f'"{name}-{suffix}"')
    return source.replace('fg.Graph("enrich")', f'fg.Graph("enrich-{suffix}")')


def test_the_how_to_graph_enriches_clicks_on_kafka(kafka: Broker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    profiles, clicks, out = f"profiles-{suffix}", f"clicks-{suffix}", f"enriched-clicks-{suffix}"
    (tmp_path / "app.py").write_text(how_to_source(suffix))
    run_async(create_topic(kafka, profiles, 4))
    run_async(create_topic(kafka, clicks, 4))
    send(
        kafka,
        profiles,
        [
            (partition_of(user, 4), user, json.dumps({"name": user.title(), "country": c}))
            for user, c in PROFILES.items()
        ],
    )
    # Written after the profiles, so each click sees its user's profile; sessions spread
    # over the partitions without regard to the user.
    send(
        kafka,
        clicks,
        [
            (n % 4, session, json.dumps({"user": user, "url": url}))
            for n, (session, user, url) in enumerate(CLICKS)
        ],
    )
    done = subprocess.run(
        [
            *FLOWGRAPH,
            "run",
            "app.py:graph",
            "--broker",
            f"{kafka.url}?{FAST_GROUP}",
            "--store",
            f"rocksdb://{tmp_path / 'w1'}",
            "--until-idle",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = []
    for p, records in run_async(read_topic(kafka, out)).items():
        for r in records:
            value = json.loads(r.value)
            assert r.key.decode() == value["user"]
            assert partition_of(value["user"], 4) == p  # the user's partition of the table
            got.append((value["user"], value["url"], value["country"]))
    assert sorted(got) == sorted(
        (user, url, PROFILES.get(user, "unknown")) for _, user, url in CLICKS
    )
