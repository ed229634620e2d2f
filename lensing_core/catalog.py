"""Every metric family this project exports, defined once: name, type, labels and help text. It is the
contract the HPA, dashboards and alerts rely on, and the collectors build their families from it.

Names are as Prometheus stores them (counters with ``_total``, histograms by their base name).
Tests check every way: every family a collector yields is listed here, every PromQL expression in
dashboards/ and alerts/ names only these or metrics of a named outside source (OUTSIDE_SOURCES), and
the metric tables of README.md and docs/ list exactly these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # gauge | counter | histogram
    labels: tuple[str, ...]
    component: str  # exporter-broker | exporter-events | exporter-gpu | adapter | process
    help: str
    optional_labels: tuple[str, ...] = ()  # present only in some set-ups (pod attribution, --worker-labels)


def _specs(
    component: str, *rows: tuple[str, str, tuple[str, ...], str], optional: tuple[str, ...] = ()
) -> dict[str, MetricSpec]:
    return {name: MetricSpec(name, kind, labels, component, doc, optional) for name, kind, labels, doc in rows}


REJECTED_HELP = (
    "Connections closed and requests refused, by reason: bad_request, header_too_large (431), "
    "body_too_large (413), invalid_utf8, head_timeout, tls_handshake, evicted (to make room under "
    "--max-connections)."
)

BROKER = _specs(
    "exporter-broker",
    ("celery_queue_length", "gauge", ("queue",), "Messages waiting in the broker, every priority level summed."),
    ("celery_queue_inflight", "gauge", ("queue",), "Messages delivered to a worker and not yet acknowledged."),
    ("celery_queue_delayed", "gauge", ("queue",), "Messages delayed by the broker (SQS delay)."),
    (
        "celery_queue_running",
        "gauge",
        ("queue",),
        "Tasks of the queue running now on live workers (task-started without an end, from the event stream).",
    ),
    (
        "celery_queue_backlog",
        "gauge",
        ("queue",),
        "Waiting plus every task delivered to a worker and not finished (prefetched or running), each once, "
        "under any acknowledgement mode; absent while the running part is not known.",
    ),
    (
        "celery_queue_running_up",
        "gauge",
        ("queue", "reason"),
        "1 when the queue's running tasks are known; 0 when they are not and running and backlog are absent "
        "(reason: events_off, events_down, warming_up, unplaced, ack_mode_unknown, inflight_unknown).",
    ),
    (
        "celery_queue_workers_needed",
        "gauge",
        ("queue",),
        "Workers the queue needs now: the larger of ceil(backlog / the smallest pool size of its workers) and "
        "the workers running one of its tasks (an HPA target of AverageValue 1 asks for exactly this many); "
        "absent while not known.",
    ),
    (
        "celery_queue_workers_needed_up",
        "gauge",
        ("queue", "reason"),
        "1 when the queue's workers needed is known; 0 when it is not and the series is absent (reason: the "
        "backlog's, or pool_size_unknown, no_workers).",
    ),
    ("celery_broker_up", "gauge", ("transport",), "1 when the last read of the broker succeeded, else 0."),
    ("celery_broker_read_errors_total", "counter", ("reason",), "Failed broker reads, by reason."),
    ("celery_broker_reads_total", "counter", (), "Successful broker reads."),
    ("celery_broker_last_success_timestamp_seconds", "gauge", (), "Unix time of the last successful broker read."),
    ("celery_broker_read_age_seconds", "gauge", (), "Seconds since the last successful broker read."),
    ("celery_broker_read_duration_seconds", "gauge", (), "How long the last successful broker read took."),
    # the exporter's HTTP server: listed with the broker metrics, the part every exporter runs
    (
        "lensing_exporter_http_rejected_total",
        "counter",
        ("reason",),
        REJECTED_HELP,
    ),
)

EVENTS = _specs(
    "exporter-events",
    ("active_analyses", "gauge", ("queue",), "Analysis tasks started and not yet finished, on live workers."),
    ("celery_tasks_total", "counter", ("task", "state"), "Task events, by task name and state."),
    ("celery_task_runtime_seconds", "histogram", ("task",), "Task run time (succeeded and failed tasks)."),
    (
        "celery_task_queue_wait_seconds",
        "histogram",
        ("task",),
        "From task-sent (or task-received when the client sends no task-sent) to task-started.",
    ),
    ("celery_workers", "gauge", ("queue",), "Live workers consuming from the queue."),
    ("celery_worker_slots", "gauge", ("queue",), "Pool processes of the live workers of the queue."),
    ("celery_worker_slots_busy", "gauge", ("queue",), "Pool processes running a task, from heartbeats."),
    ("celery_events_up", "gauge", (), "1 while the exporter is subscribed to the Celery event stream."),
    ("celery_events_received_total", "counter", (), "Celery events read from the stream."),
    ("celery_events_dropped_total", "counter", ("reason",), "Events read but not applied, by reason."),
    (
        "celery_events_lost_total",
        "counter",
        ("reason",),
        "Events that were sent but never arrived, as far as heartbeat gaps and task lifecycles show.",
    ),
    ("celery_events_reconnects_total", "counter", (), "Re-subscriptions after the stream was lost."),
    optional=("worker",),
)

_GPU_LABELS = ("gpu", "uuid", "model")
GPU = {
    **_specs(
        "exporter-gpu",
        (
            "gpu_utilization_ratio",
            "gauge",
            _GPU_LABELS,
            "Share of the last sample period a kernel ran on the GPU (0-1).",
        ),
        (
            "gpu_memory_utilization_ratio",
            "gauge",
            _GPU_LABELS,
            "Share of the last sample period device memory was read or written (0-1).",
        ),
        (
            "gpu_busy_seconds_total",
            "counter",
            _GPU_LABELS,
            "Seconds a kernel ran, from NVML's buffered samples: rate() is true utilization.",
        ),
        ("gpu_memory_used_bytes", "gauge", _GPU_LABELS, "Device memory in use."),
        ("gpu_memory_total_bytes", "gauge", _GPU_LABELS, "Device memory in all."),
        ("gpu_temperature_celsius", "gauge", _GPU_LABELS, "GPU core temperature."),
        ("gpu_power_watts", "gauge", _GPU_LABELS, "Power draw of the board."),
        ("gpu_power_limit_watts", "gauge", _GPU_LABELS, "Power limit enforced on the board."),
        ("gpu_sm_clock_hertz", "gauge", _GPU_LABELS, "Current SM clock."),
        ("gpu_throttled", "gauge", (*_GPU_LABELS, "reason"), "1 while the clocks are held down for this reason."),
        ("gpu_xid_errors_total", "counter", (*_GPU_LABELS, "xid"), "XID errors the driver reported, by XID."),
        (
            "gpu_ecc_uncorrected_errors_total",
            "counter",
            _GPU_LABELS,
            "Uncorrected ECC errors since the driver loaded (cards with ECC on).",
        ),
        (
            "gpu_idle_allocated_seconds_total",
            "counter",
            _GPU_LABELS,
            "Seconds the GPU was allocated (to a pod, or held by a process) at or below the idle threshold.",
        ),
        ("gpu_info", "gauge", (*_GPU_LABELS, "driver_version"), "The GPU and its driver; always 1."),
        optional=("pod", "namespace", "container"),
    ),
    **_specs(
        "exporter-gpu",
        ("nvml_up", "gauge", (), "1 when NVML is initialised and was read in the last cycle, else 0."),
        ("nvml_errors_total", "counter", ("reason",), "NVML errors, by NVML error name."),
        (
            "celery_task_gpu_seconds_total",
            "counter",
            ("queue", "task"),
            "GPU busy seconds of the processes running each task.",
        ),
        (
            "celery_task_gpu_memory_bytes",
            "gauge",
            ("queue", "task"),
            "GPU memory held now by the processes running each task.",
        ),
    ),
}

ADAPTER = _specs(
    "adapter",
    (
        "lensing_adapter_requests_total",
        "counter",
        ("code", "kind"),
        "Requests answered, by HTTP status code and kind.",
    ),
    (
        "lensing_adapter_request_duration_seconds",
        "histogram",
        ("kind",),
        "Time from the request's arrival to its answer, by kind.",
    ),
    ("lensing_adapter_broker_up", "gauge", ("broker",), "1 when the adapter's last read of the broker succeeded."),
    (
        "lensing_adapter_events_up",
        "gauge",
        ("broker",),
        "1 while the adapter is subscribed to the broker's Celery event stream (the running part of the backlog).",
    ),
    (
        "lensing_adapter_broker_read_age_seconds",
        "gauge",
        ("broker",),
        "Seconds since the adapter's last good read of the broker (above --max-staleness: answers are 503).",
    ),
    (
        "lensing_adapter_authentication_total",
        "counter",
        ("method", "result"),
        "Authentication outcomes: method x509, front-proxy, token or anonymous; result success, failure, error.",
    ),
    (
        "lensing_adapter_authorization_total",
        "counter",
        ("decision", "source"),
        "Authorization decisions (allow, deny, error) by source: always-allow-path, always-allow-group, "
        "webhook, cache, none (no API server to ask).",
    ),
    ("lensing_adapter_http_rejected_total", "counter", ("reason",), REJECTED_HELP),
    (
        "lensing_adapter_prometheus_queries_total",
        "counter",
        ("result",),
        "PromQL queries asked for by custom and external metric requests, by result "
        "(cached: answered from the adapter's short cache; coalesced: joined an identical query in flight).",
    ),
    (
        "lensing_adapter_pod_deletion_cost_patches_total",
        "counter",
        (),
        "PATCHes of a worker pod's controller.kubernetes.io/pod-deletion-cost annotation that succeeded "
        "(--pod-deletion-cost).",
    ),
    (
        "lensing_adapter_pod_deletion_cost_failures_total",
        "counter",
        ("reason",),
        "Failed pod lists and PATCHes of the pod deletion cost, by reason: forbidden, not_found, unreachable, error.",
    ),
    (
        "lensing_adapter_pod_deletion_cost_pods",
        "gauge",
        (),
        "Worker pods the pod deletion cost follows (those the worker namespace and selector name).",
    ),
    (
        "lensing_adapter_prometheus_query_duration_seconds",
        "histogram",
        (),
        "Time Prometheus took to answer a query sent by the adapter (cache hits not included).",
    ),
)

#: both faces export these about their own process
PROCESS = _specs(
    "process",
    (
        "lensing_background_restarts_total",
        "counter",
        ("loop",),
        "Restarts of a background loop (broker poll, event consumer, GPU sampler...) after it failed "
        "unexpectedly; while it waits to restart, its source reads as down.",
    ),
)

CATALOG: dict[str, MetricSpec] = {**BROKER, **EVENTS, **GPU, **ADAPTER, **PROCESS}

F = TypeVar("F", bound=Metric)

_FAMILIES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}


def family(name: str, labels: Sequence[str] | None = None) -> Metric:
    """An empty family of the catalogued metric ``name``, with its type and help text. ``labels``: the
    label names when they differ from the catalogued ones (the optional labels of some set-ups)."""
    spec = CATALOG[name]
    return _FAMILIES[spec.kind](spec.name, spec.help, labels=list(spec.labels if labels is None else labels))


def gauge(name: str, labels: Sequence[str] | None = None) -> GaugeMetricFamily:
    return _typed(name, "gauge", labels, GaugeMetricFamily)


def counter(name: str, labels: Sequence[str] | None = None) -> CounterMetricFamily:
    return _typed(name, "counter", labels, CounterMetricFamily)


def histogram(name: str, labels: Sequence[str] | None = None) -> HistogramMetricFamily:
    return _typed(name, "histogram", labels, HistogramMetricFamily)


def _typed(name: str, kind: str, labels: Sequence[str] | None, cls: type[F]) -> F:
    if CATALOG[name].kind != kind:
        raise TypeError(f"{name} is a {CATALOG[name].kind}, not a {kind}")
    built = family(name, labels)
    assert isinstance(built, cls)
    return built


def describe(component: str) -> Iterator[Metric]:
    """The families of one component, without samples: a collector's ``describe()``, so that a registry
    refuses a second collector of the same names."""
    for spec in CATALOG.values():
        if spec.component == component:
            yield family(spec.name)


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
