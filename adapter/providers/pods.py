"""The pods a label selector names, from the Kubernetes API (``GET /api/v1/namespaces/{ns}/pods``).

Lists are kept for a few seconds, as Prometheus results are: an HPA asks every 15 s, and many HPAs
over the same Deployment ask about the same pods.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote, urlencode

from adapter.cache import TTLCache


class JSONGetter(Protocol):
    """adapter.kubeapi.KubeClient: one JSON request to the API server (raises KubeAPIError)."""

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]: ...


class PodListError(RuntimeError):
    """The Kubernetes API could not list the pods."""


# Finished pods serve nothing; the HPA controller leaves them out too.
_FINISHED = {"Succeeded", "Failed"}


class KubePodLister:
    def __init__(self, kube: JSONGetter, cache_seconds: float = 5.0) -> None:
        self.kube = kube
        self.cache_seconds = cache_seconds
        self._cache = TTLCache()

    async def pod_names(self, namespace: str, label_selector: str) -> list[str]:
        key = (namespace, label_selector)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
        if label_selector:
            path += "?" + urlencode({"labelSelector": label_selector})
        try:
            body = await self.kube.request("GET", path)
        except Exception as exc:  # KubeAPIError and whatever the transport raises
            raise PodListError(f"unable to list pods in namespace {namespace}: {exc}") from None
        names = sorted(
            item["metadata"]["name"]
            for item in body.get("items", [])
            if item.get("status", {}).get("phase") not in _FINISHED and "name" in item.get("metadata", {})
        )
        if self.cache_seconds > 0:
            self._cache.put(key, names, self.cache_seconds)
        return names
