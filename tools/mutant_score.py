"""What the last `nox -s mutants` run made of its mutants (read from mutants/).

``python tools/mutant_score.py`` prints killed / survived / timeout / other / not checked per
mutated module and lists the survivors (a mutant's diff: ``mutmut show <name>``).

``python tools/mutant_score.py --pending MODULE [--sample N]`` prints the names of MODULE's
mutants not checked yet, one per line (at most N, drawn at random with a fixed seed, so a
time-boxed run samples every function instead of the cheapest ones first).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", None: "not checked"}
COLUMNS = ("killed", "survived", "timeout", "other", "not checked")


def score(root: Path) -> int:
    metas = sorted(root.glob("**/*.py.meta"))
    if not metas:
        print(f"no mutation results under {root}/; run `nox -s mutants` first")
        return 1
    survivors: list[str] = []
    print(f"{'module':<34}" + "".join(f"{c:>13}" for c in COLUMNS) + f"{'score':>8}")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(STATUS.get(code, "other") for code in codes.values())
        # A timeout is no kill: on a loaded machine mutmut times out mutants that cannot hang
        # (a changed label, say), so the score counts only mutants a test really failed on.
        tried = counts["killed"] + counts["survived"]
        rate = f"{100 * counts['killed'] / tried:.0f}%" if tried else "-"
        module = str(meta.relative_to(root)).removesuffix(".py.meta")
        print(f"{module:<34}" + "".join(f"{counts[c]:>13}" for c in COLUMNS) + f"{rate:>8}")
        survivors += sorted(k for k, code in codes.items() if code == 0)
    if survivors:
        print("\nsurvived:")
        print("\n".join(f"  {name}" for name in survivors))
    return 0


def pending(root: Path, module: str, sample: int | None) -> int:
    meta = root / (module.replace(".", "/") + ".py.meta")
    if not meta.exists():
        return 0  # no mutants made yet: the caller runs the whole module
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    names = sorted(k for k, code in codes.items() if code is None)
    if sample is not None and len(names) > sample:
        names = sorted(random.Random(0).sample(names, sample))
    print("\n".join(names))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--pending", metavar="MODULE")
    parser.add_argument("--sample", type=int)
    args = parser.parse_args()
    if args.pending:
        return pending(args.root, args.pending, args.sample)
    return score(args.root)


if __name__ == "__main__":
    sys.exit(main())
