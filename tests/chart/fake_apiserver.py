"""Just enough of a kube-apiserver (discovery and GET of Secrets) for `helm template --dry-run=server`, so the
chart's `lookup` of an existing Secret can be exercised without a cluster. Plain HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lensing_harness.kubeconfig import write_kubeconfig

# Every kind the chart renders (Helm maps each object to a resource before the dry run).
KINDS: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("secrets", "Secret", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("services", "Service", True),
        ("pods", "Pod", True),
        ("configmaps", "ConfigMap", True),
    ],
    "apps/v1": [("deployments", "Deployment", True), ("daemonsets", "DaemonSet", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "apiregistration.k8s.io/v1": [("apiservices", "APIService", False)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
}


def _resource_list(group_version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k, "verbs": ["get", "list", "create"]}
            for n, k, ns in KINDS[group_version]
        ],
    }


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/version":
        return {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "platform": "linux/amd64"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = []
        for gv in KINDS:
            if "/" in gv:
                group, version = gv.split("/")
                ref = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [ref], "preferredVersion": ref})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    if path == "/api/v1":
        return _resource_list("v1")
    if path.startswith("/apis/") and path[len("/apis/") :] in KINDS:
        return _resource_list(path[len("/apis/") :])
    return None


@contextmanager
def fake_apiserver(secrets: list[dict[str, Any]], kubeconfig: Path) -> Iterator[Path]:
    """Serve `secrets`; write a kubeconfig for it to `kubeconfig` and yield that path."""
    by_path = {f"/api/v1/namespaces/{s['metadata']['namespace']}/secrets/{s['metadata']['name']}": s for s in secrets}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            body = _discovery(path) or by_path.get(path)
            if body is None and path.endswith("/secrets"):
                body = {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
            code = 200 if body is not None else 404
            if body is None:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    write_kubeconfig(
        kubeconfig, f"http://127.0.0.1:{server.server_port}", {"token": "fake"}, name="fake", user_name="fake"
    )
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
