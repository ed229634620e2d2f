"""alerts/ and dashboards/ are the one source of truth: the chart's copies and what it renders equal them."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.sync_chart_files import differences, is_rule_file, sync
from tests.chart.conftest import (
    CHART,
    DASHBOARD_BASE,
    FIXTURE_DASHBOARD,
    QUEUE_BACKLOG_HIGH,
    RELEASE,
    ROOT,
    RUNBOOK_BASE,
    THRESHOLDS,
    Render,
    Renders,
    helm,
    tool,
)

SOURCE_RUNBOOK = "https://github.com/lensing/lensing-metrics/blob/main/docs/runbook.md"
SOURCE_GRAFANA = "https://grafana.example.com"

# "monitoring-api": the repository's own alerts/ and dashboards/ (possibly empty); "full": a fixture tree that
# proves the mechanism whatever the repository holds.
SOURCE_SETS = ["monitoring-api", "full"]


def rule_files(root: Path) -> dict[str, Path]:
    alerts = root / "alerts"
    found = sorted([*alerts.rglob("*.yaml"), *alerts.rglob("*.yml")]) if alerts.exists() else []
    return {f"alerts/{p.relative_to(alerts).as_posix()}": p for p in found if is_rule_file(p)}


def dashboard_files(root: Path) -> dict[str, Path]:
    return {f"dashboards/{p.name}": p for p in sorted((root / "dashboards").glob("*.json"))}


def rendered_rules(r: Render) -> dict[str, dict[str, object]]:
    return {d["metadata"]["annotations"]["lensing-metrics/source"]: d["spec"] for d in r.of_kind("PrometheusRule")}


def rendered_dashboards(r: Render) -> dict[str, str]:
    out = {}
    for cm in r.of_kind("ConfigMap"):
        if "lensing-metrics/source" in cm["metadata"].get("annotations", {}):
            source = cm["metadata"]["annotations"]["lensing-metrics/source"]
            (content,) = cm["data"].values()
            out[source] = content
    return out


def test_chart_copies_equal_the_sources() -> None:
    assert differences() == [], "run `make chart-files` (scripts/sync_chart_files.py)"


def test_sync_copies_adds_and_removes(tmp_path: Path) -> None:
    root, files = tmp_path / "root", tmp_path / "files"
    (root / "dashboards").mkdir(parents=True)
    (root / "alerts" / "tests").mkdir(parents=True)
    (root / "dashboards" / "a.json").write_text("{}\n")
    (root / "alerts" / "a.yaml").write_text("groups: []\n")
    (root / "alerts" / "tests" / "a_test.yaml").write_text("rule_files: [../a.yaml]\ntests: []\n")
    assert sync(root, files) == ["missing in chart: alerts/a.yaml", "missing in chart: dashboards/a.json"]
    assert sorted(p.relative_to(files).as_posix() for p in files.rglob("*") if p.is_file()) == [
        "alerts/a.yaml",
        "dashboards/a.json",
    ]
    (root / "dashboards" / "a.json").write_text('{"title": "changed"}\n')
    (root / "alerts" / "a.yaml").unlink()
    assert differences(root, files) == ["not in alerts/ any more: alerts/a.yaml", "differs: dashboards/a.json"]
    sync(root, files)
    assert differences(root, files) == []
    assert not (files / "alerts").exists() or not any((files / "alerts").iterdir())


@pytest.mark.parametrize("values_set", SOURCE_SETS)
def test_rendered_prometheus_rules_equal_alerts(renders: Renders, values_set: str) -> None:
    r = renders.get(values_set)
    sources = rule_files(r.source_root)
    rendered = rendered_rules(r)
    assert sorted(rendered) == sorted(sources)
    for name, path in sources.items():
        assert rendered[name] == yaml.safe_load(path.read_text()), name
    if values_set == "full":
        assert list(rendered) == ["alerts/fixture.yaml"]


def test_rules_render_under_force_without_the_api(renders: Renders) -> None:
    assert rendered_rules(renders.get("monitoring-forced")) == rendered_rules(renders.get("monitoring-api"))
    assert rendered_rules(renders.get("default")) == {}


@pytest.mark.parametrize("values_set", SOURCE_SETS)
def test_rendered_dashboards_equal_dashboards(renders: Renders, values_set: str) -> None:
    r = renders.get(values_set)
    sources = dashboard_files(r.source_root)
    rendered = rendered_dashboards(r)
    assert sorted(rendered) == sorted(sources)
    for name, path in sources.items():
        text = path.read_text()
        assert rendered[name].rstrip("\n") == text.rstrip("\n"), name
        assert json.loads(rendered[name]) == json.loads(text), name
    for cm in r.of_kind("ConfigMap"):
        if "lensing-metrics/source" in cm["metadata"].get("annotations", {}):
            assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    if values_set == "full":
        assert json.loads(rendered["dashboards/fixture.json"]) == FIXTURE_DASHBOARD
        (cm,) = [c for c in r.of_kind("ConfigMap") if "lensing-metrics/source" in c["metadata"]["annotations"]]
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Lensing"


def extract_rules(r: Render, workdir: Path) -> list[Path]:
    """The alerts/ tree with each rule file replaced by the spec of its rendered PrometheusRule."""
    shutil.copytree(r.source_root / "alerts", workdir, dirs_exist_ok=True)
    written = []
    for source, spec in rendered_rules(r).items():
        target = workdir / source.removeprefix("alerts/")
        target.write_text(yaml.safe_dump(spec, sort_keys=False))
        written.append(target)
    return written


@pytest.mark.parametrize("values_set", SOURCE_SETS)
def test_rendered_rules_pass_promtool_check_and_the_alerts_unit_tests(
    renders: Renders, values_set: str, tmp_path: Path
) -> None:
    r = renders.get(values_set)
    if not (r.source_root / "alerts").exists():
        assert rendered_rules(r) == {}
        return
    written = extract_rules(r, tmp_path)
    promtool = tool("promtool")
    if written:
        check = subprocess.run([promtool, "check", "rules", *map(str, written)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    unit_tests = [
        p
        for p in sorted([*tmp_path.rglob("*.yaml"), *tmp_path.rglob("*.yml")])
        if isinstance(doc := yaml.safe_load(p.read_text()), dict) and "tests" in doc
    ]
    for test_file in unit_tests:
        run = subprocess.run([promtool, "test", "rules", test_file.name], cwd=test_file.parent, capture_output=True)
        assert run.returncode == 0, f"{test_file.name}:\n{run.stdout.decode()}{run.stderr.decode()}"
    if values_set == "full":
        assert [p.name for p in unit_tests] == ["fixture_test.yaml"]


def test_the_unit_test_fixture_fails_when_the_rule_is_wrong(renders: Renders, tmp_path: Path) -> None:
    """The promtool run above is a real check: a rendered rule that drifted fails the alerts' unit test."""
    r = renders.get("full")
    extract_rules(r, tmp_path)
    rule = tmp_path / "fixture.yaml"
    rule.write_text(rule.read_text().replace("> 100", "> 1000"))
    run = subprocess.run([tool("promtool"), "test", "rules", "fixture_test.yaml"], cwd=tmp_path, capture_output=True)
    assert run.returncode != 0


