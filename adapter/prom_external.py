"""External metrics backed by PromQL (the config file's ``externalMetrics``), for signals not in a broker.

They are served beside the broker metrics in ``external.metrics.k8s.io/v1beta1``: :class:`ExternalWithPromQL`
wraps the broker provider, lists both in discovery and answers each metric from where it comes from.
One item per series the query returns, its labels as ``metricLabels``. A query that returns nothing
answers an empty list (no value is invented); a Prometheus failure is a 503.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.registry import Collector

from adapter.api import ApiRequest, APIResource, GroupProvider, bad_request, rfc3339
from adapter.custom import not_found, prometheus_failure
from adapter.custom_api import metric_quantity
from adapter.custom_rules import PromRules, Requirement, RuleError, label_matchers, render
from adapter.prometheus import PrometheusClient, PrometheusError
from adapter.selectors import SelectorError, parse_selector


class PromExternalMetrics:
    def __init__(self, rules: PromRules, prometheus: PrometheusClient) -> None:
        self.rules = rules
        self.prometheus = prometheus

    def names(self) -> list[str]:
        return [rule.name for rule in self.rules.external]

    async def items(self, namespace: str, metric: str, selector: Sequence[Requirement]) -> list[dict[str, Any]]:
        """ExternalMetricValue objects of ``metric``, one per series, sorted by labels."""
        rule = self.rules.external_rule(metric)
        if rule is None:
            raise not_found(f"the server could not find the metric {metric}")
        matchers = ""
        if selector:
            if not rule.takes_metric_selector:
                raise bad_request(
                    f"metric {metric} takes no labelSelector (its query in the config file has no <matchers>)"
                )
            try:
                matchers = label_matchers(selector)
            except RuleError as exc:
                raise bad_request(f"invalid labelSelector: {exc}") from None
        try:
            result = await self.prometheus.query(render(rule.query, namespace=namespace, matchers=matchers))
        except PrometheusError as exc:
            raise prometheus_failure(exc) from None
        samples = sorted(result.samples, key=lambda s: sorted(s.labels.items()))
        return [
            {
                "metricName": metric,
                "metricLabels": {k: v for k, v in sorted(s.labels.items()) if k != "__name__"},
                "timestamp": rfc3339(s.timestamp),
                "value": metric_quantity(s.value),
            }
            for s in samples
        ]


class ExternalWithPromQL:
    """The broker provider of external.metrics.k8s.io plus the PromQL-backed metrics of the config file."""

    def __init__(
        self, brokers: GroupProvider, promql: PromExternalMetrics, *, export_query_stats: bool = False
    ) -> None:
        clash = {r.name for r in brokers.resources(brokers.versions[0])} & set(promql.names())
        if clash:
            raise ValueError(f"externalMetrics: {', '.join(sorted(clash))} is already served from the brokers")
        self.brokers = brokers
        self.promql = promql
        # the query counters are exported once: here only when no custom.metrics.k8s.io group does it
        self.export_query_stats = export_query_stats
        self.group = brokers.group
        self.versions = brokers.versions

    def resources(self, version: str) -> Sequence[APIResource]:
        extra = [APIResource(name, "ExternalMetricValueList") for name in self.promql.names()]
        return sorted([*self.brokers.resources(version), *extra], key=lambda r: r.name)

    async def get(self, request: ApiRequest) -> dict[str, Any] | bytes:
        segments = request.segments
        if len(segments) != 3 or segments[0] != "namespaces" or segments[2] not in self.promql.names():
            return await self.brokers.get(request)
        try:
            selector = parse_selector(request.query.get("labelSelector", "")).requirements
        except SelectorError as exc:
            raise bad_request(f"invalid labelSelector: {exc}") from None
        items = await self.promql.items(segments[1], segments[2], selector)
        return {
            "kind": "ExternalMetricValueList",
            "apiVersion": f"{self.group}/{request.version}",
            "metadata": {},
            "items": items,
        }

    def collectors(self) -> Iterable[Collector]:
        extra = [self.promql.prometheus.stats.collector()] if self.export_query_stats else []
        return [*self.brokers.collectors(), *extra]

    def readiness(self) -> tuple[bool, str]:
        return self.brokers.readiness()

    def start(self) -> None:
        self.brokers.start()

    def stop(self) -> None:
        self.brokers.stop()
