"""The metrics API groups: discovery of their resources, routing a value request to the provider of its
metric, the value lists and Status errors of the answer, and the answer cache.

    external.metrics.k8s.io/v1beta1   namespaces/{ns}/{metric}?labelSelector=...
    custom.metrics.k8s.io/{v1beta2,v1beta1}
        namespaces/{ns}/pods/*/{metric}?labelSelector=...&metricLabelSelector=...   every pod the selector names
        namespaces/{ns}/pods/{pod}/{metric}                                          one pod
        namespaces/{ns}/metrics/{metric}                                             the namespace itself
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

from adapter.apiserver.request import ApiRequest
from adapter.apiserver.status import from_provider, not_found, not_served
from adapter.apiserver.wire import APIResource, external_value_list, go_json, metric_value_list
from adapter.providers.interface import CustomMetricsProvider, ExternalMetricsProvider, Lifecycle, ProviderError
from adapter.selectors import Selector

EXTERNAL_GROUP = "external.metrics.k8s.io"
CUSTOM_GROUP = "custom.metrics.k8s.io"
ANSWER_CACHE_LIMIT = 1024
ANSWER_CACHE_BYTES = 4 * 1024 * 1024
ADMIT_WINDOW = 120.0  # seconds: several HPA sync periods (15 s each)


class MetricsAPI(Protocol):
    """One API group. ``versions`` lists the served versions, the preferred one first."""

    group: str
    versions: tuple[str, ...]

    def resources(self, version: str) -> Sequence[APIResource]:
        """Discovery: never empty (an empty list breaks kubectl and helm across the cluster)."""
        ...

    async def get(self, request: ApiRequest, version: str) -> bytes:
        """The encoded answer to a GET below ``/apis/GROUP/VERSION/``; raises ApiError for anything else."""
        ...

    def providers(self) -> Sequence[Lifecycle]: ...


class AnswerCache:
    """Encoded answers, each kept with the object it was computed from (a provider's answer version):
    the same question about the same object gets the same bytes without recomputing them.

    Only questions asked again are kept: a question is admitted on its second ask within
    ``ADMIT_WINDOW`` seconds (the HPA asks the same few every 15 s), so a stream of distinct selectors
    costs one recomputation each and no memory. Bounded in entries and in bytes, the least recently
    used going first; the questions seen once are remembered by a 64-bit hash, at most ``limit * 4``.
    """

    def __init__(self, limit: int = ANSWER_CACHE_LIMIT, max_bytes: int = ANSWER_CACHE_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        self._answers: OrderedDict[Hashable, tuple[object, bytes]] = OrderedDict()
        self._seen: OrderedDict[int, float] = OrderedDict()

    def get(self, key: Hashable, version: object) -> bytes | None:
        hit = self._answers.get(key)
        if hit is None or hit[0] is not version:
            return None
        self._answers.move_to_end(key)
        return hit[1]

    def put(self, key: Hashable, version: object, body: bytes) -> None:
        if not self._asked_before(key) or len(body) > self.max_bytes // 16:
            return
        old = self._answers.pop(key, None)
        if old is not None:
            self.bytes -= len(old[1])
        self._answers[key] = (version, body)
        self.bytes += len(body)
        while len(self._answers) > self.limit or self.bytes > self.max_bytes:
            _key, (_version, evicted) = self._answers.popitem(last=False)
            self.bytes -= len(evicted)

    def _asked_before(self, key: Hashable) -> bool:
        if key in self._answers:
            return True
        now = time.monotonic()
        digest = hash(key)
        seen = self._seen.pop(digest, None)
        if seen is not None and now - seen <= ADMIT_WINDOW:
            return True
        self._seen[digest] = now
        while len(self._seen) > self.limit * 4:
            self._seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._answers)


class ExternalMetricsAPI:
    group = EXTERNAL_GROUP
    versions: tuple[str, ...] = ("v1beta1",)
    served = f"/apis/{EXTERNAL_GROUP}/v1beta1/namespaces/NAMESPACE/METRIC"

    def __init__(self, providers: Iterable[ExternalMetricsProvider]) -> None:
        self._providers = list(providers)
        self._by_metric: dict[str, ExternalMetricsProvider] = {}
        for provider in self._providers:
            for metric in provider.list_metrics():
                first = self._by_metric.setdefault(metric, provider)
                if first is not provider:
                    raise ValueError(f"{provider.source}: {metric} is already served from {first.source}")
        self.answers = AnswerCache()

    def providers(self) -> Sequence[Lifecycle]:
        return self._providers

    def resources(self, version: str) -> list[APIResource]:
        return [APIResource(metric, "ExternalMetricValueList") for metric in sorted(self._by_metric)]

    async def get(self, request: ApiRequest, version: str) -> bytes:
        info = request.info
        if not info.namespace or len(info.parts) != 1:
            raise not_served(self.served)
        namespace, metric = info.namespace, info.parts[0]
        provider = self._by_metric.get(metric)
        if provider is None:
            served = ", ".join(sorted(self._by_metric))
            raise not_found(
                f"the server could not find the metric {metric} (served: {served})", group=self.group, metric=metric
            )
        selector = request.selector("labelSelector")
        key = (namespace, metric, selector)
        try:
            answer_version = provider.answer_version(namespace, metric)
            if answer_version is not None:
                cached = self.answers.get(key, answer_version)
                if cached is not None:
                    return cached
            values = await provider.external_metric(namespace, metric, selector)
        except ProviderError as error:
            raise from_provider(error, self.group) from None
        body = go_json(external_value_list(f"{self.group}/{version}", values))
        if answer_version is not None:
            self.answers.put(key, answer_version, body)
        return body


class CustomMetricsAPI:
    group = CUSTOM_GROUP
    versions: tuple[str, ...] = ("v1beta2", "v1beta1")
    served = "namespaces/NAMESPACE/pods/{*|POD}/METRIC or namespaces/NAMESPACE/metrics/METRIC"

    def __init__(self, providers: Iterable[CustomMetricsProvider]) -> None:
        self._providers = list(providers)
        self._by_metric: dict[tuple[str, str], CustomMetricsProvider] = {}
        for provider in self._providers:
            for info in provider.list_metrics():
                if self._by_metric.setdefault((info.resource, info.metric), provider) is not provider:
                    raise ValueError(f"two providers serve the custom metric {info.metric} for {info.resource}")

    def providers(self) -> Sequence[Lifecycle]:
        return self._providers

    def resources(self, version: str) -> list[APIResource]:
        # Namespace metrics describe a cluster-scoped object: namespaced false, as custom-metrics-apiserver lists them.
        return [
            APIResource(f"{resource}/{metric}", "MetricValueList", namespaced=resource != "namespaces")
            for resource, metric in self._by_metric
        ]

    async def get(self, request: ApiRequest, version: str) -> bytes:
        info = request.info
        match info.parts if info.namespace else ():
            case ("pods", name, metric):
                resource = "pods"
            case ("metrics", metric):
                resource, name = "namespaces", info.namespace
            case _:
                raise not_served(self.served)
        metric_selector = request.selector("metricLabelSelector")
        selector: Selector | None = request.selector("labelSelector") if name == "*" else None
        provider = self._by_metric.get((resource, metric))
        if provider is None:
            raise not_found(f"the server could not find the metric {metric} for {resource}")
        try:
            if selector is not None:
                values = await provider.metric_for_selector(info.namespace, resource, selector, metric, metric_selector)
            else:
                values = [await provider.metric_for_object(info.namespace, resource, name, metric, metric_selector)]
        except ProviderError as error:
            raise from_provider(error, self.group) from None
        return go_json(metric_value_list(f"{self.group}/{version}", values, metric_selector))
