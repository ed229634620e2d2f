"""The Redis reader against real servers: custom separators and steps, discovery, cost per poll,
Sentinel and TLS. Keys are written by real Celery producers (kombu's own layout)."""

from __future__ import annotations

import datetime
import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue

from lensing_core.brokers import open_reader
from lensing_core.brokers.redis import RedisQueueReader
from tests.support.services import free_port, port_open, wait_for

pytestmark = pytest.mark.integration


def producer(url: str, **transport_options: object) -> Celery:
    app = Celery("producer", broker=url)
    app.conf.broker_transport_options = transport_options
    return app


def commandstats(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def test_custom_separator_and_priority_steps(redis_url: str) -> None:
    app = producer(redis_url, sep=":", priority_steps=[0, 5, 9], global_keyprefix="p/")
    for i in range(9):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses", priority=[0, 5, 9][i % 3])
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).keys("p/analyses*")}
    assert keys == {"p/analyses", "p/analyses:5", "p/analyses:9"}  # kombu's layout, not a guess of it
    reader = open_reader(redis_url, ["sep=:", "priority_steps=[0,5,9]", "global_keyprefix=p/"])
    assert reader.read().queues["analyses"].waiting == 9
    reader.close()
    # with kombu's default steps the priority-9 list is still found; with the default separator it is not
    wrong = open_reader(redis_url, ["global_keyprefix=p/"])
    assert wrong.read().queues.get("analyses") is None  # bindings use ':' so nothing parses: no made-up queue
    wrong.close()


def test_discovery_follows_bindings_and_drops_deleted_queues(redis_url: str) -> None:
    app = producer(redis_url)
    for queue in ("analyses", "cpu", "thumbnails"):
        app.send_task("lensing.analyse_lens", args=[1], queue=queue)
    reader = open_reader(redis_url, discovery_interval=0)
    assert set(reader.read().queues) == {"analyses", "cpu", "thumbnails"}
    with app.connection_for_write() as conn:  # kombu deletes the bindings its channel declared
        bound = Queue("thumbnails", Exchange("thumbnails"), "thumbnails")(conn.default_channel)
        bound.declare()
        bound.delete()
    assert set(reader.read().queues) == {"analyses", "cpu"}
    # an empty but bound queue is a real zero
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")
    assert reader.read().queues["cpu"].waiting == 0
    reader.close()


def _fake_unacked(client: redis.Redis, queue: str, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        message = {"body": "x" * 1000, "properties": {"delivery_tag": f"tag-{n}"}}
        client.hset("unacked", f"tag-{n}", json.dumps([message, queue, queue]))


def test_one_round_trip_per_poll_and_tags_learned_once(redis_server) -> None:  # type: ignore[no-untyped-def]
    server = redis_server()
    client = redis.Redis.from_url(server.url)
    app = producer(server.url)
    queues = [f"q{i:03d}" for i in range(60)]
    for i, queue in enumerate(queues):
        app.send_task("lensing.analyse_lens", args=[i], queue=queue, priority=i % 10)
    _fake_unacked(client, "q000", 30)
    reader = open_reader(server.url)
    assert isinstance(reader, RedisQueueReader)
    sends: list[int] = []
    connection_class = reader.client.connection_pool.connection_class
    original = connection_class.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sends.append(1)
        return original(self, command, check_health)

    connection_class.send_packed_command = counting  # type: ignore[method-assign]
    try:
        first = reader.read()  # discovery + learning the 30 tags
        assert first.queues["q000"].inflight == 30 and first.queues["q001"].inflight == 0
        client.config_resetstat()
        sends.clear()
        for _ in range(10):
            snapshot = reader.read()
        assert len(sends) == 10  # one round trip per poll, for 60 queues x 4 priority lists
        stats = commandstats(client)
        assert stats.get("eval") == 10 and "hmget" not in stats, stats  # nothing re-read per tag
        assert stats.get("llen") == 10 * 60 * 4
        assert sum(d.waiting for d in snapshot.queues.values()) == 60

        _fake_unacked(client, "q001", 5, start=100)  # new deliveries: learned once, in one HMGET
        client.config_resetstat()
        for _ in range(5):
            snapshot = reader.read()
        assert commandstats(client).get("hmget") == 1
        assert snapshot.queues["q001"].inflight == 5 and snapshot.queues["q000"].inflight == 30
        client.hdel("unacked", *[f"tag-{n}" for n in range(10)])  # acknowledged: forgotten
        assert reader.read().queues["q000"].inflight == 20
        assert len(reader._tag_route) == 25
    finally:
        connection_class.send_packed_command = original  # type: ignore[method-assign]
        reader.close()


def test_pipeline_fallback_where_scripts_are_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    server = redis_server("--rename-command", "EVAL", "")
    producer(server.url).send_task("lensing.analyse_lens", args=[1], queue="analyses", priority=9)
    reader = open_reader(server.url)
    assert reader.read().queues["analyses"].waiting == 1
    assert reader.read().queues["analyses"].waiting == 1
    reader.close()


@pytest.fixture
def sentinel(redis_server) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    master = redis_server()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="lm-sentinel-"))
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor lensmaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds lensmaster 5000\n"
    )
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 15, what="redis sentinel")
        yield master.url, f"sentinel://127.0.0.1:{port};sentinel://127.0.0.1:{free_port()}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_sentinel(sentinel: tuple[str, str]) -> None:
    master_url, sentinel_url = sentinel
    app = producer(master_url)
    for i in range(4):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses", priority=i * 3)
    reader = open_reader(sentinel_url, ["master_name=lensmaster"])
    snapshot = wait_for(lambda: reader.read().queues.get("analyses"), 15, what="read through sentinel")
    assert snapshot.waiting == 4
    reader.close()


def _certificates(workdir: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("lensing test CA"))
        .issuer_name(name("lensing test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    server = redis_server(
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
        "--tls-auth-clients",
        "no",
    )
    wait_for(lambda: port_open("127.0.0.1", tls_port), 10, what="redis TLS port")
    producer(server.url).send_task("lensing.analyse_lens", args=[1], queue="analyses", priority=6)
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs={ca}"
    reader = open_reader(url)
    assert reader.read().queues["analyses"].waiting == 1
    reader.close()
    # a certificate the client does not trust is a read error, not a number
    untrusting = open_reader(f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required")
    from lensing_core.brokers import BrokerReadError

    with pytest.raises(BrokerReadError):
        untrusting.read()
    untrusting.close()
