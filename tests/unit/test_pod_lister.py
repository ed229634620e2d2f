"""KubePodLister: the request it makes, finished pods left out, the cache, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapter.kubeapi import KubeAPIError
from adapter.providers.pods import KubePodLister, PodListError


class StubKube:
    def __init__(self, items: list[dict[str, Any]], fail: bool = False) -> None:
        self.items, self.fail, self.paths = items, fail, []  # type: ignore[var-annotated]

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.paths.append((method, path))
        if self.fail:
            raise KubeAPIError(f"{method} {path}: HTTP 403: forbidden")
        return {"kind": "PodList", "items": self.items}


def pod(name: str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase}}


def test_lists_by_selector_and_leaves_finished_pods_out() -> None:
    kube = StubKube(
        [pod("api-1"), pod("api-0"), pod("old", "Succeeded"), pod("crashed", "Failed"), pod("new", "Pending")]
    )
    lister = KubePodLister(kube, cache_seconds=5)
    names = asyncio.run(lister.pod_names("lensing", "app=api,tier in (web)"))
    assert names == ["api-0", "api-1", "new"]
    assert kube.paths == [("GET", "/api/v1/namespaces/lensing/pods?labelSelector=app%3Dapi%2Ctier+in+%28web%29")]


def test_cached_for_cache_seconds() -> None:
    kube = StubKube([pod("api-0")])
    lister = KubePodLister(kube, cache_seconds=0.2)

    async def main() -> None:
        await lister.pod_names("lensing", "")
        await lister.pod_names("lensing", "")
        await lister.pod_names("other", "")
        await asyncio.sleep(0.25)
        await lister.pod_names("lensing", "")

    asyncio.run(main())
    assert [p for _m, p in kube.paths] == [
        "/api/v1/namespaces/lensing/pods",
        "/api/v1/namespaces/other/pods",
        "/api/v1/namespaces/lensing/pods",
    ]


def test_failure_is_a_pod_list_error() -> None:
    lister = KubePodLister(StubKube([], fail=True))
    with pytest.raises(PodListError, match=r"unable to list pods in namespace lensing: GET .*HTTP 403"):
        asyncio.run(lister.pod_names("lensing", "app=api"))
