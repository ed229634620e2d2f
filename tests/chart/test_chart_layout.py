"""The chart's layout: one kind per template file, every ci/ value set linted and rendered by a test, Chart.yaml
complete, README.md generated from values.yaml by helm-docs and never drifting from it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, NAMESPACE, RELEASE, VALUE_SET_FILES, ci_values, helm, tool

SOURCE = re.compile(r"^# Source: [^/]+/(.+)$", re.MULTILINE)


def kinds_per_template(*args: str) -> dict[str, set[str]]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout
    kinds: dict[str, set[str]] = defaultdict(set)
    for chunk in re.split(r"^---\s*$", out, flags=re.MULTILINE):
        source = SOURCE.search(chunk)
        doc = yaml.safe_load(chunk)
        if source and doc:
            kinds[source.group(1)].add(doc["kind"])
    return kinds


@pytest.mark.parametrize("values_set", sorted(VALUE_SET_FILES))
def test_each_template_file_renders_one_kind(values_set: str) -> None:
    values, capabilities = VALUE_SET_FILES[values_set]
    kinds = kinds_per_template(*capabilities, "-f", str(ci_values(values)))
    assert kinds, values_set
    mixed = {path: sorted(k) for path, k in kinds.items() if len(k) > 1}
    assert not mixed, f"{values_set}: template files with more than one kind: {mixed}"


def test_every_ci_values_file_is_a_rendered_value_set() -> None:
    files = {p.name for p in CI_VALUES.glob("*-values.yaml")}
    assert files == {ci_values(v).name for v, _ in VALUE_SET_FILES.values()}
    assert {p.name for p in CI_VALUES.iterdir()} == files  # nothing else in ci/


@pytest.mark.parametrize("values_file", sorted(p.name for p in CI_VALUES.glob("*-values.yaml")))
def test_helm_lint_strict_each_ci_values_set(values_file: str) -> None:
    proc = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(CI_VALUES / values_file))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout, proc.stdout


def test_chart_yaml_is_complete_and_accepts_kubernetes_1_35() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for key in ("apiVersion", "name", "description", "type", "version", "appVersion", "kubeVersion", "home"):
        assert chart.get(key), key
    assert chart["sources"] and chart["keywords"]
    assert all(m.get("name") for m in chart["maintainers"])
    for version in ("v1.35.8", "v1.35.0", "v1.27.0"):
        helm("template", RELEASE, str(CHART), "--kube-version", version)
    old = helm("template", RELEASE, str(CHART), "--kube-version", "v1.26.15", check=False)
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_readme_is_what_helm_docs_generates(tmp_path: Path) -> None:
    """README.md is generated: regenerate it from a copy of the chart and compare (make chart-docs rewrites it)."""
    copy = tmp_path / "charts" / CHART.name
    shutil.copytree(CHART, copy)
    proc = subprocess.run(
        [tool("helm-docs"), "--chart-search-root", str(tmp_path / "charts"), "--template-files", "README.md.gotmpl",
         "--output-file", "README.md", "--log-level", "warning"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    generated = (copy / "README.md").read_text()
    drifted = "charts/lensing-metrics/README.md drifted from values.yaml: run `make chart-docs`"
    assert (CHART / "README.md").read_text() == generated, drifted
    assert "| adapter.tls.mode |" in generated and "| broker.existingSecret |" in generated
