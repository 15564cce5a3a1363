"""The plan pictures in docs/images stay true: each is what tools/doc_pictures.py draws now,
from an example whose lines are the ones its page shows, and each is shown by its page."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
RUN = "run `python tools/doc_pictures.py` and commit docs/images"


def _load() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "doc_pictures", ROOT / "tools" / "doc_pictures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs resolves the module of its classes
    spec.loader.exec_module(module)
    return module


doc_pictures = _load()
NAMES = sorted(doc_pictures.EXAMPLES)


@pytest.fixture(scope="module")
def drawn() -> dict[str, str]:
    pictures: dict[str, str] = doc_pictures.pictures()
    return pictures


@pytest.mark.parametrize("name", NAMES)
def test_committed_picture_is_what_the_script_draws(name: str, drawn: dict[str, str]) -> None:
    path = IMAGES / f"{name}.svg"
    assert path.exists(), f"docs/images/{name}.svg is missing: {RUN}"
    assert path.read_text(encoding="utf-8") == drawn[name], (
        f"docs/images/{name}.svg differs from what the planner draws now: {RUN}"
    )


def test_every_committed_picture_has_an_example() -> None:
    stray = sorted(p.name for p in IMAGES.glob("*.svg") if p.stem not in NAMES)
    assert not stray, f"docs/images holds pictures no example draws: {stray}; delete them"


@pytest.mark.parametrize("name", NAMES)
def test_example_is_the_code_its_page_shows(name: str) -> None:
    """Each line of the example is a line of the page, so the picture shows the page's code."""
    example = doc_pictures.EXAMPLES[name]
    page = (ROOT / example.page).read_text(encoding="utf-8").splitlines()
    missing = [ln for ln in example.source.splitlines() if ln.strip() and ln not in page]
    assert not missing, (
        f"example {name!r} in tools/doc_pictures.py has lines {example.page} no longer shows: "
        f"{missing}; update the example to the page, then {RUN}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_picture_is_shown_by_its_page(name: str) -> None:
    example = doc_pictures.EXAMPLES[name]
    text = (ROOT / example.page).read_text(encoding="utf-8")
    assert f"](../images/{name}.svg)" in text, f"{example.page} does not show {name}.svg"


def test_script_writes_the_pictures_and_prints_explain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(doc_pictures, "IMAGES", tmp_path / "images")
    monkeypatch.setattr(doc_pictures, "ROOT", tmp_path)
    assert doc_pictures.main([]) == 0
    assert sorted(p.stem for p in (tmp_path / "images").glob("*.svg")) == NAMES
    assert doc_pictures.main([]) == 0
    (tmp_path / "images" / "old.svg").write_text("<svg/>")
    assert doc_pictures.main([]) == 1  # a picture no example draws is reported
    capsys.readouterr()
    assert doc_pictures.main(["--text", "enrich-clicks"]) == 0
    assert "cut: key changed by 'app.user_of' at app.py:" in capsys.readouterr().out