def test_chart_carries_no_unit_test_files() -> None:
    for path in (CHART / "files").rglob("*.y*ml"):
        assert is_rule_file(path), path
    assert ROOT in CHART.parents


def expected_rewrite(source: dict[str, Any]) -> dict[str, Any]:
    """The source rule file with the rewrites of the "rules-rewrite" values, applied independently of the chart."""
    out = copy.deepcopy(source)
    for group in out["groups"]:
        thresholds = False
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            if "runbook_url" in annotations:
                annotations["runbook_url"] = annotations["runbook_url"].replace(SOURCE_RUNBOOK, RUNBOOK_BASE)
            if "dashboard_url" in annotations:
                annotations["dashboard_url"] = annotations["dashboard_url"].replace(SOURCE_GRAFANA, DASHBOARD_BASE)
            if rule.get("record") == "lensing:alert_threshold":
                thresholds = True
                name = rule["labels"]["threshold"]
                if name in THRESHOLDS and "queue" not in rule["labels"]:
                    rule["expr"] = f"vector({THRESHOLDS[name]})"
        if thresholds:
            group["rules"] += [
                {
                    "record": "lensing:alert_threshold",
                    "expr": f"vector({value})",
                    "labels": {"threshold": "queue_backlog_high", "queue": queue},
                }
                for queue, value in sorted(QUEUE_BACKLOG_HIGH.items())
            ]
    return out


def test_rule_rewrites_change_only_the_urls_and_thresholds(renders: Renders, tmp_path: Path) -> None:
    r = renders.get("rules-rewrite")
    rendered = rendered_rules(r)
    sources = rule_files(ROOT)
    assert sorted(rendered) == sorted(sources)
    text = json.dumps(rendered)
    assert SOURCE_RUNBOOK not in text and SOURCE_GRAFANA not in text
    assert f"{RUNBOOK_BASE}#" in text and f"{DASHBOARD_BASE}/d/" in text
    for name, path in sources.items():
        source = yaml.safe_load(path.read_text())
        assert rendered[name] == expected_rewrite(source), name
        assert rendered[name] != source  # the rewrite did something to every rule file
    # what Prometheus then records: the values set, the per-queue series, the rest untouched
    recorded = {
        (rule["labels"]["threshold"], rule["labels"].get("queue", "")): rule["expr"]
        for spec in rendered.values()
        for group in spec["groups"]
        for rule in group["rules"]
        if rule.get("record") == "lensing:alert_threshold"
    }
    assert recorded[("queue_backlog_high", "")] == "vector(250)"
    assert recorded[("task_failure_ratio", "")] == "vector(0.25)"
    assert recorded[("queue_backlog_high", "bulk")] == "vector(500)"
    assert recorded[("queue_wait_p95_seconds", "")] == "vector(600)"
    # still valid rules
    written = extract_rules(r, tmp_path)
    check = subprocess.run([tool("promtool"), "check", "rules", *map(str, written)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_rule_rewrites_refuse_unknown_thresholds(renders: Renders) -> None:
    unknown = helm(
        "template", RELEASE, str(CHART), "--set", "monitoring.force=true",
        "--set", "monitoring.rules.thresholds.queue_backlog=5", check=False,
    )  # fmt: skip
    assert unknown.returncode != 0 and "queue_backlog_high" in unknown.stderr
    # a threshold the rule files do not record (the fixture tree has no thresholds group) is an error, not ignored
    _root, chart = renders.fixture_tree()
    missing = helm(
        "template", RELEASE, str(chart), "--set", "monitoring.force=true",
        "--set", "monitoring.rules.thresholds.queue_backlog_high=5", check=False,
    )  # fmt: skip
    assert missing.returncode != 0 and "monitoring.rules.thresholds.queue_backlog_high" in missing.stderr
