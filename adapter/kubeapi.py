"""The few calls to the Kubernetes API an aggregated server makes: TokenReview, SubjectAccessReview and
reading the ``kube-system/extension-apiserver-authentication`` ConfigMap.

Connection settings come from a kubeconfig (``--authentication-kubeconfig`` / ``--authorization-kubeconfig``)
or, inside a pod, from the service account (``KUBERNETES_SERVICE_HOST`` and the mounted token and CA).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(ValueError):
    """A kubeconfig that cannot be used; the message names the file and the field."""


class KubeAPIError(RuntimeError):
    """The API could not be asked or answered something unusable (``status``: the HTTP status, 0 when none
    came back)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Connection:
    server: str
    ssl_context: ssl.SSLContext | bool
    token_file: str | None = None
    token: str | None = None

    def auth_header(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            # service-account tokens are rotated on disk: read it per request (a small file)
            token = Path(self.token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _materialise(data_b64: str, suffix: str) -> str:
    """Write base64 ``*-data`` content to a private temporary file (ssl wants paths for cert chains)."""
    fd, path = tempfile.mkstemp(prefix="lm-kubeconfig-", suffix=suffix)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64decode(data_b64))
    return path


def load_kubeconfig(path: str) -> Connection:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"kubeconfig {path}: cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise KubeConfigError(f"kubeconfig {path}: not a kubeconfig (expected a mapping with clusters/users/contexts)")

    def named(section: str, name: str | None) -> dict[str, Any]:
        items = config.get(section) or []
        if not isinstance(items, list):
            raise KubeConfigError(f"kubeconfig {path}: {section}: expected a list of {{name, {section[:-1]}}} entries")
        for item in items:
            if isinstance(item, dict) and (name is None or item.get("name") == name):
                body = item.get(section[:-1]) or {}
                if not isinstance(body, dict):
                    raise KubeConfigError(f"kubeconfig {path}: {section[:-1]} {item.get('name')!r}: expected a mapping")
                return dict(body)
        raise KubeConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    context_name = config.get("current-context") or None
    context = named("contexts", context_name)
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"kubeconfig {path}: the cluster has no server")
    base = Path(path).parent
    if cluster.get("insecure-skip-tls-verify"):
        context_ssl = ssl.create_default_context()
        context_ssl.check_hostname = False
        context_ssl.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        try:
            cadata = base64.b64decode(str(cluster["certificate-authority-data"]), validate=True).decode()
            context_ssl = ssl.create_default_context(cadata=cadata)
        except (ValueError, ssl.SSLError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise KubeConfigError(
                f"kubeconfig {path}: certificate-authority-data: expected base64 of PEM certificates ({exc})"
            ) from None
    elif cluster.get("certificate-authority"):
        try:
            context_ssl = ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
        except (OSError, ssl.SSLError) as exc:
            raise KubeConfigError(f"kubeconfig {path}: certificate-authority: {exc}") from None
    else:
        context_ssl = ssl.create_default_context()
    cert = user.get("client-certificate") and str(base / user["client-certificate"])
    key = user.get("client-key") and str(base / user["client-key"])
    written: list[str] = []
    if user.get("client-certificate-data"):
        cert = _materialise(user["client-certificate-data"], ".crt")
        written.append(cert)
    if user.get("client-key-data"):
        key = _materialise(user["client-key-data"], ".key")
        written.append(key)
    try:
        if cert and key:
            context_ssl.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"kubeconfig {path}: client certificate: {exc}") from None
    finally:
        for written_path in written:  # loaded into the context: the files are not needed any more
            os.unlink(written_path)
    token_file = user.get("tokenFile") and str(base / user["tokenFile"])
    return Connection(str(server).rstrip("/"), context_ssl, token=user.get("token"), token_file=token_file)


def in_cluster() -> Connection | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = SERVICE_ACCOUNT_DIR / "token"
    if not host or not port or not token.exists():
        return None
    host = f"[{host}]" if ":" in host else host
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    return Connection(f"https://{host}:{port}", context, token_file=str(token))


class KubeClient:
    """JSON over HTTPS to one API server; a session kept open for the process."""

    def __init__(self, connection: Connection, timeout: float = 10.0) -> None:
        self.connection = connection
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", **self.connection.auth_header()}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            async with self._session_now().request(
                method,
                self.connection.server + path,
                data=json.dumps(body) if body is not None else None,
                headers=headers,
                ssl=self.connection.ssl_context,
            ) as response:
                text = await response.text()
                if response.status >= 300:
                    raise KubeAPIError(f"{method} {path}: HTTP {response.status}: {text[:200]}", response.status)
                data = json.loads(text)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise KubeAPIError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        if not isinstance(data, dict):
            raise KubeAPIError(f"{method} {path}: the answer is not a JSON object")
        return data

    async def token_review(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        return await self.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)

    async def subject_access_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        return await self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    async def configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
