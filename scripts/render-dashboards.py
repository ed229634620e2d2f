#!/usr/bin/env python3
"""Draw each dashboard from data produced by running code: no Grafana here, so this runs the end-to-end
set-up for a while (the real Redis, a real Celery worker, `lensing-metrics exporter` with its broker and event
sources, a real Prometheus with the rules) plus, from tests/support/standins.py, the GPU collector of
`lensing-metrics exporter --gpu on` on the fake NVML (two T4s held by the worker's pool processes), the real
adapter (scraped over HTTPS with a client certificate, read each second by an HPA stand-in), a stand-in
kube-state-metrics for the worker HPA and a pretend lensing API; then queries every panel's expressions over
that range and draws a grid of panels per dashboard.

    .venv/bin/python scripts/render-dashboards.py            # about 2 min; writes docs/img/<dashboard>.png

A query that returns nothing says so on its panel, with the reason where one is known.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import promql_parser  # noqa: E402
import psutil  # noqa: E402
from celery import Celery  # noqa: E402

from lensing_harness.adapter_process import start_adapter  # noqa: E402
from tests.support.promql import (  # noqa: E402
    DASHBOARDS,
    NO_SERIES_WITHOUT_FAULTS,
    dashboard_panels,
    grafana_to_promql,
    interpolate,
    metric_names,
)
from tests.support.promstack import NAMESPACE, Process, Prometheus, monitoring_stack  # noqa: E402
from tests.support.services import CeleryWorker, claimed_redis_db, free_port, wait_for  # noqa: E402
from tests.support.standins import ApiStandin, HpaStandin  # noqa: E402

VARIABLES = {"namespace": NAMESPACE, "queue": ".*", "hpa": "lensing-celery-worker-hpa", "hpa_target": "10"}
LINESTYLES = ["-", "--", ":", "-."]
UNIT_LABELS = {"percentunit": "ratio", "short": "", "none": "", "reqps": "req/s", "ops": "per s", "x": "x budget"}


def workload(producer: Celery, seconds: float) -> None:
    """Bursts of analyses of different lengths, a bulk queue, and a queue nobody serves."""
    start = time.monotonic()
    plan = [(0, "analyses", 14, 2.0), (8, "orphan", 3, 1.0), (20, "bulk", 10, 1.0), (30, "bulk", 2, -1)]
    plan += [(35, "analyses", 40, 0.8), (45, "bulk", 3, -1), (55, "bulk", 12, 0.5), (65, "analyses", 8, 3.0)]
    for at, queue, count, length in plan:
        if at > seconds:
            break
        time.sleep(max(0.0, start + at - time.monotonic()))
        for i in range(count):
            if length < 0:  # tasks that fail, for the failure panels
                producer.send_task("lensing.fail", queue=queue)
            else:
                producer.send_task("lensing.analyse_lens", args=[i, length], queue=queue)
    time.sleep(max(0.0, start + seconds - time.monotonic()))


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt in ("", "__auto"):
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def with_gaps(values: list[tuple[float, str]], start: float, step: float = 1.0) -> tuple[list[float], list[float]]:
    """Seconds since ``start`` and values, with a NaN where steps are missing (Grafana leaves a gap there)."""
    xs: list[float] = []
    ys: list[float] = []
    for t, v in values:
        x = float(t) - start
        if xs and x - xs[-1] > 1.5 * step:
            xs.append(xs[-1] + step)
            ys.append(float("nan"))
        xs.append(x)
        ys.append(float(v))
    return xs, ys


def no_data_reason(names: set[str]) -> str:
    for name in sorted(names):
        if name in NO_SERIES_WITHOUT_FAULTS:
            return NO_SERIES_WITHOUT_FAULTS[name]
    return "no series in this run"


def draw_panel(ax: Any, panel: dict[str, Any], prometheus: Prometheus, start: float, end: float) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    ax.set_title(panel["title"], fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    drawn, missing = 0, []
    for target in panel["targets"]:
        names = metric_names(promql_parser.parse(grafana_to_promql(target["expr"])))
        values = {**VARIABLES, "gpu_price": "0.158"}
        promql = interpolate(target["expr"], values, rate_interval="5s", range_=f"{int(end - start)}s")
        found = prometheus.query_range(promql, start, end, 1)
        if not found:
            missing.append(no_data_reason(names))
        for series in found:
            xs, ys = with_gaps(series["values"], start)
            label = legend(target.get("legendFormat", ""), series["metric"])
            if panel["type"] == "stat":
                ax.text(0.5, 0.8 - 0.2 * drawn, f"{label}: {ys[-1]:.4g}", ha="center", va="center", fontsize=11)
            else:
                # series that coincide (both cards busy at once, equal burn-rate windows) stay visible
                ax.plot(xs, ys, label=label, linewidth=1.2, linestyle=LINESTYLES[drawn % len(LINESTYLES)])
            drawn += 1
    if panel["type"] == "stat" or not drawn:
        ax.set_xticks([])
        ax.set_yticks([])
    if drawn and panel["type"] != "stat":
        ax.legend(fontsize=6, loc="upper left")
        ax.set_xlabel("seconds", fontsize=7)
        ax.set_ylabel(UNIT_LABELS.get(unit, unit), fontsize=7)
    if missing:
        note = "no data: " + ", ".join(sorted(set(missing)))
        ax.text(
            0.5,
            0.06 if drawn else 0.5,
            note,
            ha="center",
            va="center",
            fontsize=7,
            color="grey",
            transform=ax.transAxes,
            wrap=True,
        )


def render(path: Path, prometheus: Prometheus, start: float, end: float, out: Path) -> None:
    doc = json.loads(path.read_text())
    panels = [p for p in dashboard_panels(path) if p["type"] != "row"]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel, prometheus, start, end)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{doc['title']}  (uid {doc['uid']}; data from running code: see the README)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")


API_PODS = ["lensing-api-6b9f7c5d4-2xkqp", "lensing-api-6b9f7c5d4-9mzrt", "lensing-api-6b9f7c5d4-tl4wv"]
WORKER_PODS = ["lensing-celery-worker-7f8c9d-4hj2k", "lensing-celery-worker-7f8c9d-q8xzn"]


def scrape(job: str, targets: list[tuple[int, dict[str, str]]], **extra: Any) -> dict[str, Any]:
    configs = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, **labels}} for port, labels in targets
    ]
    return {"job_name": job, "static_configs": configs, **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=80, help="how long to run the workload (default 80)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lm-render-"))
    task_dir = workdir / "gpu-tasks"
    stoppable: list[Any] = []
    with claimed_redis_db() as db:
        url = f"redis://127.0.0.1:6379/{db}"
        worker = CeleryWorker(
            url,
            queues=["analyses", "bulk"],
            concurrency=2,
            prefetch=1,
            extra_env={"LENSING_GPU_TASK_DIR": str(task_dir)},
            extra_args=["--include", "exporter.gpu.celery_hook"],
        )
        try:
            pool = wait_for(
                lambda: len(kids := psutil.Process(worker.pid).children()) == 2 and kids, 60, what="2 pool processes"
            )
            gpu_port = free_port()
            gpu_args = [sys.executable, "-m", "tests.support.standins", "gpu-exporter"]
            gpu_args += ["--pids", ",".join(str(p.pid) for p in sorted(pool, key=lambda p: p.pid))]
            gpu_args += ["--pods", ",".join(WORKER_PODS), "--namespace", NAMESPACE, "--task-dir", str(task_dir)]
            gpu_args += ["--listen", f"127.0.0.1:{gpu_port}", "--gpu-sample-interval", "1", "--log-level", "warning"]
            stoppable.append(Process("gpu-exporter", gpu_args, gpu_port, workdir, ready_path="/readyz"))
            adapter = start_adapter(workdir / "adapter", ["--broker-url", url, "--log-level", "warning"])
            stoppable.append(adapter)
            cert, key = workdir / "prometheus-client.crt", workdir / "prometheus-client.key"
            adapter.extra["client"].write(cert, key)
            tls = {"ca_file": str(adapter.serving_cert), "cert_file": str(cert), "key_file": str(key)}
            api = ApiStandin()
            stoppable.append(api)
            hpa = HpaStandin(adapter, ["analyses", "bulk"], NAMESPACE)
            stoppable.append(hpa)
            scrapes = [
                scrape("lensing-metrics-gpu", [(gpu_port, {})]),
                scrape("lensing-metrics-adapter", [(adapter.port, {})], scheme="https", tls_config=tls),
                scrape("lensing-api", [(port, {"pod": pod}) for port, pod in zip(api.ports, API_PODS, strict=True)]),
                scrape("kube-state-metrics", [(hpa.port, {})], honor_labels=True),
            ]
            with monitoring_stack(url, ["analyses", "bulk", "orphan"], {}, scrapes) as stack:
                prometheus = stack["prometheus"]
                wait_for(lambda: prometheus.query("celery_broker_up == 1"), 30, what="the first scrape")
                wait_for(
                    lambda: len(prometheus.query("up == 1")) == 7, 30, what=f"every target up: {targets(prometheus)}"
                )
                if prometheus.query("celery_events_up"):  # task events count once the worker sends them
                    wait_for(lambda: prometheus.query("celery_workers > 0"), 30, what="a live worker")
                start = time.time()
                workload(Celery("producer", broker=url), args.seconds)
                end = time.time()
                for path in DASHBOARDS:
                    render(path, prometheus, start, end, args.out / f"{path.stem}.png")
        finally:
            for item in reversed(stoppable):
                item.stop()
            worker.kill()
            worker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def targets(prometheus: Prometheus) -> str:
    return ", ".join(f"{r['metric']['job']}={r['value'][1]}" for r in prometheus.query("up"))


if __name__ == "__main__":
    sys.exit(main())
