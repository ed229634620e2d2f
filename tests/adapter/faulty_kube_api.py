"""A Kubernetes API that misbehaves on demand, for the faults the real one (tests/support/controlplane.py) cannot
produce when a test wants them: SubjectAccessReviews that fail, answer garbage or hang, and pod lists that fail.
It also lists pods by label selector (custom metrics) where a test or benchmark needs many pods without a
control plane, and serves the extension-apiserver-authentication ConfigMap a test sets (its resourceVersion
changes with every change, as the real one's does) where a test replaces a CA there faster than the control
plane would. TokenReview, SubjectAccessReview and that ConfigMap as they really behave are tested against
the real API server in tests/controlplane."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Literal

from aiohttp import web

from adapter.authconfig import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from adapter.selectors import SelectorError, parse_selector
from lensing_harness.kubeconfig import write_kubeconfig
from tests.support.services import free_port

ReviewFault = Literal["error", "garbage", "hang"]


class FaultyKubeAPI:
    def __init__(self, pods: dict[str, dict[str, dict[str, str]]] | None = None) -> None:
        self.pods = pods or {}  # namespace -> pod name -> labels
        self.pod_lists = 0
        self.fail_pod_lists = False
        self.review_fault: ReviewFault = "error"
        self.access_reviews = 0
        # (resourceVersion, data) of the extension-apiserver-authentication ConfigMap; None: there is none
        self._auth_configmap: tuple[int, dict[str, str]] | None = None
        self.configmap_reads = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _access_review(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.access_reviews += 1
        if self.review_fault == "hang":
            await asyncio.sleep(3600)
        if self.review_fault == "garbage":
            return web.Response(text="<html>proxy error</html>", content_type="application/json")
        return web.json_response({"kind": "Status", "code": 500, "message": "etcd unavailable"}, status=500)

    async def _pods(self, request: web.Request) -> web.Response:
        self.pod_lists += 1
        if self.fail_pod_lists:
            return web.json_response({"kind": "Status", "code": 500, "message": "etcd unavailable"}, status=500)
        try:
            selector = parse_selector(request.query.get("labelSelector", ""))
        except SelectorError as exc:
            return web.json_response({"kind": "Status", "code": 400, "message": str(exc)}, status=400)
        namespace = request.match_info["namespace"]
        items = [
            {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "status": {"phase": "Running"}}
            for name, labels in sorted(self.pods.get(namespace, {}).items())
            if selector.matches(labels)
        ]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def set_auth_configmap(self, data: dict[str, str]) -> None:
        """Create or replace the ConfigMap's data; its resourceVersion goes up, as on every real change."""
        version = self._auth_configmap[0] if self._auth_configmap else 0
        self._auth_configmap = (version + 1, dict(data))

    async def _configmap(self, request: web.Request) -> web.Response:
        self.configmap_reads += 1
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        current = self._auth_configmap
        if (namespace, name) != (CONFIGMAP_NAMESPACE, CONFIGMAP_NAME) or current is None:
            message = f'configmaps "{name}" not found'
            return web.json_response({"kind": "Status", "code": 404, "message": message}, status=404)
        version, data = current
        metadata = {"name": name, "namespace": namespace, "resourceVersion": str(version)}
        return web.json_response({"kind": "ConfigMap", "apiVersion": "v1", "metadata": metadata, "data": data})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/configmaps/{name}", self._configmap)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> FaultyKubeAPI:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(
            path,
            f"http://127.0.0.1:{self.port}",
            {"token": "adapter-service-account-token"},
            name="standin",
            user_name="adapter",
        )
