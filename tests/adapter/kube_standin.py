"""An HTTP stand-in for the few Kubernetes API calls the adapter makes (no API server can run here):
TokenReview, SubjectAccessReview, the extension-apiserver-authentication ConfigMap, and listing pods by
label selector (custom metrics)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from adapter.selectors import SelectorError, parse_selector
from lensing_harness.kubeconfig import write_kubeconfig
from tests.support.services import free_port

Policy = Callable[[dict[str, Any]], bool]


class KubeStandIn:
    def __init__(
        self,
        tokens: dict[str, dict[str, Any]],
        policy: Policy,
        pods: dict[str, dict[str, dict[str, str]]] | None = None,
    ) -> None:
        self.tokens = tokens  # token -> user info
        self.pods = pods or {}  # namespace -> pod name -> labels
        self.pod_lists = 0
        self.fail_pod_lists = False
        self.policy = policy  # SubjectAccessReview spec -> allowed
        self.token_reviews: list[dict[str, Any]] = []
        self.access_reviews: list[dict[str, Any]] = []
        self.configmap_data: dict[str, str] | None = None
        self.fail_reviews = False
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _token_review(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.token_reviews.append(body)
        user = self.tokens.get(body["spec"]["token"])
        status: dict[str, Any] = {"authenticated": user is not None}
        if user is not None:
            status["user"] = user
        return web.json_response({**body, "status": status})

    async def _access_review(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.access_reviews.append(body["spec"])
        if self.fail_reviews:
            return web.json_response({"kind": "Status", "code": 500}, status=500)
        allowed = self.policy(body["spec"])
        return web.json_response({**body, "status": {"allowed": allowed, "reason": "stand-in policy"}})

    async def _configmap(self, request: web.Request) -> web.Response:
        if self.configmap_data is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(
            {"kind": "ConfigMap", "metadata": {"resourceVersion": "1"}, "data": self.configmap_data}
        )

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

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review)
        app.router.add_get(
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", self._configmap
        )
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> KubeStandIn:
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
