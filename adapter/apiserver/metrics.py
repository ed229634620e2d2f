"""The adapter's own request metrics (``lensing_adapter_*`` in lensing_metrics/catalog.py): prometheus_client
counters and a histogram, in the registry of one server instance (two servers in one process count apart)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, disable_created_metrics
from prometheus_client.registry import CollectorRegistry

from lensing_core.background import RestartCollector

# The adapter's /metrics has never carried ``*_created`` series (nor does the catalog); prometheus_client
# turns them off only for a whole process, and nothing else in the adapter's process uses its metric objects.
disable_created_metrics()

#: request kinds: a fixed, small set (the ``kind`` label)
KINDS = ("discovery", "value", "health", "metrics", "openapi", "other")
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AdapterStats:
    """Counts kept by the event-loop thread, registered in :attr:`registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "lensing_adapter_requests",
            "Requests answered, by HTTP status code and kind.",
            ["code", "kind"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "lensing_adapter_request_duration_seconds",
            "Time from the request's arrival to its answer, by kind.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        for kind in KINDS:  # every kind is exposed from the start, at zero
            self.durations.labels(kind)
        self.authentication = Counter(
            "lensing_adapter_authentication",
            "Authentication outcomes: method x509, front-proxy, token or anonymous; result success, failure, error.",
            ["method", "result"],
            registry=self.registry,
        )
        self.authorization = Counter(
            "lensing_adapter_authorization",
            "Authorization decisions (allow, deny, error) by source: always-allow-path, always-allow-group, "
            "webhook, cache, none (no API server to ask).",
            ["decision", "source"],
            registry=self.registry,
        )

        self.registry.register(RestartCollector())

    def request(self, code: int, kind: str, seconds: float) -> None:
        kind = kind if kind in KINDS else "other"
        self.requests.labels(str(code), kind).inc()
        self.durations.labels(kind).observe(seconds)

    def authn(self, method: str, result: str) -> None:
        self.authentication.labels(method, result).inc()

    def authz(self, decision: str, source: str) -> None:
        self.authorization.labels(decision, source).inc()
