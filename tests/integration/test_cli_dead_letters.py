"""``flowgraph run`` and dead letters, in subprocesses: the summary by step and error type,
``--max-dead-letters`` (exit code and sentence) and the JSON-lines file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.test_cli import flowgraph, summary_number, summary_row

pytestmark = pytest.mark.integration

JOB = """\
import flowgraph as fg


def parse(s: str) -> int:
    return int(s)


def lookup(n: int) -> int:
    if n % 7 == 0:
        raise KeyError(f"no entry for {n}")
    return n


graph = fg.Graph("dl")
lines = [str(i) if i % 10 else f"x{i}" for i in range(1, 101)]
(
    graph.source_from(lines, name="lines")
    .map(parse, name="parse")
    .map(lookup, name="lookup")
    .filter(lambda n: n % 2 == 0, name="even")
    .key_by(lambda n: n % 3, name="mod")
    .count(name="total")
)
"""
BAD_PARSE = 10
BAD_LOOKUP = len([i for i in range(1, 101) if i % 10 and i % 7 == 0])
EVEN = len([i for i in range(1, 101) if i % 10 and i % 7 and i % 2 == 0])


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    return tmp_path


def test_the_summary_lists_dead_letters_by_step_and_error_type(job: Path) -> None:
    done = flowgraph("run", "job.py", "--store", "memory://", cwd=job)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert summary_number(out, "dead letters") == BAD_PARSE + BAD_LOOKUP
    parse_line = re.search(r"^\s+parse: ValueError x(\d+) \(e\.g\. \"(.*)\" at (.*)\)$", out, re.M)
    assert parse_line, out
    assert int(parse_line.group(1)) == BAD_PARSE
    assert parse_line.group(2) == "invalid literal for int() with base 10: 'x10'"
    assert parse_line.group(3) == "dl-lines-feed[0] offset 9, record 'x10'"
    assert re.search(
        rf"^\s+lookup: KeyError x{BAD_LOOKUP} \(e\.g\. \"'no entry for 7'\"", out, re.M
    )
    # every step has its row, with its own dead letters
    assert summary_row(out, "lines") == "100"
    assert summary_row(out, "parse") == f"{100 - BAD_PARSE}  ({BAD_PARSE} dead letters)"
    assert summary_row(out, "even") == str(EVEN)
    assert summary_row(out, "total") == str(EVEN)
    # memory:// broker and store: the dead letters are kept in the current directory
    path = job / "flowgraph-dead-letters" / "dl.jsonl"
    assert "also in flowgraph-dead-letters/dl.jsonl" in out
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == BAD_PARSE + BAD_LOOKUP
    first = next(r for r in records if r["step"] == "parse")
    assert first["error_type"] == "ValueError"
    assert (first["topic"], first["partition"], first["offset"]) == ("dl-lines-feed", 0, 9)
    assert (first["value"], first["value_format"]) == ("'x10'", "repr")


def test_the_file_goes_next_to_a_rocksdb_store_or_where_asked(job: Path) -> None:
    done = flowgraph("run", "job.py", "--store", "rocksdb://state", cwd=job)
    assert done.returncode == 0, done.stderr
    path = job / "state" / "dl-dead-letters.jsonl"
    assert len(path.read_text().splitlines()) == BAD_PARSE + BAD_LOOKUP
    assert f"also in {Path('state') / 'dl-dead-letters.jsonl'}" in done.stdout
    done = flowgraph("run", "job.py", "--store", "memory://", "--dead-letters", "dl.txt", cwd=job)
    assert done.returncode == 0, done.stderr
    assert len((job / "dl.txt").read_text().splitlines()) == BAD_PARSE + BAD_LOOKUP
    assert not (job / "flowgraph-dead-letters").exists()


def test_no_file_when_nothing_fails(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(
        "import flowgraph as fg\n"
        "graph = fg.Graph('ok')\n"
        "graph.source_from(range(10), name='n').count(name='total')\n"
    )
    done = flowgraph("run", "ok.py", "--store", "memory://", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "dead letters") == 0
    assert "also in" not in done.stdout
    assert not (tmp_path / "flowgraph-dead-letters").exists()


def test_max_dead_letters_stops_with_exit_1_and_one_sentence(job: Path) -> None:
    done = flowgraph(
        "run", "job.py", "--store", "rocksdb://state", "--max-dead-letters", "5", cwd=job
    )
    assert done.returncode == 1, done.stdout + done.stderr
    count = summary_number(done.stdout, "dead letters")
    assert count > 5
    [line] = done.stderr.strip().splitlines()
    assert line == (
        f"flowgraph: error: stopped: {count} dead letters exceed --max-dead-letters 5; the "
        "first: lookup: KeyError \"'no entry for 7'\" at dl-lines-feed[0] offset 6"
    )
    assert "Traceback" not in done.stderr
    # what it processed is committed: its table is in the store
    assert (job / "state" / "dl-dead-letters.jsonl").exists()


def test_max_dead_letters_above_the_count_finishes(job: Path) -> None:
    done = flowgraph("run", "job.py", "--store", "memory://", "--max-dead-letters", "0.5", cwd=job)
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "dead letters") == BAD_PARSE + BAD_LOOKUP


@pytest.mark.parametrize("value", ["-1", "1.5", "lots", "0", "nan"])
def test_a_bad_max_dead_letters_is_a_usage_error(job: Path, value: str) -> None:
    done = flowgraph("run", "job.py", "--max-dead-letters", value, cwd=job)
    if value == "0":  # a count of 0: the first dead letter stops the run
        assert done.returncode == 1
        assert "dead letters exceed --max-dead-letters 0;" in done.stderr
        return
    assert done.returncode == 2
    assert "expected a count (like 100) or a fraction" in done.stderr
