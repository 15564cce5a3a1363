"""The real ``flowgraph`` console script, in subprocesses: run, explain, bad input, signals."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from flowgraph.runtime.state import RocksDBBackend

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clickstream.py"
_SCRIPT = Path(sys.executable).parent / "flowgraph"
FLOWGRAPH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flowgraph.cli"]
TIMEOUT = 60

TICKS = """\
import itertools

import flowgraph as fg

graph = fg.Graph("ticks")
graph.source_from(itertools.count(), name="ticks").count(name="total")
"""

JOBS = """\
import flowgraph as fg

not_a_graph = 42


def make_graph(env="prod", n=10):
    g = fg.Graph(f"jobs-{env}")
    g.source_from(range(n), name="numbers").count(name="total")
    return g


def broken_factory():
    raise RuntimeError("no settings for this environment")


def forgot_return(env="prod"):
    fg.Graph(env)


def invalid():
    g = fg.Graph("invalid")
    s = g.source("in")
    s.map(str)
    s.filter(bool)
    return g


class FeedFailure:
    def __iter__(self):
        raise fg.RuntimeFailure("numbers", OSError("feed went away"))


def failing_run():
    g = fg.Graph("failing")
    g.source_from(FeedFailure(), name="numbers").count(name="total")
    return g
"""


def flowgraph(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script to its end."""
    return subprocess.run(
        [*FLOWGRAPH, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def summary_number(stdout: str, label: str) -> int:
    found = re.search(rf"^\s+{label}:\s+(\d+)", stdout, re.MULTILINE)
    assert found, f"no {label!r} in summary:\n{stdout}"
    return int(found.group(1))


def summary_row(stdout: str, name: str) -> str:
    found = re.search(rf"^\s+{re.escape(name)}\s+(\d+.*)$", stdout, re.MULTILINE)
    assert found, f"no row {name!r} in summary:\n{stdout}"
    return found.group(1).strip()


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    """A project directory with a package `jobs` (module `jobs.numbers`) and a ticks.py file."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("")
    (tmp_path / "jobs" / "numbers.py").write_text(JOBS)
    (tmp_path / "jobs" / "relative.py").write_text("from .numbers import make_graph\n")
    (tmp_path / "ticks.py").write_text(TICKS)
    (tmp_path / "import_error.py").write_text("import flowgraph\nimport no_such_dependency\n")
    (tmp_path / "raises.py").write_text("raise ValueError('DATABASE_URL is not set')\n")
    (tmp_path / "syntax_error.py").write_text("def graph(:\n")
    return tmp_path


def persisted(state: Path, store: str, partitions: int = 1) -> dict[Any, Any]:
    backend = RocksDBBackend(state)
    try:
        table: dict[Any, Any] = {}
        for p in range(partitions):
            table.update(backend.open(store, p).items())
        return table
    finally:
        backend.close()


# -- run ---------------------------------------------------------------------------------------


def test_run_example_to_the_end(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = flowgraph(
        "run", f"{EXAMPLE}:graph", "--until-idle", "--store", f"rocksdb://{state}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "running graph 'clickstream' on memory://" in out
    assert "summary of graph 'clickstream'" in out
    events = summary_number(out, "events")
    assert events == 200_000
    assert summary_row(out, "clicks") == str(events)
    dead = summary_number(out, "dead letters")
    assert dead == 8
    assert "topic 'clickstream-dlq'" in out
    table = persisted(state, "clickstream-per_url", partitions=4)
    steps, tables = out.split("\n  tables:\n")
    assert summary_row(tables, "per_url").endswith(f"{len(table)} keys")
    assert int(summary_row(steps, "per_url")) == sum(table.values())  # records it applied
    assert 0 < len(table) <= 500
    assert 0.9 * events < sum(table.values()) < events - dead  # a few percent are bots


def test_run_module_factory_with_arguments(jobs: Path) -> None:
    done = flowgraph(
        "run", "jobs.numbers:make_graph(env='dev', n=25)", "--store", "memory://", cwd=jobs
    )
    assert done.returncode == 0, done.stderr
    assert "summary of graph 'jobs-dev'" in done.stdout
    assert summary_number(done.stdout, "events") == 25


def test_run_file_in_package_with_relative_import(jobs: Path) -> None:
    done = flowgraph("run", "jobs/relative.py:make_graph", "--store", "memory://", cwd=jobs)
    assert done.returncode == 0, done.stderr
    assert "summary of graph 'jobs-prod'" in done.stdout
    assert summary_number(done.stdout, "events") == 10


def test_run_max_events_is_exact_and_persisted(jobs: Path) -> None:
    state = jobs / "state"
    done = flowgraph(
        "run", "ticks.py", "--max-events", "12345", "--store", f"rocksdb://{state}", cwd=jobs
    )
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "events") == 12345
    assert persisted(state, "ticks-total") == {None: 12345}


def test_run_default_store_is_rocksdb_in_the_current_directory(jobs: Path) -> None:
    done = flowgraph("run", "jobs.numbers:make_graph", cwd=jobs)
    assert done.returncode == 0, done.stderr
    assert "state in rocksdb://.flowgraph" in done.stdout
    assert persisted(jobs / ".flowgraph", "jobs-prod-total") == {None: 10}


def test_run_shows_a_live_view_on_a_terminal(tmp_path: Path) -> None:
    """On a pseudo-terminal: rich Live frames instead of log lines, then the summary."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*FLOWGRAPH, "run", f"{EXAMPLE}:graph", "--store", "memory://"],
        cwd=tmp_path,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=TIMEOUT) == 0
    out = b"".join(chunks).decode()
    assert "events/s" in out
    assert "\x1b[" in out  # drawn with terminal control sequences
    assert "processed " not in out  # no plain log lines on a terminal
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
    assert summary_number(plain, "events") == 200_000


# -- explain -----------------------------------------------------------------------------------


def test_explain_text(tmp_path: Path) -> None:
    done = flowgraph("explain", f"{EXAMPLE}:graph", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in (
        "clickstream-by_url-repartition",
        "clickstream-per_url",
        "clickstream-per_url-changelog",
        "clickstream-dlq",
    ):
        assert name in done.stdout


ASYNC_JOB = """
import flowgraph as fg

async def enrich(v):
    return v

def graph():
    g = fg.Graph("enriched")
    g.source("in", value_type=int).map(enrich, concurrency=12).map(str, name="plain").to("out")
    return g

def bad():
    g = fg.Graph("bad")
    g.source("in", value_type=int).map(str, concurrency=12).to("out")
    return g
"""


def test_explain_shows_the_calls_in_flight_of_an_async_step(tmp_path: Path) -> None:
    (tmp_path / "ajob.py").write_text(ASYNC_JOB)
    done = flowgraph("explain", "ajob.py:graph", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "async, 12 calls in flight" in rows["enrich"]
    assert "calls in flight" not in rows["plain"]
    bad = flowgraph("explain", "ajob.py:bad", cwd=tmp_path)
    assert bad.returncode == 2
    assert "concurrency=12 needs an async def function" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("stage", ["logical", "partitioned"])
def test_explain_text_of_earlier_stages(tmp_path: Path, stage: str) -> None:
    done = flowgraph("explain", f"{EXAMPLE}:graph", "--stage", stage, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "drop_bots" in done.stdout
    assert "changelog" not in done.stdout  # stores come with the physical stage
    assert ("repartition" in done.stdout) is (stage == "partitioned")


def test_explain_json(tmp_path: Path) -> None:
    done = flowgraph("explain", f"{EXAMPLE}:graph", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    text = json.dumps(described)
    assert "clickstream-per_url" in text
    assert "clickstream-by_url-repartition" in text


@pytest.mark.parametrize("stage", ["physical", "logical"])
def test_explain_svg(tmp_path: Path, stage: str) -> None:
    done = flowgraph(
        "explain", f"{EXAMPLE}:graph", "--format", "svg", "--stage", stage, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith("<svg")
    assert done.stdout.rstrip().endswith("</svg>")
    assert "per_url" in done.stdout


# -- bad input -----------------------------------------------------------------------------------

BAD_TARGETS = [
    pytest.param("no_such_module:graph", "no module named 'no_such_module'", id="missing-module"),
    pytest.param("jobs.nope:graph", "no module named 'jobs.nope'", id="missing-submodule"),
    pytest.param("missing.py:graph", "file 'missing.py' does not exist", id="missing-file"),
    pytest.param("jobs.numbers:nothing", "has no attribute 'nothing'", id="missing-attribute"),
    pytest.param("jobs.numbers:not_a_graph", "is an int, not a flowgraph Graph", id="not-a-graph"),
    pytest.param("jobs.numbers:fg", "is a module, not a flowgraph Graph", id="module-not-graph"),
    pytest.param(
        "jobs.numbers:forgot_return(env='dev')",
        "jobs.numbers:forgot_return(env='dev') returned None, not a flowgraph Graph",
        id="factory-returns-none",
    ),
    pytest.param("jobs.numbers:make_graph(1, 2, 3)", "cannot be called as", id="wrong-arguments"),
    pytest.param("jobs.numbers:make_graph(env=ENV)", "literal arguments", id="not-literal"),
    pytest.param("jobs.numbers:make_graph(", "literal arguments", id="unparsable"),
    pytest.param(
        "jobs.numbers:broken_factory",
        "factory jobs.numbers:broken_factory raised RuntimeError: no settings",
        id="factory-raises",
    ),
    pytest.param(
        "import_error.py",
        "importing file 'import_error.py' raised ModuleNotFoundError: "
        "No module named 'no_such_dependency'",
        id="import-error-inside",
    ),
    pytest.param(
        "raises.py:graph",
        "importing file 'raises.py' raised ValueError: DATABASE_URL is not set",
        id="module-raises",
    ),
    pytest.param("syntax_error.py", "raised SyntaxError", id="syntax-error"),
]


def assert_one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("flowgraph: error: ")
    assert expected in lines[0]


@pytest.mark.parametrize(("target", "expected"), BAD_TARGETS)
def test_run_bad_target(jobs: Path, target: str, expected: str) -> None:
    done = flowgraph("run", target, "--store", "memory://", cwd=jobs)
    assert_one_error_line(done, expected)
    assert done.stdout == ""


def test_explain_bad_target(jobs: Path) -> None:
    assert_one_error_line(flowgraph("explain", "jobs.numbers:nothing", cwd=jobs), "nothing")


@pytest.mark.parametrize(
    ("option", "url", "expected"),
    [
        ("--broker", "nats://localhost", "unsupported broker URL 'nats://localhost'"),
        ("--store", "s3://bucket", "unsupported state store URL 's3://bucket'"),
        ("--store", "memory://somewhere", "memory stores take none"),
    ],
)
def test_run_bad_url(jobs: Path, option: str, url: str, expected: str) -> None:
    done = flowgraph("run", "jobs.numbers:make_graph", option, url, cwd=jobs)
    assert_one_error_line(done, expected)


def test_run_invalid_graph_lists_every_problem(jobs: Path) -> None:
    done = flowgraph("run", "jobs.numbers:invalid", "--store", "memory://", cwd=jobs)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("flowgraph: error: 2 problems in the graph")
    assert "step 'str' (map) has no consumer" in done.stderr
    assert "step 'bool' (filter) has no consumer" in done.stderr


def test_run_flowgraph_error_exits_1(jobs: Path) -> None:
    done = flowgraph("run", "jobs.numbers:failing_run", "--store", "memory://", cwd=jobs)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "flowgraph: error: step 'numbers' raised OSError: feed went away"
    )


def test_debug_shows_the_traceback(jobs: Path) -> None:
    done = flowgraph("run", "raises.py", "--debug", cwd=jobs)
    assert done.returncode == 2
    assert "Traceback" in done.stderr
    assert "DATABASE_URL is not set" in done.stderr


def test_bad_option_is_a_usage_error(jobs: Path) -> None:
    done = flowgraph("run", "ticks.py", "--max-events", "0", cwd=jobs)
    assert done.returncode == 2
    assert "--max-events" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("option", "value"), [("--max-skew", "-1"), ("--max-idle", "nan"), ("--max-batch", "0")]
)
def test_bad_scheduling_option_is_a_usage_error(jobs: Path, option: str, value: str) -> None:
    done = flowgraph("run", "ticks.py", option, value, cwd=jobs)
    assert done.returncode == 2
    assert option in done.stderr
    assert "Traceback" not in done.stderr


def test_run_takes_the_scheduling_options(jobs: Path) -> None:
    done = flowgraph(
        "run",
        "jobs.numbers:make_graph(env='dev', n=25)",
        "--store",
        "memory://",
        "--max-batch",
        "3",
        "--max-skew",
        "0.5",
        "--max-idle",
        "0",
        cwd=jobs,
    )
    assert done.returncode == 0, done.stderr
    assert summary_number(done.stdout, "events") == 25


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--stall-timeout", "5"], "--stall-timeout applies only with --until-idle"),
        (["--until-idle", "--stall-timeout", "0"], "expected a positive number of seconds"),
    ],
    ids=["without-until-idle", "zero"],
)
def test_bad_stall_timeout_is_a_usage_error(jobs: Path, options: list[str], expected: str) -> None:
    done = flowgraph("run", "ticks.py", "--store", "memory://", *options, cwd=jobs)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


# -- signals -------------------------------------------------------------------------------------


def line_queue(stream: IO[str]) -> queue.Queue[str | None]:
    """Lines of `stream` as they come (None at its end), read by a thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly(jobs: Path, sig: signal.Signals) -> None:
    """The current batch finishes, state is flushed, offsets committed, exit code 0."""
    state = jobs / "state"
    with subprocess.Popen(
        [*FLOWGRAPH, "run", "ticks.py:graph", "--store", f"rocksdb://{state}"],
        cwd=jobs,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            lines = line_queue(proc.stdout)
            seen: list[str] = []
            deadline = time.monotonic() + 30
            while not any(line.startswith("processed ") for line in seen):  # a plain log line
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                assert line is not None, "".join(seen) + proc.stderr.read()
                seen.append(line)
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0
            while (line := lines.get(timeout=10)) is not None:
                seen.append(line)
            errors = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    out = "".join(seen)
    assert errors == ""
    assert "summary of graph 'ticks'" in out
    events = summary_number(out, "events")
    logged = int(re.search(r"processed (\d+) events", out).group(1))  # type: ignore[union-attr]
    assert events >= logged > 0
    assert persisted(state, "ticks-total") == {None: events}


def test_the_summary_counts_windows_and_late_records(tmp_path: Path) -> None:
    (tmp_path / "wjob.py").write_text(
        "import flowgraph as fg\n"
        "g = fg.Graph('wjob')\n"
        "s = g.source_from([float(i) for i in range(30)] + [1.0], name='in', value_type=float)\n"
        "s.window(fg.Tumbling(10, retention=100), timestamp=lambda v: v).count(name='per10')\n"
    )
    done = flowgraph("run", "wjob:g", "--store", "memory://", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "late:         1 (too late for a closed window)" in done.stdout
    assert re.search(r"per10\s+3 windows", done.stdout), done.stdout
