"""An async client for Prometheus's HTTP API: instant queries only, cached, bounded and coalesced.

Every custom-metrics request turns into one PromQL instant query. With many HPAs asking every 15 s
the same queries come again and again, so each query's result is kept for a few seconds
(``cache_seconds``), identical queries in flight at the same moment share one round trip, and at most
``max_concurrent`` queries are sent at once. A failure is never cached: the next request asks again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import aiohttp
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from adapter.cache import TTLCache
from adapter.providers.interface import InternalError, ProviderError, Unavailable

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESULTS = ("success", "error", "timeout", "cached", "coalesced")


class PrometheusError(Exception):
    """Prometheus could not answer the query (unreachable, timed out, refused the query)."""

    def __init__(self, reason: str, message: str, *, bad_query: bool = False) -> None:
        super().__init__(message)
        self.reason = reason  # "error" or "timeout": the result label of the failure
        self.bad_query = bad_query  # Prometheus refused the expression itself (a rule to fix, not an outage)


def prometheus_failure(exc: PrometheusError) -> ProviderError:
    """503 when Prometheus is down or slow; 500 when it refused the configured query itself."""
    if exc.bad_query:
        return InternalError(f"the configured query was refused by Prometheus: {exc}")
    return Unavailable(f"unable to fetch metrics from Prometheus: {exc}")


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector (or a scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float
    timestamp: float  # seconds since the epoch, as Prometheus evaluated the query


@dataclass(frozen=True, slots=True)
class QueryResult:
    samples: tuple[Sample, ...]
    evaluated_at: float


class QueryStats:
    """Counts by result and a latency histogram of the queries actually sent to Prometheus."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._sum = 0.0
        self._collector = _StatsCollector(self)

    def count(self, result: str) -> None:
        self.counts[result] += 1

    def observe(self, seconds: float) -> None:
        self._sum += seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self._buckets[i] += 1
                return
        self._buckets[-1] += 1

    def collector(self) -> Collector:
        """Always the same one: every provider sharing this client names it, the server registers it once."""
        return self._collector

    def histogram(self) -> tuple[list[tuple[str, float]], float]:
        cumulative, running = [], 0
        for bound, n in zip((*map(str, DURATION_BUCKETS), "+Inf"), self._buckets, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        return cumulative, self._sum


class _StatsCollector(Collector):
    def __init__(self, stats: QueryStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        counter = CounterMetricFamily(
            "lensing_adapter_prometheus_queries",
            "PromQL queries asked for by custom and external metric requests, by result "
            "(cached: answered from the adapter's short cache; coalesced: joined an identical query in flight).",
            labels=["result"],
        )
        for result, n in self._stats.counts.items():
            counter.add_metric([result], n)
        yield counter
        buckets, total = self._stats.histogram()
        histogram = HistogramMetricFamily(
            "lensing_adapter_prometheus_query_duration_seconds",
            "Time Prometheus took to answer a query sent by the adapter (cache hits not included).",
        )
        histogram.add_metric([], buckets, total)
        yield histogram


class PrometheusClient:
    """Instant queries against ``base_url`` (``http://prometheus:9090``, or with a path prefix)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        cache_seconds: float = 5.0,
        max_concurrent: int = 16,
        stats: QueryStats | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.stats = stats or QueryStats()
        self._headers = dict(headers or {})
        self.max_concurrent = max_concurrent
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._cache = TTLCache()  # bounded: the oldest entries go first
        self._inflight: dict[str, asyncio.Task[QueryResult]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def query(self, promql: str) -> QueryResult:
        """The result of ``promql`` now, or from the cache when asked less than ``cache_seconds`` ago."""
        cached = self._cache.get(promql)
        if cached is not None:
            self.stats.count("cached")
            return cached
        task = self._inflight.get(promql)
        if task is not None:
            self.stats.count("coalesced")
        else:
            # The round trip runs as its own task: a caller that goes away (client disconnected)
            # does not cancel it for the others waiting on the same query.
            task = asyncio.create_task(self._fetch(promql))
            self._inflight[promql] = task
            task.add_done_callback(self._finished(promql))
        return await asyncio.shield(task)

    def _finished(self, promql: str) -> Callable[[asyncio.Task[QueryResult]], None]:
        def done(task: asyncio.Task[QueryResult]) -> None:
            self._inflight.pop(promql, None)
            if not task.cancelled():
                task.exception()  # retrieved here, so nobody waiting is not an error

        return done

    async def _fetch(self, promql: str) -> QueryResult:
        result = await self._send(promql)
        if self.cache_seconds > 0:
            self._cache.put(promql, result, self.cache_seconds)
        return result

    async def _send(self, promql: str) -> QueryResult:
        # The timeout covers the wait for a slot too: with Prometheus slow, queued queries fail in time
        # (503) instead of piling up behind the ones in flight.
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._semaphore.acquire()
        except TimeoutError:
            self.stats.count("timeout")
            raise PrometheusError(
                "timeout", f"no query slot within {self.timeout:g}s ({self.max_concurrent} queries in flight)"
            ) from None
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._post(promql)
        except TimeoutError:
            self.stats.count("timeout")
            raise PrometheusError("timeout", f"Prometheus did not answer within {self.timeout:g}s") from None
        except PrometheusError:
            self.stats.count("error")
            raise
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self.stats.count("error")
            raise PrometheusError("error", f"Prometheus query failed: {type(exc).__name__}: {exc}") from None
        finally:
            self._semaphore.release()
            self.stats.observe(time.perf_counter() - started)
        self.stats.count("success")
        return result

    async def _post(self, promql: str) -> QueryResult:
        # POST: a query naming many pods can be longer than a URL may be.
        async with self._get_session().post(f"{self.base_url}/api/v1/query", data={"query": promql}) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                raise PrometheusError(
                    "error", f"Prometheus answered HTTP {response.status} with a body that is not JSON"
                ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", "") if isinstance(body, dict) else ""
            raise PrometheusError(
                "error",
                f"Prometheus answered HTTP {response.status}: {detail}".rstrip(": "),
                bad_query=isinstance(body, dict) and body.get("errorType") == "bad_data",
            )
        return parse_data(body.get("data"))


def parse_data(data: object) -> QueryResult:
    """An instant query's ``data`` (vector or scalar); NaN and infinite samples are dropped."""
    if not isinstance(data, dict):
        raise PrometheusError("error", "Prometheus answered without a data object")
    kind, raw = data.get("resultType"), data.get("result")
    samples: list[Sample] = []
    if kind == "vector" and isinstance(raw, list):
        for element in raw:
            at, value = element["value"]
            samples.append(Sample(dict(element.get("metric", {})), float(value), float(at)))
    elif kind == "scalar" and isinstance(raw, list):
        samples.append(Sample({}, float(raw[1]), float(raw[0])))
    else:
        raise PrometheusError("error", f"expected an instant vector or scalar from Prometheus, got {kind!r}")
    kept = tuple(s for s in samples if math.isfinite(s.value))
    evaluated = max((s.timestamp for s in samples), default=time.time())
    return QueryResult(kept, evaluated)
