"""Values served equal the broker's truth (real Redis with priorities and in-flight tasks held by a real
worker; real RabbitMQ), every selector form, empty and missing queues, and the 4xx answers."""

from __future__ import annotations

import json
from pathlib import Path

import amqp
import pytest
import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from adapter.quantity import parse_quantity
from tests.adapter.conftest import VALUES, Client
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def producer(url: str) -> Celery:
    return Celery("producer", broker=url)


def redis_truth(url: str, queue: str) -> tuple[int, int]:
    """(waiting, in flight) counted straight from kombu's keys, laid out by kombu's own constants (not the
    reader's copies of them)."""
    client = redis.Redis.from_url(url)
    sep = kombu_redis.Channel.sep
    keys = [queue if step == 0 else f"{queue}{sep}{step}" for step in kombu_redis.PRIORITY_STEPS]
    waiting = sum(client.llen(k) for k in keys)
    inflight = client.hlen("unacked")
    client.close()
    return waiting, inflight


def values(client: Client, metric: str, selector: str | None, namespace: str = "default") -> dict[str, str]:
    reply = client.get(f"{VALUES}/{namespace}/{metric}{query_of(selector)}")
    assert reply.status == 200, reply.body
    return items_of(reply.json())


def query_of(selector: str | None) -> str:
    return "" if selector is None else f"?labelSelector={selector}"


def items_of(body: dict) -> dict[str, str]:  # type: ignore[type-arg]
    assert body["kind"] == "ExternalMetricValueList" and body["apiVersion"] == "external.metrics.k8s.io/v1beta1"
    return {item["metricLabels"]["queue"]: item["value"] for item in body["items"]}


def known_backlog(client: Client, selector: str) -> dict[str, str] | None:
    """The backlog once its running part is known; None while the adapter answers 503 because the event
    stream is settling (the only 503 accepted: any other answer fails)."""
    reply = client.get(f"{VALUES}/default/celery_queue_backlog{query_of(selector)}")
    if reply.status == 503:
        assert "event stream" in reply.json()["message"], reply.body
        return None
    assert reply.status == 200, reply.body
    return items_of(reply.json())


def test_redis_priorities_and_inflight_equal_the_brokers_truth(  # type: ignore[no-untyped-def]
    redis_url: str, adapter_factory, client_factory, celery_worker
) -> None:
    app = producer(redis_url)
    for i in range(14):
        app.send_task("lensing.analyse_lens", args=[i, 30], queue="analyses", priority=[0, 3, 6, 9][i % 4])
    for i in range(3):
        app.send_task("lensing.analyse_lens", args=[i], queue="cpu")
    worker = celery_worker(redis_url, queues=["analyses"], concurrency=2, prefetch=2, acks_late=True)
    adapter = adapter_factory(["--broker-url", redis_url, "--poll-interval", "0.2"])
    client = client_factory(adapter)

    def settled() -> object:
        waiting, inflight = redis_truth(redis_url, "analyses")
        if inflight != 4:  # 2 processes x prefetch 2, all unacknowledged (acks_late)
            return False
        length = values(client, "celery_queue_length", "queue=analyses")
        backlog = known_backlog(client, "queue=analyses")
        return length == {"analyses": str(waiting)} and backlog == {"analyses": str(waiting + inflight)} and waiting

    waiting = wait_for(settled, 60, interval=0.2, what="adapter values equal to Redis")
    assert waiting == 10
    assert values(client, "celery_queue_length", None) == {"analyses": "10", "cpu": "3"}
    worker.kill()


