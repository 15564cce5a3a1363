"""Execute every notebook under notebooks/ in a fresh kernel; exit non-zero on the first error."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        print("no notebooks found under notebooks/", file=sys.stderr)
        return 1
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}
        ).execute()
        print(f"ok  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
