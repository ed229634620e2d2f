"""Kubeconfig files for the demo's kubectl, the tests' stand-in API servers and the chart tests."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

import yaml


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    user: Mapping[str, str],
    *,
    name: str = "adapter",
    user_name: str = "demo",
    server_ca_pem: bytes | None = None,
) -> Path:
    """One cluster, one user (``user``: its kubeconfig fields, a token or client certificate data), one
    context, current. ``server_ca_pem``: trust this CA for the server."""
    cluster: dict[str, str] = {"server": server}
    if server_ca_pem is not None:
        cluster["certificate-authority-data"] = b64(server_ca_pem)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user_name, "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user_name}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
