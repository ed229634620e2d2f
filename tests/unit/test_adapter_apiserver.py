"""The adapter's API machinery: a request parsed once, routing to providers, the answer cache, and every
error built in one place."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Hashable, Sequence
from pathlib import Path

import pytest

from adapter.apiserver import request as request_module
from adapter.apiserver.groups import CustomMetricsAPI, ExternalMetricsAPI
from adapter.apiserver.request import ApiRequest
from adapter.apiserver.status import ApiError
from adapter.providers.interface import (
    BadRequest,
    CustomMetricInfo,
    ExternalValue,
    InternalError,
    MetricNotFound,
    MetricValue,
    Passive,
    ProviderError,
    Unavailable,
)
from adapter.selectors import Selector, parse_selector

EXTERNAL = "/apis/external.metrics.k8s.io/v1beta1"
CUSTOM = "/apis/custom.metrics.k8s.io/v1beta2"


class Queues(Passive):
    source = "the queues"

    def __init__(self) -> None:
        self.version: Hashable | None = object()
        self.computed = 0
        self.fail: ProviderError | None = None

    def list_metrics(self) -> Sequence[str]:
        return ["depth"]

    def answer_version(self, namespace: str, metric: str) -> Hashable | None:
        if self.fail is not None:
            raise self.fail
        return self.version

    async def external_metric(self, namespace: str, metric: str, selector: Selector) -> list[ExternalValue]:
        self.computed += 1
        return [ExternalValue(metric, {"queue": q}, 0.0, 3) for q in ("a", "b") if selector.matches({"queue": q})]


class Pods(Passive):
    def __init__(self) -> None:
        self.asked: list[tuple[object, ...]] = []

    def list_metrics(self) -> Sequence[CustomMetricInfo]:
        return [CustomMetricInfo("pods", "busy"), CustomMetricInfo("namespaces", "busy")]

    async def metric_for_object(
        self, namespace: str, resource: str, name: str, metric: str, metric_selector: Selector
    ) -> MetricValue:
        self.asked.append(("object", namespace, resource, name, metric, metric_selector))
        return MetricValue("Pod", name, namespace, metric, 1.5, 0.0, None)

    async def metric_for_selector(
        self, namespace: str, resource: str, selector: Selector, metric: str, metric_selector: Selector
    ) -> list[MetricValue]:
        self.asked.append(("selector", namespace, resource, selector, metric, metric_selector))
        return []


def answer(api: ExternalMetricsAPI | CustomMetricsAPI, path: str, version: str = "v1beta1") -> bytes:
    target, _, query = path.partition("?")
    return asyncio.run(api.get(ApiRequest("GET", target, query), version))


def error(api: ExternalMetricsAPI | CustomMetricsAPI, path: str, version: str = "v1beta1") -> ApiError:
    with pytest.raises(ApiError) as info:
        answer(api, path, version)
    return info.value


def test_the_path_is_parsed_once_into_segments_and_request_info() -> None:
    request = ApiRequest("GET", f"{CUSTOM}/namespaces/ns/pods/*/busy", "labelSelector=app%3Dapi")
    assert request.segments == ("apis", "custom.metrics.k8s.io", "v1beta2", "namespaces", "ns", "pods", "*", "busy")
    info = request.info
    assert (info.api_group, info.api_version, info.namespace, info.parts) == (
        "custom.metrics.k8s.io",
        "v1beta2",
        "ns",
        ("pods", "*", "busy"),
    )
    assert (info.resource, info.name, info.subresource, info.verb) == ("pods", "*", "busy", "get")
    assert ApiRequest("GET", "/apis//x").segments == ("apis", "", "x")  # an empty segment is kept: not served


def test_each_selector_is_parsed_once_and_handed_on_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []

    def counting(text: str) -> Selector:
        parsed.append(text)
        return parse_selector(text)

    monkeypatch.setattr(request_module, "parse_selector", counting)
    pods = Pods()
    api = CustomMetricsAPI([pods])
    answer(api, f"{CUSTOM}/namespaces/ns/pods/*/busy?labelSelector=app%3Dapi&metricLabelSelector=x+in+(b,a)", "v1beta2")
    assert sorted(parsed) == ["app=api", "x in (b,a)"]
    assert pods.asked == [("selector", "ns", "pods", parse_selector("app=api"), "busy", parse_selector("x in (a,b)"))]


def test_the_selector_handed_on_as_text_means_the_same() -> None:
    # the custom provider names the pods to the Kubernetes API by str(selector)
    for text in ["", "queue=a", "queue==a", "queue!=a", "queue in (b,a)", "queue notin (a)", "queue", "!queue",
                 "n>5", "n<-2", "queue=", "queue in (,a)", "a=b,c notin (d,e),!f"]:  # fmt: skip
        parsed = parse_selector(text)
        assert parse_selector(str(parsed)) == parsed, text


def test_namespace_metrics_ask_for_the_namespace_object() -> None:
    pods = Pods()
    body = json.loads(answer(CustomMetricsAPI([pods]), f"{CUSTOM}/namespaces/ns/metrics/busy", "v1beta2"))
    assert pods.asked == [("object", "ns", "namespaces", "ns", "busy", Selector())]
    assert body["apiVersion"] == "custom.metrics.k8s.io/v1beta2" and body["items"][0]["value"] == "1500m"


def test_the_answer_is_reused_while_the_provider_reads_the_same_data() -> None:
    queues = Queues()
    api = ExternalMetricsAPI([queues])
    first = answer(api, f"{EXTERNAL}/namespaces/ns/depth?labelSelector=queue%3Da")
    assert answer(api, f"{EXTERNAL}/namespaces/ns/depth?labelSelector=queue!%3Da") != first  # another question
    # a question is cached on its second ask (one asked once is not worth the bytes), then served from the cache
    second = answer(api, f"{EXTERNAL}/namespaces/ns/depth?labelSelector=queue%3Da")
    assert second == first
    assert answer(api, f"{EXTERNAL}/namespaces/ns/depth?labelSelector=queue%3Da") is second
    assert queues.computed == 3
    queues.version = object()  # a new read
    assert answer(api, f"{EXTERNAL}/namespaces/ns/depth?labelSelector=queue%3Da") == first
    assert queues.computed == 4
    queues.fail = Unavailable("stale")  # a cached answer is never served once the data is unusable
    assert error(api, f"{EXTERNAL}/namespaces/ns/depth?labelSelector=queue%3Da").code == 503
    queues.fail, queues.version = None, None  # no version: never cached
    answer(api, f"{EXTERNAL}/namespaces/ns/depth")
    answer(api, f"{EXTERNAL}/namespaces/ns/depth")
    assert queues.computed == 6
    assert json.loads(first)["items"] == [
        {"metricName": "depth", "metricLabels": {"queue": "a"}, "timestamp": "1970-01-01T00:00:00Z", "value": "3"}
    ]


@pytest.mark.parametrize(
    ("raised", "code", "reason"),
    [
        (MetricNotFound("gone"), 404, "NotFound"),
        (BadRequest("no"), 400, "BadRequest"),
        (Unavailable("down"), 503, "ServiceUnavailable"),
        (InternalError("bug"), 500, "InternalError"),
    ],
)
def test_provider_errors_become_status_answers(raised: ProviderError, code: int, reason: str) -> None:
    queues = Queues()
    queues.fail = raised
    status = error(ExternalMetricsAPI([queues]), f"{EXTERNAL}/namespaces/ns/depth").status()
    assert (status["code"], status["reason"], status["message"]) == (code, reason, str(raised))
    assert "details" not in status


def test_not_found_answers() -> None:
    api = ExternalMetricsAPI([Queues()])
    shape = error(api, f"{EXTERNAL}/depth").status()
    assert shape["message"] == (
        "the server could not find the requested resource "
        "(served: /apis/external.metrics.k8s.io/v1beta1/namespaces/NAMESPACE/METRIC)"
    )
    unknown = error(api, f"{EXTERNAL}/namespaces/ns/width?labelSelector=%3D%3D").status()  # 404 before the 400
    assert unknown["message"] == "the server could not find the metric width (served: depth)"
    assert unknown["details"] == {"name": "width", "group": "external.metrics.k8s.io", "kind": "width"}
    queues = Queues()
    queues.fail = MetricNotFound("no broker", "depth")
    assert error(ExternalMetricsAPI([queues]), f"{EXTERNAL}/namespaces/ns/depth").status()["details"] == {
        "name": "depth",
        "group": "external.metrics.k8s.io",
        "kind": "depth",
    }
    custom = CustomMetricsAPI([Pods()])
    assert error(custom, f"{CUSTOM}/namespaces/ns/pods/*/idle", "v1beta2").message == (
        "the server could not find the metric idle for pods"
    )
    assert "served:" in error(custom, f"{CUSTOM}/namespaces/ns/services/x/busy", "v1beta2").message
    bad = error(custom, f"{CUSTOM}/namespaces/ns/pods/*/busy?labelSelector=app%3D%3D%3D", "v1beta2")
    assert (bad.code, bad.reason) == (400, "BadRequest") and bad.message.startswith("invalid labelSelector: ")


def test_every_status_is_built_in_one_module() -> None:
    adapter = Path(__file__).resolve().parents[2] / "adapter"
    builders = re.compile(r"ApiError\(|status_body\(|\"(NotFound|BadRequest|ServiceUnavailable|InternalError)\"")
    elsewhere = [
        f"{path.relative_to(adapter)}:{n}"
        for path in sorted(adapter.rglob("*.py"))
        if path.name != "status.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if builders.search(line)
    ]
    assert elsewhere == []


def test_two_providers_may_not_serve_one_metric() -> None:
    class Other(Queues):
        source = "elsewhere"

    with pytest.raises(ValueError, match="elsewhere: depth is already served from the queues"):
        ExternalMetricsAPI([Queues(), Other()])
