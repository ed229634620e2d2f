"""Value requests against one adapter process over kept-alive HTTPS with client certificates, 64 connections:

- saturation: closed loop (each connection sends its next request when the last answer arrived): requests/s;
- paced: the same connections offering a fixed total rate (default 3,000 req/s): p50/p99 latency, counted
  from when each request was due (no coordinated omission).

Baseline in the same run: a bare aiohttp HTTPS server (same TLS settings, certificate and client
certificates) answering a fixed ExternalMetricValueList with no authentication, authorization, routing or
provider: the floor of the Python stack the adapter is built on. The load generator runs in its own
process, but on this machine it competes with the server for the same 2 cores: both figures carry that.

    .venv/bin/python benchmarks/adapter_load.py [--seconds 10] [--connections 64] [--rate 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lensing_harness.adapter_process import RunningAdapter, start_adapter, value_path  # noqa: E402
from lensing_harness.localredis import start_redis_server  # noqa: E402
from lensing_harness.ports import free_port, wait_port  # noqa: E402

BARE_SERVER = r"""
import asyncio, ssl, sys
from aiohttp import web
port, cert, key, ca = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
body = (b'{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},'
        b'"items":[{"metricName":"celery_queue_backlog","metricLabels":{"queue":"analyses"},'
        b'"timestamp":"2026-01-01T00:00:00Z","value":"25"}]}\n')
async def handle(request):
    return web.Response(body=body, headers={"Content-Type": "application/json"})
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_OPTIONAL
async def main():
    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(port), ssl_context=ctx, backlog=1024).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def _connection(
    port: int,
    context: ssl.SSLContext,
    request: bytes,
    window: tuple[float, float],
    interval: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    warm_until, stop_at = window
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
    next_at = time.perf_counter() + random.uniform(0, interval)
    try:
        while True:
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                started, next_at = next_at, next_at + interval
            else:
                started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head[9:12] != b"200":
                errors.append(int(head[9:12]))
            if started >= warm_until:
                latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def _client(target: tuple[Any, ...], rate: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    port, cert, key, trust, path, connections, seconds = target
    context = ssl.create_default_context(cafile=trust)
    context.load_cert_chain(cert, key)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        warm_until = time.perf_counter() + 2.0
        window = (warm_until, warm_until + seconds)
        interval = connections / rate if rate else 0.0
        await asyncio.gather(
            *(_connection(port, context, request, window, interval, latencies, errors) for _ in range(connections))
        )

    asyncio.run(main())
    out.put({"requests": len(latencies), "seconds": seconds, "errors": len(errors), "latencies": sorted(latencies)})


def measure(target: tuple[Any, ...], rate: float = 0.0) -> dict[str, float]:
    """Closed loop (``rate`` 0: saturation) or paced at ``rate`` requests/s over all connections."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    proc = multiprocessing.Process(target=_client, args=(target, rate, queue))
    proc.start()
    result = queue.get(timeout=target[-1] + 120)
    proc.join(30)
    lat = result["latencies"]
    return {
        "rps": result["requests"] / result["seconds"],
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "errors": result["errors"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=3000.0, help="offered load of the paced run (req/s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lm-bench-load-"))
    redis_port = free_port()
    redis_proc = start_redis_server(redis_port, str(work))
    adapter: RunningAdapter | None = None
    bare: subprocess.Popen[bytes] | None = None
    results: dict[str, dict[str, Any]] = {}
    try:
        wait_port(redis_port, 20)
        import redis

        redis.Redis(port=redis_port).rpush("analyses", *[json.dumps({"n": i}) for i in range(25)])
        broker = ["--broker-url", f"redis://127.0.0.1:{redis_port}/0", "--queue", "analyses", "--log-level", "warning"]
        adapter = start_adapter(work / "adapter", broker)
        cert, key = work / "client.crt", work / "client.key"
        adapter.extra["client"].write(cert, key)
        bare_port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BARE_SERVER,
                str(bare_port),
                str(adapter.serving_cert),
                str(adapter.workdir / "certs" / "apiserver.key"),
                str(adapter.workdir / "client-ca.crt"),
            ]
        )
        time.sleep(1.5)
        common = (str(cert), str(key), str(adapter.serving_cert), value_path(), args.connections, args.seconds)
        runs: dict[str, list[dict[str, float]]] = {}
        for _round in range(args.rounds):  # interleaved, so a noisy neighbour hits both servers alike
            for label, rate in (("saturation", 0.0), (f"paced {args.rate:g}/s", args.rate)):
                runs.setdefault(f"baseline, {label}", []).append(measure((bare_port, *common), rate))
                runs.setdefault(f"adapter, {label}", []).append(measure((adapter.port, *common), rate))
        for name, measured in runs.items():
            results[name] = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
            results[name]["p99_range"] = (min(m["p99_ms"] for m in measured), max(m["p99_ms"] for m in measured))
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        if adapter is not None:
            adapter.stop()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} connections={args.connections}, "
        f"{args.seconds:g}s measured after 2s warm-up, median of {args.rounds} interleaved rounds; "
        "load generator in its own process on the same cores"
    )
    print(f"{'server, load':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99 range':>15} {'errors':>7}")
    for name, r in results.items():
        low, high = r["p99_range"]
        figures = f"{r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {low:7.1f}..{high:<6.1f}"
        print(f"{name:32} {figures} {r['errors']:7.0f}")
    saturated, paced = results["adapter, saturation"], results[f"adapter, paced {args.rate:g}/s"]
    print(
        f"adapter / baseline throughput at saturation: {saturated['rps'] / results['baseline, saturation']['rps']:.2f}"
    )
    print(
        f"targets: >= 3000 req/s at saturation: {'met' if saturated['rps'] >= 3000 else 'NOT met'}; "
        f"p99 <= 10 ms at {args.rate:g} req/s offered over {args.connections} connections: "
        f"{'met' if paced['p99_ms'] <= 10 and paced['rps'] >= 0.95 * args.rate else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
