"""The chart's HPAs end to end: the adapter started with the arguments, environment and config file the chart
renders, against a real Prometheus (scraping pretend API pods with known rates) and a real Redis, asked through
kubectl exactly what the HPA controller asks for the rendered HPAs' metrics. The HPAs' decisions are the real
controller's, in tests/controlplane/test_hpa.py.

Stand-ins only where no cluster runs: the pods a selector names come from a stand-in Kubernetes API (the chart's
pod-reader RBAC covers the real one), the serving certificate and port are start_adapter's (a free loopback port),
and the config file's PromQL uses a 5 s rate window instead of the shipped 2 m, so the rates settle in seconds.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from adapter.quantity import parse_quantity
from lensing_harness.adapter_process import RunningAdapter, start_adapter
from tests.adapter.conftest import kubectl
from tests.adapter.faulty_kube_api import FaultyKubeAPI
from tests.chart.conftest import CHART, NAMESPACE, ROOT, Doc, Render, render
from tests.support.prometheus import prometheus_scraping, short_window_rules
from tests.support.services import claimed_redis_db, wait_for

pytestmark = pytest.mark.integration

DEFAULT_PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
API_SELECTOR = {"app": "lensing", "component": "api"}  # the platform API Deployment's pod selector (design 1.3)
RATES = {  # requests per second per pretend pod: 5400 in all over the three API pods
    (NAMESPACE, "api-0"): 1500.0,
    (NAMESPACE, "api-1"): 1800.0,
    (NAMESPACE, "api-2"): 2100.0,
    (NAMESPACE, "streamlit-0"): 9000.0,  # not an API pod: the selector leaves it out
}
PODS = {
    NAMESPACE: {
        "api-0": API_SELECTOR,
        "api-1": API_SELECTOR,
        "api-2": API_SELECTOR,
        "streamlit-0": {"app": "lensing", "component": "streamlit"},
    }
}
WAITING = 35  # messages in the worker queue
ADAPTER_CONFIG = {
    "brokers": [{"name": "platform", "urlFromEnv": "LENSING_BROKER_URL", "queues": ["celery"], "namespaces": ["*"]}],
    **short_window_rules(),
}


@dataclass
class Stack:
    chart: Render
    adapter: RunningAdapter

    def raw(self, path: str) -> dict[str, Any]:
        done = kubectl(self.adapter.kubeconfig, "get", "--raw", path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def selector(labels: dict[str, str]) -> str:
    return urllib.parse.quote(",".join(f"{k}={v}" for k, v in sorted(labels.items())), safe="")


def container(r: Render, kind: str, suffix: str) -> Doc:
    return r.one(kind, suffix)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def local_args(args: list[str], config: Path, prometheus_url: str, lister: Path) -> list[str]:
    """The chart's adapter arguments for a process on this machine: the same flags and values, except the
    files and addresses that exist only in the pod."""
    assert args[0] == "adapter", args
    out = []
    for arg in args[1:]:
        flag, eq, value = arg.partition("=")
        if flag in ("--secure-port", "--tls-cert-file", "--tls-private-key-file"):
            continue  # start_adapter: a free loopback port and its own serving certificate
        if flag == "--config":
            value = str(config)
        elif flag == "--prometheus-url":
            assert value == DEFAULT_PROMETHEUS
            value = prometheus_url
        out.append(f"{flag}{eq}{value}")
    assert any(a.startswith("--prometheus-url=") for a in out) and any(a.startswith("--config=") for a in out)
    return [*out, f"--lister-kubeconfig={lister}"]


def local_env(r: Render, adapter: Doc) -> dict[str, str]:
    """The adapter's environment, Secret references resolved from the rendered Secrets."""
    secrets = {d["metadata"]["name"]: d for d in r.of_kind("Secret")}
    env = {}
    for item in adapter["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = secrets[ref["name"]]
            raw = secret.get("stringData", {}).get(ref["key"])
            env[item["name"]] = raw if raw is not None else base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("chart-hpa")
    kube = FaultyKubeAPI(pods=PODS).start()
    lister = kube.kubeconfig(workdir / "lister.kubeconfig")
    try:
        with claimed_redis_db() as db, prometheus_scraping(RATES) as (prom, _app):
            broker_url = f"redis://127.0.0.1:6379/{db}"
            r = render(
                "hpa-e2e", CHART, ROOT,
                "--set", "apiHPA.enabled=true", "--set", "workerHPA.enabled=true",
                "--set", f"broker.url={broker_url}", "--set-json", f"adapter.config={json.dumps(ADAPTER_CONFIG)}",
            )  # fmt: skip
            adapter_container = container(r, "Deployment", "-adapter")
            secret = r.one("Secret", "-adapter-config")
            config = workdir / "adapter.yaml"
            config.write_bytes(base64.b64decode(secret["data"]["adapter.yaml"]))
            assert yaml.safe_load(config.read_text()) == ADAPTER_CONFIG
            env = local_env(r, adapter_container)
            assert env == {"LENSING_BROKER_URL": broker_url}
            redis.Redis.from_url(broker_url).lpush("celery", *[json.dumps({"n": n}) for n in range(WAITING)])
            adapter = start_adapter(
                workdir, [], extra_args=local_args(adapter_container["args"], config, prom.url, lister), env=env
            )
            try:
                yield Stack(r, adapter)
            finally:
                adapter.stop()
    finally:
        kube.stop()


def test_api_hpa_pods_metric_through_kubectl(stack: Stack) -> None:
    hpa = stack.chart.one("HorizontalPodAutoscaler", "lensing-api-hpa")
    (pods_metric,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    metric, target = pods_metric["metric"]["name"], pods_metric["target"]
    assert target["type"] == "AverageValue"
    namespace = hpa["metadata"]["namespace"]
    # what the HPA controller asks: the scale target's pod selector, every pod
    path = f"/namespaces/{namespace}/pods/*/{metric}?labelSelector={selector(API_SELECTOR)}"
    got: dict[str, Decimal] = {}

    def settled() -> bool:
        body = stack.raw(f"/apis/custom.metrics.k8s.io/v1beta2{path}")
        got.clear()
        got.update({i["describedObject"]["name"]: parse_quantity(i["value"]) for i in body["items"]})
        return set(got) == {"api-0", "api-1", "api-2"} and all(
            math.isclose(float(v), RATES[(namespace, name)], rel_tol=0.03) for name, v in got.items()
        )

    # ~5 s for Prometheus to scrape a new target, one rate window more for the values to be whole
    wait_for(settled, timeout=60, interval=1, what=f"{metric} for the API pods")
    body = stack.raw(f"/apis/custom.metrics.k8s.io/v1beta2{path}")
    for item in body["items"]:
        assert item["describedObject"] == {
            "kind": "Pod", "namespace": namespace, "name": item["describedObject"]["name"], "apiVersion": "v1",
        }  # fmt: skip
        assert item["metric"]["name"] == metric
    # older HPA controllers ask v1beta1: the same pods
    v1 = stack.raw(f"/apis/custom.metrics.k8s.io/v1beta1{path}")
    assert {i["describedObject"]["name"] for i in v1["items"]} == set(got)
    # what the HPA controller makes of it (6 of 3..20): tests/controlplane/test_hpa.py, the real controller


def test_worker_hpa_external_metric_through_kubectl(stack: Stack) -> None:
    hpa = stack.chart.one("HorizontalPodAutoscaler", "lensing-celery-worker")
    (external,) = [m["external"] for m in hpa["spec"]["metrics"]]
    metric, labels = external["metric"]["name"], external["metric"]["selector"]["matchLabels"]
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{hpa['metadata']['namespace']}/{metric}"
        f"?labelSelector={selector(labels)}"
    )
    values: list[Decimal] = []

    def served() -> bool:
        values[:] = [parse_quantity(i["value"]) for i in stack.raw(path)["items"]]
        return values == [Decimal(WAITING)]

    wait_for(served, timeout=30, interval=0.5, what=f"{metric} of the queue")
    assert external["target"] == {"type": "AverageValue", "averageValue": "10"}
    # what the HPA controller makes of a burst: tests/controlplane/test_hpa.py, the real controller
