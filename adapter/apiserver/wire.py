"""The JSON the server writes: Go's encoding, discovery documents and the metric value lists.

Field order follows the Go structs, so answers are byte-for-byte what a Go API server writes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.providers.interface import ExternalValue, MetricValue
from adapter.quantity import format_quantity
from adapter.selectors import Op, Selector

_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})

# Text that came from undecodable request bytes (a header, a path) holds lone surrogates; Go's encoder
# writes U+FFFD for invalid UTF-8, and so does this one.
_SURROGATES = re.compile("[\ud800-\udfff]")


def go_json(obj: Any) -> bytes:
    """What Go's ``json.Encoder.Encode`` writes: compact, HTML characters escaped, a trailing newline."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text).encode()


def rfc3339(timestamp: float) -> str:
    """``metav1.Time`` as JSON: UTC, whole seconds."""
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metric_quantity(value: float) -> str:
    # Milli-units, as prometheus-adapter serves rates: finer digits are noise to an HPA (whole counts stay whole).
    return format_quantity(round(value, 3))


# -- discovery -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class APIResource:
    """``metav1.APIResource``, with its JSON fields in the Go struct's order."""

    name: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = ("get",)
    singular_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "singularName": self.singular_name,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }


def _api_group(group: str, versions: Sequence[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_group_list(groups: Iterable[tuple[str, Sequence[str]]]) -> dict[str, Any]:
    """``APIGroupList`` of ``(group, versions, the preferred first)``."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group(g, v) for g, v in groups]}


def api_group_object(group: str, versions: Sequence[str]) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, versions)}


def api_resource_list(group: str, version: str, resources: Iterable[APIResource]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}",
        "resources": [r.to_json() for r in resources],
    }


# -- values ----------------------------------------------------------------------------------------
def external_value_list(api_version: str, values: Iterable[ExternalValue]) -> dict[str, Any]:
    """``ExternalMetricValueList``; ``api_version`` is ``group/version``."""
    items = [
        {
            "metricName": v.metric,
            "metricLabels": dict(v.labels),
            "timestamp": rfc3339(v.timestamp),
            "value": metric_quantity(v.value),
        }
        for v in values
    ]
    return {"kind": "ExternalMetricValueList", "apiVersion": api_version, "metadata": {}, "items": items}


_OPERATORS = {
    Op.IN: "In",
    Op.NOT_IN: "NotIn",
    Op.NOT_EQUALS: "NotIn",
    Op.EXISTS: "Exists",
    Op.NOT_EXISTS: "DoesNotExist",
}


def label_selector_object(selector: Selector) -> dict[str, object] | None:
    """A ``metav1.LabelSelector`` for the metric selector of a request (None when there is none)."""
    if not selector.requirements:
        return None
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, object]] = []
    for req in selector.requirements:
        if req.op in (Op.EQUALS, Op.DOUBLE_EQUALS):
            match_labels[req.key] = req.values[0]
        elif req.op in (Op.EXISTS, Op.NOT_EXISTS):
            expressions.append({"key": req.key, "operator": _OPERATORS[req.op]})
        else:
            expressions.append({"key": req.key, "operator": _OPERATORS[req.op], "values": sorted(req.values)})
    described: dict[str, object] = {}
    if match_labels:
        described["matchLabels"] = match_labels
    if expressions:
        described["matchExpressions"] = expressions
    return described


def metric_value_list(api_version: str, values: Sequence[MetricValue], metric_selector: Selector) -> dict[str, object]:
    """``MetricValueList`` of custom.metrics.k8s.io in ``api_version`` (``group/v1beta2`` or ``group/v1beta1``)."""
    selector = label_selector_object(metric_selector)
    v1beta1 = api_version.endswith("/v1beta1")
    return {
        "kind": "MetricValueList",
        "apiVersion": api_version,
        "metadata": {},
        "items": [_item(v1beta1, value, selector) for value in values],
    }


def _item(v1beta1: bool, value: MetricValue, selector: dict[str, object] | None) -> dict[str, object]:
    described: dict[str, object] = {"kind": value.kind, "name": value.name, "apiVersion": "v1"}
    if value.namespace:
        described["namespace"] = value.namespace
    item: dict[str, object] = {"describedObject": described}
    if v1beta1:
        item["metricName"] = value.metric
        item["timestamp"] = rfc3339(value.timestamp)
        if value.window_seconds is not None:
            item["window"] = value.window_seconds
        item["value"] = metric_quantity(value.value)
        item["selector"] = selector
    else:
        item["metric"] = {"name": value.metric, "selector": selector}
        item["timestamp"] = rfc3339(value.timestamp)
        if value.window_seconds is not None:
            item["windowSeconds"] = value.window_seconds
        item["value"] = metric_quantity(value.value)
    return item
