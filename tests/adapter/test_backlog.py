"""The adapter's celery_queue_backlog through a drain, against real Redis and RabbitMQ and real workers
(``--concurrency=4``, Celery's default early ack unless the test is about late acks).

The truth is counted on the producer side: every task decrements a Redis counter when it has run.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass

import pytest
import redis
from celery import Celery

from adapter.quantity import parse_quantity
from tests.adapter.conftest import VALUES, Client
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

POLL = 0.2
#: one event round trip (worker -> broker -> adapter) and the request, generously on a loaded machine
EVENT_RTT = 0.5
TASKS = 40


def backlog(client: Client, queue: str = "analyses") -> tuple[int, int | None, str]:
    reply = client.get(f"{VALUES}/default/celery_queue_backlog?labelSelector=queue%3D{queue}")
    if reply.status != 200:
        return reply.status, None, reply.body.decode(errors="replace")
    items = reply.json()["items"]
    assert len(items) == 1, items
    return 200, int(parse_quantity(items[0]["value"])), ""


@dataclass
class Counter:
    client: redis.Redis
    key: str

    def remaining(self) -> int:
        return int(self.client.get(self.key) or 0)


def burst(broker_url: str, counter: Counter, names: list[str], seconds: float = 1.0) -> None:
    counter.client.set(counter.key, len(names))
    app = Celery("producer", broker=broker_url)
    for name in names:
        app.send_task(name, args=[counter.key, seconds], queue="analyses")
    app.close()


def sample_drain(client: Client, counter: Counter, timeout: float = 90.0) -> list[tuple[int, int, int]]:
    """Every POLL seconds until the counter is 0 and the backlog is 0: (remaining before, backlog, after).
    Fails at once on an answer other than 200, below the unfinished tasks, or above them by more than
    the tasks finished within the last poll interval plus one event round trip."""
    # the burst is sent before sampling starts: the first broker read after the last send sees all of it
    time.sleep(2 * POLL)
    history: list[tuple[float, int]] = []
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = counter.remaining()
        now = time.monotonic()
        history.append((now, before))
        status, value, body = backlog(client)
        after = counter.remaining()
        assert status == 200, f"backlog answered {status} mid-drain: {body}"
        assert value is not None
        window_start = now - POLL - EVENT_RTT
        earlier = next((n for t, n in history if t >= window_start), before)
        finished_recently = earlier - after
        assert value >= after, f"backlog {value} below the {after} tasks not finished ({samples[-5:]})"
        assert value <= before + finished_recently, (
            f"backlog {value} above the {before} unfinished by more than the {finished_recently} just finished"
        )
        samples.append((before, value, after))
        if after == 0 and value == 0:
            return samples
        time.sleep(POLL)
    raise AssertionError(f"the drain did not end in {timeout}s: {samples[-5:]}")


@pytest.fixture
def redis_counter(redis_url: str) -> Counter:
    return Counter(redis.Redis.from_url(redis_url), f"unfinished-{uuid.uuid4().hex[:8]}")


def started_adapter(adapter_factory, client_factory, broker_url: str, *extra: str) -> Client:  # type: ignore[no-untyped-def]
    adapter = adapter_factory(["--broker-url", broker_url, "--poll-interval", str(POLL)], *extra)
    return client_factory(adapter)


def wait_known_empty(client: Client, timeout: float = 60.0) -> None:
    """The worker is known to the adapter's event stream and the queue reads 0 (known, empty)."""
    last: list[tuple[int, int | None, str]] = []

    def known_empty() -> bool:
        last[:] = [backlog(client)]
        return last[0][:2] == (200, 0)

    try:
        wait_for(known_empty, timeout, interval=0.3, what="backlog 0 (events settled)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the adapter's last answer: {last}") from None


@pytest.mark.parametrize(
    ("prefetch", "acks_late", "late_share"),
    [(1, False, 0.0), (4, False, 0.0), (4, True, 0.0), (4, False, 0.5)],
    ids=["early-prefetch1", "early-prefetch4", "late", "mixed"],
)
def test_redis_drain_never_reads_below_the_unfinished_tasks(  # type: ignore[no-untyped-def]
    redis_url, redis_counter, adapter_factory, client_factory, celery_worker, prefetch, acks_late, late_share
) -> None:
    client = started_adapter(adapter_factory, client_factory, redis_url)
    celery_worker(redis_url, concurrency=4, prefetch=prefetch, acks_late=acks_late, events=True)
    wait_known_empty(client)
    late = int(TASKS * late_share)
    names = ["lensing.tracked_late"] * late + ["lensing.tracked"] * (TASKS - late)
    burst(redis_url, redis_counter, names[::2] + names[1::2])  # interleaved
    samples = sample_drain(client, redis_counter)
    # the drain was watched while tasks ran with nothing left waiting: the running part was counted
    assert any(value > 0 and after > 0 for _before, value, after in samples)


def redis_in_broker(client: redis.Redis, queue: str = "analyses") -> int:
    """Messages still in the broker: waiting plus unacknowledged (kombu's keys, read directly)."""
    return int(client.llen(queue)) + int(client.hlen("unacked"))


