"""``flowgraph run --input`` with a `process` step with timers, in a subprocess of the real
console script: keys fire as stream time passes their deadline, and the end of the input fires
the rest (stream time infinity) unless ``--no-close-windows``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import FLOWGRAPH, TIMEOUT

pytestmark = pytest.mark.integration

JOB = """\
import json

import flowgraph as fg


def last_ping(state, ping, ctx):
    return {"at": ctx.timestamp}, []


def ten_seconds_later(state):
    return state["at"] + 10.0


def quiet(state, stream_time):
    return None, [[state["at"], stream_time]]


def write(k, v):
    with open("quiet.jsonl", "a") as f:
        f.write(json.dumps([k, *v]) + "\\n")


g = fg.Graph("quiet")
pings = g.source("pings", key_type=str, value_type=int, partitions=2)
pings.process(
    last_ping, dict, context=True, wake=ten_seconds_later, on_wake=quiet
).to(write, name="report")
"""


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    (tmp_path / "job.py").write_text(JOB)
    # one key per 4 s of event time, each pinging once: a key is quiet 10 s later
    rows = [{"key": f"d{i}", "value": i, "timestamp": 100.0 + 4 * i} for i in range(8)]
    (tmp_path / "pings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = ["run", "job:g", "--store", "memory://", "--input", "pings=pings.jsonl"]
    done = subprocess.run(
        [*FLOWGRAPH, *command, "--input-format", "records", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    out = tmp_path / "quiet.jsonl"
    reports = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return done, reports


def test_timers_fire_as_stream_time_passes_and_at_the_end_of_the_input(tmp_path: Path) -> None:
    done, reports = run(tmp_path)
    assert done.returncode == 0, done.stderr
    by_key = {k: (at, stream_time) for k, at, stream_time in reports}
    assert len(by_key) == len(reports) == 8, "a key fired twice, or not at all"
    for k, (at, stream_time) in by_key.items():
        assert at == 100.0 + 4 * int(k[1:])
        # fired by a later ping of its partition (stream time past its deadline), or at the
        # end with stream time infinity (JSON's Infinity)
        assert stream_time >= at + 10.0
    at_end = [k for k, (_, st) in by_key.items() if st == float("inf")]
    assert 0 < len(at_end) < 8  # some fired during the run, the last ones at the end
    assert "d7" in at_end


def test_without_closing_the_pending_timers_stay_pending(tmp_path: Path) -> None:
    done, reports = run(tmp_path, "--no-close-windows")
    assert done.returncode == 0, done.stderr
    assert reports and len(reports) < 8
    assert all(st != float("inf") and st >= at + 10.0 for _, at, st in reports)
