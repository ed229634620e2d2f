#!/usr/bin/env python3
"""Draw each dashboard from real data: no Grafana here, so this runs the end-to-end set-up for a while
(the real Redis, a real Celery worker, `lensing-metrics exporter`, a real Prometheus with the rules),
queries every panel's expressions over that range and draws a grid of panels per dashboard.

    .venv/bin/python scripts/render-dashboards.py            # about 90 s; writes docs/img/<dashboard>.png

Panels whose source does not run here (GPU, events, adapter, kube-state-metrics, the lensing API) say so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import promql_parser  # noqa: E402
from celery import Celery  # noqa: E402

from tests.support.promql import (  # noqa: E402
    DASHBOARDS,
    dashboard_panels,
    grafana_to_promql,
    interpolate,
    metric_names,
    running_components,
)
from tests.support.promql import missing_source as why_missing  # noqa: E402
from tests.support.promstack import NAMESPACE, Prometheus, monitoring_stack  # noqa: E402
from tests.support.services import CeleryWorker, claimed_redis_db, wait_for  # noqa: E402

VARIABLES = {"namespace": NAMESPACE, "queue": ".*", "hpa": "lensing-celery-worker-hpa", "hpa_target": "10"}
UNIT_LABELS = {"percentunit": "ratio", "short": "", "none": "", "reqps": "req/s", "ops": "per s", "x": "x budget"}


def workload(producer: Celery, seconds: float) -> None:
    """Bursts of analyses of different lengths, a bulk queue, and a queue nobody serves."""
    start = time.monotonic()
    plan = [(0, "analyses", 14, 2.0), (8, "orphan", 3, 1.0), (20, "bulk", 10, 1.0), (30, "bulk", 2, -1)]
    plan += [(35, "analyses", 20, 1.5), (45, "bulk", 3, -1), (55, "bulk", 12, 0.5), (65, "analyses", 8, 3.0)]
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


def draw_panel(
    ax: Any, panel: dict[str, Any], prometheus: Prometheus, start: float, end: float, running: frozenset[str]
) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    ax.set_title(panel["title"], fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    drawn, missing = 0, []
    for target in panel["targets"]:
        names = metric_names(promql_parser.parse(grafana_to_promql(target["expr"])))
        why = why_missing(names, running)
        if why:
            source = why.split(",")[0]
            missing.append("needs " + source.split(" comes from ")[-1] if " comes from " in source else source)
            continue
        values = {**VARIABLES, "gpu_price": "0.158"}
        promql = interpolate(target["expr"], values, rate_interval="5s", range_=f"{int(end - start)}s")
        for series in prometheus.query_range(promql, start, end, 1):
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            label = legend(target.get("legendFormat", ""), series["metric"])
            if panel["type"] == "stat":
                ax.text(0.5, 0.5 - 0.25 * drawn, f"{label}: {ys[-1]:g}", ha="center", va="center", fontsize=12)
            else:
                ax.plot(xs, ys, label=label, linewidth=1.2)
            drawn += 1
    if panel["type"] == "stat" or not drawn:
        ax.set_xticks([])
        ax.set_yticks([])
    if drawn and panel["type"] != "stat":
        ax.legend(fontsize=6, loc="upper left")
        ax.set_xlabel("seconds", fontsize=7)
        ax.set_ylabel(UNIT_LABELS.get(unit, unit), fontsize=7)
    if missing:
        note = "no data here: " + ", ".join(sorted(set(missing)))
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
    stored = {r["metric"]["__name__"] for r in prometheus.query('count by (__name__) ({job=~".+"})')}
    running = running_components(stored)
    doc = json.loads(path.read_text())
    panels = [p for p in dashboard_panels(path) if p["type"] != "row"]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel, prometheus, start, end, running)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{doc['title']}  (uid {doc['uid']}; real data from this machine's Prometheus)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=80, help="how long to run the workload (default 80)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with claimed_redis_db() as db:
        url = f"redis://127.0.0.1:6379/{db}"
        worker = CeleryWorker(url, queues=["analyses", "bulk"], concurrency=2, prefetch=1)
        try:
            with monitoring_stack(url, ["analyses", "bulk", "orphan"], {}) as stack:
                prometheus = stack["prometheus"]
                wait_for(lambda: prometheus.query("celery_broker_up == 1"), 30, what="the first scrape")
                if prometheus.query("celery_events_up"):  # task events count once the worker sends them
                    wait_for(lambda: prometheus.query("celery_workers > 0"), 30, what="a live worker")
                start = time.time()
                workload(Celery("producer", broker=url), args.seconds)
                end = time.time()
                for path in DASHBOARDS:
                    render(path, prometheus, start, end, args.out / f"{path.stem}.png")
        finally:
            worker.kill()
            worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
