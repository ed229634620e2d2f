"""Event stream throughput and memory: lensing-metrics' consumer against a plain celery.events.State consumer.

A publisher process sends a synthetic stream of task events to Redis over pub/sub, in exactly the
message format Celery workers publish (the envelope is captured from a real EventDispatcher and the
events are built with celery.events.Event): per task id task-received, task-started, task-succeeded,
one event per message (the unbuffered form; prefork workers may batch several into one), from
8 workers at a time whose hostnames are replaced every 20,000 tasks (pods coming and going),
with their heartbeats. The publisher keeps at most --window messages ahead of the consumer, so
Redis never drops the subscriber (its pub/sub output buffer limit) and the rate measured is the
consumer's. Each consumer runs in a process of its own, on one thread.

1. memory, end to end through Redis: lensing-metrics' RedisEventStream + EventConsumer + EventState over
   --tasks distinct task ids, RSS sampled as it goes (targets: >= 20,000 events/s, RSS <= 150 MB after
   1,000,000 task ids and flat over the second half);
2. rate, end to end through Redis, against the baseline in interleaved rounds: --rounds rounds, each one
   run of lensing-metrics and one of Celery's EventReceiver + State over --round-tasks ids (the order
   alternating round by round); medians of the rounds and their ratio;
3. processing only (no Redis): decode + apply of pre-built messages, both consumers, interleaved the
   same way over --rounds rounds.

The parent never waits blindly on a child: while it waits for a consumer's result it polls both
children's exit codes and the consumer's progress every 0.5 s, and fails (exit 2, saying which child
and where) when a child dies, when the consumer makes no progress for --stall-timeout seconds (e.g.
Redis dropped the subscriber) or when a run outlasts its bound (120 s + the events at --min-rate).

    .venv/bin/python benchmarks/events_throughput.py                      # 1,000,000 task ids, 3 rounds
    .venv/bin/python benchmarks/events_throughput.py --tasks 100000 --rounds 1 --round-tasks 20000   # quick

By default a private redis-server on a free loopback port is used (the machine's Redis is shared
with test runs); --redis-url points it anywhere else.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from celery.events import Event  # noqa: E402

from lensing_harness.celery_events import task_received_fields  # noqa: E402

WORKERS_AT_ONCE = 8
TASKS_PER_POD_GENERATION = 20_000
HEARTBEAT_EVERY_TASKS = 200


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the stream -----------------------------------------------------------------------------------
def capture_template(url: str) -> dict[str, Any]:
    """One message as a real Celery EventDispatcher publishes it on Redis, read back with PSUBSCRIBE."""
    from celery import Celery

    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"/{db}.celeryev/*")
    pubsub.get_message(timeout=0.5)
    app = Celery("capture", broker=url, set_as_current=False)
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="celery@capture", enabled=True)
        dispatcher.send("task-started", uuid="00000000-0000-0000-0000-000000000000")
        dispatcher.close()
    message = None
    deadline = time.monotonic() + 10
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
    pubsub.close()
    app.close()
    if message is None:
        raise SystemExit("could not capture a Celery event message from Redis")
    envelope: dict[str, Any] = json.loads(message["data"])
    from lensing_sources.events.decode import decode_kombu_envelope

    [event] = decode_kombu_envelope(message["data"])
    assert event["type"] == "task-started" and event["hostname"] == "celery@capture", event
    return envelope


class StreamMaker:
    """The messages of task ``i``: built with celery.events.Event, wrapped in the captured envelope."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.clocks: dict[str, int] = {}
        self.pid = 4242

    def message(self, hostname: str, type_: str, **fields: Any) -> tuple[str, bytes]:
        clock = self.clocks.get(hostname, 0) + 1
        self.clocks[hostname] = clock
        event = Event(type_, hostname=hostname, utcoffset=0, pid=self.pid, clock=clock, **fields)
        routing_key = type_.replace("-", ".")
        envelope = dict(self.template)
        envelope["body"] = base64.b64encode(json.dumps(event).encode()).decode()
        envelope["headers"] = {"hostname": hostname}
        properties = dict(self.template["properties"])
        properties["delivery_info"] = {"exchange": "celeryev", "routing_key": routing_key}
        properties["delivery_tag"] = str(uuid.uuid4())
        envelope["properties"] = properties
        return routing_key, json.dumps(envelope).encode()

    def hosts(self, i: int) -> list[str]:
        generation = i // TASKS_PER_POD_GENERATION
        return [f"celery@lensing-worker-{generation}-{k}" for k in range(WORKERS_AT_ONCE)]

    def task(self, i: int) -> list[tuple[str, bytes]]:
        hostname = self.hosts(i)[i % WORKERS_AT_ONCE]
        task_id = str(uuid.uuid4())
        now = time.time()
        out = [
            self.message(
                hostname,
                "task-received",
                **task_received_fields(task_id, "lensing.analyse_lens", f"({i}, 30)"),
                timestamp=now - 0.2,
            ),
            self.message(hostname, "task-started", uuid=task_id, timestamp=now - 0.1),
            self.message(
                hostname,
                "task-succeeded",
                uuid=task_id,
                result="{'lens_id': 1, 'einstein_radius_arcsec': 1.234}",
                runtime=0.1,
                timestamp=now,
            ),
        ]
        if i % HEARTBEAT_EVERY_TASKS == 0:
            for host in self.hosts(i):
                out.append(self.message(host, "worker-heartbeat", freq=2.0, active=1, processed=i, loadavg=[1, 1, 1]))
        return out


