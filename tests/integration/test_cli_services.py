"""The real ``flowgraph`` command on a Faust-style app whose timer feeds an agent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.test_cli import flowgraph, summary_number

pytestmark = pytest.mark.integration

TICKER = """\
import flowgraph as faust

app = faust.App("clitick", broker="memory://")
ticks = app.topic("ticks", key_type=str, value_type=int)
counts = app.Table("tick_counts", default=int)


@app.agent(ticks)
async def count(stream):
    async for key, n in stream.items():
        counts[key] += n


@app.timer(0.4)
async def tick():
    await ticks.send(key="tick", value=1)


@app.timer(0.4)
async def broken():
    counts["direct"] = 1  # refused: only agents change tables


@app.crontab("0 6 * * mon", timezone="Europe/Paris", on_leader=True)
async def weekly(app):
    print("weekly report of", app.id)
"""


@pytest.fixture
def ticker(tmp_path: Path) -> Path:
    (tmp_path / "ticker.py").write_text(TICKER)
    return tmp_path


def test_run_app_whose_timer_feeds_an_agent(ticker: Path) -> None:
    """On memory:// a run with timers does not end when idle: here it ends at --max-events.
    The plain log lines count the services' runs and errors; each error is one line."""
    done = flowgraph("run", "ticker:app", "--store", "memory://", "--max-events", "8", cwd=ticker)
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "events") == 8
    assert re.search(r"^\s+tick_counts\s+1 key$", done.stdout, re.MULTILINE), done.stdout
    assert "services " in done.stdout and " runs " in done.stdout  # a live-view log line
    refused = [line for line in done.stderr.splitlines() if "broken" in line]
    assert refused, done.stderr
    for line in refused:
        assert "ConfigurationError: table 'tick_counts' can only be changed by an agent" in line
    assert "Traceback" not in done.stderr


def test_explain_app_lists_its_services(ticker: Path) -> None:
    done = flowgraph("explain", "ticker:app", cwd=ticker)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "3 services" in text.splitlines()[0]
    services = text[text.index("\nServices\n") :]
    assert "tick    timer    every 0.4 s" in services
    assert "weekly  crontab  cron 0 6 * * mon (Europe/Paris)  yes" in services
    assert "ticker.py:" in services
    done = flowgraph("explain", "ticker:app", "--format", "json", cwd=ticker)
    assert done.returncode == 0, done.stderr
    services_json = json.loads(done.stdout)["services"]
    assert [(s["name"], s["kind"], s["on_leader"]) for s in services_json] == [
        ("tick", "timer", False),
        ("broken", "timer", False),
        ("weekly", "crontab", True),
    ]


def test_bad_crontab_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "badcron.py").write_text(
        "import flowgraph as faust\n"
        "app = faust.App('badcron')\n"
        "@app.crontab('0 25 * * *')\n"
        "async def never():\n"
        "    pass\n"
    )
    done = flowgraph("explain", "badcron:app", cwd=tmp_path)
    assert done.returncode == 2
    assert "hour field '25' has 25, out of range 0-23" in done.stderr
    assert "Traceback" not in done.stderr


def test_debug_logs_the_traceback_of_a_failing_timer(ticker: Path) -> None:
    done = flowgraph(
        "run", "ticker:app", "--store", "memory://", "--max-events", "2", "--debug", cwd=ticker
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" in done.stderr
    assert 'counts["direct"] = 1' in done.stderr  # the line of the timer that failed
