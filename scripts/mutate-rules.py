#!/usr/bin/env python3
"""Mutation check of the alert rules: does some promtool unit test fail when one number, `for` or operator changes?

Each mutant changes one thing in alerts/*.rules.yaml: a numeric threshold (a comparison's number or a recorded
lensing:alert_threshold value) times 0.9 or 1.1, an alert's `for` halved, or one `>`/`>=`, `<`/`<=` swapped.
`promtool test rules` runs alerts/tests/*.test.yaml against every mutant (2 workers); a mutant whose tests still
pass survives. Survivors listed in alerts/tests/equivalent-mutants.txt (with the reason they cannot be told apart)
are reported but not counted as missed.

Usage: scripts/mutate-rules.py [--min-kill 0.9] [--jobs 2] [--list]
Exit 0 at or above --min-kill, 1 below it, 2 on bad input.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "alerts"
ALLOW_LIST = ALERTS / "tests" / "equivalent-mutants.txt"

# What the scanner skips (strings, range selectors, offsets, durations) and what it mutates (numbers, operators).
TOKEN = re.compile(
    r'(?P<skip>"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\boffset\s+\w+|histogram_quantile\(\s*[\d.]+|[=!]=\s*[\d.]+)'
    r"|(?P<num>(?<![\w.])\d+(?:\.\d+)?(?![\w.]))"
    r"|(?P<op>>=|<=|(?<![=!<>])[<>](?!=))"
)
SWAP = {">": ">=", ">=": ">", "<": "<=", "<=": "<"}


@dataclass(frozen=True)
class Mutant:
    ident: str  # stable: "<rule id>: <what changed>", the key of the allow-list
    group: int
    rule: int
    field: str
    text: str


def rule_id(rule: dict[str, Any]) -> str:
    name = rule.get("alert") or rule.get("record")
    extra = rule.get("labels", {}).get("threshold") or rule.get("labels", {}).get("long")
    return f"{name}[{extra}]" if extra else str(name)


def fmt(value: float) -> str:
    return f"{value:.6g}"


def halve(duration: str) -> str:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))
    return f"{seconds // 2}s"


def expr_mutants(expr: str) -> Iterator[tuple[str, str]]:
    """(what changed, mutated expr); "the 2nd >" names a token by its rank among the same tokens."""
    seen: dict[str, int] = {}
    for match in TOKEN.finditer(expr):
        start, end = match.span()
        token = match["num"] or match["op"]
        if token:
            seen[token] = seen.get(token, 0) + 1
            nth = f"#{seen[token]}"
        if match["num"]:
            value = float(match["num"])
            if value == 0:
                continue  # 0 * 0.9 == 0: the operator swap is the mutant of a comparison with 0
            for factor in (0.9, 1.1):
                new = fmt(value * factor)
                yield f"{match['num']}{nth} -> {new}", expr[:start] + new + expr[end:]
        elif match["op"]:
            new = SWAP[match["op"]]
            yield f"{match['op']}{nth} -> {new}", expr[:start] + new + expr[end:]


def mutants(groups: list[dict[str, Any]]) -> Iterator[Mutant]:
    for g, group in enumerate(groups):
        for r, rule in enumerate(group["rules"]):
            rid = rule_id(rule)
            if "alert" not in rule and rule.get("record") != "lensing:alert_threshold":
                continue  # the SLO recording rules hold no threshold
            for what, text in expr_mutants(rule["expr"]):
                yield Mutant(f"{rid}: {what}", g, r, "expr", text)
            if "for" in rule:
                new = halve(rule["for"])
                yield Mutant(f"{rid}: for {rule['for']} -> {new}", g, r, "for", new)


def load_allow_list() -> dict[str, str]:
    """`<mutant id>  # why it is equivalent` per line; lines starting with # are comments."""
    allowed: dict[str, str] = {}
    if not ALLOW_LIST.exists():
        return allowed
    for line in ALLOW_LIST.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        ident, _, why = line.partition("  # ")
        if not why.strip():
            raise SystemExit(f"{ALLOW_LIST}: every entry needs '  # <why it is equivalent>': {line!r}")
        allowed[ident.strip()] = why.strip()
    return allowed


def affected_alerts(groups: list[dict[str, Any]], mutant: Mutant) -> set[str]:
    """The alerts whose output a mutant can change: its own, or every alert that reads a mutated threshold."""
    rule = groups[mutant.group]["rules"][mutant.rule]
    if "alert" in rule:
        return {rule["alert"]}
    name = rule["labels"]["threshold"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r and f'threshold="{name}"' in r["expr"]}


