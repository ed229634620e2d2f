"""External metrics backed by PromQL (the config file's ``externalMetrics``), for signals not in a broker.

One item per series the query returns, its labels as ``metricLabels``. A query that returns nothing
answers an empty list (no value is invented); a Prometheus failure is a 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapter.custom import BadRequest, MetricNotFound, prometheus_failure
from adapter.custom_rules import PromRules, Requirement, RuleError, label_matchers, render
from adapter.prometheus import PrometheusClient, PrometheusError


@dataclass(frozen=True, slots=True)
class ExternalValue:
    metric: str
    labels: dict[str, str]
    value: float
    timestamp: float  # when Prometheus evaluated the query


class PromExternalMetrics:
    def __init__(self, rules: PromRules, prometheus: PrometheusClient) -> None:
        self.rules = rules
        self.prometheus = prometheus

    def names(self) -> list[str]:
        return [rule.name for rule in self.rules.external]

    def serves(self, metric: str) -> bool:
        return self.rules.external_rule(metric) is not None

    async def values(self, namespace: str, metric: str, selector: Sequence[Requirement]) -> list[ExternalValue]:
        rule = self.rules.external_rule(metric)
        if rule is None:
            raise MetricNotFound(f"the server could not find the metric {metric}")
        matchers = ""
        if selector:
            if not rule.takes_metric_selector:
                raise BadRequest(
                    f"metric {metric} takes no labelSelector (its query in the config file has no <matchers>)"
                )
            try:
                matchers = label_matchers(selector)
            except RuleError as exc:
                raise BadRequest(f"labelSelector: {exc}") from None
        try:
            result = await self.prometheus.query(render(rule.query, namespace=namespace, matchers=matchers))
        except PrometheusError as exc:
            raise prometheus_failure(exc) from None
        values = [
            ExternalValue(metric, {k: v for k, v in s.labels.items() if k != "__name__"}, s.value, s.timestamp)
            for s in result.samples
        ]
        values.sort(key=lambda v: sorted(v.labels.items()))
        return values
