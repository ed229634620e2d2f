"""Hostile connections against both servers (issue 15): what 2,000 connections that never send a request
cost, and whether a normal client is served meanwhile.

Three attacks, each on a real server process on loopback, every loop bounded in count and time:

1. adapter (``python -m adapter``, HTTPS, a Redis broker): 2,000 connections that finish the TLS handshake
   and then send nothing;
2. adapter: 2,000 TCP connections that never send a ClientHello;
3. exporter (``python -m exporter``, plain HTTP): 2,000 TCP connections that never send a request.

For each, the server's RSS (psutil) is sampled before (after a warm-up), every 0.2 s while the connections
are opened and held (the peak), and after they are closed (waiting up to --settle seconds for it to come
back). The connections are held for the head deadline + 2 s, so the server's deadline is seen closing the
plain-TCP ones. Meanwhile a normal client (kept-alive, reconnecting once on a closed idle connection, as
client-go does) keeps asking every 0.1 s: its successes, failures and latency are counted.

Targets, each attack:
- peak RSS - start <= the cap's budget: --max-connections x the per-connection allowance + slack (TLS
  400 KB + 20 MB; no ClientHello 16 KB + 5 MB; exporter plain TCP 100 KB + 10 MB, as the tests allow);
  the measured cost per connection held is printed;
- RSS after the connections close <= start + 10 MB;
- the normal client: 0 failures, and at least one success while the hostile connections were held;
- no traceback in either server's log.

Exit 1 when a target is missed.

    .venv/bin/python benchmarks/hostile_connections.py [--connections 2000] [--redis-url redis://127.0.0.1:6379/11]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lensing_harness import hostile  # noqa: E402
from lensing_harness.adapter_process import RunningAdapter, start_adapter, value_path  # noqa: E402
from lensing_harness.ports import free_port, wait_port  # noqa: E402
from lensing_harness.processes import stop_process  # noqa: E402

MB = hostile.MB
KB = 1024
QUEUE = "analyses"
RETURN_SLACK = 10 * MB
CLIENT_INTERVAL = 0.1
SAMPLE_INTERVAL = 0.2
#: (allowance per connection held, slack) by attack
BUDGETS = {"silent-tls": (400 * KB, 20 * MB), "no-client-hello": (16 * KB, 5 * MB), "silent-tcp": (100 * KB, 10 * MB)}

Connect = Callable[[], http.client.HTTPConnection]


# -- the normal client ---------------------------------------------------------------------------------
@dataclass
class Served:
    ok: int = 0
    ok_under_attack: int = 0
    failed: int = 0
    reconnects: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies) or [float("nan")]
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class NormalClient(threading.Thread):
    """Asks ``path`` every CLIENT_INTERVAL on a kept-alive connection until stopped (at most ``limit_s``)."""

    def __init__(self, connect: Connect, path: str, expect: bytes, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.connect, self.path, self.expect, self.limit_s = connect, path, expect, limit_s
        self.served = Served()
        self.under_attack = threading.Event()
        self._stop_asking = threading.Event()
        self._conn: http.client.HTTPConnection | None = None

    def stop(self) -> Served:
        self._stop_asking.set()
        self.join(self.limit_s)
        return self.served

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stop_asking.is_set() and time.monotonic() < deadline:
            self._ask_once()
            self._stop_asking.wait(CLIENT_INTERVAL)
        if self._conn is not None:
            self._conn.close()

    def _ask_once(self) -> None:
        started = time.perf_counter()
        try:
            status, body = self._request()
        except (OSError, http.client.HTTPException) as exc:
            self.served.failed += 1
            self.served.errors[type(exc).__name__] += 1
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return
        self.served.latencies.append(time.perf_counter() - started)
        if status == 200 and self.expect in body:
            self.served.ok += 1
            self.served.ok_under_attack += self.under_attack.is_set()
        else:
            self.served.failed += 1
            self.served.errors[f"status {status}"] += 1

    def _request(self) -> tuple[int, bytes]:
        for attempt in range(2):  # a kept-alive connection the server closed while idle: once more, anew
            if self._conn is None:
                self._conn = self.connect()
            try:
                self._conn.request("GET", self.path)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected, ssl.SSLError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
                self.served.reconnects += 1
        raise AssertionError("unreachable")


# -- memory ---------------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """The server's RSS and its open sockets on ``port``, every SAMPLE_INTERVAL, until stopped."""

    def __init__(self, pid: int, port: int, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.port, self.limit_s = port, limit_s
        self.peak_rss = 0
        self.peak_sockets = 0
        self._stop_sampling = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stop_sampling.is_set() and time.monotonic() < deadline:
            self.sample()
            self._stop_sampling.wait(SAMPLE_INTERVAL)

    def sample(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, int(self.process.memory_info().rss))
            sockets = sum(1 for c in self.process.net_connections("tcp") if c.laddr and c.laddr.port == self.port)
        except psutil.Error:
            return
        self.peak_sockets = max(self.peak_sockets, sockets)

    def stop(self) -> None:
        self._stop_sampling.set()
        self.join(self.limit_s)
        self.sample()


def settle(pid: int, target: int, seconds: float) -> tuple[int, float]:
    """Wait until the RSS is at most ``target`` (at most ``seconds``): the RSS and the time it took."""
    started = time.monotonic()
    while (now := hostile.rss(pid)) > target and time.monotonic() - started < seconds:
        time.sleep(0.25)
    return now, time.monotonic() - started


# -- one attack -----------------------------------------------------------------------------------------
@dataclass
class Attack:
    server: str
    kind: str  # a key of BUDGETS
    cap: int
    connections: int
    opened: int = 0
    failed: int = 0
    server_sockets: int = 0
    start: int = 0
    peak: int = 0
    after: int = 0
    settle_s: float = 0.0
    open_after_deadline: int | None = None
    open_s: float = 0.0
    served: Served = field(default_factory=Served)

    @property
    def budget(self) -> int:
        allowance, slack = BUDGETS[self.kind]
        return self.cap * allowance + slack

    @property
    def held(self) -> int:
        return max(1, min(self.cap, self.server_sockets or self.opened))

    @property
    def per_connection(self) -> float:
        return max(0, self.peak - self.start) / self.held

    def misses(self) -> list[str]:
        out = []
        if self.peak - self.start > self.budget:
            out.append(f"peak +{(self.peak - self.start) / MB:.1f} MB over the budget {self.budget / MB:.0f} MB")
        if self.after > self.start + RETURN_SLACK:
            out.append(f"RSS after +{(self.after - self.start) / MB:.1f} MB (> 10 MB)")
        if self.served.failed:
            out.append(f"normal client: {self.served.failed} failures {dict(self.served.errors)}")
        if not self.served.ok_under_attack:
            out.append("normal client: no success while the connections were held")
        return out


async def open_hostile(kind: str, port: int, count: int, deadline_s: float) -> hostile.Held:
    if kind == "silent-tls":
        return await asyncio.wait_for(hostile.open_silent_tls(port, count), deadline_s)
    return await asyncio.to_thread(hostile.open_silent_tcp, port, count, deadline_s=deadline_s)


def run_attack(attack: Attack, pid: int, port: int, client: NormalClient, hold_s: float, settle_s: float) -> Attack:
    """Open ``attack.connections``, hold them ``hold_s`` with the normal client asking, close, settle."""
    attack.start = hostile.rss(pid)
    sampler = Sampler(pid, port, limit_s=600)
    client.start()
    time.sleep(0.5)
    sampler.start()

    async def hold() -> None:
        started = time.monotonic()
        held = await open_hostile(attack.kind, port, attack.connections, deadline_s=120)
        attack.open_s = time.monotonic() - started
        attack.opened, attack.failed = len(held), held.failed
        client.under_attack.set()
        await asyncio.sleep(hold_s)
        client.under_attack.clear()
        if held.sockets:
            attack.open_after_deadline = hostile.alive(held)
        await held.close()

    try:
        asyncio.run(hold())
    finally:
        sampler.stop()
    attack.peak, attack.server_sockets = max(sampler.peak_rss, attack.start), sampler.peak_sockets
    attack.after, attack.settle_s = settle(pid, attack.start + RETURN_SLACK, settle_s)
    time.sleep(0.5)  # the normal client goes on a little after the close
    attack.served = client.stop()
    return attack


# -- the servers ----------------------------------------------------------------------------------------
def connection_args(cap: int, handshake: float, header: float) -> list[str]:
    return [
        *("--max-connections", str(cap), "--tls-handshake-timeout", str(handshake)),
        *("--header-timeout", str(header), "--log-level", "warning"),
    ]


@contextmanager
def running_adapter(workdir: Path, broker: str, extra: list[str]) -> Iterator[RunningAdapter]:
    adapter = start_adapter(workdir / "adapter", ["--broker-url", broker, "--queue", QUEUE], extra_args=extra)
    try:
        yield adapter
    finally:
        adapter.stop()


@contextmanager
def running_exporter(workdir: Path, broker: str, extra: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with open(workdir / "exporter.log", "wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "exporter", "--broker-url", broker, "--queue", QUEUE),
                *("--listen", f"127.0.0.1:{port}", *extra),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_port(port, 30)
        yield process, port
    finally:
        stop_process(process)


def adapter_client(adapter: RunningAdapter, limit_s: float) -> NormalClient:
    context = adapter.client_ssl_context()

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPSConnection("127.0.0.1", adapter.port, context=context, timeout=10)

    return NormalClient(connect, value_path(metric="celery_queue_length", queue=QUEUE), b'"value"', limit_s)


def exporter_client(port: int, limit_s: float) -> NormalClient:
    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    return NormalClient(connect, "/metrics", f'celery_queue_length{{queue="{QUEUE}"}}'.encode(), limit_s)


def warm(client_factory: Callable[[], NormalClient]) -> None:
    """A few requests first, so the start RSS includes a served request's memory."""
    client = client_factory()
    client.start()
    time.sleep(2.0)
    client.stop()
    time.sleep(0.5)


# -- report ---------------------------------------------------------------------------------------------
def row(attack: Attack) -> list[str]:
    served = attack.served
    deadline = "-" if attack.open_after_deadline is None else str(attack.open_after_deadline)
    return [
        attack.server,
        attack.kind,
        str(attack.cap),
        f"{attack.opened}/{attack.failed} in {attack.open_s:.1f}s",
        str(attack.server_sockets),
        f"{attack.start / MB:.1f}",
        f"{attack.peak / MB:.1f} (+{(attack.peak - attack.start) / MB:.1f})",
        f"{attack.budget / MB:.0f}",
        f"{attack.per_connection / KB:.1f}",
        f"{attack.after / MB:.1f} (+{(attack.after - attack.start) / MB:.1f}, {attack.settle_s:.1f}s)",
        deadline,
        f"{served.ok}/{served.failed} ({served.ok_under_attack} held, {served.reconnects} reconn.)",
        f"{statistics.median(served.latencies) * 1000 if served.latencies else float('nan'):.1f}"
        f"/{served.percentile(0.99) * 1000:.1f}/{max(served.latencies, default=float('nan')) * 1000:.1f}",
        "ok" if not attack.misses() else "MISSED",
    ]


HEADERS = [
    "server",
    "attack",
    "cap",
    "opened/failed",
    "server sockets peak",
    "RSS start MB",
    "RSS peak MB",
    "budget MB",
    "KB per conn held",
    "RSS after MB",
    "open after deadline",
    "normal ok/failed",
    "normal p50/p99/max ms",
    "target",
]


def print_table(attacks: list[Attack]) -> None:
    rows = [HEADERS, *(row(a) for a in attacks)]
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "---|" * len(HEADERS))
    for cells in rows[1:]:
        print("| " + " | ".join(cells) + " |")


# -- main -----------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000, help="hostile connections per attack")
    parser.add_argument("--adapter-max-connections", type=int, default=384, help="the adapter's cap (its default)")
    parser.add_argument("--exporter-max-connections", type=int, default=1024, help="the exporter's cap (its default)")
    parser.add_argument("--tls-handshake-timeout", type=float, default=10.0, help="both servers (their default)")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="both servers (their default)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds RSS may take to come back")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11", help="flushed at the start and end")
    return parser.parse_args()


def first_traceback(log: str, lines: int = 30) -> str:
    return "\n".join(log[log.index("Traceback") :].splitlines()[:lines]) if "Traceback" in log else ""


def attack_adapter(args: argparse.Namespace, workdir: Path, hold_s: float, limit_s: float) -> tuple[list[Attack], str]:
    extra = connection_args(args.adapter_max_connections, args.tls_handshake_timeout, args.header_timeout)
    attacks = []
    with running_adapter(workdir, args.redis_url, extra) as adapter:
        pid = adapter.process.pid
        warm(lambda: adapter_client(adapter, limit_s))
        for kind in ("silent-tls", "no-client-hello"):
            attack = Attack("adapter", kind, args.adapter_max_connections, args.connections)
            attacks.append(run_attack(attack, pid, adapter.port, adapter_client(adapter, limit_s), hold_s, args.settle))
            print(f"  adapter {kind}: done", flush=True)
        return attacks, adapter.output()


def attack_exporter(args: argparse.Namespace, workdir: Path, hold_s: float, limit_s: float) -> tuple[Attack, str]:
    extra = connection_args(args.exporter_max_connections, args.tls_handshake_timeout, args.header_timeout)
    with running_exporter(workdir, args.redis_url, extra) as (exporter, port):
        warm(lambda: exporter_client(port, limit_s))
        attack = Attack("exporter", "silent-tcp", args.exporter_max_connections, args.connections)
        run_attack(attack, exporter.pid, port, exporter_client(port, limit_s), hold_s, args.settle)
    print("  exporter silent-tcp: done", flush=True)
    return attack, (workdir / "exporter.log").read_text(errors="replace")


def main() -> int:
    args = parse_args()
    hold_s = max(args.tls_handshake_timeout, args.header_timeout) + 2.0
    limit_s = 240 + hold_s + args.settle
    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    broker.lpush(QUEUE, *[b"{}"] * 5)
    workdir = Path(tempfile.mkdtemp(prefix="lm-bench-hostile-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    try:
        attacks, adapter_log = attack_adapter(args, workdir, hold_s, limit_s)
        exporter_attack, exporter_log = attack_exporter(args, workdir, hold_s, limit_s)
        attacks.append(exporter_attack)
    finally:
        broker.flushdb()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"deadlines: TLS handshake {args.tls_handshake_timeout:g}s, request head {args.header_timeout:g}s; "
        f"connections held {hold_s:g}s"
    )
    print_table(attacks)
    misses = [f"{a.server} {a.kind}: {m}" for a in attacks for m in a.misses()]
    for server, log in (("adapter", adapter_log), ("exporter", exporter_log)):
        print(f"tracebacks in the {server}'s log: {log.count('Traceback')}")
        if "Traceback" in log:
            misses.append(f"{server}: {log.count('Traceback')} traceback(s) in its log, the first:")
            misses.append(first_traceback(log))
    for miss in misses:
        print(f"MISSED: {miss}")
    print("all targets met" if not misses else "a target was missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
