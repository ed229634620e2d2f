"""The rule files: promtool accepts them, promtool's unit tests pass, every alert has a firing case and a
near miss, and every alert follows the monitoring-mixin conventions with a runbook entry behind it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from dashboards import build
from tests.support.promql import REPO, RULE_FILES, rules

TESTS = sorted((REPO / "alerts" / "tests").glob("*.test.yaml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_BASE = "https://github.com/lensing/lensing-metrics/blob/main/docs/runbook.md#"
GRAFANA_BASE = "https://grafana.example.com/d/"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (scripts/setup-tools.sh)")

ALERTS = sorted({rule["alert"] for _, rule in rules() if "alert" in rule})


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, TESTS))
    assert TESTS, "no promtool unit tests under alerts/tests/"
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_case_and_a_near_miss() -> None:
    fires: set[str] = set()
    misses: set[str] = set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test["alert_rule_test"]:
                (fires if case.get("exp_alerts") else misses).add(case["alertname"])
    assert set(ALERTS) - fires == set(), "alerts never shown to fire"
    assert set(ALERTS) - misses == set(), "alerts without a near miss"
    assert fires | misses <= set(ALERTS), "tests of alerts that do not exist"


def test_firing_cases_check_labels_and_annotations() -> None:
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test["alert_rule_test"]:
                for alert in case.get("exp_alerts") or []:
                    assert alert["exp_labels"].get("severity"), test["name"]
                    assert {"summary", "description", "runbook_url"} <= set(alert["exp_annotations"]), test["name"]


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_conventions(alert: str) -> None:
    assert re.fullmatch(r"Lensing(?:[A-Z][a-z0-9]*|[A-Z]+(?=[A-Z]|$))+", alert), "CamelCase with the Lensing prefix"
    runbook = RUNBOOK.read_text()
    for _, rule in rules():
        if rule.get("alert") != alert:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        notes = rule["annotations"]
        assert notes["summary"].strip() and "{{" not in notes["summary"], "summary: one static sentence"
        assert "$value" in notes["description"] or "$labels" in notes["description"], "description without values"
        assert notes["runbook_url"] == RUNBOOK_BASE + alert.lower()
        assert f"\n## {alert}\n" in runbook, f"docs/runbook.md has no '## {alert}' entry"
        uid = notes["dashboard_url"].removeprefix(GRAFANA_BASE).split("?")[0]
        assert uid in {build.API_UID, build.WORKERS_UID}, notes["dashboard_url"]


def test_runbook_has_no_entries_for_alerts_that_do_not_exist() -> None:
    headings = re.findall(r"^## (Lensing\w+)$", RUNBOOK.read_text(), re.M)
    assert sorted(headings) == ALERTS


def test_thresholds_are_recorded_not_written_into_alerts() -> None:
    """Every threshold an alert compares against by name is recorded in the thresholds group."""
    recorded = {rule["labels"]["threshold"] for _, rule in rules() if rule.get("record") == "lensing:alert_threshold"}
    used = {m for _, rule in rules() for m in re.findall(r'threshold="(\w+)"', rule["expr"]) if "alert" in rule}
    assert used == recorded
    assert "## Thresholds" in RUNBOOK.read_text()
    for name in recorded:
        assert f"`{name}`" in RUNBOOK.read_text(), f"threshold {name} is not documented"
