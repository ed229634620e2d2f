"""custom.metrics.k8s.io from Prometheus: per-pod and per-namespace values of the configured rules.

What the HPA controller asks (``pods/*/<metric>?labelSelector=``) becomes one PromQL query naming the
pods the selector matches. The pods come from the Kubernetes API when the adapter runs in a cluster;
with no cluster (local use) every pod Prometheus has in the namespace counts. A pod without a value is
left out, a selector that matches no pod answers an empty list (as kubernetes-sigs/custom-metrics-apiserver
does: the HPA controller reads it as "no metrics returned"), and a Prometheus failure is a 503, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from adapter.api import ApiError, bad_request, rfc3339, service_unavailable
from adapter.custom_rules import CustomRule, PromRules, Requirement, RuleError, label_matchers, render
from adapter.pods import PodListError
from adapter.prometheus import PrometheusClient, PrometheusError, QueryResult

GROUP = "custom.metrics.k8s.io"
VERSIONS = ("v1beta2", "v1beta1")


def not_found(message: str) -> ApiError:
    """What custom-metrics-apiserver's NewMetricNotFoundError(For) answers: 404 NotFound, no details."""
    return ApiError(404, "NotFound", message)


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)


def prometheus_failure(exc: PrometheusError) -> ApiError:
    """503 when Prometheus is down or slow; 500 when it refused the configured query itself."""
    if exc.bad_query:
        return internal_error(f"the configured query was refused by Prometheus: {exc}")
    return service_unavailable(f"unable to fetch metrics from Prometheus: {exc}")


