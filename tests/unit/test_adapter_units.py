"""The adapter's small pieces: the HPA's arithmetic, request attributes, Go-compatible JSON, config files
and command-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.apiserver.request import request_info
from adapter.apiserver.status import not_found
from adapter.apiserver.wire import go_json, rfc3339
from adapter.cli import build_parser, duration, main
from adapter.config import ConfigError, parse_config
from lensing_harness.adapter_process import hpa_desired_replicas, hpa_line


@pytest.mark.parametrize(
    ("current", "total", "desired"),
    [
        (2, 0, 2),  # min replicas
        (2, 21, 2),  # 21 / (10 x 2) = 1.05: within the 0.1 tolerance, the HPA does not move
        (2, 45, 5),
        (5, 52, 5),  # ratio 1.04: within tolerance, stays
        (5, 56, 6),  # ratio 1.12: ceil(5.6) = 6
        (4, 1000, 10),  # max replicas
        (10, 5, 2),
    ],
)
def test_hpa_decision(current: int, total: int, desired: int) -> None:
    assert hpa_desired_replicas(current, total) == desired


def test_hpa_line() -> None:
    line = hpa_line([{"value": "30"}, {"value": "1500m"}], current_replicas=2)
    assert "31.5" in line and "-> 4 replicas" in line


def test_request_info_like_the_api_server() -> None:
    info = request_info("GET", "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/celery_queue_length")
    assert (info.is_resource, info.verb, info.namespace, info.resource, info.name) == (
        True,
        "list",
        "default",
        "celery_queue_length",
        "",
    )
    custom = request_info("GET", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/*/gpu_busy")
    assert (custom.resource, custom.name, custom.subresource, custom.verb) == ("pods", "*", "gpu_busy", "get")
    assert not request_info("GET", "/apis/external.metrics.k8s.io/v1beta1").is_resource
    assert request_info("POST", "/metrics").verb == "create"


def test_go_json_and_status() -> None:
    assert go_json({"message": "a<b & c>d", "n": 1}) == b'{"message":"a\\u003cb \\u0026 c\\u003ed","n":1}\n'
    message = "the server could not find the metric celery_queue_x"
    assert not_found(message, group="external.metrics.k8s.io", metric="celery_queue_x").status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NotFound",
        "details": {"name": "celery_queue_x", "group": "external.metrics.k8s.io", "kind": "celery_queue_x"},
        "code": 404,
    }
    assert rfc3339(1700000000.9) == "2023-11-14T22:13:20Z"


def test_config_file() -> None:
    brokers = parse_config(
        {
            "brokers": [
                {"name": "a", "url": "redis://r:6379/0", "namespaces": ["lensing"], "transportOptions": {"x": [1]}},
                {"name": "b", "url": "amqp://q", "namespaces": ["*"], "queues": ["analyses"]},
            ]
        }
    )
    assert brokers[0].transport_options == ("x=[1]",)
    assert brokers[1].namespaces == ("*",) and brokers[1].queues == ("analyses",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "non-empty list 'brokers:'"),
        ({"brokers": [{"name": "a", "url": "redis://x", "namespaces": ["ns"]}], "extra": 1}, "unknown key"),
        ({"brokers": [{"name": "a", "namespaces": ["ns"]}]}, "exactly one of url and urlFromEnv"),
        ({"brokers": [{"name": "a", "url": "redis://x"}]}, "list the namespaces"),
        ({"brokers": [{"name": "a", "url": "redis://x", "namespaces": ["Bad_NS"]}]}, "not a namespace name"),
        (
            {
                "brokers": [
                    {"name": "a", "url": "redis://x", "namespaces": ["ns"]},
                    {"name": "b", "url": "redis://y", "namespaces": ["ns"]},
                ]
            },
            "already bound to broker 'a'",
        ),
        ({"brokers": [{"name": "a", "urlFromEnv": "LM_TEST_UNSET_VAR", "namespaces": ["ns"]}]}, "is not set"),
    ],
)
def test_config_errors(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "adapter.yaml")


def test_duration() -> None:
    assert duration("10s") == 10 and duration("1m30s") == 90 and duration("500ms") == 0.5 and duration("2") == 2


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cert-dir", str(tmp_path)]) == 2
    assert "no broker" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"brokers": [{"name": "a", "url": "kafka://x", "namespaces": ["*"]}]}))
    assert main(["--config", str(bad), "--cert-dir", str(tmp_path)]) == 2
    assert "unknown broker transport 'kafka'" in capsys.readouterr().err
    assert main(["--broker-url", "redis://x", "--tls-cert-file", str(tmp_path / "nope.crt")]) == 2
    assert "go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--secure-port", "http"])
    assert exit_info.value.code == 2


def test_adapter_metric_families_are_in_the_catalog() -> None:
    from adapter.apiserver.metrics import AdapterStats
    from adapter.config import single_broker
    from adapter.providers.brokers import BrokerBinding, BrokerHealthCollector, BrokerMetrics
    from lensing_core.brokers import BrokerSnapshot
    from lensing_core.catalog import ADAPTER, PROCESS
    from lensing_core.poller import BrokerPoller, PollState

    class Reader:
        transport = "redis"

        def read(self) -> BrokerSnapshot:
            raise AssertionError("not polled in this test")

        def close(self) -> None:
            pass

    poller = BrokerPoller(Reader(), 1.0)  # type: ignore[arg-type]
    poller._state = PollState(True, BrokerSnapshot({}, 0.0, 0.0), None, None, 0.0)
    provider = BrokerMetrics([BrokerBinding(single_broker("redis://x", [], []), poller)])
    stats = AdapterStats()
    stats.request(200, "value", 0.001)
    stats.authn("x509", "success")
    stats.authz("allow", "always-allow-group")
    registry = stats.registry
    registry.register(BrokerHealthCollector(provider))
    names = {metric.name for metric in registry.collect()}
    served = {**ADAPTER, **PROCESS}
    # the HTTP layer's rejection counter is registered by the server beside these (tests/adapter/test_hostile.py),
    # the pod deletion cost's by --pod-deletion-cost (tests/unit/test_pod_cost.py)
    elsewhere = ("prometheus", "http_rejected", "pod_deletion_cost")
    expected = {name.removesuffix("_total") for name in served if not any(part in name for part in elsewhere)}
    assert names == expected
    for metric in registry.collect():
        for sample in metric.samples:
            spec = served.get(sample.name) or served.get(metric.name) or served[metric.name + "_total"]
            assert set(sample.labels) - {"le"} == set(spec.labels), sample


def test_config_file_takes_over_broker_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod that carries CELERY_BROKER_URL for its workers can still use --config (urlFromEnv reads it)."""
    from adapter.cli import brokers_from

    config = tmp_path / "adapter.yaml"
    config.write_text(json.dumps({"brokers": [{"name": "a", "urlFromEnv": "CELERY_BROKER_URL", "namespaces": ["*"]}]}))
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    brokers = brokers_from(build_parser().parse_args(["--config", str(config)]))
    assert [b.name for b in brokers] == ["a"]
    monkeypatch.delenv("CELERY_BROKER_URL")
    with pytest.raises(ConfigError, match="--broker-url go in the file"):
        brokers_from(build_parser().parse_args(["--config", str(config), "--broker-url", "redis://x"]))
