"""Mutation testing of the code whose numbers reach an autoscaler (`make mutation`, docs/testing.md).

Runs mutmut over the modules and fast tests named in pyproject.toml's ``[tool.mutmut]`` and prints, per
module, the share of mutants the tests kill, then the survivors (``mutmut show NAME`` prints one's diff).
Exit 1 when a module is below --min-kill-rate, 2 on bad arguments.

    .venv/bin/python scripts/mutation.py [--max-children 1] [--min-kill-rate 85] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# mutmut's exit codes (mutmut/stats.py): a timeout is a kill (the mutant made the tests hang, so they noticed)
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def tally(path: str) -> tuple[Counter[str], list[str]]:
    meta = ROOT / "mutants" / (path + ".meta")
    if not meta.exists():
        raise SystemExit(f"no results for {path} ({meta} missing): run without --report-only first")
    exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    counts: Counter[str] = Counter()
    survivors = []
    for name, code in sorted(exit_codes.items()):
        if code in KILLED:
            counts["killed"] += 1
        elif code in SURVIVED:
            counts["survived"] += 1
            survivors.append(name)
        elif code in NO_TESTS:
            counts["no tests"] += 1
            survivors.append(name)
        else:
            counts["not checked" if code is None else "other"] += 1
            survivors.append(name)
    return counts, survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1)")
    parser.add_argument("--min-kill-rate", type=float, default=85.0, help="percent per module (default 85)")
    parser.add_argument("--report-only", action="store_true", help="print the last run's results, run nothing")
    args = parser.parse_args(argv)
    if args.max_children < 1 or not 0 <= args.min_kill_rate <= 100:
        parser.error("--max-children takes 1 or more, --min-kill-rate a percentage 0-100")

    started = time.monotonic()
    if not args.report_only:
        mutmut = Path(sys.executable).with_name("mutmut")
        run = subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children)], cwd=ROOT, check=False)
        if run.returncode != 0:
            print(f"mutmut run failed (exit {run.returncode})", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started

    below, lines, all_survivors = [], [], []
    for path in modules():
        counts, survivors = tally(path)
        total = sum(counts.values())
        rate = 100.0 * counts["killed"] / total if total else 100.0
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "killed") or "none left"
        lines.append(f"{path:34} {counts['killed']:4}/{total:<4} killed  {rate:5.1f} %   ({detail})")
        all_survivors += survivors
        if rate < args.min_kill_rate:
            below.append(path)
    print()
    print("\n".join(lines))
    if all_survivors:
        print(f"\n{len(all_survivors)} not killed (mutmut show NAME):")
        print("\n".join("  " + name for name in all_survivors))
    if not args.report_only:
        print(f"\nmutmut run took {elapsed:.0f} s with --max-children {args.max_children}")
    if below:
        print(f"below {args.min_kill_rate:g} % killed: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
