"""TokenReview and SubjectAccessReview against an HTTP stand-in for the Kubernetes API: allow, deny, cache,
an unavailable authorizer, anonymous requests, and client CAs read from the ConfigMap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.pki import CertificateAuthority
from tests.adapter.conftest import VALUES
from tests.adapter.kube_standin import KubeStandIn
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

LENGTH = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"
BACKLOG = f"{VALUES}/default/celery_queue_backlog?labelSelector=queue%3Danalyses"


def hpa_policy(spec: dict[str, Any]) -> bool:
    """The HPA controller may read celery_queue_length only."""
    attrs = spec.get("resourceAttributes") or {}
    return (
        spec["user"] == "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
        and attrs.get("resource") == "celery_queue_length"
    )


@pytest.fixture
def standin() -> Iterator[KubeStandIn]:
    server = KubeStandIn(
        {"hpa-token": {"username": "system:serviceaccount:kube-system:horizontal-pod-autoscaler", "groups": ["hpa"]}},
        hpa_policy,
    ).start()
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_review_and_access_review_with_cache(  # type: ignore[no-untyped-def]
    redis_url: str, standin: KubeStandIn, adapter_factory, client_factory, tmp_path: Path
) -> None:
    kubeconfig = standin.kubeconfig(tmp_path / "standin.kubeconfig")
    adapter = adapter_factory(
        ["--broker-url", redis_url, "--poll-interval", "0.2"],
        "--authentication-kubeconfig",
        str(kubeconfig),
        "--authorization-webhook-cache-authorized-ttl",
        "1s",
        "--authorization-webhook-cache-unauthorized-ttl",
        "10s",
    )
    client = client_factory(adapter, anonymous=True)
    wait_for(lambda: client.get(LENGTH, bearer("hpa-token")).status == 200, 30, what="allowed")
    reviews_before = len(standin.access_reviews)
    for _ in range(5):
        assert client.get(LENGTH, bearer("hpa-token")).status == 200
    assert len(standin.access_reviews) == reviews_before  # allow cached
    assert len(standin.token_reviews) == 1  # token cached
    spec = standin.access_reviews[0]
    assert spec["resourceAttributes"] == {
        "namespace": "default",
        "verb": "list",
        "group": "external.metrics.k8s.io",
        "version": "v1beta1",
        "resource": "celery_queue_length",
    }
    assert spec["groups"] == ["hpa"]

    denied = client.get(BACKLOG, bearer("hpa-token"))
    assert denied.status == 403 and denied.json()["reason"] == "Forbidden"
    assert 'cannot list resource "celery_queue_backlog"' in denied.json()["message"]
    for _ in range(3):
        assert client.get(BACKLOG, bearer("hpa-token")).status == 403
    backlog_reviews = [
        s for s in standin.access_reviews if s["resourceAttributes"]["resource"] == "celery_queue_backlog"
    ]
    assert len(backlog_reviews) == 1  # deny cached

    time.sleep(1.5)  # the allow's 1 s TTL has passed: asked again
    assert client.get(LENGTH, bearer("hpa-token")).status == 200
    assert len([s for s in standin.access_reviews if s["resourceAttributes"]["resource"] == "celery_queue_length"]) == 2

    assert client.get(LENGTH, bearer("stolen-token")).status == 401
    anonymous = client.get(LENGTH)
    assert anonymous.status == 401 and anonymous.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert client.get("/healthz").status == 200  # always-allowed path, no credentials needed
    assert client.get("/metrics").status == 401

    standin.fail_reviews = True
    unavailable = client.get(f"{VALUES}/lensing/celery_queue_length", bearer("hpa-token"))
    assert unavailable.status == 503 and "Retry-After" not in unavailable.headers
    metrics = client_factory(adapter).get("/metrics").body.decode()
    assert 'lensing_adapter_authorization_total{decision="deny",source="cache"} 3.0' in metrics
    assert 'lensing_adapter_authentication_total{method="token",result="success"}' in metrics


def test_no_cluster_means_only_always_allowed(redis_url: str, adapter_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    adapter = adapter_factory(["--broker-url", redis_url])
    member = client_factory(adapter, adapter.client_ca.issue("carol", ["developers"]))
    reply = member.get(LENGTH)
    assert reply.status == 403
    assert reply.json()["details"] == {"group": "external.metrics.k8s.io", "kind": "celery_queue_length"}
    assert client_factory(adapter).get(LENGTH).status in (200, 503)  # system:masters: allowed


def test_client_ca_from_the_configmap(  # type: ignore[no-untyped-def]
    redis_url: str, standin: KubeStandIn, adapter_factory, client_factory, tmp_path: Path
) -> None:
    cluster_ca = CertificateAuthority("cluster-ca")
    standin.configmap_data = {
        "client-ca-file": cluster_ca.cert_pem.decode(),
        "requestheader-client-ca-file": "",
        "requestheader-allowed-names": "[]",
    }
    adapter = adapter_factory(
        ["--broker-url", redis_url],
        "--authentication-kubeconfig",
        str(standin.kubeconfig(tmp_path / "standin.kubeconfig")),
        client_ca=cluster_ca,
        client_ca_flag=False,
    )
    client = client_factory(adapter, cluster_ca.issue("admin", ["system:masters"]))
    assert wait_for(lambda: client.get(LENGTH).status in (200, 503), 30, what="accepted by the ConfigMap CA")
