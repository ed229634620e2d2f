"""The adapter's Prometheus options, and the providers they add: custom.metrics.k8s.io and PromQL external metrics.

Without ``--prometheus-url`` the adapter serves the broker metrics only (no custom.metrics.k8s.io group:
register its APIService only where the adapter is given a Prometheus).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapter.apiserver.groups import CustomMetricsAPI, MetricsAPI
from adapter.config import ConfigError, read_config
from adapter.kubeapi import KubeClient, in_cluster, load_kubeconfig
from adapter.providers.custom import PodLister, PromCustomMetrics
from adapter.providers.interface import ExternalMetricsProvider
from adapter.providers.pods import KubePodLister
from adapter.providers.prometheus import PrometheusClient
from adapter.providers.promql import PromExternalMetrics
from adapter.providers.rules import RuleError, parse_rules
from lensing_core.options import add_option, non_negative_float, positive_float, positive_int

log = logging.getLogger("adapter.custom")


def http_url(text: str) -> str:
    if text and not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://prometheus:9090, got {text!r}"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("custom metrics (from Prometheus)")
    add_option(
        group,
        "--prometheus-url",
        type=http_url,
        default="",
        env="LENSING_ADAPTER_PROMETHEUS_URL",
        help="Prometheus to answer custom.metrics.k8s.io and the config file's externalMetrics from, such as "
        "http://prometheus-operated.monitoring:9090 (default: none, custom metrics not served)",
    )
    add_option(
        group,
        "--prometheus-timeout",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        env="LENSING_ADAPTER_PROMETHEUS_TIMEOUT",
        help="a query Prometheus has not answered by then is a 503 (default 5)",
    )
    add_option(
        group,
        "--custom-metrics-cache-seconds",
        type=non_negative_float,
        default=5.0,
        metavar="SECONDS",
        env="LENSING_ADAPTER_CUSTOM_METRICS_CACHE_SECONDS",
        help="how long a query's result (and a pod list) is reused; 0 asks every time (default 5)",
    )
    add_option(
        group,
        "--max-concurrent-queries",
        type=positive_int,
        default=16,
        env="LENSING_ADAPTER_MAX_CONCURRENT_QUERIES",
        help="queries in flight to Prometheus at once; more wait their turn (default 16)",
    )
    add_option(
        group,
        "--lister-kubeconfig",
        default="",
        env="LENSING_ADAPTER_LISTER_KUBECONFIG",
        help="kubeconfig for listing the pods a selector names (default: in-cluster; with no cluster, "
        "the pods are those Prometheus has in the namespace and the selector is not applied)",
    )


@dataclass
class CustomSetup:
    prometheus: PrometheusClient | None = None
    promql_external: PromExternalMetrics | None = None
    custom: PromCustomMetrics | None = None
    lister_kube: KubeClient | None = None

    def external_providers(self) -> list[ExternalMetricsProvider]:
        """Served in external.metrics.k8s.io beside the brokers: the config file's externalMetrics, if any."""
        if self.promql_external is None or not self.promql_external.list_metrics():
            return []
        return [self.promql_external]

    def apis(self) -> list[MetricsAPI]:
        """custom.metrics.k8s.io, when there are custom rules to serve."""
        return [CustomMetricsAPI([self.custom])] if self.custom is not None else []

    async def close(self) -> None:
        for client in (self.prometheus, self.lister_kube):
            if client is not None:
                await client.close()


def _has_rules(document: object) -> bool:
    return isinstance(document, Mapping) and bool(document.get("customMetrics") or document.get("externalMetrics"))


def build(args: argparse.Namespace) -> CustomSetup:
    document: Any = read_config(args.config) if args.config else None
    if not args.prometheus_url:
        if _has_rules(document):
            raise ConfigError(f"--config {args.config}: customMetrics/externalMetrics need --prometheus-url")
        return CustomSetup()
    try:
        rules = parse_rules(document if isinstance(document, Mapping) else None, where=args.config or "defaults")
    except RuleError as exc:
        raise ConfigError(str(exc)) from None
    prometheus = PrometheusClient(
        args.prometheus_url,
        timeout=args.prometheus_timeout,
        cache_seconds=args.custom_metrics_cache_seconds,
        max_concurrent=args.max_concurrent_queries,
    )
    connection = load_kubeconfig(args.lister_kubeconfig) if args.lister_kubeconfig else in_cluster()
    lister_kube = KubeClient(connection) if connection is not None else None
    pods: PodLister | None = None
    if lister_kube is not None:
        pods = KubePodLister(lister_kube, cache_seconds=args.custom_metrics_cache_seconds)
        log.info("custom metrics: pods listed from %s", connection.server if connection else "")
    else:
        log.warning("custom metrics: no Kubernetes API to list pods: label selectors are not applied (local use)")
    setup = CustomSetup(prometheus, PromExternalMetrics(rules, prometheus), None, lister_kube)
    if rules.custom:
        setup.custom = PromCustomMetrics(rules, prometheus, pods)
    return setup
