"""``flowgraph run --input`` with a join that waits for its table (``catch_up=``): orders of
last week and prices of today, fed from files before the tasks start, in the real console
script. With the wait every order finds its price; without it none does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import flowgraph

pytestmark = pytest.mark.integration

JOB = """\
import json
import sys

import flowgraph as fg


def item(order):
    return order["item"]


def priced(order, price):
    return {**order, "price": price}


def shop(catch_up):
    g = fg.Graph("shop")
    prices = g.source("prices", key_type=str, value_type=int, partitions=3).to_table(name="price")
    orders = g.source("orders", key_type=str, value_type="json", partitions=2)
    orders.key_by(item).join(prices, priced, how="left", catch_up=catch_up).to(
        lambda k, v: print("priced", json.dumps(v), flush=True), name="show"
    )
    return g
"""

WEEK_AGO, TODAY = 1764000000, 1764600000


def test_a_backfilled_table_is_read_before_older_orders_are_joined(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(JOB)
    items = [f"i{n}" for n in range(8)]
    with (tmp_path / "orders.jsonl").open("w") as f:
        for n in range(20):
            order = {"order": f"o{n}", "item": items[n % 8]}
            f.write(json.dumps({"key": f"o{n}", "value": order, "timestamp": WEEK_AGO + n}) + "\n")
    with (tmp_path / "prices.jsonl").open("w") as f:
        for n, it in enumerate(items):
            f.write(json.dumps({"key": it, "value": n, "timestamp": TODAY + n}) + "\n")
    got = {}
    for catch_up in (10, 0):
        done = flowgraph(
            "run",
            f"shop.py:shop({catch_up})",
            "--input",
            "orders=orders.jsonl",
            "--input",
            "prices=prices.jsonl",
            "--input-format",
            "records",
            "--store",
            "memory://",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        lines = [
            json.loads(ln.split(" ", 1)[1])
            for ln in done.stdout.splitlines()
            if ln.startswith("priced ")
        ]
        got[catch_up] = {v["order"]: v["price"] for v in lines}
    assert got[10] == {f"o{n}": n % 8 for n in range(20)}
    assert got[0] == {f"o{n}": None for n in range(20)}  # the table as of processing
