"""The HTTP side of custom.metrics.k8s.io: discovery and the value paths, for v1beta2 and v1beta1.

Paths (``{v}`` is v1beta2 or v1beta1)::

    /apis/custom.metrics.k8s.io                                   APIGroup
    /apis/custom.metrics.k8s.io/{v}                               APIResourceList (pods/<m>, namespaces/<m>)
    /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/pods/*/{m}    ?labelSelector=&metricLabelSelector=
    /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/pods/{pod}/{m}
    /apis/custom.metrics.k8s.io/{v}/namespaces/{ns}/metrics/{m}   the namespace's own value

Errors are raised as ``CustomMetricsError`` (code and reason of a metav1.Status); the server's error
handling writes the Status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from adapter.custom import (
    GROUP,
    VERSIONS,
    BadRequest,
    CustomMetricsProvider,
    MetricNotFound,
    metric_value_list,
)
from adapter.custom_rules import Requirement
from adapter.quantity import format_quantity
from adapter.selectors import SelectorError, parse_selector

PREFIX = f"/apis/{GROUP}"


def metric_quantity(value: float) -> str:
    # Rates to the milli-unit, as prometheus-adapter serves them: finer digits are noise to an HPA.
    return format_quantity(round(value, 3))


def api_group() -> dict[str, Any]:
    versions = [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in VERSIONS]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_resource_list(provider: CustomMetricsProvider, version: str) -> dict[str, Any]:
    resources = [
        {
            "name": f"{resource}/{metric}",
            "singularName": "",
            "namespaced": resource != "namespaces",
            "kind": "MetricValueList",
            "verbs": ["get"],
        }
        for resource, metric in provider.resources()
    ]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{version}", "resources": resources}


def _selector(request: web.Request, name: str) -> tuple[str, tuple[Requirement, ...]]:
    text = request.query.get(name, "")
    try:
        return text, tuple(parse_selector(text).requirements)
    except SelectorError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def _version(request: web.Request) -> str:
    version = request.match_info["version"]
    if version not in VERSIONS:
        raise MetricNotFound(f"the server could not find the requested resource: {GROUP}/{version}")
    return version


def routes(provider: CustomMetricsProvider, json_response: Callable[[Any], web.StreamResponse]) -> list[web.RouteDef]:
    """The routes of the group; ``json_response`` writes a body the way the rest of the server does."""

    async def group(_request: web.Request) -> web.StreamResponse:
        return json_response(api_group())

    async def resources(request: web.Request) -> web.StreamResponse:
        return json_response(api_resource_list(provider, _version(request)))

    async def pods(request: web.Request) -> web.StreamResponse:
        version = _version(request)
        namespace, name, metric = (request.match_info[k] for k in ("namespace", "name", "metric"))
        _text, metric_selector = _selector(request, "metricLabelSelector")
        if name == "*":
            label_selector, _reqs = _selector(request, "labelSelector")
            values = await provider.pods_by_selector(namespace, metric, label_selector, metric_selector)
        else:
            values = [await provider.pod_by_name(namespace, name, metric, metric_selector)]
        return json_response(metric_value_list(version, values, metric_selector, metric_quantity))

    async def namespace_metric(request: web.Request) -> web.StreamResponse:
        version = _version(request)
        _text, metric_selector = _selector(request, "metricLabelSelector")
        value = await provider.namespace_metric(
            request.match_info["namespace"], request.match_info["metric"], metric_selector
        )
        return json_response(metric_value_list(version, [value], metric_selector, metric_quantity))

    base = PREFIX + "/{version}"
    return [
        web.get(PREFIX, group),
        web.get(base, resources),
        web.get(base + "/namespaces/{namespace}/pods/{name}/{metric}", pods),
        web.get(base + "/namespaces/{namespace}/metrics/{metric}", namespace_metric),
    ]
