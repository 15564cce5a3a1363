"""The docs stay true: every ```python block in README.md and docs/**/*.md runs as written.

Each Markdown file's blocks run in order, in one namespace (a throwaway module, so Records and
functions defined there behave as in a real module), with a temporary directory as the working
directory. A block right after a ``<!-- no-test -->`` line is skipped: use that only for
snippets that need a shell, the CLI or a Kafka broker. Tracebacks point at the Markdown lines.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

import flowgraph

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NO_TEST = "<!-- no-test -->"
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first line number, code)`` of each tested python block of `path`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        found = _FENCE.match(lines[i])
        if not found:
            i += 1
            continue
        indent, fence, lang = found.groups()
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            pytest.fail(f"{path.relative_to(ROOT)}:{i + 1}: code fence is never closed")
        previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        if lang in ("python", "py") and previous != NO_TEST:
            code = "\n".join(ln.removeprefix(indent) for ln in lines[start:end])
            blocks.append((start + 1, code))
        i = end + 1
    return blocks


def _id(path: Path) -> str:
    return str(path.relative_to(DOCS if path.is_relative_to(DOCS) else ROOT))


@pytest.mark.parametrize("path", markdown_files(), ids=_id)
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the file's python blocks in order, in one module namespace, in a temporary cwd."""
    monkeypatch.chdir(tmp_path)
    name = "docs_" + re.sub(r"\W", "_", _id(path).removesuffix(".md"))
    module = types.ModuleType(name)
    module.__file__ = str(path)
    monkeypatch.setitem(sys.modules, name, module)
    for first_line, code in python_blocks(path):
        # Padding keeps line numbers: a traceback names the Markdown file and line.
        source = "\n" * (first_line - 1) + code
        exec(compile(source, str(path), "exec"), module.__dict__)


def test_docs_have_examples() -> None:
    """The docs exist and hold tested examples (an empty glob must not pass silently)."""
    assert markdown_files(), "no Markdown files under docs/"
    assert sum(len(python_blocks(p)) for p in markdown_files()) >= 10


@pytest.mark.parametrize("path", markdown_files(), ids=_id)
def test_relative_links_resolve(path: Path) -> None:
    """Links from one doc page to another point at files that exist."""
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in _LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        file_part = target.split("#", 1)[0]
        if file_part and not (path.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{_id(path)} links to missing files: {broken}"


def test_api_reference_covers_public_names() -> None:
    """Every name in `flowgraph.__all__` and every public member of the handles is documented."""
    text = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    names = [*flowgraph.__all__]
    for cls in (
        flowgraph.Stream,
        flowgraph.Table,
        flowgraph.WindowedStream,
        flowgraph.WindowedTable,
        flowgraph.WindowedTableView,
        flowgraph.WindowSet,
    ):
        names += [f"{cls.__name__}.{m}" for m in vars(cls) if not m.startswith("_")]
    missing = [n for n in names if f"`{n}" not in text and f"{n}(" not in text]
    assert not missing, f"docs/reference/api.md does not document {missing}; add them"
