"""custom.metrics.k8s.io from Prometheus: per-pod and per-namespace values of the configured rules.

What the HPA controller asks (``pods/*/<metric>?labelSelector=``) becomes one PromQL query naming the
pods the selector matches. The pods come from the Kubernetes API when the adapter runs in a cluster;
with no cluster (local use) every pod Prometheus has in the namespace counts. A pod without a value is
left out, a selector that matches no pod answers an empty list (as kubernetes-sigs/custom-metrics-apiserver
does: the HPA controller reads it as "no metrics returned"), and a Prometheus failure is a 503, never 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client.registry import Collector

from adapter.providers.interface import (
    BadRequest,
    CustomMetricInfo,
    InternalError,
    MetricNotFound,
    MetricValue,
    Passive,
    Unavailable,
)
from adapter.providers.pods import PodListError
from adapter.providers.prometheus import PrometheusClient, PrometheusError, QueryResult, prometheus_failure
from adapter.providers.rules import CustomRule, PromRules, RuleError, label_matchers, render
from adapter.selectors import EVERYTHING, Selector


class PodLister(Protocol):
    """Names of the pods of ``namespace`` matching ``label_selector`` (the Kubernetes selector string)."""

    async def pod_names(self, namespace: str, label_selector: str) -> list[str]: ...


class PromCustomMetrics(Passive):
    def __init__(self, rules: PromRules, prometheus: PrometheusClient, pods: PodLister | None = None) -> None:
        self.rules = rules
        self.prometheus = prometheus
        self.pods = pods

    def list_metrics(self) -> list[CustomMetricInfo]:
        return [CustomMetricInfo(rule.resource, rule.name) for rule in self.rules.custom]

    def _rule(self, resource: str, metric: str) -> CustomRule:
        rule = self.rules.custom_rule(resource, metric)
        if rule is None:
            raise MetricNotFound(f"the server could not find the metric {metric} for {resource}")
        return rule

    @staticmethod
    def _matchers(rule: CustomRule, metric_selector: Selector) -> str:
        if not metric_selector.requirements:
            return ""
        if not rule.takes_metric_selector:
            raise BadRequest(
                f"metric {rule.name} for {rule.resource} takes no metricLabelSelector "
                "(its query in the config file has no <matchers>)"
            )
        try:
            return label_matchers(metric_selector.requirements)
        except RuleError as exc:
            raise BadRequest(f"metricLabelSelector: {exc}") from None

    async def metric_for_selector(
        self, namespace: str, resource: str, selector: Selector, metric: str, metric_selector: Selector = EVERYTHING
    ) -> list[MetricValue]:
        if resource != "pods":  # only pods are named by a selector here
            raise MetricNotFound(f"the server could not find the metric {metric} for {resource}")
        rule = self._rule(resource, metric)
        matchers = self._matchers(rule, metric_selector)
        names: list[str] | None = None
        if self.pods is not None:
            try:
                names = await self.pods.pod_names(namespace, str(selector))
            except PodListError as exc:
                raise Unavailable(str(exc)) from None
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
                raise InternalError(f"the query of metric {metric} for pods returned several series for pod {pod}")
            values[pod] = MetricValue(
                "Pod", pod, namespace, metric, sample.value, sample.timestamp, rule.window_seconds
            )
        return [values[pod] for pod in sorted(values)]

    async def metric_for_object(
        self, namespace: str, resource: str, name: str, metric: str, metric_selector: Selector = EVERYTHING
    ) -> MetricValue:
        rule = self._rule(resource, metric)
        matchers = self._matchers(rule, metric_selector)
        if resource == "namespaces":
            return await self._namespace_metric(rule, name, matchers)
        result = await self._prom(render(rule.query, namespace=namespace, pods=[name], matchers=matchers))
        for sample in result.samples:
            if sample.labels.get("pod") == name:
                return MetricValue("Pod", name, namespace, metric, sample.value, sample.timestamp, rule.window_seconds)
        raise MetricNotFound(f"the server could not find the metric {metric} for pods {name}")

    async def _namespace_metric(self, rule: CustomRule, namespace: str, matchers: str) -> MetricValue:
        result = await self._prom(render(rule.query, namespace=namespace, matchers=matchers))
        if not result.samples:
            raise MetricNotFound(f"the server could not find the metric {rule.name} for namespaces {namespace}")
        if len(result.samples) > 1:
            raise InternalError(
                f"the query of metric {rule.name} for namespaces returned {len(result.samples)} series, expected one"
            )
        sample = result.samples[0]
        return MetricValue("Namespace", namespace, "", rule.name, sample.value, sample.timestamp, rule.window_seconds)

    async def _prom(self, promql: str) -> QueryResult:
        try:
            return await self.prometheus.query(promql)
        except PrometheusError as exc:
            raise prometheus_failure(exc) from None

    # -- lifecycle ---------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        # Not tied to Prometheus being up: an unready adapter would lose its external metrics too.
        return True, f"{len(self.rules.custom)} rule(s) over {self.prometheus.base_url}"

    def collectors(self) -> Iterable[Collector]:
        return [self.prometheus.stats.collector()]
