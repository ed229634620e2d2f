"""Custom metrics through the adapter: 100 HPAs asking every 15 s, and the adapter's capacity.

Set-up, all on loopback: a pretend API exporting ``http_requests_total`` for 100 Deployments x 2 pods, a
real Prometheus scraping it every second, a stand-in Kubernetes API listing the pods by label, and the
adapter as its own process (HTTPS, client certificate), run twice: with the query cache
(``--custom-metrics-cache-seconds 5``) and without it (``0``, the baseline, in the same run).

Per run:
- HPA pattern: 100 request streams (one per Deployment: ``pods/*/http_requests_per_second?labelSelector=app=app-N``),
  each asked every 15 s, staggered; reports latency and the queries Prometheus received;
- saturation: closed loop, ``--concurrency`` connections cycling through the 100 streams: requests/s
  sustained, p50/p99, and Prometheus queries/s.

    .venv/bin/python benchmarks/custom_metrics.py [--hpas 100] [--hpa-seconds 30] [--saturation-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lensing_harness.adapter_process import RunningAdapter, start_adapter
from tests.adapter.faulty_kube_api import FaultyKubeAPI
from tests.support.prometheus import PrometheusServer, RequestCounterServer
from tests.support.services import claimed_redis_db

NAMESPACE = "lensing"


@dataclass
class Phase:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    prom_queries: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Adapter:
    """The adapter as its own process (HTTPS; the client certificate of the harness's kubeconfig user)."""

    def __init__(self, workdir: Path, prometheus_url: str, lister_kubeconfig: Path, broker_url: str, cache: float):
        self.workdir = workdir / f"adapter-cache-{cache:g}"
        self.args = [
            "--prometheus-url",
            prometheus_url,
            "--lister-kubeconfig",
            str(lister_kubeconfig),
            "--custom-metrics-cache-seconds",
            str(cache),
            "--log-level",
            "warning",
        ]
        self.broker_url = broker_url
        self.running: RunningAdapter | None = None

    def __enter__(self) -> Adapter:
        self.running = start_adapter(self.workdir, ["--broker-url", self.broker_url], extra_args=self.args)
        self.context = self.running.client_ssl_context()
        self.url = self.running.url
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            self.running.stop()

    async def queries_sent(self, session: aiohttp.ClientSession) -> float:
        async with session.get(self.url + "/metrics", ssl=self.context) as response:
            text = await response.text()
        total = 0.0
        for result, value in re.findall(
            r'^lensing_adapter_prometheus_queries_total\{result="(\w+)"\} (\S+)$', text, re.MULTILINE
        ):
            if result in ("success", "error", "timeout"):
                total += float(value)
        return total


def stream_path(i: int) -> str:
    return (
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NAMESPACE}/pods/*/http_requests_per_second"
        f"?labelSelector=app%3Dapp-{i}"
    )


async def one(session: aiohttp.ClientSession, adapter: Adapter, path: str) -> tuple[float, bool]:
    started = time.perf_counter()
    async with session.get(adapter.url + path, ssl=adapter.context) as response:
        body = await response.read()
        ok = response.status == 200 and b'"items":[{' in body
    return time.perf_counter() - started, ok


async def hpa_pattern(adapter: Adapter, hpas: int, period: float, seconds: float) -> Phase:
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=hpas)) as session:
        before = await adapter.queries_sent(session)
        started = time.perf_counter()

        async def hpa(i: int) -> None:
            nonlocal errors
            await asyncio.sleep(period * i / hpas)  # staggered, as HPAs created at different times are
            while time.perf_counter() - started < seconds:
                tick = time.perf_counter()
                latency, ok = await one(session, adapter, stream_path(i))
                latencies.append(latency)
                errors += not ok
                await asyncio.sleep(max(0.0, period - (time.perf_counter() - tick)))

        await asyncio.gather(*(hpa(i) for i in range(hpas)))
        elapsed = time.perf_counter() - started
        sent = await adapter.queries_sent(session) - before
    return Phase("hpa-pattern", len(latencies), errors, elapsed, latencies, sent)


async def saturation(adapter: Adapter, hpas: int, concurrency: int, seconds: float) -> Phase:
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        for i in range(hpas):  # warm: connections open, pod lists and queries cached where the cache is on
            await one(session, adapter, stream_path(i))
        before = await adapter.queries_sent(session)
        started = time.perf_counter()
        counter = 0

        async def worker() -> None:
            nonlocal errors, counter
            while time.perf_counter() - started < seconds:
                counter += 1
                latency, ok = await one(session, adapter, stream_path(counter % hpas))
                latencies.append(latency)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        sent = await adapter.queries_sent(session) - before
    return Phase("saturation", len(latencies), errors, elapsed, latencies, sent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hpas", type=int, default=100)
    parser.add_argument("--period", type=float, default=15.0)
    parser.add_argument("--hpa-seconds", type=float, default=30.0)
    parser.add_argument("--saturation-seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cache-seconds", type=float, default=5.0)
    args = parser.parse_args()

    rates = {(NAMESPACE, f"app-{i}-{k}"): float(i + 1) for i in range(args.hpas) for k in range(2)}
    pods = {NAMESPACE: {f"app-{i}-{k}": {"app": f"app-{i}"} for i in range(args.hpas) for k in range(2)}}
    app = RequestCounterServer(rates).start()
    kube = FaultyKubeAPI(pods=pods).start()
    prom = PrometheusServer([app.target]).start()
    results: dict[float, list[Phase]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-custom-") as tmp, claimed_redis_db() as db:
            workdir = Path(tmp)
            kubeconfig = kube.kubeconfig(workdir / "lister.kubeconfig")
            broker = f"redis://127.0.0.1:6379/{db}"
            print("waiting for Prometheus to have two scrapes of every series ...", flush=True)
            time.sleep(8)
            for cache in (args.cache_seconds, 0.0):
                with Adapter(workdir, prom.url, kubeconfig, broker, cache) as adapter:
                    lists_before = kube.pod_lists
                    hpa = asyncio.run(hpa_pattern(adapter, args.hpas, args.period, args.hpa_seconds))
                    sat = asyncio.run(saturation(adapter, args.hpas, args.concurrency, args.saturation_seconds))
                    results[cache] = [hpa, sat]
                    print(
                        f"cache {cache:g}s: hpa {hpa.requests} req ({hpa.errors} errors) p50 {hpa.pct(0.5):.1f} ms "
                        f"p99 {hpa.pct(0.99):.1f} ms, {hpa.prom_queries:.0f} Prometheus queries; "
                        f"saturation {sat.rps:.0f} req/s ({sat.errors} errors) p50 {sat.pct(0.5):.1f} ms "
                        f"p99 {sat.pct(0.99):.1f} ms, {sat.prom_queries / sat.seconds:.1f} Prometheus queries/s; "
                        f"pod lists {kube.pod_lists - lists_before}",
                        flush=True,
                    )
    finally:
        prom.close()
        kube.stop()
        app.close()

    cached, baseline = results[args.cache_seconds], results[0.0]
    print()
    print(f"machine: {platform.node()}, nproc {os.cpu_count()}, Python {platform.python_version()}")
    print(f"{'':34}{'cache ' + format(args.cache_seconds, 'g') + ' s':>16}{'no cache':>16}{'ratio':>10}")
    rows = [
        ("HPA pattern: requests", lambda p: p[0].requests, "{:.0f}"),
        ("HPA pattern: p50 ms", lambda p: p[0].pct(0.5), "{:.1f}"),
        ("HPA pattern: p99 ms", lambda p: p[0].pct(0.99), "{:.1f}"),
        ("HPA pattern: Prometheus queries", lambda p: p[0].prom_queries, "{:.0f}"),
        ("saturation: requests/s", lambda p: p[1].rps, "{:.0f}"),
        ("saturation: p50 ms", lambda p: p[1].pct(0.5), "{:.1f}"),
        ("saturation: p99 ms", lambda p: p[1].pct(0.99), "{:.1f}"),
        ("saturation: Prometheus queries/s", lambda p: p[1].prom_queries / p[1].seconds, "{:.1f}"),
        ("errors (both phases)", lambda p: p[0].errors + p[1].errors, "{:.0f}"),
    ]
    for label, get, fmt in rows:
        a, b = get(cached), get(baseline)
        ratio = f"{a / b:.2f}x" if b else "-"
        print(f"{label:34}{fmt.format(a):>16}{fmt.format(b):>16}{ratio:>10}")
    print(f"HPA demand: {args.hpas} HPAs / {args.period:g} s = {args.hpas / args.period:.1f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
