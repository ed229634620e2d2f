"""PrometheusClient against a stand-in Prometheus: parsing, errors, cache, coalescing, concurrency bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapter.providers.prometheus import PrometheusClient, PrometheusError
from tests.support.services import free_port

VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"pod": "api-0"}, "value": [1700000000.5, "5"]},
            {"metric": {"pod": "api-1"}, "value": [1700000000.5, "NaN"]},
        ],
    },
}


class FakePrometheus:
    def __init__(self, answer: Callable[[str], Awaitable[web.StreamResponse]] | None = None) -> None:
        self.queries: list[str] = []
        self.active = 0
        self.max_active = 0
        self.delay = 0.0
        self._answer = answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = (await request.post())["query"]
        assert isinstance(query, str)
        self.queries.append(query)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self._answer is not None:
                return await self._answer(query)
            return web.json_response(VECTOR)
        finally:
            self.active -= 1


def run(fake: FakePrometheus, body: Callable[[PrometheusClient], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        app = web.Application()
        app.router.add_post("/api/v1/query", fake.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        client = PrometheusClient(str(server.make_url("")), **kwargs)
        try:
            return await body(client)
        finally:
            await client.close()
            await server.close()

    return asyncio.run(main())


def test_vector_parsed_and_nan_dropped() -> None:
    fake = FakePrometheus()
    result = run(fake, lambda c: c.query("q"))
    assert [(dict(s.labels), s.value, s.timestamp) for s in result.samples] == [({"pod": "api-0"}, 5.0, 1700000000.5)]
    assert result.evaluated_at == 1700000000.5


def test_cached_for_cache_seconds_then_asked_again() -> None:
    fake = FakePrometheus()

    async def body(c: PrometheusClient) -> None:
        await c.query("q")
        await c.query("q")
        await c.query("other")
        await asyncio.sleep(0.35)
        await c.query("q")
        assert c.stats.counts["cached"] == 1 and c.stats.counts["success"] == 3

    run(fake, body, cache_seconds=0.3)
    assert fake.queries == ["q", "other", "q"]


def test_identical_queries_in_flight_share_one_round_trip() -> None:
    fake = FakePrometheus()
    fake.delay = 0.2

    async def body(c: PrometheusClient) -> None:
        results = await asyncio.gather(*(c.query("q") for _ in range(20)))
        assert len({id(r) for r in results}) == 1
        assert c.stats.counts["coalesced"] == 19

    run(fake, body, cache_seconds=0)
    assert fake.queries == ["q"]


def test_concurrent_queries_bounded() -> None:
    fake = FakePrometheus()
    fake.delay = 0.05

    async def body(c: PrometheusClient) -> None:
        await asyncio.gather(*(c.query(f"q{i}") for i in range(12)))

    run(fake, body, max_concurrent=3)
    assert len(fake.queries) == 12
    assert fake.max_active == 3


@pytest.mark.parametrize(
    ("answer", "reason", "message"),
    [
        (lambda q: web.json_response({"status": "error", "error": "parse error"}, status=400), "error", "parse error"),
        (lambda q: web.Response(text="<html>bad gateway</html>", status=502), "error", "not JSON"),
        (
            lambda q: web.json_response({"status": "success", "data": {"resultType": "matrix", "result": []}}),
            "error",
            "instant vector or scalar",
        ),
    ],
)
def test_failures_raise_and_are_not_cached(
    answer: Callable[[str], web.StreamResponse], reason: str, message: str
) -> None:
    async def respond(query: str) -> web.StreamResponse:
        return answer(query)

    fake = FakePrometheus(respond)

    async def body(c: PrometheusClient) -> None:
        for _ in range(2):
            with pytest.raises(PrometheusError, match=message) as info:
                await c.query("q")
            assert info.value.reason == reason
        assert c.stats.counts["error"] == 2

    run(fake, body)
    assert len(fake.queries) == 2


def test_timeout() -> None:
    fake = FakePrometheus()
    fake.delay = 2

    async def body(c: PrometheusClient) -> None:
        with pytest.raises(PrometheusError, match=r"did not answer within 0\.2s") as info:
            await c.query("q")
        assert info.value.reason == "timeout"

    run(fake, body, timeout=0.2)


def test_waiting_for_a_slot_counts_against_the_timeout() -> None:
    fake = FakePrometheus()

    async def body(c: PrometheusClient) -> None:
        async with c._semaphore:  # the only slot, held as a query in flight would hold it
            with pytest.raises(PrometheusError, match=r"no query slot within 0\.3s \(1 queries in flight\)") as info:
                await c.query("b")
        assert info.value.reason == "timeout" and c.stats.counts["timeout"] == 1

    run(fake, body, timeout=0.3, max_concurrent=1)
    assert fake.queries == []


def test_unreachable() -> None:
    async def main() -> None:
        client = PrometheusClient(f"http://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(PrometheusError, match="Prometheus query failed"):
                await client.query("q")
        finally:
            await client.close()

    asyncio.run(main())


def test_stats_collector_exports_catalog_names() -> None:
    from lensing_core.catalog import ADAPTER

    fake = FakePrometheus()

    async def body(c: PrometheusClient) -> Any:
        await c.query("q")
        return list(c.stats.collector().collect())

    families = run(fake, body)
    names = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    assert names == {"lensing_adapter_prometheus_queries_total", "lensing_adapter_prometheus_query_duration_seconds"}
    assert names <= set(ADAPTER)
