"""The Redis reader's bookkeeping, on fakeredis (fast; the layout itself is tested against real Redis)."""

from __future__ import annotations

import json

import fakeredis
import pytest

from lensing_core.brokers import BrokerReadError
from lensing_core.brokers.redis import KOMBU_SEP, RedisQueueReader


def bind(client: fakeredis.FakeRedis, queue: str, exchange: str | None = None) -> None:
    client.sadd(f"_kombu.binding.{exchange or queue}", KOMBU_SEP.join([queue, "", queue]))


def unacked(client: fakeredis.FakeRedis, tag: str, exchange: str, routing_key: str) -> None:
    client.hset("unacked", tag, json.dumps([{"body": "x"}, exchange, routing_key]))


@pytest.mark.parametrize("scripting", [True, False])
def test_tag_learned_before_its_binding_resolves_later(scripting: bool) -> None:
    client = fakeredis.FakeRedis()
    bind(client, "analyses")
    unacked(client, "t1", "gpu", "gpu")  # its queue's binding does not exist yet
    reader = RedisQueueReader(client, discovery_interval=0)
    reader._scripting = scripting
    first = reader.read()
    assert set(first.queues) == {"analyses"} and first.details["unattributed_inflight"] == "1"
    bind(client, "gpu")
    client.lpush("gpu", "m")
    second = reader.read()
    assert second.queues["gpu"].inflight == 1 and second.queues["gpu"].waiting == 1
    assert second.details["unattributed_inflight"] == "0"


def test_excluded_and_malformed_bindings_and_unreadable_entries() -> None:
    client = fakeredis.FakeRedis()
    bind(client, "analyses")
    client.sadd("_kombu.binding.celery.pidbox", KOMBU_SEP.join(["", "", "w1@host.celery.pidbox"]))
    client.sadd("_kombu.binding.celeryev", KOMBU_SEP.join(["#", "", "celeryev.abc"]))
    client.sadd("_kombu.binding.broken", "no separator here")
    client.hset("unacked", "bad", b"not json")
    snapshot = RedisQueueReader(client).read()
    assert set(snapshot.queues) == {"analyses"}
    assert snapshot.details["unattributed_inflight"] == "1"


def test_wrong_key_type_is_a_read_error_not_a_number() -> None:
    client = fakeredis.FakeRedis()
    bind(client, "analyses")
    client.set("analyses", "a string where kombu keeps a list")
    with pytest.raises(BrokerReadError) as exc:
        RedisQueueReader(client).read()
    assert exc.value.reason == "response"


def test_discovered_queues_are_capped() -> None:
    client = fakeredis.FakeRedis()
    for i in range(5):
        bind(client, f"q{i}")
    assert list(RedisQueueReader(client, max_queues=3).read().queues) == ["q0", "q1", "q2"]
