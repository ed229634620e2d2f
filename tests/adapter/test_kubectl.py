"""kubectl as the real client, and the aggregator's front-proxy request, against a real adapter process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from celery import Celery

from adapter.pki import CertificateAuthority
from tests.adapter.conftest import VALUES, kubectl
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_kubectl_discovery_values_and_api_resources(redis_url: str, adapter_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    producer = Celery("producer", broker=redis_url)
    for i in range(3):
        producer.send_task("lensing.analyse_lens", args=[i], queue="analyses")
    adapter = adapter_factory(["--broker-url", redis_url, "--poll-interval", "0.2"])

    groups = json.loads(kubectl(adapter.kubeconfig, "get", "--raw", "/apis").stdout)
    assert groups["kind"] == "APIGroupList"
    assert [g["name"] for g in groups["groups"]] == ["external.metrics.k8s.io"]
    resources = json.loads(kubectl(adapter.kubeconfig, "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1").stdout)
    assert resources["kind"] == "APIResourceList"
    assert {r["name"] for r in resources["resources"]} == {
        "celery_queue_length",
        "celery_queue_backlog",
        "celery_queue_workers_needed",
    }
    assert all(r["namespaced"] and r["kind"] == "ExternalMetricValueList" for r in resources["resources"])

    def value() -> object:
        out = kubectl(
            adapter.kubeconfig, "get", "--raw", f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"
        )
        return out.returncode == 0 and json.loads(out.stdout)

    body = wait_for(lambda: (b := value()) and b["items"][0]["value"] == "3" and b, 30, what="value 3")
    assert body["kind"] == "ExternalMetricValueList"
    assert body["items"][0]["metricLabels"] == {"queue": "analyses"}

    listing = kubectl(adapter.kubeconfig, "api-resources", cache_dir=tmp_path / "kcache")
    assert listing.returncode == 0, listing.stderr
    assert "unable to retrieve" not in listing.stderr
    lines = {line.split()[0] for line in listing.stdout.splitlines()[1:]}
    assert {"celery_queue_length", "celery_queue_backlog", "celery_queue_workers_needed"} <= lines

    missing = kubectl(adapter.kubeconfig, "get", "--raw", f"{VALUES}/default/celery_queue_nope")
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_front_proxy_headers_only_from_the_front_proxy(
    redis_url: str,
    adapter_factory,  # type: ignore[no-untyped-def]
    client_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    Celery("producer", broker=redis_url).send_task("lensing.analyse_lens", args=[1], queue="analyses")
    front_ca = CertificateAuthority("front-proxy-ca")
    (tmp_path / "front-ca.crt").write_bytes(front_ca.cert_pem)
    adapter = adapter_factory(
        ["--broker-url", redis_url, "--poll-interval", "0.2"],
        "--requestheader-client-ca-file",
        str(tmp_path / "front-ca.crt"),
        "--requestheader-allowed-names",
        "front-proxy-client",
    )
    path = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"
    as_masters = {"X-Remote-User": "system:kube-controller-manager", "X-Remote-Group": "system:masters"}

    # the aggregator: front-proxy certificate with an allowed CN, the user in the headers
    aggregator = client_factory(adapter, front_ca.issue("front-proxy-client"))
    reply = wait_for(lambda: (r := aggregator.get(path, as_masters)).status == 200 and r, 30, what="200")
    assert reply.json()["items"][0]["metricName"] == "celery_queue_length"
    # without a user header the front-proxy certificate alone is nobody
    assert aggregator.get(path).status == 401
    # a front-proxy CA certificate whose CN is not an allowed name: headers ignored
    stranger = client_factory(adapter, front_ca.issue("someone-else"))
    assert stranger.get(path, as_masters).status == 401
    # an ordinary client certificate (client CA) sending the same headers: it is itself, not system:masters
    ordinary = client_factory(adapter, adapter.client_ca.issue("alice", ["developers"]))
    reply = ordinary.get(path, as_masters)
    assert reply.status == 403
    assert reply.json()["reason"] == "Forbidden"
    assert 'User "alice"' in reply.json()["message"]
