"""``flowgraph run --input TOPIC=FILE``: a topic-sourced graph fed from JSON-lines files on the
embedded broker, in subprocesses of the real console script."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import FLOWGRAPH, TIMEOUT, flowgraph, summary_number

pytestmark = pytest.mark.integration

JOB = """\
import json

import flowgraph as fg


class Click(fg.Record):
    user: str
    at: float


def write(name):
    def sink(k, v):
        with open(name, "a") as f:
            f.write(json.dumps([k.key, k.start, k.end, v]) + "\\n")
    return sink


def user(c):
    return c.user


g = fg.Graph("clicks")
clicks = g.source("clicks", value_type=Click, partitions=3)
per_user = clicks.key_by(user).window(fg.Tumbling(10, emit="close"), timestamp=lambda c: c.at)
per_user.count(name="per_10s").changes().to(write("closed.jsonl"), name="closed")

amounts = g.source("amounts", key_type=str, value_type=int, partitions=2)
sums = amounts.window(fg.Hopping(10, 5)).sum(name="sums")
sums.changes().to(write("sums.jsonl"), name="sums-out")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    return tmp_path


def lines(path: Path) -> list[Any]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def clicks(n: int) -> list[dict[str, Any]]:
    return [{"user": f"u{i % 4}", "at": i * 1.25} for i in range(n)]


def expected_counts(records: list[dict[str, Any]]) -> dict[tuple[str, float], int]:
    out: dict[tuple[str, float], int] = {}
    for r in records:
        w = (r["user"], r["at"] // 10 * 10)
        out[w] = out.get(w, 0) + 1
    return out


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return flowgraph("run", "job:g", "--store", "memory://", *args, cwd=project)


def test_input_feeds_a_topic_and_the_end_closes_every_window(project: Path) -> None:
    records = clicks(60)
    (project / "clicks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    done = run(project, "--input", "clicks=clicks.jsonl")
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "events") == 60
    closed = lines(project / "closed.jsonl")
    got = {(user, start): n for user, start, _, n in closed}
    assert len(got) == len(closed), "a window was emitted twice"
    assert got == expected_counts(records)


def test_without_closing_the_last_windows_stay_open(project: Path) -> None:
    records = clicks(60)
    (project / "clicks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    done = run(project, "--input", "clicks=clicks.jsonl", "--no-close-windows")
    assert done.returncode == 0, done.stderr
    got = {(user, start): n for user, start, _, n in lines(project / "closed.jsonl")}
    expected = expected_counts(records)
    assert got and set(got) < set(expected)
    assert all(expected[w] == n for w, n in got.items())


def test_records_format_gives_keys_and_timestamps_and_stdin_works(project: Path) -> None:
    rows = [{"key": f"k{i % 3}", "value": i, "timestamp": i * 2.0} for i in range(20)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    args = ["run", "job:g", "--store", "memory://", "--input", "amounts=-"]
    done = subprocess.run(
        [*FLOWGRAPH, *args, "--input-format", "records"],
        cwd=project,
        input=text,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    final: dict[tuple[str, float], int] = {}
    for key, start, _, total in lines(project / "sums.jsonl"):  # emit="update": last wins
        final[(key, start)] = total
    expected: dict[tuple[str, float], int] = {}
    for r in rows:
        for start in (r["timestamp"] // 5 * 5 - 5, r["timestamp"] // 5 * 5):
            if start >= 0:
                w = (r["key"], start)
                expected[w] = expected.get(w, 0) + r["value"]
    assert final == expected


def test_a_value_that_does_not_fit_its_type_is_a_dead_letter(project: Path) -> None:
    good = clicks(5)
    text = "".join(json.dumps(r) + "\n" for r in good) + '{"user": "u9"}\n'
    (project / "clicks.jsonl").write_text(text)
    done = run(project, "--input", "clicks=clicks.jsonl")
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "dead letters") == 1
    got = {(user, start): n for user, start, _, n in lines(project / "closed.jsonl")}
    assert got == expected_counts(good)


@pytest.mark.parametrize(
    ("content", "args", "said"),
    [
        (
            '{"user": "a", "at": 1}\n\n{"user": "b",\n',
            ["--input", "clicks=in.jsonl"],
            r"in\.jsonl:3: not a JSON value",
        ),
        ('{"user": "a", "at": 1}\n', ["--input", "views=in.jsonl"], r"'clicks', 'amounts'"),
        (
            '{"user": "a", "at": 1}\n',
            ["--input", "clicks=in.jsonl", "--broker", "kafka://localhost:9"],
            r"--input feeds the embedded broker",
        ),
        ("", ["--input", "clicks=missing.jsonl"], r"'missing\.jsonl' cannot be read"),
        ("", ["--input", "clicks"], r"is not TOPIC=FILE"),
        (
            '{"value": 1, "timestamp": "noon"}\n',
            ["--input", "amounts=in.jsonl", "--input-format", "records"],
            r"in\.jsonl:1: \"timestamp\" is 'noon'",
        ),
    ],
    ids=["bad-json", "unknown-topic", "kafka", "missing-file", "no-file", "bad-timestamp"],
)
def test_bad_input_is_one_sentence_and_exit_2(
    project: Path, content: str, args: list[str], said: str
) -> None:
    (project / "in.jsonl").write_text(content)
    done = run(project, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(said, done.stderr), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (project / "closed.jsonl").exists()  # nothing ran


def test_close_windows_on_kafka_needs_until_idle(project: Path) -> None:
    done = run(project, "--broker", "kafka://localhost:9", "--close-windows")
    assert done.returncode == 2
    assert "--until-idle" in done.stderr
