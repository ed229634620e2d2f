"""custom.metrics.k8s.io end to end: kubectl -> the adapter (HTTPS, client certificate) -> a real Prometheus
scraping pretend API pods with known rates; pods listed from a stand-in Kubernetes API."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.quantity import parse_quantity
from lensing_harness.adapter_process import RunningAdapter, start_adapter
from tests.adapter.conftest import Client, kubectl
from tests.adapter.faulty_kube_api import FaultyKubeAPI
from tests.support.prometheus import (
    TEST_WINDOW_SECONDS,
    PrometheusServer,
    RequestCounterServer,
    prometheus_scraping,
    short_window_rules,
)
from tests.support.services import claimed_redis_db, wait_for

pytestmark = pytest.mark.integration

RATES = {("lensing", "api-0"): 4.0, ("lensing", "api-1"): 10.0, ("lensing", "api-2"): 2.5}
PODS = {
    "lensing": {
        "api-0": {"app": "api"},
        "api-1": {"app": "api"},
        "api-2": {"app": "api", "track": "canary"},
        "api-3": {"app": "api"},  # listed, but Prometheus has nothing for it
        "worker-0": {"app": "worker"},
    }
}
CONFIG = {"brokers": [{"name": "platform", "url": "REPLACED", "namespaces": ["*"]}], **short_window_rules()}
V2 = "/apis/custom.metrics.k8s.io/v1beta2"
V1 = "/apis/custom.metrics.k8s.io/v1beta1"
BY_SELECTOR = "/namespaces/lensing/pods/*/http_requests_per_second?labelSelector=app%3Dapi"


class Env:
    def __init__(
        self, adapter: RunningAdapter, prom: PrometheusServer, app: RequestCounterServer, kube: FaultyKubeAPI
    ) -> None:
        self.adapter, self.prom, self.app, self.kube = adapter, prom, app, kube
        self.client = Client(adapter, None)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return kubectl(self.adapter.kubeconfig, *args)

    def raw(self, path: str) -> dict[str, Any]:
        done = self.kubectl("get", "--raw", path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def status(self, path: str) -> tuple[int, dict[str, Any]]:
        """The HTTP status and body, for the answers kubectl turns into an error line."""
        reply = self.client.get(path)
        return reply.status, reply.json()


def close_to(quantity: str, expected: float) -> bool:
    return math.isclose(float(parse_quantity(quantity)), expected, rel_tol=0.03)


@contextlib.contextmanager
def running_env(workdir: Path) -> Iterator[Env]:
    """The stand-in Kubernetes API, Prometheus scraping the pretend pods and the adapter, once the adapter
    serves the known rates."""
    kube = FaultyKubeAPI(pods=PODS).start()
    lister = kube.kubeconfig(workdir / "lister.kubeconfig")
    try:
        with claimed_redis_db() as db, prometheus_scraping(RATES) as (prom, app):
            config = json.loads(json.dumps(CONFIG))
            config["brokers"][0]["url"] = f"redis://127.0.0.1:6379/{db}"
            (workdir / "adapter.yaml").write_text(yaml.safe_dump(config))
            adapter = start_adapter(
                workdir,
                ["--config", str(workdir / "adapter.yaml")],
                extra_args=[
                    "--prometheus-url",
                    prom.url,
                    "--prometheus-timeout",
                    "2",
                    "--custom-metrics-cache-seconds",
                    "1",
                    "--lister-kubeconfig",
                    str(lister),
                ],
            )
            e = Env(adapter, prom, app, kube)
            try:

                def settled() -> bool:
                    code, body = e.status(V2 + BY_SELECTOR)
                    return (
                        code == 200
                        and len(body["items"]) == 3
                        and all(
                            close_to(i["value"], RATES[("lensing", i["describedObject"]["name"])])
                            for i in body["items"]
                        )
                    )

                # ~5 s for Prometheus to scrape a new target, one rate window more for the values to be whole
                wait_for(settled, timeout=40, interval=0.5, what="rates served by the adapter")
                yield e
            finally:
                e.client.close()
                adapter.stop()
    finally:
        kube.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_env(tmp_path_factory.mktemp("custom-api")) as e:
        yield e


def test_discovery_through_kubectl(env: Env) -> None:
    group = env.raw("/apis/custom.metrics.k8s.io")
    assert group["preferredVersion"] == {"groupVersion": "custom.metrics.k8s.io/v1beta2", "version": "v1beta2"}
    assert [v["version"] for v in group["versions"]] == ["v1beta2", "v1beta1"]
    names = {g["name"] for g in env.raw("/apis")["groups"]}
    assert {"custom.metrics.k8s.io", "external.metrics.k8s.io"} <= names
    for version in (V2, V1):
        resources = env.raw(version)
        assert resources["kind"] == "APIResourceList"
        assert {(r["name"], r["namespaced"], r["kind"], tuple(r["verbs"])) for r in resources["resources"]} == {
            ("pods/http_requests_per_second", True, "MetricValueList", ("get",)),
            ("namespaces/http_requests_per_second", False, "MetricValueList", ("get",)),
        }
    external = {r["name"] for r in env.raw("/apis/external.metrics.k8s.io/v1beta1")["resources"]}
    assert {"celery_queue_length", "celery_queue_backlog", "api_requests_per_second"} <= external


def test_kubectl_api_versions_and_api_resources(env: Env) -> None:
    versions = env.kubectl("api-versions")
    assert versions.returncode == 0, versions.stderr
    assert {"custom.metrics.k8s.io/v1beta2", "custom.metrics.k8s.io/v1beta1"} <= set(versions.stdout.split())
    # kubectl leaves "pods/<metric>" out of the table (a name with "/" reads as a subresource), as it does
    # for prometheus-adapter; what matters is that discovery of the whole server succeeds.
    resources = env.kubectl("api-resources")
    assert resources.returncode == 0 and "unable to retrieve" not in resources.stderr, resources.stderr


def test_values_by_selector_equal_the_rates_v1beta2(env: Env) -> None:
    body = env.raw(V2 + BY_SELECTOR)
    assert (body["kind"], body["apiVersion"]) == ("MetricValueList", "custom.metrics.k8s.io/v1beta2")
    names = [item["describedObject"]["name"] for item in body["items"]]
    assert names == ["api-0", "api-1", "api-2"]  # api-3 has no value: left out; worker-0 not selected
    for item in body["items"]:
        name = item["describedObject"]["name"]
        assert item["describedObject"] == {"kind": "Pod", "name": name, "apiVersion": "v1", "namespace": "lensing"}
        assert item["metric"] == {"name": "http_requests_per_second", "selector": None}
        assert item["windowSeconds"] == TEST_WINDOW_SECONDS
        assert item["timestamp"].endswith("Z")
        assert close_to(item["value"], RATES[("lensing", name)]), item


def test_v1beta1_item_shape(env: Env) -> None:
    body = env.raw(V1 + "/namespaces/lensing/pods/*/http_requests_per_second?labelSelector=track%3Dcanary")
    assert body["apiVersion"] == "custom.metrics.k8s.io/v1beta1"
    (item,) = body["items"]
    assert set(item) == {"describedObject", "metricName", "timestamp", "window", "value", "selector"}
    assert (item["metricName"], item["window"], item["describedObject"]["name"]) == (
        "http_requests_per_second",
        5,
        "api-2",
    )
    assert close_to(item["value"], 2.5)


def test_single_pod_and_namespace_metric(env: Env) -> None:
    (item,) = env.raw(V2 + "/namespaces/lensing/pods/api-1/http_requests_per_second")["items"]
    assert item["describedObject"]["name"] == "api-1" and close_to(item["value"], 10.0)
    (ns_item,) = env.raw(V2 + "/namespaces/lensing/metrics/http_requests_per_second")["items"]
    assert ns_item["describedObject"] == {"kind": "Namespace", "name": "lensing", "apiVersion": "v1"}
    assert close_to(ns_item["value"], 4.0 + 10.0 + 2.5)


def test_metric_label_selector(env: Env) -> None:
    body = env.raw(V2 + BY_SELECTOR + "&metricLabelSelector=pod%20in%20(api-0)")
    assert [i["describedObject"]["name"] for i in body["items"]] == ["api-0"]
    assert body["items"][0]["metric"]["selector"] == {
        "matchExpressions": [{"key": "pod", "operator": "In", "values": ["api-0"]}]
    }


def test_external_metric_from_promql(env: Env) -> None:
    body = env.raw("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/api_requests_per_second")
    (item,) = body["items"]
    assert item["metricName"] == "api_requests_per_second" and close_to(item["value"], 16.5)


def test_selector_matching_no_pod_is_an_empty_list(env: Env) -> None:
    # What kubernetes-sigs/custom-metrics-apiserver's providers answer: 200, no items. The HPA controller
    # reports "no metrics returned from custom metrics API" and keeps the replicas.
    code, body = env.status(V2 + "/namespaces/lensing/pods/*/http_requests_per_second?labelSelector=app%3Dnothing")
    assert (code, body["kind"], body["items"]) == (200, "MetricValueList", [])


def test_errors_are_status_objects(env: Env) -> None:
    for path, code, reason, text in [
        (V2 + "/namespaces/lensing/pods/*/nope", 404, "NotFound", "could not find the metric nope for pods"),
        (V2 + "/namespaces/lensing/pods/api-3/http_requests_per_second", 404, "NotFound", "for pods api-3"),
        (
            V2 + "/namespaces/lensing/pods/*/http_requests_per_second?labelSelector=app%3D%3D%3D",
            400,
            "BadRequest",
            "labelSelector",
        ),
        (V2 + "/namespaces/lensing/services/*/http_requests_per_second", 404, "NotFound", "served:"),
        ("/apis/custom.metrics.k8s.io/v1beta3", 404, "NotFound", "could not find"),
    ]:
        got, body = env.status(path)
        assert (got, body["kind"], body["code"], body["reason"]) == (code, "Status", code, reason), (path, body)
        assert text in body["message"], (path, body)
    done = env.kubectl("get", "--raw", V2 + "/namespaces/lensing/pods/*/nope")
    assert done.returncode != 0 and "NotFound" in done.stderr


def test_adapter_metrics_count_prometheus_queries(env: Env) -> None:
    text = env.client.get("/metrics").body.decode()
    assert 'lensing_adapter_prometheus_queries_total{result="success"}' in text
    assert "lensing_adapter_prometheus_query_duration_seconds_bucket" in text


def test_pod_list_failure_is_503(env: Env) -> None:
    env.kube.fail_pod_lists = True
    try:
        path = V2 + "/namespaces/lensing/pods/*/http_requests_per_second?labelSelector=app%3Dapi,track"
        code, body = wait_for(lambda: (r := env.status(path))[0] != 200 and r, timeout=10, what="503")
        assert (code, body["reason"]) == (503, "ServiceUnavailable") and "unable to list pods" in body["message"]
    finally:
        env.kube.fail_pod_lists = False


def test_prometheus_stopped_is_503_never_zero(tmp_path: Path) -> None:
    """Stops a Prometheus of its own, behind an adapter of its own: the module's stay up for the other
    tests, whatever the order."""
    with running_env(tmp_path) as own:
        paths = (
            V2 + BY_SELECTOR,
            V1 + BY_SELECTOR,
            V2 + "/namespaces/lensing/pods/api-0/http_requests_per_second",
            V2 + "/namespaces/lensing/metrics/http_requests_per_second",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/api_requests_per_second",
        )
        for path in paths:
            assert own.status(path)[0] == 200, path  # values there: what a 0 would hide
        own.prom.stop()
        for path in paths:
            # past the 1 s cache: the adapter asks Prometheus again and finds it gone
            code, body = wait_for(
                lambda p=path: (r := own.status(p))[0] != 200 and r, timeout=10, what=f"503 for {path}"
            )
            assert (code, body["reason"]) == (503, "ServiceUnavailable"), body
            assert "unable to fetch metrics from Prometheus" in body["message"]
        done = own.kubectl("get", "--raw", V2 + BY_SELECTOR)
        assert done.returncode != 0 and "ServiceUnavailable" in done.stderr
