"""A small typed generator of Grafana 11 dashboard JSON (schemaVersion 39): panels, targets, variables.

Only what the lensing dashboards use. Every panel gets the ``$datasource`` variable, a unit,
thresholds and a description by construction; ``tests/dashboards`` checks the result anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 39  # Grafana 11.0
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_WIDTH = 24

Json = dict[str, Any]


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False

    def to_json(self, ref_id: str) -> Json:
        return {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "instant": self.instant,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "refId": ref_id,
        }


@dataclass(frozen=True)
class Threshold:
    """Absolute steps: the base colour, then (value, colour) pairs in rising order."""

    base: str = "green"
    steps: tuple[tuple[float, str], ...] = ()

    def to_json(self) -> Json:
        return {
            "mode": "absolute",
            "steps": [{"color": self.base, "value": None}]
            + [{"color": color, "value": value} for value, color in self.steps],
        }


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str
    thresholds: Threshold = field(default_factory=Threshold)
    kind: str = "timeseries"  # timeseries | stat | bargauge
    width: int = 12
    height: int = 8
    stack: bool = False
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    mappings: tuple[tuple[str, str, str], ...] = ()  # (value, text, colour)
    threshold_style: str = "line"  # how a timeseries draws its thresholds: line | off | area

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        defaults: Json = {
            "unit": self.unit,
            "thresholds": self.thresholds.to_json(),
            "color": {"mode": "palette-classic"},
        }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.mappings:
            defaults["mappings"] = [
                {"type": "value", "options": {value: {"text": text, "color": color, "index": i}}}
                for i, (value, text, color) in enumerate(self.mappings)
            ]
        options: Json
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10 if self.stack else 0,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": self.threshold_style},
            }
            options = {
                "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull"]},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif self.kind == "stat":
            defaults["color"] = {"mode": "thresholds"}
            options = {
                "colorMode": "background",
                "graphMode": "none",
                "justifyMode": "auto",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "textMode": "value_and_name",
            }
        elif self.kind == "bargauge":
            defaults["color"] = {"mode": "thresholds"}
            options = {
                "displayMode": "gradient",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
            }
        else:
            raise ValueError(f"unknown panel kind {self.kind!r}; use timeseries, stat or bargauge")
        return {
            "datasource": DATASOURCE,
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "id": panel_id,
            "options": options,
            "targets": [target.to_json(chr(ord("A") + i)) for i, target in enumerate(self.targets)],
            "title": self.title,
            "type": self.kind,
        }


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


# Template variables -------------------------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def query_variable(
    name: str, label: str, query: str, *, multi: bool = False, include_all: bool = False, default: str | None = None
) -> Json:
    current: Json = {}
    if default is not None:
        current = {"selected": True, "text": default, "value": default}
    elif include_all:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return {
        **({"allValue": ".*"} if include_all else {}),
        "current": current,
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def textbox_variable(name: str, label: str, default: str, description: str) -> Json:
    return {
        "current": {"selected": False, "text": default, "value": default},
        "description": description,
        "hide": 0,
        "label": label,
        "name": name,
        "options": [{"selected": True, "text": default, "value": default}],
        "query": default,
        "type": "textbox",
    }


# The dashboard ----------------------------------------------------------------------------


def dashboard(
    *, uid: str, title: str, description: str, tags: list[str], variables: list[Json], rows: list[Row]
) -> Json:
    panels: list[Json] = []
    panel_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": PANEL_WIDTH, "x": 0, "y": y},
                "id": panel_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        panel_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > PANEL_WIDTH:
                x, y = 0, y + line_height
                line_height = 0
            panels.append(panel.to_json(panel_id, x, y))
            panel_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": tags,
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