class PodLister(Protocol):
    """Names of the pods of ``namespace`` matching ``label_selector`` (the Kubernetes selector string)."""

    async def pod_names(self, namespace: str, label_selector: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class MetricValue:
    kind: str  # Pod | Namespace
    name: str
    namespace: str  # "" for a Namespace
    metric: str
    value: float
    timestamp: float  # when Prometheus evaluated the query
    window_seconds: int | None


class CustomMetricsProvider:
    def __init__(self, rules: PromRules, prometheus: PrometheusClient, pods: PodLister | None = None) -> None:
        self.rules = rules
        self.prometheus = prometheus
        self.pods = pods

    def resources(self) -> list[tuple[str, str]]:
        """``(resource, metric)`` of every rule, for discovery."""
        return [(rule.resource, rule.name) for rule in self.rules.custom]

    def _rule(self, resource: str, metric: str) -> CustomRule:
        rule = self.rules.custom_rule(resource, metric)
        if rule is None:
            raise not_found(f"the server could not find the metric {metric} for {resource}")
        return rule

    @staticmethod
    def _matchers(rule: CustomRule, metric_selector: Sequence[Requirement]) -> str:
        if not metric_selector:
            return ""
        if not rule.takes_metric_selector:
            raise bad_request(
                f"metric {rule.name} for {rule.resource} takes no metricLabelSelector "
                "(its query in the config file has no <matchers>)"
            )
        try:
            return label_matchers(metric_selector)
        except RuleError as exc:
            raise bad_request(f"metricLabelSelector: {exc}") from None

    async def pods_by_selector(
        self, namespace: str, metric: str, label_selector: str, metric_selector: Sequence[Requirement] = ()
    ) -> list[MetricValue]:
        rule = self._rule("pods", metric)
        matchers = self._matchers(rule, metric_selector)
        names: list[str] | None = None
        if self.pods is not None:
            try:
                names = await self.pods.pod_names(namespace, label_selector)
            except PodListError as exc:
                raise service_unavailable(str(exc)) from None
            if not names:
                return []
        result = await self._prom(render(rule.query, namespace=namespace, pods=names, matchers=matchers))
        wanted = None if names is None else set(names)
        values: dict[str, MetricValue] = {}
        for sample in result.samples:
            pod = sample.labels.get("pod")
            if pod is None or (wanted is not None and pod not in wanted):
                continue
            if pod in values:
                raise internal_error(f"the query of metric {metric} for pods returned several series for pod {pod}")
            values[pod] = MetricValue(
                "Pod", pod, namespace, metric, sample.value, sample.timestamp, rule.window_seconds
            )
        return [values[pod] for pod in sorted(values)]

    async def pod_by_name(
        self, namespace: str, name: str, metric: str, metric_selector: Sequence[Requirement] = ()
    ) -> MetricValue:
        rule = self._rule("pods", metric)
        matchers = self._matchers(rule, metric_selector)
        result = await self._prom(render(rule.query, namespace=namespace, pods=[name], matchers=matchers))
        for sample in result.samples:
            if sample.labels.get("pod") == name:
                return MetricValue("Pod", name, namespace, metric, sample.value, sample.timestamp, rule.window_seconds)
        raise not_found(f"the server could not find the metric {metric} for pods {name}")

    async def namespace_metric(
        self, namespace: str, metric: str, metric_selector: Sequence[Requirement] = ()
    ) -> MetricValue:
        rule = self._rule("namespaces", metric)
        matchers = self._matchers(rule, metric_selector)
        result = await self._prom(render(rule.query, namespace=namespace, matchers=matchers))
        if not result.samples:
            raise not_found(f"the server could not find the metric {metric} for namespaces {namespace}")
        if len(result.samples) > 1:
            raise internal_error(
                f"the query of metric {metric} for namespaces returned {len(result.samples)} series, expected one"
            )
        sample = result.samples[0]
        return MetricValue("Namespace", namespace, "", metric, sample.value, sample.timestamp, rule.window_seconds)

    async def _prom(self, promql: str) -> QueryResult:
        try:
            return await self.prometheus.query(promql)
        except PrometheusError as exc:
            raise prometheus_failure(exc) from None


# -- the wire format -------------------------------------------------------------------------------


def label_selector_object(requirements: Sequence[Requirement]) -> dict[str, object] | None:
    """A metav1.LabelSelector for the metric selector of a request (None when there is none)."""
    if not requirements:
        return None
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, object]] = []
    operators = {"in": "In", "notin": "NotIn", "!=": "NotIn", "exists": "Exists", "!": "DoesNotExist"}
    for req in requirements:
        key, op, values = req.key, str(getattr(req.op, "value", req.op)), req.values
        if op in ("=", "=="):
            match_labels[key] = values[0]
        elif op in ("exists", "!"):
            expressions.append({"key": key, "operator": operators[op]})
        else:
            expressions.append({"key": key, "operator": operators[op], "values": sorted(values)})
    selector: dict[str, object] = {}
    if match_labels:
        selector["matchLabels"] = match_labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


class QuantityFormat(Protocol):
    def __call__(self, value: float) -> str: ...


def metric_value_list(
    version: str, values: Sequence[MetricValue], metric_selector: Sequence[Requirement], quantity: QuantityFormat
) -> dict[str, object]:
    selector = label_selector_object(metric_selector)
    return {
        "kind": "MetricValueList",
        "apiVersion": f"{GROUP}/{version}",
        "metadata": {},
        "items": [_item(version, value, selector, quantity) for value in values],
    }


def _item(
    version: str, value: MetricValue, selector: dict[str, object] | None, quantity: QuantityFormat
) -> dict[str, object]:
    described: dict[str, object] = {"kind": value.kind, "name": value.name, "apiVersion": "v1"}
    if value.namespace:
        described["namespace"] = value.namespace
    item: dict[str, object] = {"describedObject": described}
    if version == "v1beta1":
        item["metricName"] = value.metric
        item["timestamp"] = rfc3339(value.timestamp)
        if value.window_seconds is not None:
            item["window"] = value.window_seconds
        item["value"] = quantity(value.value)
        item["selector"] = selector
    else:
        item["metric"] = {"name": value.metric, "selector": selector}
        item["timestamp"] = rfc3339(value.timestamp)
        if value.window_seconds is not None:
            item["windowSeconds"] = value.window_seconds
        item["value"] = quantity(value.value)
    return item
