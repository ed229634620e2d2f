"""The Redis reader's bookkeeping, on fakeredis (fast; the layout itself is tested against real Redis)."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest
import redis

from lensing_core.brokers import BrokerConfigError, BrokerReadError, QueueDepth
from lensing_core.brokers.redis import (
    KOMBU_SEP,
    RedisQueueReader,
    _redis_url_with_ssl_defaults,
    open_redis_client,
    open_redis_reader,
)


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


def test_waiting_sums_every_priority_list_under_the_prefix_and_custom_names() -> None:
    client = fakeredis.FakeRedis()
    sep = "|"
    client.sadd("lens:_kombu.binding.gpu", sep.join(["gpu", "", "gpu"]))
    client.sadd("lens:_kombu.binding.cpu", sep.join(["cpu", "", "cpu"]))
    client.sadd("_kombu.binding.other", sep.join(["other", "", "other"]))  # outside the prefix: not ours
    client.rpush("lens:gpu", "a", "b")
    client.rpush("lens:gpu|3", "c")
    client.rpush("lens:gpu|9", "d", "e", "f")
    client.rpush("lens:gpu|5", "not a priority step")
    client.rpush("lens:cpu|6", "g")
    client.hset("lens:acked-not", "t0", json.dumps([{}, "gpu", "gpu"]))
    client.hset("lens:inflight", "t1", json.dumps([{}, "gpu", "gpu"]))
    client.hset("lens:inflight", "t2", json.dumps([{}, "", "cpu"]))  # default exchange: the routing key is the queue
    for scripting in (True, False):
        reader = RedisQueueReader(client, global_keyprefix="lens:", sep=sep, unacked_key="inflight")
        reader._scripting = scripting
        assert reader.list_keys("gpu") == ["lens:gpu", "lens:gpu|3", "lens:gpu|6", "lens:gpu|9"]
        snapshot = reader.read()
        assert dict(snapshot.queues) == {
            "cpu": QueueDepth(waiting=1, inflight=1),
            "gpu": QueueDepth(waiting=6, inflight=1),
        }, scripting
        assert snapshot.details == {"unattributed_inflight": "0"}
        assert snapshot.read_at > 0 and snapshot.duration >= 0


def test_configured_queues_are_read_and_in_flight_for_other_queues_is_unattributed() -> None:
    client = fakeredis.FakeRedis()
    bind(client, "gpu")
    bind(client, "cpu", exchange="work")
    client.rpush("gpu", "m")
    unacked(client, "t1", "gpu", "gpu")
    unacked(client, "t2", "work", "cpu")  # bound, but not a configured queue
    unacked(client, "t3", "nowhere", "nothing")
    reader = RedisQueueReader(client, ["gpu", "idle", "gpu"])
    assert reader.queues() == ("gpu", "idle")
    snapshot = reader.read()
    assert dict(snapshot.queues) == {"gpu": QueueDepth(1, 1), "idle": QueueDepth(0, 0)}
    assert snapshot.details["unattributed_inflight"] == "2"


def test_routes_through_exchange_bindings_and_forgets_acknowledged_tags() -> None:
    client = fakeredis.FakeRedis()
    client.sadd("_kombu.binding.tasks", KOMBU_SEP.join(["fast", "", "cpu"]), KOMBU_SEP.join(["slow", "", "gpu"]))
    tags = [f"t{i}" for i in range(1203)]  # more than one HMGET chunk
    for i, tag in enumerate(tags):
        unacked(client, tag, "tasks", "fast" if i % 3 else "slow")
    client.hset("unacked", "weird", json.dumps([{}, None, None]))
    client.hset("unacked", "short", json.dumps([{}, "tasks"]))
    reader = RedisQueueReader(client, discovery_interval=3600)
    snapshot = reader.read()
    assert dict(snapshot.queues) == {"cpu": QueueDepth(0, 802), "gpu": QueueDepth(0, 401)}
    assert snapshot.details["unattributed_inflight"] == "2"
    assert len(reader._tag_route) == 1205
    client.hdel("unacked", *tags[:1000])
    snapshot = reader.read()
    assert sum(d.inflight or 0 for d in snapshot.queues.values()) == 203
    assert set(reader._tag_route) == {t.encode() for t in tags[1000:]} | {b"weird", b"short"}
    assert reader._tag_route[b"weird"][0] == ("", "") and reader._tag_route[b"short"] is None


def test_discovery_waits_for_its_interval() -> None:
    client = fakeredis.FakeRedis()
    bind(client, "a")
    reader = RedisQueueReader(client, discovery_interval=3600)
    assert list(reader.read().queues) == ["a"]
    bind(client, "b")
    assert list(reader.read().queues) == ["a"]
    reader._discovered_at -= 3600
    assert list(reader.read().queues) == ["a", "b"]


def test_queue_names_with_glob_characters_and_the_cap_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    client = fakeredis.FakeRedis()
    client.sadd("p[1]*?\\:_kombu.binding.q", KOMBU_SEP.join(["q", "", "q"]))
    client.sadd("p1x\\:_kombu.binding.decoy", KOMBU_SEP.join(["decoy", "", "decoy"]))
    assert list(RedisQueueReader(client, global_keyprefix="p[1]*?\\:").read().queues) == ["q"]
    for i in range(4):
        bind(client, f"q{i}")
    reader = RedisQueueReader(client, max_queues=2, discovery_interval=0)
    with caplog.at_level(logging.WARNING, logger="lensing_core.brokers.redis"):
        reader.read()
        reader.read()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["4 queues discovered; exporting the first 2 by name (name the queues with --queue)"]
    assert RedisQueueReader(client, max_queues=4).read().queues.keys() == {"q0", "q1", "q2", "q3"}


class Refusing(fakeredis.FakeRedis):
    """A server whose ACL refuses EVAL."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        pool = self.connection_pool
        original = pool.get_connection

        def get_connection(*args: object, **kwargs: object) -> object:
            connection = original(*args, **kwargs)
            send = connection.send_packed_command

            def refuse_eval(command: object, *args: object, **kwargs: object) -> None:
                if b"EVAL" in b"".join(command if isinstance(command, list) else [command]):  # type: ignore[list-item]
                    raise redis.ResponseError(self.message)
                send(command, *args, **kwargs)

            connection.send_packed_command = refuse_eval  # type: ignore[method-assign]
            return connection

        pool.get_connection = get_connection  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "message",
    ["NOPERM this user has no permissions to run the 'eval' command", "unknown command 'EVAL'", "Scripts disabled"],
)
def test_refused_scripting_falls_back_to_a_pipeline_once(message: str, caplog: pytest.LogCaptureFixture) -> None:
    client = Refusing(message)
    bind(client, "a")
    client.rpush("a", "m")
    reader = RedisQueueReader(client)
    with caplog.at_level(logging.WARNING, logger="lensing_core.brokers.redis"):
        assert reader.read().queues["a"].waiting == 1
    assert reader._scripting is False
    assert [r.getMessage() for r in caplog.records] == [
        f"redis refuses EVAL ({message}); reading with a pipeline instead"
    ]
    assert reader.read().queues["a"].waiting == 1


