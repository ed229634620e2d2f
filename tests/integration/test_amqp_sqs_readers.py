"""RabbitMQ (own vhost, real Celery producers and worker) and SQS (moto in server mode over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from celery import Celery

from lensing_core.brokers import open_reader
from lensing_core.brokers.sqs import sqs_entity_name
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.integration
MANAGEMENT = "management_url=http://127.0.0.1:15672"


def test_rabbitmq_ready_counts_discovery_and_inflight(amqp_url: str, celery_worker) -> None:  # type: ignore[no-untyped-def]
    app = Celery("producer", broker=amqp_url)
    for i in range(10):
        app.send_task("lensing.analyse_lens", args=[i, 30], queue="analyses")
    for i in range(3):
        app.send_task("lensing.analyse_lens", args=[i], queue="cpu")

    named = open_reader(amqp_url, queues=["analyses", "missing"])
    snapshot = named.read()
    assert snapshot.queues["analyses"].waiting == 10 and snapshot.queues["analyses"].inflight is None
    assert "missing" not in snapshot.queues  # absent, not zero
    assert named.read().queues["analyses"].waiting == 10  # the channel the broker closed was reopened
    named.close()

    reader = open_reader(amqp_url, [MANAGEMENT])
    found = wait_for(lambda: {"analyses", "cpu"} <= set(reader.read().queues), 30, interval=0.5, what="discovery")
    assert found
    worker = celery_worker(amqp_url, queues=["analyses"], concurrency=2, prefetch=2, acks_late=True)
    # 2 processes x prefetch 2 = 4 unacknowledged; the management stats lag by ~5 s
    snapshot = wait_for(
        lambda: (s := reader.read()).queues["analyses"].inflight == 4 and s, 60, interval=1.0, what="4 in flight"
    )
    assert snapshot.queues["analyses"].waiting == 6
    assert snapshot.queues["cpu"].waiting == 3 and snapshot.queues["cpu"].inflight == 0
    assert not any(q.endswith("pidbox") or q.startswith("celeryev") for q in snapshot.queues)
    worker.kill()
    reader.close()


@pytest.fixture
def moto_sqs(monkeypatch) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_sqs_prefix_listing_predefined_and_delay(moto_sqs: str) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_sqs, region_name="us-east-1")
    names = {queue: sqs_entity_name("lens-" + queue) for queue in ("analyses", "gpu.high")}
    from kombu.transport.SQS import Channel

    for name in ("lens-gpu.high", "a:b/c.fifo", "x.y.z"):  # the reader names queues as kombu does
        assert sqs_entity_name(name) == Channel.entity_name(None, name)  # type: ignore[arg-type]
    urls = {queue: sqs.create_queue(QueueName=name)["QueueUrl"] for queue, name in names.items()}
    sqs.create_queue(QueueName="other-queue")
    for i in range(5):
        sqs.send_message(QueueUrl=urls["analyses"], MessageBody=json.dumps({"n": i}))
    sqs.send_message(QueueUrl=urls["analyses"], MessageBody="later", DelaySeconds=60)
    received = sqs.receive_message(QueueUrl=urls["analyses"], MaxNumberOfMessages=2, VisibilityTimeout=300)
    assert len(received["Messages"]) == 2  # received, not deleted: in flight
    sqs.send_message(QueueUrl=urls["gpu.high"], MessageBody="x")

    options = ["queue_name_prefix=lens-", f"endpoint_url={moto_sqs}"]
    listed = open_reader("sqs://", options).read().queues
    assert set(listed) == {"analyses", "gpu-high"}  # listing sees SQS names less the prefix
    assert (listed["analyses"].waiting, listed["analyses"].inflight, listed["analyses"].delayed) == (3, 2, 1)

    named = open_reader("sqs://", options, queues=["gpu.high", "absent"]).read().queues
    assert set(named) == {"gpu.high"} and named["gpu.high"].waiting == 1  # --queue takes Celery's names

    predefined = json.dumps({"analyses": {"url": urls["analyses"]}, "gpu.high": {"url": urls["gpu.high"]}})
    reader = open_reader("sqs://", [f"predefined_queues={predefined}", f"endpoint_url={moto_sqs}"])
    snapshot = reader.read().queues
    assert (
        set(snapshot) == {"analyses", "gpu.high"}
        and snapshot["analyses"].waiting + (snapshot["analyses"].inflight or 0) == 5
    )
    sqs.delete_queue(QueueUrl=urls["gpu.high"])
    assert set(reader.read().queues) == {"analyses"}  # a deleted queue stops being exported
    reader.close()
