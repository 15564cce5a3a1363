"""examples/clickstream.py: the graph counts what a plain Python loop counts over its clicks."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

import flowgraph as fg
from flowgraph.testing import TestDriver

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "clickstream.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("clickstream_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(raws: list[bytes]) -> tuple[Counter[str], int]:
    """Clicks per URL of people, and the number of malformed records, without flowgraph."""
    counts: Counter[str] = Counter()
    malformed = 0
    for raw in raws:
        try:
            click = json.loads(raw)
        except ValueError:
            malformed += 1
            continue
        if not (
            isinstance(click, dict)
            and isinstance(click.get("url"), str)
            and isinstance(click.get("user"), str)
            and isinstance(click.get("ts"), int | float)
        ):
            malformed += 1
            continue
        if not click["user"].startswith("bot-"):
            counts[click["url"]] += 1
    return counts, malformed


def small_clicks(example: ModuleType) -> Iterable[bytes]:
    return example.SyntheticClicks(6_000, seed=11, malformed_every=500)


def test_source_is_deterministic_and_reiterable(example: ModuleType) -> None:
    clicks = small_clicks(example)
    first = list(clicks)
    assert first == list(clicks) == list(small_clicks(example))
    assert len(first) == 6_000
    counts, malformed = reference(first)
    assert malformed == 12
    bots = sum(1 for raw in first if b'"user": "bot-' in raw)
    assert 0 < bots < len(first) * 0.1
    assert counts.most_common(1)[0][0] == "/"  # Zipf: the home page leads


def test_driver_counts_match_plain_python(example: ModuleType) -> None:
    clicks = small_clicks(example)
    expected, malformed = reference(list(clicks))
    with TestDriver(example.build_graph(clicks)) as driver:
        assert driver.table("per_url") == dict(expected)
        dead = driver.dead_letters()
    assert len(dead) == malformed
    assert {d.headers["error.step"] for d in dead} == {"parse"}
    assert {d.headers["error.type"] for d in dead} == {"SerializationError"}


def test_run_counts_match_plain_python(example: ModuleType) -> None:
    clicks = small_clicks(example)
    expected, malformed = reference(list(clicks))
    result = fg.run(example.build_graph(clicks))
    assert result.events == 6_000
    assert result.dead_letters == malformed
    assert result.table("per_url") == dict(expected)


def test_main_prints_top_urls(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clicks = small_clicks(example)
    expected, malformed = reference(list(clicks))
    monkeypatch.setattr(example, "graph", example.build_graph(clicks))
    assert example.main() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("6000 clicks in ")
    assert f"{malformed} malformed" in out[0]
    top = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert [line.split() for line in out[2:]] == [[str(n), url] for url, n in top]