def publisher(url: str, template: dict[str, Any], tasks: int, consumed: Any, published: Any, window: int) -> None:
    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    prefix = f"/{db}.celeryev/"
    maker = StreamMaker(template)
    pipe = client.pipeline(transaction=False)
    pending = 0
    for i in range(tasks):
        for routing_key, payload in maker.task(i):
            pipe.publish(prefix + routing_key, payload)
            pending += 1
        if pending >= 300:
            pipe.execute()
            published.value += pending
            pending = 0
            while published.value - consumed.value > window:
                time.sleep(0.0005)
    pipe.execute()
    published.value += pending
    published.value = -published.value  # negative: the publisher is done, the magnitude is the total


def count_messages(tasks: int) -> int:
    beats = len(range(0, tasks, HEARTBEAT_EVERY_TASKS)) * WORKERS_AT_ONCE
    return tasks * 3 + beats


# -- consumers ------------------------------------------------------------------------------------
def run_ours(url: str, expected: int, consumed: Any, results: Any, sample_every: int) -> None:
    from lensing_sources.events import open_stream
    from lensing_sources.events.consumer import SWEEP_EVERY, TRIM_EVERY, EventConsumer
    from lensing_sources.events.state import EventState, StateConfig

    stream, _ = open_stream(url, [])
    state = EventState(StateConfig(warmup=0.0))
    consumer = EventConsumer(stream, state)
    stream.connect()
    state.on_connected()
    results.put(("ready", None))
    samples: list[tuple[int, float]] = []
    started = cpu_started = None
    next_sample = sample_every
    last_sweep = last_trim = time.monotonic()
    while state.received < expected:
        payloads = stream.read(1.0)
        if not payloads:
            continue
        if started is None:
            started, cpu_started = time.perf_counter(), time.process_time()
        consumer.process(payloads)
        consumed.value = state.received
        now = time.monotonic()
        if now - last_sweep >= SWEEP_EVERY:  # what the consumer thread does between reads
            trim = now - last_trim >= TRIM_EVERY
            consumer.housekeeping(trim=trim)
            last_sweep = now
            last_trim = now if trim else last_trim
        if state.received >= next_sample:
            samples.append((state.received, rss_mb()))
            next_sample += sample_every
    assert started is not None and cpu_started is not None
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    samples.append((state.received, rss_mb()))
    stream.close()
    results.put(
        (
            "done",
            {
                "events": state.received,
                "wall": wall,
                "cpu": cpu,
                "rss": samples,
                "tracked_tasks": len(state.tasks),
                "workers": len(state.workers),
                "dropped": dict(state.dropped),
                "lost": dict(state.lost),
                "succeeded": state.tasks_total[("lensing.analyse_lens", "succeeded")],
            },
        )
    )


