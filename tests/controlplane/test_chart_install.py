"""The chart installed for real into kube-apiserver v1.35: `helm install` (no dry run) with the default values and
the tested value sets that need no CRDs, every object accepted and stored; the generated serving certificate
kept across `helm upgrade` by a real `lookup`; tls.mode=existingSecret reading ca.crt from a real Secret;
`helm uninstall` leaving nothing behind.

The value sets that render prometheus-operator or cert-manager objects (monitoring-api, monitoring-forced, full,
tls-cert-manager) are not installed: no registry package ships those projects' CRDs, so their objects stay
checked by the validators of tests/chart (the @kubernetes-models packages' schemas).
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, ci_value
from tests.support.controlplane import HELM, ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NAMESPACE = "lensing"
RELEASE = "lm-install"
#: the throwaway CA of the chart's ci/tls-existing-secret-values.yaml
EXISTING_CA_B64: str = ci_value("tls-existing-secret", "adapter", "tls", "caBundle")
EXISTING_CA_PEM = base64.b64decode(EXISTING_CA_B64).decode()
#: the value sets of tests/chart/conftest.py whose objects a cluster without extra CRDs accepts
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "tls-existing-secret": [
        "--set", "adapter.tls.mode=existingSecret",
        "--set", "adapter.tls.existingSecret=adapter-serving",
        "--set", f"adapter.tls.caBundle={EXISTING_CA_B64}",
    ],
    "insecure-by-name": ["--set", "adapter.apiService.insecureSkipTLSVerify=true"],
    "features-off": ["--set", "adapter.customMetrics.enabled=false", "--set", "gpu.attribution.enabled=false"],
    "hpas-and-network-policy": [  # the parts of the `full` set that need no CRDs
        "--set", "workerHPA.enabled=true", "--set", "apiHPA.enabled=true", "--set", "networkPolicy.enabled=true",
        "--set", "adapter.podAntiAffinity=hard", "--set", "gpu.runtimeClassName=nvidia",
        "--set-json", 'adapter.config={"brokers": [{"name": "main", "url": "redis://redis:6379/0"}]}',
    ],
}  # fmt: skip

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "APIService", "Namespace", "RuntimeClass"}


class Helm:
    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.env = {
            "KUBECONFIG": str(plane.admin_kubeconfig),
            "HELM_CACHE_HOME": str(workdir / "cache"),
            "HELM_CONFIG_HOME": str(workdir / "config"),
            "HELM_DATA_HOME": str(workdir / "data"),
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=180, env=self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def manifest(self, release: str = RELEASE) -> list[dict[str, Any]]:
        out = self("get", "manifest", release, "-n", NAMESPACE).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    runner = Helm(control_plane, tmp_path_factory.mktemp("helm"))
    control_plane.ensure_namespace(NAMESPACE)
    yield runner
    runner("uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found", check=False)


def path_of(obj: dict[str, Any], plane: ControlPlane) -> str:
    """The REST path of a rendered object, from the API server's discovery (kubectl explains the resource)."""
    api_version, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    resources = plane.get(base).body["resources"]
    (resource,) = [r["name"] for r in resources if r["kind"] == kind and "/" not in r["name"]]
    if kind in CLUSTER_SCOPED:
        return f"{base}/{resource}/{meta['name']}"
    return f"{base}/namespaces/{meta.get('namespace', NAMESPACE)}/{resource}/{meta['name']}"


def stored(plane: ControlPlane, obj: dict[str, Any]) -> dict[str, Any] | None:
    reply = plane.get(path_of(obj, plane))
    if reply.status == 404:
        return None
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


def release_secrets(plane: ControlPlane, release: str = RELEASE) -> list[str]:
    body = plane.get(f"/api/v1/namespaces/{NAMESPACE}/secrets?labelSelector=owner%3Dhelm,name%3D{release}").body
    return [s["metadata"]["name"] for s in body["items"]]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_install_accepts_every_object_and_uninstall_removes_them(helm: Helm, name: str) -> None:
    plane = helm.plane
    helm("install", RELEASE, str(CHART), "-n", NAMESPACE, *VALUE_SETS[name])
    try:
        objects = helm.manifest()
        assert objects, "the release has no objects"
        kinds = {o["kind"] for o in objects}
        assert {"Deployment", "Service", "APIService", "ServiceAccount"} <= kinds, kinds
        for obj in objects:
            got = stored(plane, obj)
            assert got is not None, f"{obj['kind']}/{obj['metadata']['name']} not in the API server"
            assert got["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    finally:
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    left = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if stored(plane, o) is not None]
    assert left == [], f"left behind by helm uninstall: {left}"
    assert release_secrets(plane) == []


def test_the_generated_certificate_survives_an_upgrade_through_lookup(helm: Helm) -> None:
    plane = helm.plane
    secret_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-lensing-metrics-adapter-tls"
    apiservice = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io"
    helm("install", RELEASE, str(CHART), "-n", NAMESPACE)
    try:
        first = plane.get(secret_path).body["data"]
        assert plane.get(apiservice).body["spec"]["caBundle"] == first["ca.crt"]
        helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--set", "adapter.replicas=3")
        again = plane.get(secret_path).body["data"]
        assert again == first  # lookup read the Secret back: same CA, certificate and key
        assert plane.get(apiservice).body["spec"]["caBundle"] == first["ca.crt"]
        deployment = plane.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-lensing-metrics-adapter")
        assert deployment.body["spec"]["replicas"] == 3  # the upgrade did apply
    finally:
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    assert plane.get(secret_path).status == 404
    # installed anew, with no Secret to look up: a fresh CA
    helm("install", RELEASE, str(CHART), "-n", NAMESPACE)
    try:
        assert plane.get(secret_path).body["data"]["ca.crt"] != first["ca.crt"]
    finally:
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")


def test_existing_secret_mode_reads_the_ca_from_the_real_secret(helm: Helm) -> None:
    plane = helm.plane
    plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "adapter-serving", "namespace": NAMESPACE},
            "data": {"ca.crt": EXISTING_CA_B64, "tls.crt": "", "tls.key": ""},
        }
    )
    try:
        helm(
            "install", RELEASE, str(CHART), "-n", NAMESPACE,
            "--set", "adapter.tls.mode=existingSecret", "--set", "adapter.tls.existingSecret=adapter-serving",
        )  # fmt: skip
        try:
            api = plane.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io").body
            assert base64.b64decode(api["spec"]["caBundle"]).decode() == EXISTING_CA_PEM
        finally:
            helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    finally:
        plane.kubectl("delete", "secret", "adapter-serving", "-n", NAMESPACE, "--ignore-not-found")
