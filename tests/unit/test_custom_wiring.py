"""How the Prometheus options and the config file's PromQL sections become API groups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter import custom_cli
from adapter.apiserver.groups import ExternalMetricsAPI
from adapter.apiserver.request import ApiRequest
from adapter.cli import build_parser
from adapter.config import ConfigError, load_config
from adapter.providers.interface import ExternalValue, Passive
from adapter.providers.prometheus import PrometheusClient
from adapter.providers.promql import PromExternalMetrics
from adapter.providers.rules import parse_rules
from adapter.selectors import Selector

VALUES = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default"


class Brokers(Passive):
    source = "the brokers"

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, Selector]] = []

    def list_metrics(self) -> Sequence[str]:
        return ["celery_queue_length"]

    def answer_version(self, namespace: str, metric: str) -> None:
        return None

    async def external_metric(self, namespace: str, metric: str, selector: Selector) -> list[ExternalValue]:
        self.asked.append((namespace, metric, selector))
        return [ExternalValue(metric, {"from": "brokers"}, 0.0, 1)]


def promql(names: Sequence[str]) -> PromExternalMetrics:
    rules = parse_rules({"externalMetrics": [{"name": n, "query": "vector(1)"} for n in names]})
    return PromExternalMetrics(rules, PrometheusClient("http://127.0.0.1:1"))


def test_external_group_lists_both_and_sends_broker_metrics_to_the_brokers() -> None:
    brokers = Brokers()
    group = ExternalMetricsAPI([brokers, promql(["api_5xx_per_second"])])
    assert [r.name for r in group.resources("v1beta1")] == ["api_5xx_per_second", "celery_queue_length"]
    body = json.loads(asyncio.run(group.get(ApiRequest("GET", f"{VALUES}/celery_queue_length"), "v1beta1")))
    assert body["items"][0]["metricLabels"] == {"from": "brokers"}
    assert brokers.asked == [("default", "celery_queue_length", Selector())]


def test_a_promql_metric_may_not_shadow_a_broker_metric() -> None:
    with pytest.raises(ValueError, match="externalMetrics: celery_queue_length is already served from the brokers"):
        ExternalMetricsAPI([Brokers(), promql(["celery_queue_length"])])


def args(*argv: str) -> Any:
    return build_parser().parse_args(["--broker-url", "redis://127.0.0.1:6379/0", *argv])


def test_without_prometheus_url_no_custom_group(tmp_path: Path) -> None:
    setup = custom_cli.build(args())
    assert setup.apis() == [] and setup.external_providers() == [] and setup.prometheus is None
    config = tmp_path / "adapter.yaml"
    config.write_text(yaml.safe_dump({"externalMetrics": [{"name": "x", "query": "vector(1)"}]}))
    with pytest.raises(ConfigError, match="need --prometheus-url"):
        custom_cli.build(build_parser().parse_args(["--config", str(config)]))


def test_default_rules_with_prometheus_url() -> None:
    setup = custom_cli.build(args("--prometheus-url", "http://127.0.0.1:9090", "--lister-kubeconfig", ""))
    try:
        (group,) = setup.apis()
        assert [r.name for r in group.resources("v1beta2")] == [
            "pods/http_requests_per_second",
            "namespaces/http_requests_per_second",
        ]
        assert setup.external_providers() == []  # no externalMetrics: the brokers alone
    finally:
        asyncio.run(setup.close())


def test_config_file_shared_with_brokers(tmp_path: Path) -> None:
    config = tmp_path / "adapter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "brokers": [{"name": "platform", "url": "redis://127.0.0.1:6379/0", "namespaces": ["*"]}],
                "customMetrics": [{"name": "bad name", "query": "x"}],
            }
        )
    )
    assert [b.name for b in load_config(str(config))] == ["platform"]  # the brokers' parser accepts the sections
    with pytest.raises(ConfigError, match=r"customMetrics\[0\]: name must be a metric name"):
        custom_cli.build(build_parser().parse_args(["--config", str(config), "--prometheus-url", "http://p:9090"]))


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--prometheus-url", "prometheus:9090", "expected an http:// or https:// URL"),
        ("--custom-metrics-cache-seconds", "-1", "must be a number >= 0"),
        ("--max-concurrent-queries", "0", "must be a whole number >= 1"),
        ("--prometheus-timeout", "0", "must be a number above 0"),
    ],
)
def test_bad_flags_exit_2(flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([flag, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