def run_celery_state(url: str, expected: int, consumed: Any, results: Any, sample_every: int) -> None:
    """What celery-exporter and Flower do: Celery's EventReceiver feeding celery.events.State."""
    from celery import Celery
    from celery.events.state import State

    app = Celery("baseline", broker=url, set_as_current=False)
    state = State()
    seen = [0]
    timing: dict[str, float] = {}
    samples: list[tuple[int, float]] = []

    def on_event(event: dict[str, Any]) -> None:
        if not seen[0]:
            timing["wall"], timing["cpu"] = time.perf_counter(), time.process_time()
        state.event(event)
        seen[0] += 1
        if seen[0] % 500 == 0:
            consumed.value = seen[0]
        if seen[0] % sample_every == 0:
            samples.append((seen[0], rss_mb()))
        if seen[0] >= expected:
            receiver.should_stop = True

    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event})
        results.put(("ready", None))  # the subscription is made on the first iteration, well before publishing
        for _ in receiver.consume(timeout=120, wakeup=False):
            pass
    wall = time.perf_counter() - timing["wall"]
    cpu = time.process_time() - timing["cpu"]
    samples.append((seen[0], rss_mb()))
    results.put(("done", {"events": seen[0], "wall": wall, "cpu": cpu, "rss": samples}))


class ChildFailed(RuntimeError):
    """A child process died, stalled or outlasted its bound while the parent waited for it."""


@dataclass
class Watch:
    """What the parent waits on: the consumer's results queue, and the children whose death ends the wait."""

    results: Any
    consumer: BaseProcess
    consumed: Any
    expected: int
    publisher: BaseProcess | None = None

    def progress(self) -> str:
        return f"{self.consumed.value:,} of {self.expected:,} events consumed"

    def dead(self) -> str | None:
        """Why the wait cannot end well: a consumer that exited, a publisher that failed; None while alive."""
        if self.consumer.exitcode is not None:
            return f"the consumer process exited with code {self.consumer.exitcode} ({self.progress()})"
        if self.publisher is not None and self.publisher.exitcode not in (None, 0):
            return f"the publisher process exited with code {self.publisher.exitcode} ({self.progress()})"
        return None


def wait_result(watch: Watch, expect: str, bound_s: float, stall_s: float) -> Any:
    """The consumer's next ``(expect, payload)``: polls the children every 0.5 s instead of waiting blindly."""
    started = last_change = time.monotonic()
    last_value = watch.consumed.value
    while True:
        try:
            kind, payload = watch.results.get(timeout=0.5)
        except queue.Empty:
            pass
        else:
            if kind != expect:
                raise ChildFailed(f"expected {expect!r} from the consumer, got {kind!r}")
            return payload
        if (why := watch.dead()) is not None:
            with contextlib.suppress(queue.Empty):  # it may have put its result just before exiting
                kind, payload = watch.results.get(timeout=1.0)
                if kind == expect:
                    return payload
            raise ChildFailed(why)
        now = time.monotonic()
        if watch.consumed.value != last_value:
            last_value, last_change = watch.consumed.value, now
        elif now - last_change > stall_s:
            raise ChildFailed(
                f"no progress for {stall_s:.0f}s ({watch.progress()}): did Redis drop the subscriber "
                "(client-output-buffer-limit pubsub)?"
            )
        if now - started > bound_s:
            raise ChildFailed(f"waited {bound_s:.0f}s for {expect!r} ({watch.progress()})")


def stop_children(*processes: BaseProcess | None) -> None:
    for process in processes:
        if process is None:
            continue
        if process.is_alive():
            process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(10)


