"""The Redis reader against the real Redis, with kombu's own key layout written by real Celery producers."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from lensing_core.brokers import open_reader
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def producer(url: str, **transport_options: object) -> Celery:
    app = Celery("producer", broker=url)
    app.conf.broker_transport_options = transport_options
    return app


def test_priorities_are_summed_with_key_prefix(redis_url: str) -> None:
    app = producer(redis_url, global_keyprefix="lens:")
    for i in range(12):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses", priority=[0, 3, 6, 9][i % 4])
    for i in range(5):
        app.send_task("lensing.analyse_lens", args=[i], queue="cpu")
    reader = open_reader(redis_url, ["global_keyprefix=lens:"])
    snapshot = reader.read()
    assert {q: d.waiting for q, d in snapshot.queues.items()} == {"analyses": 12, "cpu": 5}
    reader.close()


def test_inflight_counts_prefetched_and_running_tasks(redis_url: str, celery_worker) -> None:  # type: ignore[no-untyped-def]
    app = producer(redis_url)
    for i in range(10):
        app.send_task("lensing.analyse_lens", args=[i, 30], queue="analyses", priority=i % 10)
    worker = celery_worker(redis_url, queues=["analyses"], concurrency=2, prefetch=2, acks_late=True)
    reader = open_reader(redis_url)
    # 2 processes x prefetch 2 = 4 reserved; all unacked with acks_late
    snapshot = wait_for(
        lambda: (s := reader.read()).queues["analyses"].inflight == 4 and s, 30, what="4 tasks in flight"
    )
    assert snapshot.queues["analyses"].waiting == 6
    assert snapshot.queues["analyses"].waiting + snapshot.queues["analyses"].inflight == 10
    worker.kill()
    reader.close()


def test_unknown_unacked_entry_is_not_attributed(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.hset("unacked", "tag-1", json.dumps([{"body": "x"}, "nowhere", "nothing"]))
    producer(redis_url).send_task("lensing.analyse_lens", args=[1], queue="analyses")
    snapshot = open_reader(redis_url).read()
    assert snapshot.queues["analyses"].inflight == 0
    assert snapshot.details["unattributed_inflight"] == "1"


def test_inflight_with_key_prefix_and_configured_queues(redis_url: str, celery_worker) -> None:  # type: ignore[no-untyped-def]
    app = producer(redis_url, global_keyprefix="lens:")
    for i in range(6):
        app.send_task("lensing.analyse_lens", args=[i, 30], queue="cpu", priority=[0, 9][i % 2])
    worker = celery_worker(
        redis_url,
        queues=["cpu"],
        concurrency=1,
        prefetch=3,
        acks_late=True,  # running tasks stay unacked: all three in flight
        transport_options=json.dumps({"global_keyprefix": "lens:"}),
    )
    reader = open_reader(redis_url, ["global_keyprefix=lens:"], queues=["cpu", "analyses"])
    snapshot = wait_for(lambda: (s := reader.read()).queues["cpu"].inflight == 3 and s, 30, what="3 in flight")
    assert snapshot.queues["cpu"].waiting == 3
    assert snapshot.queues["analyses"].waiting == 0 and snapshot.queues["analyses"].inflight == 0
    worker.kill()
    reader.close()
