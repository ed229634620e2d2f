"""The adapter's own metrics (``lensing_adapter_*`` in lensing_metrics/catalog.py), yielded from counters
the server keeps, by a custom collector."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: request kinds: a fixed, small set (the ``kind`` label)
KINDS = ("discovery", "value", "health", "metrics", "openapi", "other")
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value


class AdapterStats:
    """Counts kept by the event-loop thread; read by the collector on scrape."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, _Histogram] = {kind: _Histogram() for kind in KINDS}
        self.authentication: Counter[tuple[str, str]] = Counter()
        self.authorization: Counter[tuple[str, str]] = Counter()

    def request(self, code: int, kind: str, seconds: float) -> None:
        kind = kind if kind in self.durations else "other"
        self.requests[(str(code), kind)] += 1
        self.durations[kind].observe(seconds)

    def authn(self, method: str, result: str) -> None:
        self.authentication[(method, result)] += 1

    def authz(self, decision: str, source: str) -> None:
        self.authorization[(decision, source)] += 1


class StatsCollector(Collector):
    def __init__(self, stats: AdapterStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "lensing_adapter_requests", "Requests answered, by HTTP status code and kind.", labels=["code", "kind"]
        )
        for (code, kind), count in sorted(self.stats.requests.items()):
            requests.add_metric([code, kind], count)
        yield requests

        durations = HistogramMetricFamily(
            "lensing_adapter_request_duration_seconds",
            "Time from the request's arrival to its answer, by kind.",
            labels=["kind"],
        )
        for kind, hist in self.stats.durations.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), hist.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric([kind], buckets, hist.sum)
        yield durations

        authn = CounterMetricFamily(
            "lensing_adapter_authentication",
            "Authentication outcomes: method x509, front-proxy, token or anonymous; result success, failure, error.",
            labels=["method", "result"],
        )
        for (method, result), count in sorted(self.stats.authentication.items()):
            authn.add_metric([method, result], count)
        yield authn

        authz = CounterMetricFamily(
            "lensing_adapter_authorization",
            "Authorization decisions (allow, deny, error) by source: always-allow-path, always-allow-group, "
            "webhook, cache, none (no API server to ask).",
            labels=["decision", "source"],
        )
        for (decision, source), count in sorted(self.stats.authorization.items()):
            authz.add_metric([decision, source], count)
        yield authz
