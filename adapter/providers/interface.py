"""What the API server asks of a metrics provider, after kubernetes-sigs/custom-metrics-apiserver's
``pkg/provider``: the metrics it serves, and their values for a namespace, a metric and a parsed selector.

Paths, query strings, value lists and ``metav1.Status`` bodies are the server's (:mod:`adapter.apiserver`):
a provider returns values or raises one of the errors below, which the server answers as a Status.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.registry import Collector

from adapter.selectors import Selector


class ProviderError(Exception):
    """A question the provider cannot answer; the message is the Status message."""


class MetricNotFound(ProviderError):
    """404. ``metric``, when given, is named in the Status details (``{name, group, kind}``)."""

    def __init__(self, message: str, metric: str = "") -> None:
        super().__init__(message)
        self.metric = metric


class BadRequest(ProviderError):
    """400: the question itself is wrong (a selector the metric cannot take)."""


class Unavailable(ProviderError):
    """503: the source cannot be read now. Never answered as 0 or a partial value."""


class InternalError(ProviderError):
    """500: the configuration or the source answered something the provider cannot use."""


@dataclass(frozen=True, slots=True)
class ExternalValue:
    """``ExternalMetricValue``: one series of an external metric."""

    metric: str
    labels: Mapping[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True, slots=True)
class CustomMetricInfo:
    """One custom metric of a resource (``pods``, ``namespaces``), for discovery and routing."""

    resource: str
    metric: str


@dataclass(frozen=True, slots=True)
class MetricValue:
    """``MetricValue``: the value of a custom metric for one object."""

    kind: str  # Pod | Namespace
    name: str
    namespace: str  # "" for a Namespace
    metric: str
    value: float
    timestamp: float  # when the source evaluated it
    window_seconds: int | None


class Lifecycle(Protocol):
    """What the server starts, stops, asks for readiness and scrapes, beside the values."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, str] | None:
        """``(ready, why)``; None when the provider has nothing to say about readiness."""
        ...

    def collectors(self) -> Iterable[Collector]: ...


class Passive:
    """The lifecycle of a provider with no background work, no readiness of its own and no metrics."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def readiness(self) -> tuple[bool, str] | None:
        return None

    def collectors(self) -> Iterable[Collector]:
        return ()


class ExternalMetricsProvider(Lifecycle, Protocol):
    #: where the metrics come from, for messages ("the brokers", "externalMetrics")
    source: str

    def list_metrics(self) -> Sequence[str]: ...

    def answer_version(self, namespace: str, metric: str) -> Hashable | None:
        """The object an answer about ``namespace``/``metric`` would be computed from now (the same object:
        the same answer, which the server may reuse), or None when answers are not to be reused. Raises as
        :meth:`external_metric` would when the question cannot be answered now."""
        ...

    async def external_metric(self, namespace: str, metric: str, selector: Selector) -> Sequence[ExternalValue]: ...


class CustomMetricsProvider(Lifecycle, Protocol):
    def list_metrics(self) -> Sequence[CustomMetricInfo]: ...

    async def metric_for_object(
        self, namespace: str, resource: str, name: str, metric: str, metric_selector: Selector
    ) -> MetricValue:
        """One object's value (for ``namespaces``, ``name`` is the namespace)."""
        ...

    async def metric_for_selector(
        self, namespace: str, resource: str, selector: Selector, metric: str, metric_selector: Selector
    ) -> Sequence[MetricValue]:
        """The values of the objects ``selector`` names; objects without a value are left out."""
        ...
