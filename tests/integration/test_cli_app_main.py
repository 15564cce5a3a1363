"""`app.main()`: a Faust script run as ``python app.py worker -l info`` runs `flowgraph run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """\
import flowgraph as faust

app = faust.App("mainapp", broker="memory://", store="memory://", topic_partitions=2)
clicks = app.topic("clicks", key_type=str, value_type=int)
counts = app.Table("click_counts", default=int)


@app.agent(clicks)
async def count_click(stream):
    async for url, n in stream.items():
        counts[url] += n


if __name__ == "__main__":
    app.main()
"""


def test_a_faust_style_script_runs_itself(tmp_path: Path) -> None:
    script = tmp_path / "mainapp.py"
    script.write_text(SCRIPT)
    data = tmp_path / "clicks.jsonl"
    data.write_text(
        '{"key": "a", "value": 2}\n{"key": "b", "value": 1}\n{"key": "a", "value": 3}\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "worker",
            "-l",
            "info",
            "--input",
            f"clicks={data}",
            "--input-format",
            "records",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "events:       3" in done.stdout
    assert "click_counts           2 keys" in done.stdout
