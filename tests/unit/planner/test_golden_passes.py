"""Golden text of the plan after every pass, for each graph in tests/golden/explain/.

Each tests/golden/passes/<case>.txt holds, per pass of the pipeline in order, a
``# --- after <pass>`` header and `planner.to_text` of the plan that pass returned. A change in
any pass's output shows up here as a readable diff; ``pytest --update-golden`` accepts it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planner import to_text
from planner.options import PlanOptions
from planner.passes import split_subtopologies
from planner.pipeline import LOGICAL_PASSES, PHYSICAL_PASSES
from tests.unit.planner.test_explain import CASES, build

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "passes"


def _stages(case: str) -> str:
    options = PlanOptions()
    logical = build(case).to_logical()
    parts = [f"# --- input\n{to_text(logical)}\n"]
    for logical_pass in LOGICAL_PASSES:
        logical = logical_pass(logical, options)
        parts.append(f"# --- after {logical_pass.__name__}\n{to_text(logical)}\n")
    physical = split_subtopologies(logical, options)
    parts.append(f"# --- after split_subtopologies\n{to_text(physical)}\n")
    for physical_pass in PHYSICAL_PASSES:
        physical = physical_pass(physical, options)
        parts.append(f"# --- after {physical_pass.__name__}\n{to_text(physical)}\n")
    return "".join(parts)


@pytest.mark.parametrize("case", CASES)
def test_every_pass_golden(case, request):
    path = GOLDEN / f"{case}.txt"
    actual = _stages(case)
    if request.config.getoption("--update-golden") or not path.exists():
        if not request.config.getoption("--update-golden"):
            pytest.fail(f"no golden file {path.name}; run pytest --update-golden to write it")
        path.write_text(actual)
        return
    assert actual == path.read_text(), f"a pass changed {case}; run pytest --update-golden"
