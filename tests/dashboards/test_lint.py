"""House rules of the dashboards, and the committed JSON equals what dashboards/build.py generates."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from dashboards import build
from tests.support.promql import DASHBOARDS, RANGE, RATE_INTERVAL, Query, dashboard_panels, dashboard_queries

DATASOURCE_UID = "${datasource}"
IDS = [p.name for p in DASHBOARDS]


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def data_panels(path: Path) -> list[dict[str, Any]]:
    return [p for p in dashboard_panels(path) if p["type"] != "row"]


def test_committed_json_is_what_the_generator_makes() -> None:
    assert {p.name for p in DASHBOARDS} == set(build.DASHBOARDS)
    for name, make in build.DASHBOARDS.items():
        assert (build.HERE / name).read_text() == build.render(make()), f"{name} is stale: run dashboards/build.py"


def test_stable_uids_and_titles() -> None:
    uids = {load(p)["uid"]: load(p)["title"] for p in DASHBOARDS}
    assert uids == {build.API_UID: "Lensing API Performance", build.WORKERS_UID: "Lensing / Celery GPU workers"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_variables(path: Path) -> None:
    variables = {v["name"]: v for v in load(path)["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["label"], source["query"]) == ("datasource", "Data source", "prometheus")
    assert {"namespace", "queue"} <= set(variables)
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]
        assert variable.get("label"), f"variable {variable['name']} has no label"


def test_gpu_price_variable_prices_the_idle_gpus() -> None:
    path = build.HERE / "celery-gpu-workers.json"
    price = next(v for v in load(path)["templating"]["list"] if v["name"] == "gpu_price")
    assert price["query"] == price["current"]["value"] == "0.158"
    idle = [q for q in dashboard_queries(path) if "gpu_idle_allocated_seconds_total" in q.expr]
    assert sum("$gpu_price" in q.expr for q in idle) == 2


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_every_panel_has_datasource_unit_thresholds_and_description(path: Path) -> None:
    for panel in data_panels(path):
        title = panel.get("title")
        assert title, f"panel {panel['id']} has no title"
        assert panel.get("description", "").strip(), f"{title}: no description"
        assert panel["datasource"]["uid"] == DATASOURCE_UID, f"{title}: datasource is not $datasource"
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, f"{title}: a target bypasses $datasource"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{title}: no unit"
        assert defaults.get("thresholds", {}).get("steps"), f"{title}: no thresholds"


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_panel_ids_unique_and_layout_fits(path: Path) -> None:
    panels = list(dashboard_panels(path))
    duplicates = [i for i, n in Counter(p["id"] for p in panels).items() if n > 1]
    assert not duplicates, f"duplicate panel ids {duplicates}"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_rates_use_rate_interval(path: Path) -> None:
    """rate/irate over $__rate_interval; increase over $__rate_interval or, in range totals, $__range."""

    def check(query: Query) -> None:
        def visit(node: object) -> None:
            if isinstance(node, promql_parser.Call) and node.func.name in ("rate", "irate", "increase"):
                window = f"{int(node.args[0].range.total_seconds())}s"
                allowed = {RATE_INTERVAL, RANGE} if node.func.name == "increase" else {RATE_INTERVAL}
                assert window in allowed, f"{query.where}: {node.func.name} over a fixed window: {query.expr}"

        promql_parser.walk(query.parse(), visit)

    for query in dashboard_queries(path):
        check(query)


def test_the_platform_panels_are_there() -> None:
    titles = {p["title"] for p in data_panels(build.HERE / "lensing-api-performance.json")}
    assert {"Request Rate", "Request Latency (P95)", "Active Analyses", "Celery Queue Length"} <= titles
