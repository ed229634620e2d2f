"""Freshness: time from a burst of tasks sent to the broker until the adapter serves the new value, at the
default poll interval (1 s). In the same run the same burst is watched through Prometheus (a real
``prometheus`` binary scraping the exporter every 15 s on loopback): what an HPA behind prometheus-adapter
would see at best (the adapter's own relist/cache interval would add to it). The ratio is printed.

Between bursts the script waits a random 0..15 s, so bursts land at random phases of the scrape cycle.

    .venv/bin/python benchmarks/adapter_freshness.py [--rounds 5] [--burst 50]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lensing_harness.adapter_process import RunningAdapter, start_adapter, value_path  # noqa: E402
from lensing_harness.localredis import start_redis_server  # noqa: E402
from lensing_harness.ports import free_port, wait_port  # noqa: E402
from lensing_harness.processes import stop_process  # noqa: E402

SCRAPE_INTERVAL = 15


class AdapterReader:
    def __init__(self, adapter: RunningAdapter) -> None:
        self.conn = http.client.HTTPSConnection("127.0.0.1", adapter.port, context=adapter.client_ssl_context())
        self.path = value_path(metric="celery_queue_length")

    def value(self) -> int:
        self.conn.request("GET", self.path)
        body = json.loads(self.conn.getresponse().read())
        return int(body["items"][0]["value"])


def prometheus_value(port: int) -> int | None:
    query = urllib.parse.urlencode({"query": 'celery_queue_length{queue="analyses"}'})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("prometheus"):
        print("prometheus binary not found (make tools installs it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lm-bench-fresh-"))
    procs: list[subprocess.Popen[bytes]] = []
    adapter: RunningAdapter | None = None
    rows: list[tuple[float, float]] = []
    try:
        redis_port, exporter_port, prom_port = free_port(), free_port(), free_port()
        broker = f"redis://127.0.0.1:{redis_port}/0"
        procs.append(start_redis_server(redis_port, str(work)))
        wait_port(redis_port, 20)
        from celery import Celery

        producer = Celery("bench", broker=broker)
        producer.send_task("lensing.analyse_lens", args=[0], queue="analyses")  # declares the queue's binding
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--broker-url",
                    broker,
                    "--listen",
                    f"127.0.0.1:{exporter_port}",
                    "--log-level",
                    "warning",
                ],
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        )
        (work / "prometheus.yml").write_text(
            f"global: {{scrape_interval: {SCRAPE_INTERVAL}s}}\n"
            "scrape_configs:\n  - job_name: exporter\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
        )
        procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        adapter = start_adapter(work / "adapter", ["--broker-url", broker, "--log-level", "warning"])
        wait_port(prom_port, 30)
        reader = AdapterReader(adapter)
        deadline = time.monotonic() + 60
        while prometheus_value(prom_port) != reader.value():
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus never caught up with the broker")
            time.sleep(0.5)
        for _round in range(args.rounds):
            time.sleep(random.uniform(0, SCRAPE_INTERVAL))
            before = reader.value()
            target = before + args.burst
            for i in range(args.burst):
                producer.send_task("lensing.analyse_lens", args=[i], queue="analyses")
            sent = time.monotonic()
            adapter_seen = prom_seen = None
            while adapter_seen is None or prom_seen is None:
                now = time.monotonic()
                if adapter_seen is None and reader.value() >= target:
                    adapter_seen = now - sent
                if prom_seen is None and int(now * 5) != int((now - 0.02) * 5):  # Prometheus every ~200 ms
                    value = prometheus_value(prom_port)
                    if value is not None and value >= target:
                        prom_seen = now - sent
                if now - sent > 60:
                    raise RuntimeError("burst not seen within 60 s")
                time.sleep(0.02)
            rows.append((adapter_seen, prom_seen))
            print(f"round {_round + 1}: adapter {adapter_seen:.2f} s, Prometheus {prom_seen:.2f} s", flush=True)
    finally:
        if adapter is not None:
            adapter.stop()
        for proc in reversed(procs):
            stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)
    adapter_times, prom_times = [r[0] for r in rows], [r[1] for r in rows]
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()}; burst {args.burst} tasks, "
        f"{args.rounds} rounds; adapter and exporter poll every 1 s, Prometheus scrapes every {SCRAPE_INTERVAL} s"
    )
    print(f"adapter:    median {statistics.median(adapter_times):.2f} s, max {max(adapter_times):.2f} s")
    print(f"Prometheus: median {statistics.median(prom_times):.2f} s, max {max(prom_times):.2f} s")
    print(f"Prometheus / adapter (medians): {statistics.median(prom_times) / statistics.median(adapter_times):.1f}x")
    print(f"target: adapter <= 1.5 s: {'met' if max(adapter_times) <= 1.5 else 'NOT met'} (max over rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
