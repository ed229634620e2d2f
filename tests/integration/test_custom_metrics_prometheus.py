"""The custom metrics provider against a real Prometheus scraping pretend API pods with known rates."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from adapter.providers.custom import PromCustomMetrics
from adapter.providers.interface import BadRequest as BadRequestError
from adapter.providers.interface import InternalError, MetricNotFound, ProviderError, Unavailable
from adapter.providers.prometheus import PrometheusClient
from adapter.providers.promql import PromExternalMetrics
from adapter.providers.rules import parse_rules
from adapter.selectors import parse_selector
from tests.support.prometheus import (
    TEST_WINDOW,
    PrometheusServer,
    RequestCounterServer,
    prometheus_scraping,
    short_window_rules,
)
from tests.support.services import wait_for

pytestmark = pytest.mark.integration
T = TypeVar("T")

RATES = {
    ("lensing", "api-0"): 5.0,
    ("lensing", "api-1"): 12.5,
    ("lensing", "api-2"): 0.75,
    ("staging", "api-0"): 100.0,
}
TEST_RULES = short_window_rules()
PODS = {  # what a stand-in Kubernetes API lists: pod name -> labels
    "lensing": {
        "api-0": {"app": "api"},
        "api-1": {"app": "api"},
        "api-2": {"app": "api", "canary": "true"},
        "api-3": {"app": "api"},  # no series in Prometheus: left out
        "worker-0": {"app": "worker"},
    },
}


class StandInPods:
    def __init__(self) -> None:
        self.calls = 0

    async def pod_names(self, namespace: str, label_selector: str) -> list[str]:
        self.calls += 1
        selector = parse_selector(label_selector)
        return sorted(name for name, labels in PODS.get(namespace, {}).items() if selector.matches(labels))


CODES: dict[type[ProviderError], int] = {
    MetricNotFound: 404,
    BadRequestError: 400,
    Unavailable: 503,
    InternalError: 500,
}


@contextlib.contextmanager
def status(code: int, match: str) -> Iterator[None]:
    with pytest.raises(ProviderError, match=match) as info:
        yield
    assert CODES[type(info.value)] == code, info.value


def close_to(value: float, expected: float) -> bool:
    # rate() of a counter advanced linearly is exact up to scrape-timestamp jitter
    return math.isclose(value, expected, rel_tol=0.03)


@contextlib.contextmanager
def settled_prometheus() -> Iterator[tuple[PrometheusServer, RequestCounterServer]]:
    """Prometheus scraping the pretend pods, once rate() over them equals the known rates."""
    with prometheus_scraping(RATES) as (prom, app):

        async def settled() -> bool:
            client = PrometheusClient(prom.url, cache_seconds=0)
            try:
                result = await client.query(f"sum by (namespace, pod) (rate(http_requests_total[{TEST_WINDOW}]))")
            finally:
                await client.close()
            got = {(s.labels["namespace"], s.labels["pod"]): s.value for s in result.samples}
            return set(got) == set(RATES) and all(close_to(got[k], RATES[k]) for k in RATES)

        # Prometheus needs ~5 s to start scraping a new target and one window more for rate() to be whole.
        wait_for(lambda: asyncio.run(settled()), timeout=40, interval=0.5, what="rates settled in Prometheus")
        yield prom, app


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[PrometheusServer, RequestCounterServer]]:
    with settled_prometheus() as (prom, app):
        yield prom, app


def with_provider(
    prom: PrometheusServer, body: Callable[[PromCustomMetrics], Awaitable[T]], pods: StandInPods | None = None
) -> T:
    async def main() -> T:
        client = PrometheusClient(prom.url, timeout=2, cache_seconds=0)
        try:
            return await body(PromCustomMetrics(parse_rules(TEST_RULES), client, pods))
        finally:
            await client.close()

    return asyncio.run(main())


def test_values_equal_the_known_rates(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus
    values = with_provider(
        prom,
        lambda p: p.metric_for_selector("lensing", "pods", parse_selector("app=api"), "http_requests_per_second"),
        StandInPods(),
    )
    assert [v.name for v in values] == ["api-0", "api-1", "api-2"]  # api-3 has no series: left out
    for v in values:
        assert (v.kind, v.namespace, v.metric, v.window_seconds) == ("Pod", "lensing", "http_requests_per_second", 5)
        assert close_to(v.value, RATES[("lensing", v.name)]), v


def test_selector_narrows_the_pods(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus
    values = with_provider(
        prom,
        lambda p: p.metric_for_selector(
            "lensing", "pods", parse_selector("app=api,!canary"), "http_requests_per_second"
        ),
        StandInPods(),
    )
    assert [v.name for v in values] == ["api-0", "api-1"]


def test_selector_matching_no_pod_is_an_empty_list_without_a_query(
    prometheus: tuple[PrometheusServer, RequestCounterServer],
) -> None:
    prom, _app = prometheus

    async def body(p: PromCustomMetrics) -> Any:
        values = await p.metric_for_selector(
            "lensing", "pods", parse_selector("app=nothing"), "http_requests_per_second"
        )
        return values, p.prometheus.stats.counts["success"]

    assert with_provider(prom, body, StandInPods()) == ([], 0)


def test_without_a_cluster_the_pods_come_from_prometheus(
    prometheus: tuple[PrometheusServer, RequestCounterServer],
) -> None:
    prom, _app = prometheus
    values = with_provider(
        prom, lambda p: p.metric_for_selector("staging", "pods", parse_selector(""), "http_requests_per_second")
    )
    assert [(v.name, v.namespace) for v in values] == [("api-0", "staging")]
    assert close_to(values[0].value, 100.0)


def test_single_pod_and_missing_pod(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus
    value = with_provider(prom, lambda p: p.metric_for_object("lensing", "pods", "api-1", "http_requests_per_second"))
    assert value.name == "api-1" and close_to(value.value, 12.5)
    with status(404, "could not find the metric http_requests_per_second for pods api-3"):
        with_provider(prom, lambda p: p.metric_for_object("lensing", "pods", "api-3", "http_requests_per_second"))


def test_namespace_metric_is_the_namespace_total(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus
    value = with_provider(
        prom, lambda p: p.metric_for_object("lensing", "namespaces", "lensing", "http_requests_per_second")
    )
    assert (value.kind, value.name, value.namespace) == ("Namespace", "lensing", "")
    assert close_to(value.value, 5.0 + 12.5 + 0.75)
    with status(404, "for namespaces nowhere"):
        with_provider(
            prom, lambda p: p.metric_for_object("nowhere", "namespaces", "nowhere", "http_requests_per_second")
        )


def test_metric_label_selector_becomes_matchers(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus
    reqs = parse_selector("pod in (api-2)")
    values = with_provider(
        prom,
        lambda p: p.metric_for_selector("lensing", "pods", parse_selector("app=api"), "http_requests_per_second", reqs),
        StandInPods(),
    )
    assert [v.name for v in values] == ["api-2"]
    with status(400, "not a Prometheus label name"):
        bad = parse_selector("app.kubernetes.io/name=api")
        with_provider(
            prom,
            lambda p: p.metric_for_selector("lensing", "pods", parse_selector(""), "http_requests_per_second", bad),
        )


def test_unknown_metric(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus
    with status(404, "could not find the metric nope for pods"):
        with_provider(prom, lambda p: p.metric_for_selector("lensing", "pods", parse_selector(""), "nope"))


def test_external_metric_from_promql(prometheus: tuple[PrometheusServer, RequestCounterServer]) -> None:
    prom, _app = prometheus

    async def main() -> Any:
        client = PrometheusClient(prom.url, cache_seconds=0)
        try:
            external = PromExternalMetrics(parse_rules(TEST_RULES), client)
            everything = await external.external_metric("default", "api_requests_per_second", parse_selector(""))
            staging = await external.external_metric(
                "default", "api_requests_per_second", parse_selector("namespace=staging")
            )
            return everything, staging
        finally:
            await client.close()

    everything, staging = asyncio.run(main())
    assert [v.labels for v in everything] == [{"namespace": "lensing"}, {"namespace": "staging"}]
    assert close_to(everything[0].value, 18.25)
    assert close_to(everything[1].value, 100.0)
    assert [v.labels for v in staging] == [{"namespace": "staging"}]
    assert {v.metric for v in everything} == {"api_requests_per_second"}


def test_prometheus_stopped_is_unavailable_never_zero() -> None:
    """Stops a Prometheus of its own: the module's stays up for the other tests, whatever the order."""
    calls: list[Callable[[PromCustomMetrics], Awaitable[object]]] = [
        lambda p: p.metric_for_selector("lensing", "pods", parse_selector("app=api"), "http_requests_per_second"),
        lambda p: p.metric_for_object("lensing", "pods", "api-0", "http_requests_per_second"),
        lambda p: p.metric_for_object("lensing", "namespaces", "lensing", "http_requests_per_second"),
    ]
    with settled_prometheus() as (prom, _app):
        for call in calls:
            assert with_provider(prom, call, StandInPods())  # values there: what a 0 would hide
        prom.stop()
        for call in calls:
            with status(503, "unable to fetch metrics from Prometheus"):
                with_provider(prom, call, StandInPods())
