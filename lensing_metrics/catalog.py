"""Every metric family this project exports: the contract the HPA, dashboards and alerts rely on.

Names are as Prometheus stores them (counters with ``_total``, histograms by their base name).
Tests check both ways: every family a collector yields is listed here, and every PromQL expression
in dashboards/ and alerts/ names only these or metrics of a named outside source (OUTSIDE_SOURCES).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # gauge | counter | histogram | info
    labels: tuple[str, ...]
    component: str  # exporter-broker | exporter-events | exporter-gpu | adapter


def _specs(component: str, *rows: tuple[str, str, tuple[str, ...]]) -> dict[str, MetricSpec]:
    return {name: MetricSpec(name, kind, labels, component) for name, kind, labels in rows}


BROKER = _specs(
    "exporter-broker",
    ("celery_queue_length", "gauge", ("queue",)),
    ("celery_queue_inflight", "gauge", ("queue",)),
    ("celery_queue_delayed", "gauge", ("queue",)),
    ("celery_broker_up", "gauge", ("transport",)),
    ("celery_broker_read_errors_total", "counter", ("reason",)),
    ("celery_broker_reads_total", "counter", ()),
    ("celery_broker_last_success_timestamp_seconds", "gauge", ()),
    ("celery_broker_read_age_seconds", "gauge", ()),
    ("celery_broker_read_duration_seconds", "gauge", ()),
)

# Filled in by the issues that build them (#3 events, #4 GPU, #5 adapter); names as the issues give them.
EVENTS: dict[str, MetricSpec] = {}
GPU: dict[str, MetricSpec] = {}
ADAPTER: dict[str, MetricSpec] = {}

CATALOG: dict[str, MetricSpec] = {**BROKER, **EVENTS, **GPU, **ADAPTER}

#: Metrics dashboards and alerts may use that other programs export.
OUTSIDE_SOURCES: dict[str, str] = {
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_min_replicas": "kube-state-metrics",
    "http_requests_total": "the lensing API",
    "http_request_duration_seconds_bucket": "the lensing API",
    "up": "Prometheus",
}