def test_other_script_errors_are_read_errors() -> None:
    client = Refusing("script killed by user")
    bind(client, "a")
    reader = RedisQueueReader(client)
    with pytest.raises(BrokerReadError) as exc:
        reader.read()
    assert exc.value.reason == "response" and str(exc.value) == "redis error: script killed by user"
    assert reader._scripting is True


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        (redis.AuthenticationError("bad password"), "auth", "redis authentication failed: bad password"),
        (redis.TimeoutError("slow"), "timeout", "redis read timed out: slow"),
        (redis.ConnectionError("refused"), "connection", "redis connection failed: refused"),
        (redis.RedisError("odd"), "response", "redis error: odd"),
    ],
)
def test_redis_errors_are_read_errors_with_a_reason(error: Exception, reason: str, message: str) -> None:
    client = fakeredis.FakeRedis()

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    client.scan_iter = fail  # type: ignore[method-assign]
    with pytest.raises(BrokerReadError) as exc:
        RedisQueueReader(client).read()
    assert (exc.value.reason, str(exc.value)) == (reason, message)


def test_a_connection_lost_mid_script_is_dropped_from_the_pool() -> None:
    client = fakeredis.FakeRedis()
    bind(client, "a")
    reader = RedisQueueReader(client)
    reader.read()
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)

    def lost(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("reset by peer")

    connection.read_response = lost  # type: ignore[method-assign]
    disconnected: list[bool] = []
    connection.disconnect = lambda *a, **k: disconnected.append(True)  # type: ignore[method-assign]
    with pytest.raises(BrokerReadError, match=r"^redis connection failed: reset by peer$"):
        reader.read()
    assert disconnected == [True]


def test_open_redis_client_from_celery_urls() -> None:
    client = open_redis_client("redis://:s%40cret@cache.example:6380/3", {"socket_timeout": "2.5"})
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("cache.example", 6380, 3, "s@cret")
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.5, 3.0)
    defaults = open_redis_client("redis://h", {}).connection_pool.connection_kwargs
    assert (defaults["socket_timeout"], defaults["socket_connect_timeout"], defaults.get("db", 0)) == (5.0, 3.0, 0)
    tls = open_redis_client("rediss://h:6379/0?ssl_cert_reqs=CERT_NONE", {"socket_connect_timeout": 1})
    assert tls.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
    with pytest.raises(BrokerConfigError) as exc:
        open_redis_client("redis://h:6379/cache", {})
    assert str(exc.value) == "broker URL 'redis://h:6379/cache': the path must be a database number such as /0"