def mutant_files(
    groups: list[dict[str, Any]], mutant: Mutant, suites: list[tuple[str, list[dict[str, Any]]]]
) -> tuple[str, list[str]]:
    """(rules, tests) for one mutant, cut down to what it can change so that ~100 mutants run in about a minute:
    the recording rules, the affected alerts, and the test groups and cases that assert on those alerts, one
    test group a file (boundaries.test.yaml's first: they are the ones that kill most mutants)."""
    alerts = affected_alerts(groups, mutant)
    kept: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        rules = []
        for r, rule in enumerate(group["rules"]):
            if "record" in rule or rule.get("alert") in alerts:
                if (g, r) == (mutant.group, mutant.rule):
                    rule = {**rule, mutant.field: mutant.text}
                rules.append(rule)
        if rules:
            kept.append({**group, "rules": rules})
    files = []
    for interval, tests in suites:
        for test in tests:
            asserts = [c for c in test.get("alert_rule_test") or [] if c["alertname"] in alerts]
            if asserts:
                case = {k: v for k, v in test.items() if k != "promql_expr_test"} | {"alert_rule_test": asserts}
                doc = {"rule_files": ["rules.yaml"], "evaluation_interval": interval, "tests": [case]}
                files.append(yaml.safe_dump(doc, width=1000))
    return yaml.safe_dump({"groups": kept}, sort_keys=False, width=1000), files


def passes(rules_text: str, tests: list[str]) -> bool:
    """True when promtool's unit tests pass against rules_text (for a mutant: it survives). The test groups
    run one by one and the first failure ends it: a killed mutant costs only the groups up to its killer."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        root = Path(tmp)
        (root / "rules.yaml").write_text(rules_text)
        for text in tests:
            (root / "test.yaml").write_text(text)
            command = ["promtool", "test", "rules", "test.yaml"]
            result = subprocess.run(command, cwd=root, capture_output=True, timeout=300)
            if result.returncode != 0:
                return False
        return True


def load_tests(paths: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(evaluation interval, test groups) of each file; BaseLoader keeps each scalar the string promtool reads
    (safe_load would turn `values: 0x20` into 32)."""
    suites = []
    for path in paths:
        doc = yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # BaseLoader builds no objects
        suites.append((doc.get("evaluation_interval", "1m"), doc["tests"]))
    return suites


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-kill", type=float, default=0.9, help="fraction of mutants the tests must kill")
    parser.add_argument("--jobs", type=int, default=2, help="promtool runs in parallel")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    args = parser.parse_args()
    if not 0 <= args.min_kill <= 1 or args.jobs < 1:
        print("mutate-rules: --min-kill takes 0..1 and --jobs a positive integer", file=sys.stderr)
        return 2

    rule_files = sorted(ALERTS.glob("*.rules.yaml"))
    tests = sorted((ALERTS / "tests").glob("*.test.yaml"))
    if len(rule_files) != 1 or not tests:
        print("mutate-rules: expects one alerts/*.rules.yaml and alerts/tests/*.test.yaml", file=sys.stderr)
        return 2
    source = yaml.safe_load(rule_files[0].read_text())
    todo = list(mutants(source["groups"]))
    if args.list:
        print("\n".join(m.ident for m in todo))
        return 0
    if shutil.which("promtool") is None:
        print("mutate-rules: promtool not on PATH (make tools installs it)", file=sys.stderr)
        return 2
    groups, cases = source["groups"], load_tests(tests)
    # controls: each alert unchanged, through the same cutting, must pass (else the cutting, not the tests, kills)
    controls = [
        Mutant(f"{rule['alert']} unchanged", g, r, "expr", rule["expr"])
        for g, group in enumerate(groups)
        for r, rule in enumerate(group["rules"])
        if "alert" in rule
    ]

    def survives(mutant: Mutant) -> bool:
        return passes(*mutant_files(groups, mutant, cases))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(survives, controls + todo))
    broken = [c.ident for c, ok in zip(controls, results, strict=False) if not ok]
    if broken:
        print(f"mutate-rules: the unit tests fail against the unmutated rules: {', '.join(broken)}", file=sys.stderr)
        return 1
    outcome = dict(zip(todo, results[len(controls) :], strict=True))
    allowed = load_allow_list()
    survivors = [m for m, alive in outcome.items() if alive]
    equivalent = [m for m in survivors if m.ident in allowed]
    missed = [m for m in survivors if m.ident not in allowed]
    stale = sorted(set(allowed) - {m.ident for m in survivors})
    counted = len(todo) - len(equivalent)
    kill = (counted - len(missed)) / counted if counted else 1.0
    print(f"mutate-rules: {len(todo)} mutants, {len(todo) - len(survivors)} killed, {len(equivalent)} equivalent")
    for m in equivalent:
        print(f"  equivalent: {m.ident}  # {allowed[m.ident]}")
    for m in missed:
        print(f"  SURVIVED:   {m.ident}")
    for ident in stale:
        print(f"  allow-listed but killed (remove from {ALLOW_LIST.name}): {ident}")
    print(f"mutate-rules: kill rate {kill:.1%} (minimum {args.min_kill:.0%})")
    return 0 if kill >= args.min_kill and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