def test_every_selector_form(redis_url: str, adapter_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    app = producer(redis_url)
    for queue, count in (("analyses", 4), ("cpu", 2), ("gpu-big", 1)):
        for i in range(count):
            app.send_task("lensing.analyse_lens", args=[i], queue=queue)
    adapter = adapter_factory(["--broker-url", redis_url, "--poll-interval", "0.2"])
    client = client_factory(adapter)
    every = {"analyses": "4", "cpu": "2", "gpu-big": "1"}
    wait_for(lambda: values(client, "celery_queue_length", None) == every, 30, what="all queues")
    cases = {
        "queue%3Danalyses": {"analyses": "4"},
        "queue%3D%3Dcpu": {"cpu": "2"},
        "queue%21%3Dcpu": {"analyses": "4", "gpu-big": "1"},
        "queue+in+%28analyses%2Ccpu%29": {"analyses": "4", "cpu": "2"},
        "queue%20notin%20(analyses,cpu)": {"gpu-big": "1"},
        "queue": every,
        "%21queue": {},
        "%21team": every,
        "team": {},
        "queue%21%3Dcpu,queue%21%3Danalyses": {"gpu-big": "1"},
        "": every,
    }
    for selector, expected in cases.items():
        assert values(client, "celery_queue_length", selector) == expected, selector
    # a queue named by a set selector that the broker has no trace of: 404 naming the known ones, never a 0
    unknown = client.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue+in+(analyses,never-used)")
    assert unknown.status == 404, unknown.body
    assert "never-used" in unknown.json()["message"]
    assert all(q in unknown.json()["message"] for q in every), unknown.json()["message"]


def test_empty_queues_answer_zero_and_unknown_ones_404(redis_url: str, adapter_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    app = producer(redis_url)
    app.send_task("lensing.analyse_lens", args=[1], queue="analyses")
    adapter = adapter_factory(["--broker-url", redis_url, "--poll-interval", "0.2"])
    client = client_factory(adapter)
    wait_for(lambda: values(client, "celery_queue_length", "queue=analyses") == {"analyses": "1"}, 30, what="1")
    redis.Redis.from_url(redis_url).delete("analyses")  # drained: the list key is gone, the binding stays
    wait_for(lambda: values(client, "celery_queue_length", "queue=analyses") == {"analyses": "0"}, 30, what="0")
    body = client.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses").json()
    assert [(i["metricName"], i["metricLabels"], i["value"]) for i in body["items"]] == [
        ("celery_queue_length", {"queue": "analyses"}, "0")
    ]
    assert body["items"][0]["timestamp"].endswith("Z")
    # a queue no one ever declared: 404 naming the known queues (a typo in an HPA selector is not a 0)
    for metric in ("celery_queue_length", "celery_queue_backlog"):
        missing = client.get(f"{VALUES}/default/{metric}?labelSelector=queue%3Dnever-declared")
        assert missing.status == 404, missing.body
        assert missing.json()["reason"] == "NotFound" and "analyses" in missing.json()["message"]


def test_errors_are_status_objects(redis_url: str, adapter_factory, client_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "adapter.yaml"
    config.write_text(
        json.dumps({"brokers": [{"name": "platform", "url": redis_url, "namespaces": ["lensing", "default"]}]})
    )
    adapter = adapter_factory(["--config", str(config), "--poll-interval", "0.2"])
    client = client_factory(adapter)
    wait_for(lambda: client.get(f"{VALUES}/lensing/celery_queue_length").status == 200, 30, what="200")

    unknown = client.get(f"{VALUES}/lensing/celery_queue_depth")
    assert unknown.status == 404 and unknown.headers["Content-Type"] == "application/json"
    assert unknown.json()["kind"] == "Status" and unknown.json()["reason"] == "NotFound"
    assert unknown.json()["code"] == 404

    bad = client.get(f"{VALUES}/lensing/celery_queue_length?labelSelector=queue+in+analyses")
    assert bad.status == 400
    assert bad.json()["reason"] == "BadRequest" and "expected: '('" in bad.json()["message"]

    elsewhere = client.get(f"{VALUES}/kube-system/celery_queue_length?labelSelector=queue%3Danalyses")
    assert elsewhere.status == 404 and 'no broker serves namespace "kube-system"' in elsewhere.json()["message"]
    assert "Retry-After" not in elsewhere.headers

    # the controller manager asks for protobuf first: JSON anyway
    proto = client.get(
        f"{VALUES}/default/celery_queue_length",
        {"Accept": "application/vnd.kubernetes.protobuf, */*"},
    )
    assert proto.status == 200 and proto.headers["Content-Type"] == "application/json"
    assert client.get("/openapi/v2").status == 404
    assert client.get(f"{VALUES}/default/celery_queue_length", method="POST").status == 405


def test_rabbitmq_values_equal_the_brokers_truth(amqp_url: str, adapter_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    app = producer(amqp_url)
    for i in range(7):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses")
    app.send_task("lensing.analyse_lens", args=[0], queue="cpu")
    adapter = adapter_factory(
        [
            "--broker-url",
            amqp_url,
            "--broker-transport-option",
            "management_url=http://127.0.0.1:15672",
            "--poll-interval",
            "0.2",
        ]
    )
    client = client_factory(adapter)
    vhost = amqp_url.rsplit("/", 1)[1]
    conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    channel = conn.channel()
    truth = {q: channel.queue_declare(queue=q, passive=True)[1] for q in ("analyses", "cpu")}
    conn.close()
    assert truth == {"analyses": 7, "cpu": 1}
    expected = {q: str(n) for q, n in truth.items()}
    wait_for(
        lambda: values(client, "celery_queue_length", "queue+in+(analyses,cpu)") == expected, 30, what="rabbit values"
    )
    backlog = wait_for(lambda: known_backlog(client, "queue=analyses"), 30, what="the backlog known")
    assert parse_quantity(backlog["analyses"]) == 7
