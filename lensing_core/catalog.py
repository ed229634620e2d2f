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
    optional_labels: tuple[str, ...] = ()  # present only in some set-ups (pod attribution, --worker-labels)


def _specs(
    component: str, *rows: tuple[str, str, tuple[str, ...]], optional: tuple[str, ...] = ()
) -> dict[str, MetricSpec]:
    return {name: MetricSpec(name, kind, labels, component, optional) for name, kind, labels in rows}


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

EVENTS = _specs(
    "exporter-events",
    ("active_analyses", "gauge", ("queue",)),
    ("celery_tasks_total", "counter", ("task", "state")),
    ("celery_task_runtime_seconds", "histogram", ("task",)),
    ("celery_task_queue_wait_seconds", "histogram", ("task",)),
    ("celery_workers", "gauge", ("queue",)),
    ("celery_worker_slots", "gauge", ("queue",)),
    ("celery_worker_slots_busy", "gauge", ("queue",)),
    ("celery_events_up", "gauge", ()),
    ("celery_events_received_total", "counter", ()),
    ("celery_events_dropped_total", "counter", ("reason",)),
    ("celery_events_lost_total", "counter", ("reason",)),
    ("celery_events_reconnects_total", "counter", ()),
    optional=("worker",),
)

_GPU_LABELS = ("gpu", "uuid", "model")
GPU = {
    **_specs(
        "exporter-gpu",
        ("gpu_utilization_ratio", "gauge", _GPU_LABELS),
        ("gpu_memory_utilization_ratio", "gauge", _GPU_LABELS),
        ("gpu_busy_seconds_total", "counter", _GPU_LABELS),
        ("gpu_memory_used_bytes", "gauge", _GPU_LABELS),
        ("gpu_memory_total_bytes", "gauge", _GPU_LABELS),
        ("gpu_temperature_celsius", "gauge", _GPU_LABELS),
        ("gpu_power_watts", "gauge", _GPU_LABELS),
        ("gpu_power_limit_watts", "gauge", _GPU_LABELS),
        ("gpu_sm_clock_hertz", "gauge", _GPU_LABELS),
        ("gpu_throttled", "gauge", (*_GPU_LABELS, "reason")),
        ("gpu_xid_errors_total", "counter", (*_GPU_LABELS, "xid")),
        ("gpu_ecc_uncorrected_errors_total", "counter", _GPU_LABELS),
        ("gpu_idle_allocated_seconds_total", "counter", _GPU_LABELS),
        ("gpu_info", "gauge", (*_GPU_LABELS, "driver_version")),
        optional=("pod", "namespace", "container"),
    ),
    **_specs(
        "exporter-gpu",
        ("nvml_up", "gauge", ()),
        ("nvml_errors_total", "counter", ("reason",)),
        ("celery_task_gpu_seconds_total", "counter", ("queue", "task")),
        ("celery_task_gpu_memory_bytes", "gauge", ("queue", "task")),
    ),
}

ADAPTER = _specs(
    "adapter",
    ("lensing_adapter_requests_total", "counter", ("code", "kind")),
    ("lensing_adapter_request_duration_seconds", "histogram", ("kind",)),
    ("lensing_adapter_broker_up", "gauge", ("broker",)),
    ("lensing_adapter_broker_read_age_seconds", "gauge", ("broker",)),
    ("lensing_adapter_authentication_total", "counter", ("method", "result")),
    ("lensing_adapter_authorization_total", "counter", ("decision", "source")),
    ("lensing_adapter_prometheus_queries_total", "counter", ("result",)),
    ("lensing_adapter_prometheus_query_duration_seconds", "histogram", ()),
)

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
