"""Renders of charts/lensing-metrics, one `helm template` per values set, shared by every chart test.

No cluster runs here: `helm template` renders, kubernetes-validate checks core objects against the Kubernetes
OpenAPI schemas, the prometheus-operator validators (npm, installed by scripts/setup-tools.sh) check the
monitoring objects, promtool checks the rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lensing-metrics"
TOOLS = ROOT / ".tools"
RELEASE = "lm"
NAMESPACE = "lensing"
MONITORING_API = "monitoring.coreos.com/v1"

Doc = dict[str, Any]


def tool(name: str) -> str:
    local = TOOLS / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run `make tools` (scripts/setup-tools.sh installs it)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def template_args(chart: Path, *args: str) -> list[str]:
    return ["template", RELEASE, str(chart), "--namespace", NAMESPACE, *args]


@dataclass
class Render:
    name: str
    chart: Path
    source_root: Path  # where dashboards/ and alerts/ of this render come from
    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> Doc:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix} in {self.name}, got {len(found)}"
        return found[0]


def render(name: str, chart: Path, source_root: Path, *args: str) -> Render:
    out = helm(*template_args(chart, *args)).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return Render(name, chart, source_root, docs)


# --- a fixture dashboard, rule file and promtool unit test, to prove the copy-and-render mechanism even while the
# repository's dashboards/ and alerts/ are empty -------------------------------------------------------------------
FIXTURE_DASHBOARD = {
    "title": "lensing fixture",
    "uid": "lensing-fixture",
    "schemaVersion": 39,
    "panels": [{"type": "timeseries", "title": "waiting", "targets": [{"expr": "sum(celery_queue_length)"}]}],
}
FIXTURE_RULES = """\
groups:
  - name: lensing-fixture
    rules:
      - alert: CeleryQueueBacklogFixture
        expr: celery_queue_length > 100
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "queue {{ $labels.queue }} has {{ $value }} waiting"
"""
FIXTURE_RULE_TESTS = """\
rule_files:
  - fixture.yaml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'celery_queue_length{queue="celery"}'
        values: '0+20x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: CeleryQueueBacklogFixture
        exp_alerts: []
      - eval_time: 15m
        alertname: CeleryQueueBacklogFixture
        exp_alerts:
          - exp_labels: {severity: warning, queue: celery}
            exp_annotations: {summary: "queue celery has 300 waiting"}
"""

CI_VALUES = CHART / "ci"  # the value sets the tests render, one file each (helm lint checks each of them)


def ci_values(name: str) -> Path:
    return CI_VALUES / f"{name}-values.yaml"


def ci_value(name: str, *keys: str) -> Any:
    node: Any = yaml.safe_load(ci_values(name).read_text())
    for key in keys:
        node = node[key]
    return node


_RULES = ci_value("rules-rewrite", "monitoring", "rules")
RUNBOOK_BASE: str = _RULES["runbookBaseUrl"]
DASHBOARD_BASE: str = _RULES["dashboardBaseUrl"]
THRESHOLDS: dict[str, float] = _RULES["thresholds"]
QUEUE_BACKLOG_HIGH: dict[str, int] = _RULES["queueBacklogHigh"]

# value set -> (its file under ci/, the capabilities it is rendered with)
VALUE_SET_FILES: dict[str, tuple[str, list[str]]] = {
    "default": ("default", []),
    "monitoring-api": ("default", ["--api-versions", MONITORING_API]),
    "monitoring-forced": ("monitoring-forced", []),
    "tls-cert-manager": ("tls-cert-manager", ["--api-versions", "cert-manager.io/v1"]),
    "tls-existing-secret": ("tls-existing-secret", []),
    "insecure-by-name": ("insecure-by-name", []),
    "features-off": ("features-off", []),
    "rules-rewrite": ("rules-rewrite", ["--api-versions", MONITORING_API]),
    "full": ("full", ["--api-versions", MONITORING_API]),
    "idle-first": ("idle-first", []),
}


class Renders:
    """Each values set rendered once per session, on first use."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._cache: dict[str, Render] = {}
        self.existing_ca_b64: str = ci_value("tls-existing-secret", "adapter", "tls", "caBundle")

    def fixture_tree(self) -> tuple[Path, Path]:
        """A copy of the chart whose files/ were synced from a fixture dashboards/ + alerts/ tree."""
        from scripts.sync_chart_files import sync

        root = self._tmp / "fixture-root"
        if not root.exists():
            (root / "dashboards").mkdir(parents=True)
            (root / "alerts").mkdir()
            (root / "dashboards" / "fixture.json").write_text(json.dumps(FIXTURE_DASHBOARD, indent=2) + "\n")
            (root / "alerts" / "fixture.yaml").write_text(FIXTURE_RULES)
            (root / "alerts" / "fixture_test.yaml").write_text(FIXTURE_RULE_TESTS)
            chart = self._tmp / "fixture-chart"
            shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("files"))
            (chart / "files").mkdir()
            sync(root=root, chart_files=chart / "files")
        return root, self._tmp / "fixture-chart"

    def get(self, name: str) -> Render:
        if name not in self._cache:
            self._cache[name] = self._render(name)
        return self._cache[name]

    def _render(self, name: str) -> Render:
        values, capabilities = VALUE_SET_FILES[name]
        args = [*capabilities, "-f", str(ci_values(values))]
        if name == "full":
            root, chart = self.fixture_tree()
            return render(name, chart, root, *args)
        return render(name, CHART, ROOT, *args)


VALUE_SETS = [
    "default",
    "monitoring-api",
    "monitoring-forced",
    "tls-cert-manager",
    "tls-existing-secret",
    "insecure-by-name",
    "features-off",
    "full",
]


@pytest.fixture(scope="session")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Renders]:
    yield Renders(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="session")
def promop_validate() -> Callable[[list[Doc]], list[dict[str, Any]]]:
    """Validate prometheus-operator objects with the npm validators set up by scripts/setup-tools.sh."""
    modules = TOOLS / "node_modules"
    if not (modules / "@kubernetes-models" / "prometheus-operator").exists():
        pytest.fail("@kubernetes-models/prometheus-operator missing: run `make tools`")
    node = shutil.which("node")
    if not node:
        pytest.fail("node not found (npm comes with it; scripts/setup-tools.sh needs it)")

    def validate(objects: list[Doc]) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [node, str(Path(__file__).parent / "validate_prometheus_operator.mjs"), str(modules)],
            input=json.dumps(objects),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        assert proc.returncode == 0, proc.stderr
        return list(json.loads(proc.stdout))

    return validate
