"""The benchmarks still run: each script, on small inputs, to its table and a zero exit.

Figures come from ``nox -s bench``, not from here; this only keeps the scripts working as the
code under them changes (a renamed internal once broke bench_kafka.py unnoticed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("bench_clicks.py", ["--records", "20000", "--rounds", "1"], "rocksdb"),
        (
            "bench_windows.py",
            ["--records", "20000", "--rounds", "1", "--verify-records", "5000"],
            "hopping/rocksdb",
        ),
        (
            "bench_joins.py",
            ["--records", "20000", "--keys", "2000", "--rounds", "1"],
            "session/rocksdb",
        ),
        ("bench_kafka.py", ["--records", "5000", "--restore-records", "5000"], "restore from"),
        ("bench_faust.py", ["--records", "5000", "--rounds", "1"], "agent / builder"),
        ("bench_async.py", ["--records", "1000", "--rounds", "1"], "slow"),
        ("bench_startup.py", ["--partitions", "4", "--records-per-partition", "100"], "first"),
        (
            "bench_scale.py",
            ["--records", "4000", "--sizes", "2", "--kinds", "raw", "flowgraph", "one-hop"],
            "ours/raw",
        ),
        ("bench_failover.py", ["--keys", "2000", "--session-timeout-ms", "2000"], "takeover"),
        (
            "bench_restore.py",
            ["--records", "20000", "--keys", "2000", "--repeat", "1"],
            "records/s",
        ),
    ],
)
def test_a_benchmark_runs_on_a_small_input(script: str, args: list[str], expect: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert expect in done.stdout, done.stdout[-2000:]