def test_redis_url_ssl_defaults_translate_only_cert_reqs() -> None:
    assert _redis_url_with_ssl_defaults("rediss://h/0?ssl_cert_reqs=CERT_REQUIRED&x=CERT_NONE") == (
        "rediss://h/0?ssl_cert_reqs=required&x=CERT_NONE"
    )
    assert _redis_url_with_ssl_defaults("rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL") == (
        "rediss://h/0?ssl_cert_reqs=optional"
    )
    assert _redis_url_with_ssl_defaults("rediss://h/0?ssl_cert_reqs=required") == "rediss://h/0?ssl_cert_reqs=required"


def test_sentinel_urls() -> None:
    client = open_redis_client(
        "sentinel://:pw@s1:26380/2; sentinel://s2;", {"master_name": "mymaster", "socket_timeout": 4}
    )
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "pw")
    assert pool.connection_kwargs["socket_timeout"] == 4.0
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("s1", 26380), ("s2", 26379)]
    db0 = open_redis_client("sentinel://s1", {"master_name": "m"}).connection_pool.connection_kwargs
    assert (db0["db"], db0["password"]) == (0, None)
    with pytest.raises(BrokerConfigError) as exc:
        open_redis_client("sentinel://s1:26379", {})
    assert str(exc.value) == "sentinel:// needs the master's name: add --broker-transport-option master_name=<name>"
    with pytest.raises(BrokerConfigError) as exc:
        open_redis_client("sentinel://s1;redis://s2", {"master_name": "m"})
    assert str(exc.value) == (
        "broker URL part 'redis://s2': expected sentinel://[:password@]host:port[/db], parts joined by ';'"
    )
    with pytest.raises(BrokerConfigError, match="part 'sentinel://:26379'"):
        open_redis_client("sentinel://:26379", {"master_name": "m"})


def test_open_redis_reader_takes_the_transport_options() -> None:
    reader = open_redis_reader(
        "redis://h/1",
        {"global_keyprefix": "p:", "sep": "|", "priority_steps": [0, 5], "unacked_key": "u"},
        ["q"],
        max_queues=7,
    )
    assert (reader.prefix, reader.sep, reader.priority_steps, reader.unacked_key) == ("p:", "|", (0, 5), "p:u")
    assert (reader.configured_queues, reader.max_queues, reader.transport) == (("q",), 7, "redis")
    assert reader.client.connection_pool.connection_kwargs["db"] == 1
    plain = open_redis_reader("redis://h", {}, [])
    assert (plain.prefix, plain.sep, plain.priority_steps, plain.unacked_key) == (
        "",
        KOMBU_SEP,
        (0, 3, 6, 9),
        "unacked",
    )
    closed: list[bool] = []
    plain.client.close = lambda: closed.append(True)  # type: ignore[method-assign]
    plain.close()
    assert closed == [True]
