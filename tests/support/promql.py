"""What the dashboards and rules query: every PromQL expression, the metric names it reads, Grafana variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from lensing_core.catalog import CATALOG, OUTSIDE_SOURCES

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "alerts").glob("*.rules.yaml"))

# Grafana's built-in range variables become recognisable durations so a test can tell them apart.
RATE_INTERVAL = "987s"
RANGE = "654s"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$", re.S)


def grafana_to_promql(expr: str, numbers: dict[str, str] | None = None) -> str:
    """Substitute Grafana variables the way Grafana would before it sends a query. Inside label
    values they stay as they are (any string parses); elsewhere they are numbers or durations."""
    numbers = numbers or {}

    def outside_strings(part: str) -> str:
        part = part.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", RANGE)
        return _VARIABLE.sub(lambda m: numbers.get(m.group(1), "1"), part)

    out, last = [], 0
    for match in _STRING.finditer(expr):
        out.append(outside_strings(expr[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(outside_strings(expr[last:]))
    return "".join(out)


@dataclass(frozen=True)
class Query:
    where: str  # "dashboards/x.json: panel title [A]" or "alerts/x.yaml: AlertName"
    expr: str  # as written
    promql: str  # as Prometheus receives it

    def parse(self) -> promql_parser.Expr:
        return promql_parser.parse(self.promql)


def dashboard_panels(path: Path) -> Iterator[dict[str, Any]]:
    for panel in json.loads(path.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(path: Path) -> Iterator[Query]:
    doc = json.loads(path.read_text())
    for panel in dashboard_panels(path):
        for target in panel.get("targets", []):
            where = f"{path.relative_to(REPO)}: {panel['title']} [{target['refId']}]"
            yield Query(where, target["expr"], grafana_to_promql(target["expr"]))
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = _LABEL_VALUES.match(query)
            selector = match.group(1) if match else query
            where = f"{path.relative_to(REPO)}: variable {variable['name']}"
            yield Query(where, query, grafana_to_promql(selector))


def rule_groups(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["groups"])


def rules(paths: list[Path] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths or RULE_FILES:
        for group in rule_groups(path):
            for rule in group["rules"]:
                yield path, rule


def rule_queries() -> Iterator[Query]:
    for path, rule in rules():
        name = rule.get("alert") or rule["record"]
        yield Query(f"{path.relative_to(REPO)}: {name}", rule["expr"], rule["expr"])


def recorded_names() -> set[str]:
    return {rule["record"] for _, rule in rules() if "record" in rule}


def metric_names(expr: promql_parser.Expr) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(expr, visit)
    return names


def family_of(name: str) -> str | None:
    """The catalogue family a stored series name belongs to (histograms: _bucket, _sum, _count)."""
    if name in CATALOG:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in CATALOG and CATALOG[base].kind == "histogram":
            return base
    return None


def unknown_metrics(expr: promql_parser.Expr, recorded: set[str]) -> set[str]:
    """Names an expression reads that nothing exports: not in the catalogue, not an outside source,
    not a recording rule of alerts/."""
    return {
        name
        for name in metric_names(expr)
        if family_of(name) is None and name not in OUTSIDE_SOURCES and name not in recorded
    }


def all_queries() -> list[Query]:
    return [q for path in DASHBOARDS for q in dashboard_queries(path)] + list(rule_queries())


def interpolate(expr: str, values: dict[str, str], rate_interval: str, range_: str) -> str:
    """Grafana's interpolation of a query for one choice of variables (a multi-value `All` is `.*`)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
    return _VARIABLE.sub(lambda m: values[m.group(1)], expr)


# Families that have no series while nothing goes wrong.
NO_SERIES_WITHOUT_FAULTS = {
    "celery_broker_read_errors_total": "no broker read failed",
    "celery_events_dropped_total": "no event was dropped",
    "celery_events_lost_total": "no event was lost",
}


def source_of(name: str) -> str:
    family = family_of(name)
    if family is not None:
        return CATALOG[family].component
    if name in OUTSIDE_SOURCES:
        return OUTSIDE_SOURCES[name]
    for _, rule in rules():
        if rule.get("record") == name:
            return f"{' and '.join(sorted({source_of(n) for n in metric_names(promql_parser.parse(rule['expr']))}))}"
    return "nothing known"


def missing_source(names: set[str], running: frozenset[str] = frozenset({"exporter-broker"})) -> str | None:
    """Why a query over ``names`` cannot return data when only the ``running`` catalogue components run
    (and nothing fails), or None when it must."""
    for name in sorted(names):
        if name in NO_SERIES_WITHOUT_FAULTS:
            return NO_SERIES_WITHOUT_FAULTS[name]
        family = family_of(name)
        if family is None or CATALOG[family].component not in running:
            return f"{name} comes from {source_of(name)}, not running here"
    return None


def running_components(names: set[str]) -> frozenset[str]:
    """The catalogue components that export any of these stored series names."""
    return frozenset(CATALOG[f].component for f in map(family_of, names) if f is not None)
