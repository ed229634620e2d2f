"""Queue depth read and /metrics scrape, at scale, on a real Redis (a private redis-server).

1,000 queues with messages at all four kombu priority levels, and 2,000 in-flight 10 KB messages in
kombu's ``unacked`` hash (the layout kombu writes; the integration tests check it against real
Celery producers and workers). Measures:

- one broker read by RedisQueueReader (median, p99), after the first read learned the in-flight tags;
- the baseline, interleaved with those reads: a plain per-queue LLEN loop (one round trip per queue, bare
  list only, which also undercounts). --rounds rounds of (one project read, one baseline loop), so both
  see the same machine load; the medians, p99s and the ratio of the medians come from those rounds;
- one GET /metrics of a real `python -m exporter` process (median, p99), and that process's RSS.

Targets: read median <= 25 ms, scrape median <= 10 ms, exporter RSS <= 80 MB.

    .venv/bin/python benchmarks/queue_read.py [--queues 1000] [--inflight 2000] [--rounds 200] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lensing_core.brokers import QueueReader, open_reader  # noqa: E402
from lensing_core.brokers.redis import RedisQueueReader  # noqa: E402
from lensing_harness.localredis import start_redis_server  # noqa: E402
from lensing_harness.ports import free_port, wait_port  # noqa: E402

SEP = "\x06\x16"
STEPS = (0, 3, 6, 9)


def populate(client: redis.Redis, queues: int, inflight: int, per_level: int) -> None:
    body = "x" * 10_000
    pipe = client.pipeline(transaction=False)
    for i in range(queues):
        name = f"q{i:04d}"
        pipe.sadd(f"_kombu.binding.{name}", f"{name}{SEP}{SEP}{name}")
        for step in STEPS:
            key = name if step == 0 else f"{name}{SEP}{step}"
            pipe.lpush(
                key, *[json.dumps({"body": "e30=", "headers": {"id": f"{name}-{step}-{n}"}}) for n in range(per_level)]
            )
        if i % 100 == 99:
            pipe.execute()
    pipe.execute()
    for n in range(inflight):
        name = f"q{n % queues:04d}"
        message = {"body": body, "headers": {"id": f"t{n}"}, "properties": {"delivery_tag": f"tag-{n}"}}
        pipe.hset("unacked", f"tag-{n}", json.dumps([message, name, name]))
        pipe.zadd("unacked_index", {f"tag-{n}": time.time()})
        if n % 200 == 199:
            pipe.execute()
    pipe.execute()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def interleaved_rounds(
    reader: QueueReader, client: redis.Redis, names: list[str], rounds: int
) -> tuple[list[float], list[float]]:
    """``rounds`` x (one project read, one baseline LLEN loop): the seconds of each, in two lists."""
    reads: list[float] = []
    baseline: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        reader.read()
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        {name: client.llen(name) for name in names}
        baseline.append(time.perf_counter() - t0)
    return reads, baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=2000)
    parser.add_argument("--per-level", type=int, default=2, help="messages per priority level per queue")
    parser.add_argument(
        "--rounds", "--reads", dest="rounds", type=int, default=200, help="interleaved rounds: a read, a baseline"
    )
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lm-bench-")
    server = start_redis_server(port, workdir)
    exporter: subprocess.Popen[bytes] | None = None
    try:
        wait_port(port)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        populate(client, args.queues, args.inflight, args.per_level)
        expected_waiting = args.per_level * len(STEPS)

        reader = open_reader(url)
        t0 = time.perf_counter()
        first = reader.read()
        first_read = time.perf_counter() - t0
        assert len(first.queues) == args.queues, len(first.queues)
        assert all(d.waiting == expected_waiting for d in first.queues.values())
        assert sum(d.inflight or 0 for d in first.queues.values()) == args.inflight

        names = sorted(first.queues)
        reads, baseline = interleaved_rounds(reader, client, names, args.rounds)
        assert isinstance(reader, RedisQueueReader)
        t0 = time.perf_counter()
        reader._discover()
        discovery = time.perf_counter() - t0
        reader.close()

        http_port = free_port()
        exporter = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--broker-url",
                url,
                "--listen",
                f"127.0.0.1:{http_port}",
                "--poll-interval",
                "1",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
        )
        wait_port(http_port)
        metrics_url = f"http://127.0.0.1:{http_port}/metrics"
        deadline = time.monotonic() + 30
        while b'celery_queue_inflight{queue="q0000"}' not in urllib.request.urlopen(metrics_url).read():
            if time.monotonic() > deadline:
                raise SystemExit("the exporter never served queue series")
            time.sleep(0.2)
        scrapes = []
        size = 0
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            with urllib.request.urlopen(metrics_url) as response:
                size = len(response.read())
            scrapes.append(time.perf_counter() - t0)
            time.sleep(0.01)
        time.sleep(3)  # a few more polls, so RSS includes steady-state reads
        rss = psutil.Process(exporter.pid).memory_info().rss

        read_median = statistics.median(reads)
        base_median = statistics.median(baseline)
        print(
            f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
            f"redis-server {client.info()['redis_version']}"
        )
        print(
            f"{args.queues} queues x {len(STEPS)} priority levels ({expected_waiting} waiting each), "
            f"{args.inflight} in flight x 10 KB"
        )
        print(f"first read (discovery + learning {args.inflight} in-flight tags): {ms(first_read)}")
        print(f"discovery alone (SCAN + SMEMBERS, every 10 s): {ms(discovery)}")
        print(f"read:    median {ms(read_median)}  p99 {ms(percentile(reads, 0.99))}   (target median <= 25 ms)")
        print(
            f"scrape:  median {ms(statistics.median(scrapes))}  p99 {ms(percentile(scrapes, 0.99))}  "
            f"{size / 1024:.0f} KB   (target median <= 10 ms)"
        )
        print(f"exporter RSS: {rss / 2**20:.1f} MB   (target <= 80 MB)")
        print(
            f"baseline per-queue LLEN loop (bare list only): median {ms(base_median)}  "
            f"p99 {ms(percentile(baseline, 0.99))}"
        )
        ratios = sorted(b / r for r, b in zip(reads, baseline, strict=True))
        low, high = percentile(ratios, 0.1), percentile(ratios, 0.9)
        print(
            f"ratio baseline / read (medians of {args.rounds} interleaved rounds): {base_median / read_median:.1f}x; "
            f"per round: median {statistics.median(ratios):.1f}x, 10th..90th percentile {low:.1f}..{high:.1f}x "
            f"(the baseline reads {args.queues} keys; the reader "
            f"{args.queues * len(STEPS)} keys + the unacked hash)"
        )
        return 0
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
