"""Fuzzed requests against a real adapter process (issue 15): what a fuzzer's broken HTTP gets back.

``python -m adapter`` on loopback with a Redis broker (a queue ``analyses`` known and holding messages).
--requests fuzzed requests (default 100,000), one a TLS connection with the adapter's client certificate,
--concurrency at a time, made by ``lensing_harness.hostile.fuzz_request``: valid value requests and
requests broken in the ways a fuzzer breaks HTTP (bad methods, targets, versions and line endings,
truncated heads, bytes that are not UTF-8, oversized request lines, headers and selectors, bad
Content-Length and Transfer-Encoding, a body or garbage after the head, bearer tokens with bad bytes).
They are sent in batches of --batch (a seed each, so the run is reproducible and the requests of one
batch only are in memory); the whole run stops at --deadline seconds.

Printed: the answers by status ("closed": the connection closed without a status line, e.g. a truncated
head cut at the head deadline; "connect-failed": no TLS connection), the rate, the adapter's RSS before
and after, and the WARNING/ERROR/Traceback lines in its log.

Targets: 0 answers 5xx other than 503; 0 tracebacks in the adapter's log; every request sent before the
deadline; the adapter still alive and answering a normal value request with 200 afterwards. Exit 1 on a miss.

    .venv/bin/python benchmarks/fuzz_adapter.py [--requests 100000] [--redis-url redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lensing_harness import hostile  # noqa: E402
from lensing_harness.adapter_process import RunningAdapter, start_adapter, value_path  # noqa: E402

QUEUE = "analyses"
MB = hostile.MB


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="fuzzed requests in all")
    parser.add_argument("--batch", type=int, default=10_000, help="requests generated (and held) at a time")
    parser.add_argument("--concurrency", type=int, default=64, help="connections at a time")
    parser.add_argument("--seed", type=int, default=1, help="batch i uses seed + i")
    parser.add_argument("--header-timeout", type=float, default=1.0, help="the adapter's request head deadline")
    parser.add_argument("--tls-handshake-timeout", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for the whole run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="flushed at the start and end")
    return parser.parse_args()


def normal_request(adapter: RunningAdapter) -> int:
    """One value request as the HPA sends it: its status (0 when there was no answer)."""
    conn = http.client.HTTPSConnection("127.0.0.1", adapter.port, context=adapter.client_ssl_context(), timeout=10)
    try:
        conn.request("GET", value_path(metric="celery_queue_length", queue=QUEUE))
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def run_batches(adapter: RunningAdapter, args: argparse.Namespace) -> tuple[Counter[str], int, float]:
    """Every batch in turn until --requests are sent or the deadline: statuses, requests sent, seconds."""
    path = value_path(metric="celery_queue_length", queue=QUEUE).split("?")[0]
    statuses: Counter[str] = Counter()
    sent = 0
    started = time.monotonic()
    for index, offset in enumerate(range(0, args.requests, args.batch)):
        left = args.deadline - (time.monotonic() - started)
        if left <= 0:
            break
        count = min(args.batch, args.requests - offset)
        result = asyncio.run(
            hostile.fuzz(
                adapter.port,
                count,
                adapter.client_ssl_context,
                path,
                seed=args.seed + index,
                concurrency=args.concurrency,
                deadline_s=left,
            )
        )
        statuses.update(result.statuses)
        sent += result.sent
        elapsed = time.monotonic() - started
        rss = hostile.rss(adapter.process.pid) / MB if adapter.process.poll() is None else float("nan")
        print(
            f"  {sent:,} sent in {elapsed:.0f}s ({sent / elapsed:,.0f}/s), adapter RSS {rss:.1f} MB; "
            f"5xx other than 503 so far: {server_errors(statuses)}"
        )
        sys.stdout.flush()
    return statuses, sent, time.monotonic() - started


def server_errors(statuses: Counter[str]) -> dict[str, int]:
    return {code: n for code, n in statuses.items() if code.startswith("5") and code != "503"}


def log_lines(log: str, word: str) -> list[str]:
    return [line for line in log.splitlines() if word in line]


def report(statuses: Counter[str], sent: int, seconds: float, log: str) -> None:
    print(f"fuzzed requests sent: {sent:,} in {seconds:.0f}s = {sent / max(seconds, 1e-9):,.0f} requests/s")
    print("answers by status: " + ", ".join(f"{code} {n:,}" for code, n in sorted(statuses.items())))
    print(f"5xx other than 503: {sum(server_errors(statuses).values())} {server_errors(statuses)}")
    print(
        f"adapter log: {log.count('Traceback')} Traceback, {len(log_lines(log, 'ERROR'))} ERROR, "
        f"{len(log_lines(log, 'WARNING'))} WARNING lines (rate-limited to one a minute)"
    )
    for line in log_lines(log, "WARNING")[-3:]:
        print(f"  {line[:300]}")


def misses(statuses: Counter[str], sent: int, wanted: int, log: str, alive: bool, after: int) -> list[str]:
    out = []
    if server_errors(statuses):
        out.append(f"5xx answers other than 503: {server_errors(statuses)}")
    if "Traceback" in log:
        first = log[log.index("Traceback") :].splitlines()[:30]
        out.append(f"{log.count('Traceback')} traceback(s) in the adapter's log, the first:\n" + "\n".join(first))
    if sent < wanted:
        out.append(f"only {sent:,} of {wanted:,} requests sent before the deadline")
    if not alive or after != 200:
        out.append(f"after the fuzz: adapter alive {alive}, a normal value request got {after or 'no answer'}")
    return out


def main() -> int:
    args = parse_args()
    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    broker.lpush(QUEUE, *[b"{}"] * 5)
    workdir = Path(tempfile.mkdtemp(prefix="lm-bench-fuzz-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    extra = ["--header-timeout", str(args.header_timeout), "--tls-handshake-timeout", str(args.tls_handshake_timeout)]
    adapter = start_adapter(workdir / "adapter", ["--broker-url", args.redis_url, "--queue", QUEUE], extra_args=extra)
    try:
        before_status = normal_request(adapter)
        before = hostile.rss(adapter.process.pid)
        statuses, sent, seconds = run_batches(adapter, args)
        alive = adapter.process.poll() is None
        after_status = normal_request(adapter) if alive else 0
        after = hostile.rss(adapter.process.pid) if alive else 0
        log = adapter.output()
    finally:
        adapter.stop()
        broker.flushdb()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"adapter: --header-timeout {args.header_timeout:g} --tls-handshake-timeout {args.tls_handshake_timeout:g}")
    report(statuses, sent, seconds, log)
    print(
        f"normal value request before / after: {before_status} / {after_status}; "
        f"adapter RSS before / after: {before / MB:.1f} / {after / MB:.1f} MB"
    )
    missed = misses(statuses, sent, args.requests, log, alive, after_status)
    for miss in missed:
        print(f"MISSED: {miss}")
    print("all targets met" if not missed else "a target was missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
