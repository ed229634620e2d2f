"""The adapter on RabbitMQ and the in-flight part of celery_queue_backlog: without the management API the
broker gives no in-flight count, so the backlog is 503 and the length is served; with it and a real worker
holding tasks unacknowledged, the backlog is ready + unacknowledged as RabbitMQ's management API reports
them (read here over HTTP, not through the project's reader)."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest
from celery import Celery

from tests.adapter.conftest import VALUES, Client
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

MANAGEMENT_URL = "http://127.0.0.1:15672"
QUEUE = "analyses"
LENGTH = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3D{QUEUE}"
BACKLOG = f"{VALUES}/default/celery_queue_backlog?labelSelector=queue%3D{QUEUE}"


def send_tasks(amqp_url: str, count: int, seconds: float = 0.0) -> None:
    app = Celery("producer", broker=amqp_url)
    for i in range(count):
        app.send_task("lensing.analyse_lens", args=[i, seconds], queue=QUEUE)


def management_counts(amqp_url: str, queue: str) -> tuple[int, int] | None:
    """(ready, unacknowledged) of the queue from RabbitMQ's management API; None until its statistics list them."""
    vhost = amqp_url.rsplit("/", 1)[1]
    token = base64.b64encode(b"guest:guest").decode()
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.load(response)
    if "messages_ready" not in body or "messages_unacknowledged" not in body:
        return None
    return int(body["messages_ready"]), int(body["messages_unacknowledged"])


def value_of(client: Client, path: str) -> str | None:
    """The queue's value, or None while the adapter answers 503."""
    reply = client.get(path)
    if reply.status == 503:
        return None
    assert reply.status == 200, reply.body
    (item,) = reply.json()["items"]
    assert item["metricLabels"] == {"queue": QUEUE}
    return str(item["value"])


def test_without_the_management_api_the_backlog_is_503_and_the_length_served(  # type: ignore[no-untyped-def]
    amqp_url: str, adapter_factory, client_factory
) -> None:
    send_tasks(amqp_url, 5)
    adapter = adapter_factory(["--broker-url", amqp_url, "--queue", QUEUE, "--poll-interval", "0.2"])
    client = client_factory(adapter)
    wait_for(lambda: value_of(client, LENGTH) == "5", 30, interval=0.2, what="the ready count served")

    def backlog_refused_for_want_of_inflight() -> dict[str, Any] | None:
        reply = client.get(BACKLOG)
        assert reply.status == 503, reply.body  # never the ready count alone
        body = reply.json()
        # first the event stream settles (also 503); then the reason under test
        return body if "does not report in-flight messages" in body["message"] else None

    body = wait_for(
        backlog_refused_for_want_of_inflight, 30, interval=0.2, what="503 naming the missing in-flight count"
    )
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 503, "ServiceUnavailable")
    assert "management_url" in body["message"] and "celery_queue_length is served" in body["message"]
    assert value_of(client, LENGTH) == "5"


def test_backlog_is_ready_plus_unacknowledged_with_a_real_worker(  # type: ignore[no-untyped-def]
    amqp_url: str, adapter_factory, client_factory, celery_worker
) -> None:
    send_tasks(amqp_url, 10, seconds=120)
    worker = celery_worker(amqp_url, queues=[QUEUE], concurrency=2, prefetch=2, acks_late=True, events=True)
    adapter = adapter_factory(
        [
            "--broker-url",
            amqp_url,
            "--broker-transport-option",
            f"management_url={MANAGEMENT_URL}",
            "--poll-interval",
            "0.2",
        ]
    )
    client = client_factory(adapter)
    # 2 processes x prefetch 2: 4 tasks held unacknowledged (acks_late: the running ones too); the
    # management statistics lag by up to 5 s
    wait_for(lambda: management_counts(amqp_url, QUEUE) == (6, 4), 60, interval=0.5, what="6 ready, 4 unacked")

    def adapter_matches_the_management_api() -> tuple[int, int, str | None, str | None] | None:
        truth = management_counts(amqp_url, QUEUE)
        if truth is None:
            return None
        ready, unacked = truth
        length, backlog = value_of(client, LENGTH), value_of(client, BACKLOG)
        return (ready, unacked, length, backlog) if (length, backlog) == (str(ready), str(ready + unacked)) else None

    seen = wait_for(adapter_matches_the_management_api, 30, interval=0.3, what="the adapter's values")
    assert seen == (6, 4, "6", "10")
    worker.kill()  # its tasks sleep 120 s: a warm shutdown would wait for them
