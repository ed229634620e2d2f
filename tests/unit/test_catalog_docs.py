"""The metric tables of README.md and docs/*.md and lensing_core/catalog.py list the same metrics."""

from __future__ import annotations

import re
from pathlib import Path

from lensing_core.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METRIC_TABLE_HEADER = "| metric | meaning |"  # the exported series; "| metric | value per `queue` |" is the HPA's
NAMED = re.compile(r"`([a-z_][a-z0-9_]*)(?:\{([a-z_,]*)\})?`")


def documented() -> dict[str, list[tuple[str, set[str]]]]:
    """metric -> [(where, labels written next to it)] for every name in the first column of a metric table."""
    found: dict[str, list[tuple[str, set[str]]]] = {}
    for path in DOCS:
        in_table = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() == METRIC_TABLE_HEADER:
                in_table = True
                continue
            if not line.startswith("|"):
                in_table = False
            if not in_table or line.startswith("| ---"):
                continue
            first_column = line.split("|")[1]
            for name, labels in NAMED.findall(first_column):
                where = f"{path.relative_to(ROOT)}:{number}"
                found.setdefault(name, []).append((where, set(filter(None, labels.split(",")))))
    return found


def test_every_documented_metric_is_in_the_catalog_with_its_labels() -> None:
    docs = documented()
    assert docs, "no metric tables found: the header changed?"
    unknown = {name: [w for w, _ in places] for name, places in docs.items() if name not in CATALOG}
    assert not unknown, f"documented but not in lensing_core/catalog.py: {unknown}"
    for name, places in docs.items():
        spec = CATALOG[name]
        for where, labels in places:
            assert labels <= {*spec.labels, *spec.optional_labels}, f"{where}: {name}{sorted(labels)} vs {spec}"


def test_every_catalogued_metric_is_documented() -> None:
    missing = sorted(set(CATALOG) - set(documented()))
    assert not missing, f"in the catalog but in no `{METRIC_TABLE_HEADER}` table of README.md or docs/: {missing}"


def test_every_catalogued_metric_has_help_text() -> None:
    assert [name for name, spec in CATALOG.items() if not spec.help.strip()] == []
