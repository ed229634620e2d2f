"""Builds the committed dashboards: ``python dashboards/build.py`` writes them, ``--check`` fails on drift.

Queries name only the metrics of ``lensing_core/catalog.py`` (and its OUTSIDE_SOURCES) and the
recording rules of ``alerts/lensing-metrics.rules.yaml``; ``tests/dashboards`` holds them to that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dashboards` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards.grafana import (
    Json,
    Panel,
    Row,
    Target,
    Threshold,
    dashboard,
    datasource_variable,
    query_variable,
    textbox_variable,
)

HERE = Path(__file__).resolve().parent
API_UID = "lensing-api-performance"
WORKERS_UID = "lensing-celery-gpu-workers"

NS = 'namespace="$namespace"'
WORKER_HPAS = 'horizontalpodautoscaler=~".*(celery|worker).*"'  # as LensingCeleryWorkersAtMaxReplicas selects them
QUEUE = f'{NS}, queue=~"$queue"'
# GPU panels are not filtered by namespace: a GPU series carries the namespace of the pod it is allocated to
# (or the collector's own while free), which is not the exporter's. GPUs are a cluster resource.
GPU_POD = 'pod!=""'
API = 'job="lensing-api"'
API_5XX = 'job="lensing-api", status=~"5.."'
FAILED = f'{NS}, state="failed"'
FINISHED = f'{NS}, state=~"succeeded|failed"'
SLO_ERROR_BUDGET = 0.001  # 99.9% availability
API_P95_TARGET = 1.0  # seconds; the LensingAPILatencyP95High alert's default threshold

UP_MAPPINGS = (("0", "DOWN", "red"), ("1", "UP", "green"))
UP_THRESHOLDS = Threshold("red", ((1, "green"),))


def sel(metric: str, selector: str = "") -> str:
    return f"{metric}{{{selector}}}" if selector else metric


def rate(metric: str, selector: str = "", window: str = "$__rate_interval") -> str:
    return f"rate({sel(metric, selector)}[{window}])"


def quantiles(histogram: str, selector: str) -> tuple[Target, ...]:
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by (le) ({rate(histogram + '_bucket', selector)}))",
            legend=f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def backlog(selector: str) -> str:
    """The exporter's backlog per queue (waiting + delivered and not finished, each once); absent while
    its running part is not known, never the waiting part alone."""
    return f"max by (queue) (celery_queue_backlog{{{selector}}})"


def common_variables() -> list[Json]:
    return [
        datasource_variable(),
        query_variable("namespace", "Namespace", "label_values(celery_broker_up, namespace)"),
        query_variable(
            "queue",
            "Queue",
            'label_values(celery_queue_length{namespace="$namespace"}, queue)',
            multi=True,
            include_all=True,
        ),
    ]


def api_dashboard() -> Json:
    """The platform's "Lensing API Performance" dashboard (design section 4.2) plus errors and SLO burn."""
    errors = f"sum(rate(http_requests_total{{{API_5XX}}}[$__rate_interval]))"
    total = f"sum(rate(http_requests_total{{{API}}}[$__rate_interval]))"
    api = Row(
        "Lensing API",
        (
            Panel(
                "Request Rate",
                "Requests per second the lensing API answers, by HTTP status (http_requests_total of the "
                'API, scrape job "lensing-api").',
                (Target(f"sum by (status) ({rate('http_requests_total', API)})", legend="{{status}}"),),
                unit="reqps",
                stack=True,
                threshold_style="off",
            ),
            Panel(
                "Request Latency (P95)",
                "95th percentile of request duration over all handlers, with p50 and p99 for shape. "
                f"The latency SLO asks for P95 under {API_P95_TARGET:g} s (alert LensingAPILatencyP95High).",
                quantiles("http_request_duration_seconds", API),
                unit="s",
                thresholds=Threshold("green", ((API_P95_TARGET, "red"),)),
            ),
            Panel(
                "Error ratio (5xx)",
                "Share of API requests answered with a 5xx status. The 99.9% availability SLO allows 0.1%.",
                (Target(f"{errors} / {total}", legend="5xx ratio"),),
                unit="percentunit",
                thresholds=Threshold("green", ((SLO_ERROR_BUDGET, "red"),)),
                min=0,
            ),
            Panel(
                "SLO burn rate (99.9% availability)",
                "How fast the error budget burns: error ratio over a window divided by 0.1%. 1 spends the "
                "30-day budget in exactly 30 days; 14.4 (over 1h) and 6 (over 6h) page; 3 and 1 open a ticket. "
                "From the recording rules lensing:api_request_errors:ratio_rate*.",
                tuple(
                    Target(f"lensing:api_request_errors:ratio_rate{w} / {SLO_ERROR_BUDGET}", legend=w)
                    for w in ("5m", "1h", "6h", "1d")
                ),
                unit="x",
                thresholds=Threshold("green", ((1, "yellow"), (6, "orange"), (14.4, "red"))),
                min=0,
            ),
            Panel(
                "Availability over the time range",
                "Share of API requests not answered with a 5xx over the dashboard's time range, against the "
                "99.9% objective.",
                (
                    Target(
                        f"1 - sum(increase(http_requests_total{{{API_5XX}}}[$__range])) / "
                        f"sum(increase(http_requests_total{{{API}}}[$__range]))",
                        legend="availability",
                        instant=True,
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("red", ((1 - SLO_ERROR_BUDGET, "green"),)),
                kind="stat",
                width=6,
                decimals=3,
            ),
        ),
    )
    analyses = Row(
        "Analyses",
        (
            Panel(
                "Active Analyses",
                "Analyses started on a worker and not yet finished, per queue (active_analyses, from the "
                "Celery event stream). Tasks of a worker that died stop counting after the worker timeout.",
                (Target(f"sum by (queue) (active_analyses{{{QUEUE}}})", legend="{{queue}}"),),
                unit="short",
                stack=True,
                threshold_style="off",
                min=0,
            ),
            Panel(
                "Celery Queue Length",
                "Messages waiting in the broker per queue, every priority level summed (celery_queue_length). "
                "The worker HPA scales on it with a target of 10 per replica.",
                (Target(f"max by (queue) (celery_queue_length{{{QUEUE}}})", legend="{{queue}}"),),
                unit="short",
                thresholds=Threshold("green", ((100, "red"),)),
                min=0,
            ),
        ),
    )
    return dashboard(
        uid=API_UID,
        title="Lensing API Performance",
        description="The lensing API's traffic, latency, errors and 99.9% SLO, with the analyses it starts.",
        tags=["lensing", "lensing-metrics"],
        variables=common_variables(),
        rows=[api, analyses],
    )


def workers_dashboard() -> Json:
    # The worker HPA lives in the workers' namespace, which need not be the exporter's: no namespace filter.
    hpa = 'horizontalpodautoscaler="$hpa"'
    queues = Row(
        "Queues and autoscaling",
        (
            Panel(
                "Waiting",
                "Messages waiting in the broker per queue, every priority level summed (celery_queue_length).",
                (Target(f"max by (queue) (celery_queue_length{{{QUEUE}}})", legend="{{queue}}"),),
                unit="short",
                thresholds=Threshold("green", ((100, "red"),)),
                width=6,
                min=0,
            ),
            Panel(
                "In flight",
                "Messages a worker has taken (prefetched, or running with late acks) and not yet acknowledged "
                "(celery_queue_inflight).",
                (Target(f"max by (queue) (celery_queue_inflight{{{QUEUE}}})", legend="{{queue}}"),),
                unit="short",
                threshold_style="off",
                width=6,
                min=0,
            ),
            Panel(
                "Running",
                "Tasks running now on live workers, from the Celery event stream (celery_queue_running). "
                "Absent while the running part is not known (celery_queue_running_up says why).",
                (Target(f"max by (queue) (celery_queue_running{{{QUEUE}}})", legend="{{queue}}"),),
                unit="short",
                threshold_style="off",
                width=6,
                min=0,
            ),
            Panel(
                "Backlog (waiting + delivered, not finished)",
                "The work the workers actually have: waiting plus every task prefetched or running, each once, "
                "under any acknowledgement mode (celery_queue_backlog). Unlike the waiting count it never reads "
                "0 while workers are busy; it is the recommended metric to scale GPU workers on.",
                (Target(backlog(QUEUE), legend="{{queue}}"),),
                unit="short",
                thresholds=Threshold("green", ((100, "red"),)),
                width=6,
                min=0,
            ),
            Panel(
                "Worker HPA: replicas against the backlog",
                "The worker HPA's current, desired and maximum replicas (kube-state-metrics), and the replicas "
                "the waiting messages ask for at the HPA's AverageValue target ($hpa_target per replica). "
                "Desired at max while the ask keeps rising means the HPA cannot catch up.",
                (
                    Target(
                        f"kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}",
                        legend="current ({{namespace}})",
                    ),
                    Target(
                        f"kube_horizontalpodautoscaler_status_desired_replicas{{{hpa}}}",
                        legend="desired ({{namespace}})",
                    ),
                    Target(f"kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}}", legend="max ({{namespace}})"),
                    Target(
                        f"ceil(sum(max by (queue) (celery_queue_length{{{QUEUE}}})) / $hpa_target)",
                        legend="asked for by the queue",
                    ),
                ),
                unit="short",
                threshold_style="off",
                min=0,
            ),
            Panel(
                "Live workers",
                "Celery workers alive per queue (celery_workers, from worker heartbeats).",
                (Target(f"sum by (queue) (celery_workers{{{QUEUE}}})", legend="{{queue}}"),),
                unit="short",
                thresholds=Threshold("red", ((1, "green"),)),
                width=6,
                min=0,
            ),
            Panel(
                "Slot saturation",
                "Pool processes running a task over all pool processes, per queue "
                "(celery_worker_slots_busy / celery_worker_slots). Near 100% with a backlog: add workers.",
                (
                    Target(
                        f"sum by (queue) (celery_worker_slots_busy{{{QUEUE}}}) / "
                        f"sum by (queue) (celery_worker_slots{{{QUEUE}}})",
                        legend="{{queue}}",
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("green", ((0.9, "orange"),)),
                width=6,
                min=0,
                max=1,
            ),
        ),
    )
    tasks = Row(
        "Tasks (Celery events; task series have no queue label)",
        (
            Panel(
                "Task rate by state",
                "Task events per second by state (celery_tasks_total).",
                (
                    Target(
                        f"sum by (state) ({rate('celery_tasks_total', NS)})",
                        legend="{{state}}",
                    ),
                ),
                unit="ops",
                threshold_style="off",
                width=6,
                min=0,
            ),
            Panel(
                "Failure ratio by task",
                "Failed over finished (succeeded + failed) tasks, per task name. Alert "
                "LensingCeleryTaskFailureRatioHigh fires above 10% by default.",
                (
                    Target(
                        f"sum by (task) ({rate('celery_tasks_total', FAILED)}) / "
                        f"sum by (task) ({rate('celery_tasks_total', FINISHED)})",
                        legend="{{task}}",
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("green", ((0.1, "red"),)),
                width=6,
                min=0,
            ),
            Panel(
                "Task runtime",
                "p50, p95 and p99 of task run time (started to finished), all tasks (celery_task_runtime_seconds).",
                quantiles("celery_task_runtime_seconds", NS),
                unit="s",
                threshold_style="off",
                width=6,
            ),
            Panel(
                "Queue wait time",
                "p50, p95 and p99 of the time a task waited between being sent and starting "
                "(celery_task_queue_wait_seconds). Alert LensingCeleryQueueWaitHigh fires when p95 is above "
                "its threshold (default 10 min).",
                quantiles("celery_task_queue_wait_seconds", NS),
                unit="s",
                thresholds=Threshold("green", ((600, "red"),)),
                width=6,
            ),
        ),
    )
    gpus = Row(
        "GPUs",
        (
            Panel(
                "GPU utilization per GPU",
                "Share of time each GPU was busy, from NVML's buffered samples (rate of gpu_busy_seconds_total), "
                "so short bursts between scrapes count.",
                (
                    Target(
                        f"sum by (instance, gpu) ({rate('gpu_busy_seconds_total')})",
                        legend="{{instance}} GPU {{gpu}}",
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("red", ((0.2, "green"),)),
                width=8,
                min=0,
                max=1,
            ),
            Panel(
                "GPU utilization per pod",
                "GPU busy share per pod the GPU is allocated to (needs the kubelet pod-resources socket).",
                (
                    Target(
                        f"sum by (pod) ({rate('gpu_busy_seconds_total', GPU_POD)})",
                        legend="{{pod}}",
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("red", ((0.2, "green"),)),
                width=8,
                min=0,
            ),
            Panel(
                "GPU memory used",
                "Memory used over total per GPU. Alert LensingGPUMemoryNearFull fires above 95%.",
                (
                    Target(
                        "max by (instance, gpu) (gpu_memory_used_bytes) / "
                        "max by (instance, gpu) (gpu_memory_total_bytes)",
                        legend="{{instance}} GPU {{gpu}}",
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("green", ((0.95, "red"),)),
                width=8,
                min=0,
                max=1,
            ),
            Panel(
                "GPU temperature",
                "Die temperature per GPU. Alert LensingGPUTemperatureHigh fires above 85 °C by default.",
                (
                    Target(
                        "max by (instance, gpu) (gpu_temperature_celsius)",
                        legend="{{instance}} GPU {{gpu}}",
                    ),
                ),
                unit="celsius",
                thresholds=Threshold("green", ((85, "red"),)),
                width=8,
            ),
            Panel(
                "GPU power",
                "Power draw per GPU (a T4's limit is 70 W), and throttle reasons active now.",
                (
                    Target("max by (instance, gpu) (gpu_power_watts)", legend="{{instance}} GPU {{gpu}}"),
                    Target(
                        "max by (instance, gpu) (gpu_power_limit_watts)",
                        legend="limit {{instance}} GPU {{gpu}}",
                    ),
                ),
                unit="watt",
                threshold_style="off",
                width=8,
                min=0,
            ),
            Panel(
                "GPU throttling",
                "Throttle reasons active per GPU (gpu_throttled == 1). Thermal and power-brake slowdowns "
                "page through LensingGPUThrottled.",
                (
                    Target(
                        "max by (instance, gpu, reason) (gpu_throttled) == 1",
                        legend="{{instance}} GPU {{gpu}} {{reason}}",
                    ),
                ),
                unit="bool_on_off",
                thresholds=Threshold("green", ((1, "orange"),)),
                width=8,
                min=0,
                max=1,
            ),
            Panel(
                "GPU time by queue and task",
                "GPU-seconds per second spent by each queue and task (celery_task_gpu_seconds_total): 1 means "
                "one GPU fully busy with it.",
                (
                    Target(
                        f"sum by (queue, task) ({rate('celery_task_gpu_seconds_total', QUEUE)})",
                        legend="{{queue}} {{task}}",
                    ),
                ),
                unit="short",
                stack=True,
                threshold_style="off",
                min=0,
            ),
            Panel(
                "GPU hours by queue and task over the time range",
                "GPU hours each queue and task used over the dashboard's time range.",
                (
                    Target(
                        f"sum by (queue, task) (increase(celery_task_gpu_seconds_total{{{QUEUE}}}[$__range])) / 3600",
                        legend="{{queue}} {{task}}",
                        instant=True,
                    ),
                ),
                unit="h",
                thresholds=Threshold("blue"),
                kind="bargauge",
            ),
            Panel(
                "Idle while allocated",
                "Share of time each GPU sat allocated to a worker at (near) zero utilization "
                "(rate of gpu_idle_allocated_seconds_total): money spent on nothing.",
                (
                    Target(
                        f"sum by (instance, gpu) ({rate('gpu_idle_allocated_seconds_total')})",
                        legend="{{instance}} GPU {{gpu}}",
                    ),
                ),
                unit="percentunit",
                thresholds=Threshold("green", ((0.5, "orange"), (0.8, "red"))),
                width=12,
                min=0,
                max=1,
            ),
            Panel(
                "Idle GPU spend rate",
                "Dollars per hour paid for allocated, idle GPUs at $gpu_price per GPU-hour "
                "(the dashboard variable; the platform's g4dn.xlarge spot price is about $0.158/h).",
                (
                    Target(
                        f"sum({rate('gpu_idle_allocated_seconds_total')}) * $gpu_price",
                        legend="$ per hour",
                    ),
                ),
                unit="currencyUSD",
                thresholds=Threshold("green", ((0.5, "orange"),)),
                width=6,
                min=0,
            ),
            Panel(
                "Idle GPU cost over the time range",
                "What the idle-but-allocated GPU time of the dashboard's time range cost at $gpu_price per GPU-hour.",
                (
                    Target(
                        "sum(increase(gpu_idle_allocated_seconds_total[$__range])) / 3600 * $gpu_price",
                        legend="idle cost",
                        instant=True,
                    ),
                ),
                unit="currencyUSD",
                thresholds=Threshold("green", ((10, "orange"), (50, "red"))),
                kind="stat",
                width=6,
                decimals=2,
            ),
        ),
    )
    health = Row(
        "Exporter and adapter health",
        (
            Panel(
                "Sources up",
                "Whether each source of the exporter works now: the broker read, the Celery event stream, NVML. "
                "A source that is down has its series absent, never zero.",
                (
                    Target(f"min(celery_broker_up{{{NS}}})", legend="broker", instant=True),
                    Target(f"min(celery_events_up{{{NS}}})", legend="events", instant=True),
                    Target("min(nvml_up)", legend="NVML", instant=True),
                    Target(f"min(lensing_adapter_broker_up{{{NS}}})", legend="adapter broker", instant=True),
                ),
                unit="none",
                thresholds=UP_THRESHOLDS,
                kind="stat",
                mappings=UP_MAPPINGS,
                width=6,
            ),
            Panel(
                "Broker read age and duration",
                "Seconds since the exporter's last successful broker read, and how long that read took. "
                "The age stays near the poll interval (1 s) while the broker is healthy.",
                (
                    Target(f"max(celery_broker_read_age_seconds{{{NS}}})", legend="age"),
                    Target(f"max(celery_broker_read_duration_seconds{{{NS}}})", legend="read duration"),
                ),
                unit="s",
                thresholds=Threshold("green", ((30, "red"),)),
                width=6,
                min=0,
            ),
            Panel(
                "Broker reads and errors",
                "Successful broker reads per second, and failed reads by reason.",
                (
                    Target(f"sum({rate('celery_broker_reads_total', NS)})", legend="reads"),
                    Target(
                        f"sum by (reason) ({rate('celery_broker_read_errors_total', NS)})",
                        legend="error: {{reason}}",
                    ),
                ),
                unit="ops",
                threshold_style="off",
                width=6,
                min=0,
            ),
            Panel(
                "Event stream",
                "Celery events received per second, and those dropped or detected as lost, by reason.",
                (
                    Target(f"sum({rate('celery_events_received_total', NS)})", legend="received"),
                    Target(
                        f"sum by (reason) ({rate('celery_events_dropped_total', NS)})", legend="dropped: {{reason}}"
                    ),
                    Target(f"sum by (reason) ({rate('celery_events_lost_total', NS)})", legend="lost: {{reason}}"),
                ),
                unit="ops",
                threshold_style="off",
                width=6,
                min=0,
            ),
            Panel(
                "Adapter requests by code",
                "Requests the external/custom metrics adapter answered per second, by HTTP code and kind. "
                "503 means it had no fresh value and the HPA held its replicas.",
                (
                    Target(
                        f"sum by (code, kind) ({rate('lensing_adapter_requests_total', NS)})",
                        legend="{{code}} {{kind}}",
                    ),
                ),
                unit="reqps",
                threshold_style="off",
                min=0,
            ),
            Panel(
                "Age of the adapter's value",
                "Seconds since the adapter's last good broker read, per broker: the age of what the HPA sees. "
                "Above the adapter's --max-staleness (default 10 s) it answers 503 and the HPA is frozen.",
                (
                    Target(
                        f"max by (broker) (lensing_adapter_broker_read_age_seconds{{{NS}}})",
                        legend="{{broker}}",
                    ),
                ),
                unit="s",
                thresholds=Threshold("green", ((10, "red"),)),
                min=0,
            ),
            Panel(
                "Background loop restarts",
                "Restarts of the exporter's and the adapter's background loops (broker poll, event consumer, "
                "GPU sampler, ...) after an unexpected failure, per loop and rate interval. While a loop waits "
                "to restart (0.5 s doubling to 30 s) its source reads as down.",
                (
                    Target(
                        f"sum by (loop) (increase(lensing_background_restarts_total{{{NS}}}[$__rate_interval]))",
                        legend="{{loop}}",
                    ),
                ),
                unit="none",
                thresholds=Threshold("green", ((3, "red"),)),
                min=0,
            ),
        ),
    )
    return dashboard(
        uid=WORKERS_UID,
        title="Lensing / Celery GPU workers",
        description="Queues, the worker HPA, Celery tasks, the GPUs they run on and what idle GPUs cost, "
        "and the health of lensing-metrics itself.",
        tags=["lensing", "lensing-metrics", "celery", "gpu"],
        variables=[
            *common_variables(),
            query_variable(
                "hpa",
                "Worker HPA",
                f"label_values(kube_horizontalpodautoscaler_spec_max_replicas{{{WORKER_HPAS}}}, "
                "horizontalpodautoscaler)",
                default="lensing-celery-worker-hpa",
            ),
            textbox_variable(
                "hpa_target",
                "HPA target per replica",
                "10",
                "The worker HPA's AverageValue target for celery_queue_length.",
            ),
            textbox_variable(
                "gpu_price",
                "GPU price ($/GPU-hour)",
                "0.158",
                "Price of one GPU-hour; 0.158 is the platform's g4dn.xlarge (T4) spot price.",
            ),
        ],
        rows=[queues, tasks, gpus, health],
    )


DASHBOARDS = {
    "lensing-api-performance.json": api_dashboard,
    "celery-gpu-workers.json": workers_dashboard,
}


def render(build: object) -> str:
    return json.dumps(build, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard differs from the code")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"dashboards out of date: {', '.join(stale)}; run python dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
