"""External metrics backed by PromQL (the config file's ``externalMetrics``), for signals not in a broker.

They are served beside the broker metrics in ``external.metrics.k8s.io/v1beta1``. One value per series
the query returns, its labels as ``metricLabels``. A query that returns nothing answers an empty list
(no value is invented); a Prometheus failure is a 503.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.registry import Collector

from adapter.providers.interface import BadRequest, ExternalValue, MetricNotFound, Passive
from adapter.providers.prometheus import PrometheusClient, PrometheusError, prometheus_failure
from adapter.providers.rules import PromRules, RuleError, label_matchers, render
from adapter.selectors import Selector


class PromExternalMetrics(Passive):
    source = "externalMetrics"

    def __init__(self, rules: PromRules, prometheus: PrometheusClient) -> None:
        self.rules = rules
        self.prometheus = prometheus

    def list_metrics(self) -> list[str]:
        return [rule.name for rule in self.rules.external]

    def answer_version(self, namespace: str, metric: str) -> None:
        return None  # the client keeps query results for --custom-metrics-cache-seconds

    async def external_metric(self, namespace: str, metric: str, selector: Selector) -> list[ExternalValue]:
        """One value per series, sorted by labels."""
        rule = self.rules.external_rule(metric)
        if rule is None:
            raise MetricNotFound(f"the server could not find the metric {metric}")
        matchers = ""
        if selector.requirements:
            if not rule.takes_metric_selector:
                raise BadRequest(
                    f"metric {metric} takes no labelSelector (its query in the config file has no <matchers>)"
                )
            try:
                matchers = label_matchers(selector.requirements)
            except RuleError as exc:
                raise BadRequest(f"invalid labelSelector: {exc}") from None
        try:
            result = await self.prometheus.query(render(rule.query, namespace=namespace, matchers=matchers))
        except PrometheusError as exc:
            raise prometheus_failure(exc) from None
        samples = sorted(result.samples, key=lambda s: sorted(s.labels.items()))
        return [
            ExternalValue(metric, {k: v for k, v in sorted(s.labels.items()) if k != "__name__"}, s.timestamp, s.value)
            for s in samples
        ]

    def collectors(self) -> Iterable[Collector]:
        return [self.prometheus.stats.collector()]
