"""custom.metrics.k8s.io as an API group of the adapter's server: v1beta2 (preferred) and v1beta1.

The server does TLS, authentication, authorization, discovery (``/apis``, the APIGroup, the
APIResourceList built from :meth:`CustomMetricsGroup.resources`) and Status errors. This answers the
paths below ``/apis/custom.metrics.k8s.io/{v}/``::

    namespaces/{ns}/pods/*/{metric}?labelSelector=...&metricLabelSelector=...   every pod the selector names
    namespaces/{ns}/pods/{pod}/{metric}                                          one pod
    namespaces/{ns}/metrics/{metric}                                             the namespace itself
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.registry import Collector

from adapter.api import ApiRequest, APIResource, bad_request
from adapter.custom import GROUP, VERSIONS, CustomMetricsProvider, metric_value_list, not_found
from adapter.custom_rules import Requirement
from adapter.quantity import format_quantity
from adapter.selectors import SelectorError, parse_selector

PATHS = "namespaces/NAMESPACE/pods/{*|POD}/METRIC or namespaces/NAMESPACE/metrics/METRIC"


def metric_quantity(value: float) -> str:
    # Milli-units, as prometheus-adapter serves rates: finer digits are noise to an HPA.
    return format_quantity(round(value, 3))


def _selector(query: Mapping[str, str], name: str) -> tuple[str, tuple[Requirement, ...]]:
    text = query.get(name, "")
    try:
        return text, tuple(parse_selector(text).requirements)
    except SelectorError as exc:
        raise bad_request(f"invalid {name}: {exc}") from None


class CustomMetricsGroup:
    group = GROUP
    versions: tuple[str, ...] = VERSIONS

    def __init__(self, provider: CustomMetricsProvider) -> None:
        self.provider = provider

    def resources(self, version: str) -> Sequence[APIResource]:
        # Namespace metrics describe a cluster-scoped object: namespaced false, as custom-metrics-apiserver lists them.
        return [
            APIResource(f"{resource}/{metric}", "MetricValueList", namespaced=resource != "namespaces")
            for resource, metric in self.provider.resources()
        ]

    async def get(self, request: ApiRequest) -> dict[str, Any]:
        segments = request.segments
        if len(segments) == 5 and segments[0] == "namespaces" and segments[2] == "pods":
            namespace, name, metric = segments[1], segments[3], segments[4]
            _text, metric_selector = _selector(request.query, "metricLabelSelector")
            if name == "*":
                label_selector, _requirements = _selector(request.query, "labelSelector")
                values = await self.provider.pods_by_selector(namespace, metric, label_selector, metric_selector)
            else:
                values = [await self.provider.pod_by_name(namespace, name, metric, metric_selector)]
        elif len(segments) == 4 and segments[0] == "namespaces" and segments[2] == "metrics":
            _text, metric_selector = _selector(request.query, "metricLabelSelector")
            values = [await self.provider.namespace_metric(segments[1], segments[3], metric_selector)]
        else:
            raise not_found(f"the server could not find the requested resource (served: {PATHS})")
        return metric_value_list(request.version, values, metric_selector, metric_quantity)

    def collectors(self) -> Iterable[Collector]:
        return [self.provider.prometheus.stats.collector()]

    def readiness(self) -> tuple[bool, str]:
        # Not tied to Prometheus being up: an unready adapter would lose its external metrics too.
        return True, f"{len(self.provider.rules.custom)} rule(s) over {self.provider.prometheus.base_url}"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
