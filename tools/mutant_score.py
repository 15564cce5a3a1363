"""Per module, what the last `nox -s mutants` run made of its mutants (read from mutants/).

Prints killed / survived / timeout / other / not checked for each mutated module, and lists
the survivors (a mutant's diff: ``mutmut show <name>``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", None: "not checked"}
COLUMNS = ("killed", "survived", "timeout", "other", "not checked")


def main(root: Path) -> int:
    metas = sorted(root.glob("**/*.py.meta"))
    if not metas:
        print(f"no mutation results under {root}/; run `nox -s mutants` first")
        return 1
    survivors: list[str] = []
    print(f"{'module':<34}" + "".join(f"{c:>13}" for c in COLUMNS) + f"{'score':>8}")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(STATUS.get(code, "other") for code in codes.values())
        tried = counts["killed"] + counts["survived"] + counts["timeout"]
        score = f"{100 * (counts['killed'] + counts['timeout']) / tried:.0f}%" if tried else "-"
        module = str(meta.relative_to(root)).removesuffix(".py.meta")
        print(f"{module:<34}" + "".join(f"{counts[c]:>13}" for c in COLUMNS) + f"{score:>8}")
        survivors += sorted(k for k, code in codes.items() if code == 0)
    if survivors:
        print("\nsurvived:")
        print("\n".join(f"  {name}" for name in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "mutants")))
