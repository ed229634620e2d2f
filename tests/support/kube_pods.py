"""A stand-in for the Kubernetes API's pod list (``GET /api/v1/namespaces/{ns}/pods?labelSelector=``)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from adapter.selectors import SelectorError, parse_selector
from tests.support.prometheus import ThreadedApp


class PodListStandIn(ThreadedApp):
    """Pods by namespace, each with labels; counts the list calls it answered."""

    def __init__(self, pods: Mapping[str, Mapping[str, Mapping[str, str]]]) -> None:
        super().__init__()
        self.pods = {ns: {name: dict(labels) for name, labels in by_name.items()} for ns, by_name in pods.items()}
        self.lists = 0
        self.fail = False

    async def _list(self, request: web.Request) -> web.Response:
        self.lists += 1
        if self.fail:
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

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._list)
        return app
