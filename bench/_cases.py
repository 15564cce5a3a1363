"""What the case-per-process benchmarks (bench_windows.py, bench_joins.py) share: each case
runs in a fresh process (no memory or cache carried over), best of N rounds, cases
interleaved so a noisy moment on the machine hits every case alike."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def dir_size(path: str) -> int:
    """Bytes of the files under `path` (a RocksDB directory after close)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def child(script: str, args: list[str]) -> dict[str, Any]:
    """Run `script` with `args` in a fresh process and read its JSON answer; a crash becomes
    a problem line, not a traceback."""
    out = subprocess.run(
        [sys.executable, script, *args], check=False, capture_output=True, text=True
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"problems": [f"{' '.join(args)} crashed: {last}"], "stderr": out.stderr}
    return json.loads(out.stdout)


def best_of(
    script: str, cases: list[str], args_of: Callable[[str], list[str]], rounds: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The fastest run of each case over `rounds` interleaved rounds, and every problem."""
    problems: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for case in cases:
            r = child(script, args_of(case))
            problems += r["problems"]
            if "stderr" in r:
                sys.stderr.write(r["stderr"])
            if "rate" in r and (case not in results or r["rate"] > results[case]["rate"]):
                results[case] = r
    return results, problems


def fail_on(problems: list[str]) -> None:
    """Exit non-zero with the first problem in one line, if there are any."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        sys.exit(f"FAILED: {problems[0]}{more}")
