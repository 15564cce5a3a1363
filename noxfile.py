"""Developer sessions: `nox -s tests | lint | typecheck | bench | notebooks | docs | mutants`."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


def _pytest(session: nox.Session, *args: str) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *args, *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole suite: unit, golden, property, executor, integration and slow cases.

    Three processes, a test file each at a time (most Kafka tests wait on the broker, not
    the CPU), each with a broker of its own; the slowest 25 tests are listed at the end, to
    keep the suite within its time budget.
    """
    _pytest(session, "-n", "3", "--dist", "loadfile", "--durations=25")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "planner")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy: strict on planner/, checked on flowgraph/."""
    session.install("-e", ".", "mypy>=1.10", "types-networkx")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Throughput benchmarks with their same-run baselines; figures go to stdout."""
    session.install("-e", ".[test]")
    session.run("python", "bench/bench_clicks.py", *session.posargs)
    session.run("python", "bench/bench_windows.py", *session.posargs)
    session.run("python", "bench/bench_joins.py", *session.posargs)
    session.run("python", "bench/bench_kafka.py")
    session.run("python", "bench/bench_faust.py")
    session.run("python", "bench/bench_async.py")
    session.run("python", "bench/bench_startup.py")
    session.run("python", "bench/bench_scale.py")
    session.run("python", "bench/bench_failover.py")
    session.run("python", "bench/bench_restore.py")


@nox.session(python=PYTHON)
def notebooks(session: nox.Session) -> None:
    """Execute every notebook under notebooks/ as a smoke test."""
    session.install("-e", ".", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29")
    session.run("python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3")
    session.run("python", "tools/run_notebooks.py", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Run every Python example in docs/ (they are tested, so they stay true)."""
    _pytest(session, "tests/unit/test_docs.py")


MUTATED = (
    "flowgraph.runtime.aggregate",
    "flowgraph.runtime.windowed",
    "flowgraph.runtime.window_push",
    "flowgraph.runtime.recovery",
    "flowgraph.runtime.task",
    "flowgraph.runtime.commit",
    "flowgraph.runtime.kafka_config",
    "flowgraph.runtime.table_state",
    "flowgraph.runtime.agent",
    "flowgraph.runtime.tasks",
    "flowgraph.runtime.rebalance",
    "flowgraph.runtime.standby",
    "flowgraph.runtime.stream_join",
    "flowgraph.runtime.catch_up",
    "flowgraph.runtime.tailer",
    "flowgraph.windows",
)
"""Modules `mutants` mutates (the list is also `only_mutate` in pyproject.toml)."""


@nox.session(python=PYTHON, default=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the aggregation, window, recovery, task, commit, Kafka
    settings, agent and agent-table modules, and of the task lifecycle (tasks, rebalance,
    standby, tailer).

    Not part of `tests` or CI. Each module gets ``MUTANTS_MINUTES`` minutes (default 7), niced,
    on up to ``MUTANTS_SAMPLE`` (default 150) of its mutants not checked yet, drawn at random;
    results are kept in mutants/, so the next run checks others. Posargs name modules to run
    (default: all of `MUTATED`). Ends with the score per module.
    """
    session.install("-e", ".[test]", "mutmut==3.8.1")
    seconds = str(int(float(os.environ.get("MUTANTS_MINUTES", "7")) * 60))
    sample = os.environ.get("MUTANTS_SAMPLE", "150")
    for module in session.posargs or MUTATED:
        pending = session.run(
            "python", "tools/mutant_score.py", "--pending", module, "--sample", sample,
            silent=True,
        )
        # No mutants made yet (a first run): the whole module, cheapest mutants first.
        targets = str(pending or "").split() or [f"{module}.*"]
        session.run(
            "nice", "-n", "10", "timeout", "--signal=INT", seconds,
            "mutmut", "run", "--max-children", "1", *targets,
            external=True, success_codes=[0, 124, 130],
        )
    session.run("python", "tools/mutant_score.py")
