#!/usr/bin/env python3
"""Copy dashboards/*.json and the rule files of alerts/ into the chart (charts/lensing-metrics/files/).

The repository's dashboards/ and alerts/ are the one source of truth; the chart's copies are what `helm package`
ships. Run by `make chart-files` (and so by `make test`); tests/chart/ fails if the copies or what the chart
renders from them differ from the sources. Rule files are the YAML files with a top-level `groups` key; promtool
unit-test files (`rule_files`, `tests`) stay out of the chart.

    python scripts/sync_chart_files.py [--check]     # --check: report differences, change nothing (exit 1)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART_FILES = ROOT / "charts" / "lensing-metrics" / "files"


def is_rule_file(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SystemExit(f"sync_chart_files: {path.relative_to(ROOT)} is not valid YAML: {exc}") from exc
    return isinstance(doc, dict) and "groups" in doc


def wanted(root: Path = ROOT) -> dict[str, bytes]:
    """Relative path under files/ -> content, for every file the chart should carry."""
    files: dict[str, bytes] = {}
    for path in sorted((root / "dashboards").glob("*.json")):
        files[f"dashboards/{path.name}"] = path.read_bytes()
    alerts = root / "alerts"
    for path in sorted([*alerts.rglob("*.yaml"), *alerts.rglob("*.yml")]):
        if is_rule_file(path):
            files[f"alerts/{path.relative_to(alerts).as_posix()}"] = path.read_bytes()
    return files


def present(chart_files: Path = CHART_FILES) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for sub in ("dashboards", "alerts"):
        for path in sorted((chart_files / sub).rglob("*")):
            if path.is_file():
                files[path.relative_to(chart_files).as_posix()] = path.read_bytes()
    return files


def differences(root: Path = ROOT, chart_files: Path = CHART_FILES) -> list[str]:
    want, have = wanted(root), present(chart_files)
    out = [f"missing in chart: {name}" for name in sorted(want.keys() - have.keys())]
    out += [f"not in {name.split('/')[0]}/ any more: {name}" for name in sorted(have.keys() - want.keys())]
    out += [f"differs: {name}" for name in sorted(want.keys() & have.keys()) if want[name] != have[name]]
    return out


def sync(root: Path = ROOT, chart_files: Path = CHART_FILES) -> list[str]:
    changes = differences(root, chart_files)
    want = wanted(root)
    for name in present(chart_files).keys() - want.keys():
        (chart_files / name).unlink()
    for name, content in want.items():
        target = chart_files / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
    for sub in ("dashboards", "alerts"):  # drop directories left empty by removed files
        for directory in sorted((chart_files / sub).rglob("*"), reverse=True):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report differences and exit 1, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        diffs = differences()
        for line in diffs:
            print(f"sync_chart_files: {line}", file=sys.stderr)
        return 1 if diffs else 0
    for line in sync():
        print(f"sync_chart_files: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