def end_to_end(
    url: str, which: str, tasks: int, window: int, template: dict[str, Any], limits: tuple[float, float]
) -> dict[str, Any]:
    """One consumer (``ours`` or ``celery``) over ``tasks`` task ids through Redis. ``limits``: (the least
    rate in events/s that bounds the run, the seconds without progress that end it)."""
    min_rate, stall_s = limits
    ctx = mp.get_context("fork")
    consumed, published = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    results = ctx.Queue()
    expected = count_messages(tasks)
    target = run_ours if which == "ours" else run_celery_state
    sample_every = max(expected // 20, 1)
    consumer = ctx.Process(target=target, args=(url, expected, consumed, results, sample_every), daemon=True)
    pub: BaseProcess | None = None
    watch = Watch(results, consumer, consumed, expected)
    try:
        consumer.start()
        wait_result(watch, "ready", bound_s=60, stall_s=60)
        time.sleep(1.0)  # the subscription reaches Redis
        pub = ctx.Process(target=publisher, args=(url, template, tasks, consumed, published, window), daemon=True)
        pub.start()
        watch.publisher = pub
        result = wait_result(watch, "done", bound_s=120 + expected / min_rate, stall_s=stall_s)
    except ChildFailed as exc:
        raise ChildFailed(f"{which}, {tasks:,} task ids: {exc}") from None
    finally:
        stop_children(pub, consumer)
    return dict(result)


# -- processing only ------------------------------------------------------------------------------
def processing_only(template: dict[str, Any], tasks: int, rounds: int) -> dict[str, Any]:
    """decode + apply without Redis, ours vs kombu's message decoding + celery.events.State, in interleaved
    rounds (fresh state each): events/s of every round, both consumers."""
    maker = StreamMaker(template)
    payloads = [payload for i in range(tasks) for _rk, payload in maker.task(i)]
    rates: dict[str, list[float]] = {"ours": [], "celery_state": []}
    for index in range(rounds):
        order = ("ours", "celery_state") if index % 2 == 0 else ("celery_state", "ours")
        for which in order:
            apply = process_ours if which == "ours" else process_celery_state
            rates[which].append(len(payloads) / apply(payloads))
    return {"events": len(payloads), **rates}


def process_ours(payloads: list[bytes]) -> float:
    """CPU seconds of lensing-metrics' decode + apply of ``payloads``, from a fresh state."""
    from lensing_sources.events.consumer import EventConsumer
    from lensing_sources.events.state import EventState, StateConfig
    from lensing_sources.events.stream import RedisEventStream

    stream = RedisEventStream(redis.Redis(), "")
    state = EventState(StateConfig(warmup=0.0))
    state.on_connected()
    consumer = EventConsumer(stream, state)
    started = time.process_time()
    for offset in range(0, len(payloads), 512):
        chunk: list[object] = [*payloads[offset : offset + 512]]
        consumer.process(chunk)
    return time.process_time() - started


def process_celery_state(payloads: list[bytes]) -> float:
    """CPU seconds of what kombu's Redis channel and Message do before EventReceiver sees the body, and
    celery.events.State's apply, from a fresh State."""
    from celery.events.state import State
    from kombu.serialization import loads

    baseline = State()
    started = time.process_time()
    for payload in payloads:
        envelope = json.loads(payload)
        body = base64.b64decode(envelope["body"])
        event = loads(body, envelope["content-type"], envelope["content-encoding"], accept={"application/json"})
        event["local_received"] = time.time()
        baseline.event(event)
    return time.process_time() - started


# -- report ---------------------------------------------------------------------------------------
def describe_rss(samples: list[tuple[int, float]]) -> str:
    half = samples[len(samples) // 2 :]
    values = [mb for _n, mb in half]
    series = ", ".join(f"{mb:.0f}" for _n, mb in samples)
    return (
        f"RSS {samples[-1][1]:.1f} MB at the end; second half {min(values):.1f}..{max(values):.1f} MB "
        f"(growth {values[-1] - values[0]:+.1f} MB); every 5% of the events: {series} MB"
    )


def rates_line(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


def memory_run(url: str, args: argparse.Namespace, template: dict[str, Any], limits: tuple[float, float]) -> None:
    ours = end_to_end(url, "ours", args.tasks, args.window, template, limits)
    rate = ours["events"] / ours["wall"]
    print(
        f"memory run, lensing-metrics end to end: {ours['events']:,} events ({args.tasks:,} task ids) in "
        f"{ours['wall']:.1f}s = {rate:,.0f} events/s wall, {ours['events'] / ours['cpu']:,.0f} events per "
        f"CPU-second; {describe_rss(ours['rss'])}; tracked tasks {ours['tracked_tasks']:,}, live workers "
        f"{ours['workers']}, succeeded counted {ours['succeeded']:,}, dropped {ours['dropped']}, lost {ours['lost']}",
        flush=True,
    )


def interleaved_rounds(
    url: str, args: argparse.Namespace, template: dict[str, Any], limits: tuple[float, float]
) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "celery": []}
    for index in range(args.rounds):
        order = ("ours", "celery") if index % 2 == 0 else ("celery", "ours")
        for which in order:
            run = end_to_end(url, which, args.round_tasks, args.window, template, limits)
            runs[which].append(run)
            print(
                f"  round {index + 1} {which}: {run['events']:,} events in {run['wall']:.1f}s = "
                f"{run['events'] / run['wall']:,.0f} events/s wall, {run['events'] / run['cpu']:,.0f} per CPU-second, "
                f"RSS {run['rss'][-1][1]:.1f} MB at the end",
                flush=True,
            )
    rates = {which: [r["events"] / r["wall"] for r in done] for which, done in runs.items()}
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["celery"])
    ratios = [a / b for a, b in zip(rates["ours"], rates["celery"], strict=True)]
    print(
        f"end to end, {args.rounds} interleaved rounds of {args.round_tasks:,} task ids: lensing-metrics median "
        f"{ours:,.0f} events/s ({rates_line(rates['ours'])}), celery EventReceiver + State median {theirs:,.0f} "
        f"events/s ({rates_line(rates['celery'])}); ratio of the medians {ours / theirs:.2f}x "
        f"(rounds {min(ratios):.2f}..{max(ratios):.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="task ids of the memory run (0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the comparisons")
    parser.add_argument("--round-tasks", type=int, default=100_000, help="task ids per consumer per round")
    parser.add_argument("--processing-tasks", type=int, default=100_000, help="task ids of the no-Redis comparison")
    parser.add_argument("--window", type=int, default=20_000, help="messages the publisher may run ahead")
    parser.add_argument("--stall-timeout", type=float, default=60.0, help="seconds without progress that fail a run")
    parser.add_argument("--min-rate", type=float, default=1000.0, help="events/s below which a run is cut off")
    parser.add_argument("--redis-url", default="", help="default: a private redis-server on a free port")
    args = parser.parse_args()
    limits = (args.min_rate, args.stall_timeout)

    server = None
    url = args.redis_url
    if not url:
        from tests.support.services import RedisServer

        server = RedisServer().start()
        url = server.url
    try:
        print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
        template = capture_template(url)
        print("message format: captured from celery.events.EventDispatcher on Redis, decoded by ours: ok", flush=True)
        if args.tasks:
            memory_run(url, args, template, limits)
        if args.rounds:
            interleaved_rounds(url, args, template, limits)
            only = processing_only(template, args.processing_tasks, args.rounds)
            ours, theirs = statistics.median(only["ours"]), statistics.median(only["celery_state"])
            print(
                f"processing only ({only['events']:,} events, no Redis, {args.rounds} interleaved rounds): "
                f"lensing-metrics median {ours:,.0f} events/s, celery State median {theirs:,.0f} events/s, "
                f"ratio {ours / theirs:.2f}x"
            )
    except ChildFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