@pytest.mark.parametrize("acks_late", [False, True], ids=["early", "late"])
def test_redis_worker_killed_mid_burst_counts_no_task_twice(  # type: ignore[no-untyped-def]
    redis_url, redis_counter, adapter_factory, client_factory, celery_worker, acks_late
) -> None:
    client = started_adapter(adapter_factory, client_factory, redis_url, "--worker-timeout", "4")
    victim = celery_worker(redis_url, concurrency=4, prefetch=1, acks_late=acks_late, events=True)
    wait_known_empty(client)
    burst(redis_url, redis_counter, ["lensing.tracked"] * 12, seconds=3.0)
    wait_for(lambda: redis_counter.remaining() == 12 and backlog(client)[1] == 12, 30, what="4 running")
    os.killpg(victim.pid, signal.SIGKILL)
    # From the kill on: never above the unfinished tasks (nothing counted twice on the way).
    survivor = celery_worker(redis_url, concurrency=4, prefetch=1, acks_late=acks_late, events=True)
    deadline = time.monotonic() + 40
    settled = None
    while time.monotonic() < deadline:
        before = redis_counter.remaining()
        status, value, _ = backlog(client)
        if status == 200 and value is not None:
            assert value <= before, f"backlog {value} above the {before} unfinished tasks: counted twice"
            truth = redis_in_broker(redis_counter.client)
            if value == truth and before - redis_counter.remaining() == 0 and value == before - (0 if acks_late else 4):
                settled = value
                break
        time.sleep(POLL)
    # early ack: the 4 tasks the victim ran are lost; late ack: they are back in the broker's unacked hash
    assert settled is not None, f"did not settle: backlog {backlog(client)}, unfinished {redis_counter.remaining()}"
    survivor.kill()


def test_redis_event_stream_cut_answers_503_within_the_grace(  # type: ignore[no-untyped-def]
    redis_server, adapter_factory, client_factory, celery_worker
) -> None:
    server = redis_server()
    client = started_adapter(adapter_factory, client_factory, server.url, "--max-staleness", "2")
    celery_worker(server.url, concurrency=4, events=True)
    wait_known_empty(client)
    admin = redis.Redis.from_url(server.url)
    length = client.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses")
    assert length.status == 200
    cut_at = time.monotonic()
    answered_503 = None
    while time.monotonic() - cut_at < 8:  # keep cutting: the consumer reconnects within a second
        admin.client_kill_filter(_type="pubsub")
        status, _value, body = backlog(client)
        if status == 503:
            answered_503 = time.monotonic() - cut_at
            assert "event stream" in body, body
            break
        assert status == 200, body
        time.sleep(0.1)
    assert answered_503 is not None and answered_503 <= 2 + 3 * POLL + 1.0, answered_503
    again = client.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses")
    assert again.status == 200  # the waiting count does not depend on events
    wait_known_empty(client, timeout=30)  # back once the stream reconnects and settles
    admin.close()


def test_unknown_queue_is_404_naming_the_known_ones_and_an_empty_one_is_0(  # type: ignore[no-untyped-def]
    redis_url, adapter_factory, client_factory, celery_worker
) -> None:
    client = started_adapter(adapter_factory, client_factory, redis_url)
    celery_worker(redis_url, concurrency=4, events=True)
    wait_known_empty(client)
    for metric in ("celery_queue_length", "celery_queue_backlog"):
        reply = client.get(f"{VALUES}/default/{metric}?labelSelector=queue%3Danalyse")
        assert reply.status == 404, reply.body
        assert "no queue analyse" in reply.json()["message"] and "analyses" in reply.json()["message"]
        empty = client.get(f"{VALUES}/default/{metric}?labelSelector=queue%3Danalyses")
        assert empty.status == 200 and empty.json()["items"][0]["value"] == "0"


@pytest.mark.parametrize("acks_late", [False, True], ids=["early", "late"])
def test_rabbitmq_running_tasks_counted_once(  # type: ignore[no-untyped-def]
    amqp_url, redis_counter, adapter_factory, client_factory, celery_worker, acks_late
) -> None:
    management = "management_url=http://guest:guest@127.0.0.1:15672"
    adapter = adapter_factory(
        ["--broker-url", amqp_url, "--broker-transport-option", management, "--poll-interval", "0.5"]
    )
    client = client_factory(adapter)
    counter_url = redis_counter.client.connection_pool.connection_kwargs
    env = {"LENSING_COUNTER_URL": f"redis://127.0.0.1:6379/{counter_url['db']}"}
    celery_worker(amqp_url, concurrency=4, prefetch=1, acks_late=acks_late, events=True, extra_env=env)
    wait_known_empty(client, timeout=90)
    burst(amqp_url, redis_counter, ["lensing.tracked"] * 10, seconds=8.0)

    # 4 running, 4 prefetched, 2 waiting: once the management stats catch up (5 s), the backlog is 10,
    # not 6 (early ack without the running part) nor 14 (late-ack running tasks counted twice)
    def ten() -> bool:
        return redis_counter.remaining() == 10 and backlog(client)[:2] == (200, 10)

    wait_for(ten, 30, interval=0.5, what="backlog 10 with 4 running")
    for _ in range(5):
        status, value, body = backlog(client)
        if redis_counter.remaining() == 10:
            assert (status, value) == (200, 10), body
        time.sleep(0.5)
