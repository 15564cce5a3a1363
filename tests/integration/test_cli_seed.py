"""Faust's README programs (examples/faust_*.py) under the real ``flowgraph`` command.

The commands are the ones the examples' docstrings give, on the embedded broker with
``--input`` files; the printed lines, the summary and the table left in RocksDB are
checked against plain Python over the same input.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import ROOT, flowgraph, persisted, summary_number, summary_row

pytestmark = pytest.mark.integration

CLICKS = ROOT / "examples" / "faust_clicks.py"
ORDERS = ROOT / "examples" / "faust_orders.py"
ORDER_AGENT = ROOT / "examples" / "faust_order_agent.py"


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def click_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` clicks as ``--input-format records`` lines: the URL as key, a count as value."""
    rng = random.Random(seed)
    return [
        {"key": f"http://example.com/{rng.randrange(150)}", "value": rng.randint(1, 5)}
        for _ in range(n)
    ]


def test_click_counter_runs_from_a_file_and_counts_exactly(tmp_path: Path) -> None:
    rows = click_rows(3_000, seed=1)
    expected = Counter[str]()
    for row in rows:
        expected[row["key"]] += row["value"]
    state = tmp_path / "state"
    done = flowgraph(
        "run",
        f"{CLICKS}:app",
        "--broker",
        "memory://",
        "--store",
        f"rocksdb://{state}",
        "--input",
        f"clicks={write_lines(tmp_path / 'clicks.jsonl', rows)}",
        "--input-format",
        "records",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "running graph 'myapp' on memory://" in out
    assert summary_number(out, "events") == len(rows)
    assert summary_number(out, "dead letters") == 0
    steps, tables = out.split("\n  tables:\n")
    for step in ("clicks", "count_click", "click_counts"):
        assert summary_row(steps, step) == str(len(rows))
    assert summary_row(tables, "click_counts") == f"{len(expected)} keys"
    assert persisted(state, "myapp-click_counts", partitions=8) == dict(expected)


def test_a_module_without_graph_runs_its_app(tmp_path: Path) -> None:
    """No ``:app``: the command takes the module's ``app`` when it has no ``graph``."""
    rows = click_rows(200, seed=2)
    done = flowgraph(
        "run",
        str(CLICKS),
        "--broker",
        "memory://",
        "--store",
        "memory://",
        "--input",
        f"clicks={write_lines(tmp_path / 'clicks.jsonl', rows)}",
        "--input-format",
        "records",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "summary of graph 'myapp'" in done.stdout
    assert summary_number(done.stdout, "events") == len(rows)
    _, tables = done.stdout.split("\n  tables:\n")
    assert summary_row(tables, "click_counts") == f"{len({r['key'] for r in rows})} keys"


def test_the_apps_own_broker_is_the_default(tmp_path: Path) -> None:
    """Without ``--broker`` the run is on the app's ``kafka://localhost`` (port 9092), which
    ``--input`` (an embedded-broker feature) then refuses in one line, before connecting."""
    path = write_lines(tmp_path / "clicks.jsonl", click_rows(3, seed=3))
    done = flowgraph(
        "run", str(CLICKS), "--input", f"clicks={path}", "--input-format", "records", cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "the app names broker='kafka://localhost:9092'; pass --broker memory://" in line


def test_explain_shows_the_agent_and_its_table(tmp_path: Path) -> None:
    done = flowgraph("explain", f"{CLICKS}:app", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["graph"] == "myapp"
    steps = {s["id"]: s for s in plan["steps"]}
    assert steps["count_click"]["kind"] == "agent"
    assert steps["count_click"]["inputs"] == ["clicks"]
    assert steps["click_counts"]["kind"] == "table"
    assert steps["click_counts"]["inputs"] == ["count_click"]
    assert steps["click_counts"]["store"] == "myapp-click_counts"
    (sub,) = plan["subtopologies"]
    assert sub["partitions"] == 8

    text = flowgraph("explain", str(CLICKS), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "Graph 'myapp'" in text.stdout
    assert any(ln.split()[:2] == ["count_click", "agent"] for ln in text.stdout.splitlines())
    assert "myapp-click_counts-changelog" in text.stdout


def test_order_printer_prints_each_order(tmp_path: Path) -> None:
    orders = [{"account_id": f"acct-{i}", "amount": i % 7} for i in range(50)]
    orders[3]["__faust"] = {"ns": "examples.Order"}  # as Faust's json serializer writes it
    done = flowgraph(
        "run",
        str(ORDERS),
        "--broker",
        "memory://",
        "--store",
        "memory://",
        "--input",
        f"myapp-order={write_lines(tmp_path / 'orders.jsonl', orders)}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("Order for ")]
    expected = [f"Order for acct-{i}: {i % 7}" for i in range(50)]
    assert Counter(lines) == Counter(expected)
    assert summary_number(done.stdout, "events") == 50


def test_order_agent_sends_one_email_per_order(tmp_path: Path) -> None:
    orders = [
        {"account_id": "a", "product_id": "p1", "price": 2.5},
        {"account_id": "b", "product_id": "p2", "price": 10.0, "amount": 3.0},
    ]
    done = flowgraph(
        "run",
        str(ORDER_AGENT),
        "--broker",
        "memory://",
        "--store",
        "memory://",
        "--input",
        f"orders={write_lines(tmp_path / 'orders.jsonl', orders)}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    emails = sorted(ln for ln in done.stdout.splitlines() if ln.startswith("email to "))
    assert emails == [
        "email to a: order of 1.0 x p1 received",
        "email to b: order of 3.0 x p2 received",
    ]
