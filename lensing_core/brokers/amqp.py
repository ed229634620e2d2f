"""Queue depth on RabbitMQ (amqp://, amqps://, pyamqp://).

- waiting: the ready count of a passive ``queue.declare`` (exact, read now);
- in-flight: ``messages_unacknowledged`` from the management API, when ``management_url`` is set
  (the management plugin refreshes it every ``collect_statistics_interval``, 5 s by default);
- discovery: the management API's queue list; without it, the queues given with ``--queue``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import amqp
import amqp.exceptions

from lensing_core.brokers.base import (
    DEFAULT_EXCLUDED_QUEUES,
    BrokerConfigError,
    BrokerReadError,
    BrokerSnapshot,
    QueueDepth,
    QueueReader,
    is_excluded,
)

log = logging.getLogger(__name__)


class RabbitManagementClient:
    """The few calls of the RabbitMQ management HTTP API the reader needs."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout = timeout

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        url = f"{self.base_url}/api/queues/{quote(vhost, safe='')}?columns=name,messages_ready,messages_unacknowledged"
        request = urllib.request.Request(url, headers=self._headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            data = json.load(response)
        if not isinstance(data, list):
            raise ValueError("management API answered something other than a list of queues")
        return data


def management_client(url: str, username: str, password: str) -> RabbitManagementClient:
    """The management API at ``url``; credentials in the URL (``http://user:pass@host:15672``, as Flower and
    celery-exporter take it) win over the broker URL's, and are kept out of the address urllib is given."""
    parsed = urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port == -1:
        raise BrokerConfigError("management_url: expected http(s)://[USER:PASSWORD@]HOST[:PORT]")
    if parsed.username is not None:
        username = unquote(parsed.username)
        password = unquote(parsed.password or "")
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        netloc = f"{host}:{port}" if port else host
        url = parsed._replace(netloc=netloc).geturl()
    return RabbitManagementClient(url, username, password)


class AmqpQueueReader(QueueReader):
    transport = "amqp"

    def __init__(
        self,
        connection_kwargs: Mapping[str, Any],
        queues: Iterable[str] = (),
        *,
        vhost: str = "/",
        management: RabbitManagementClient | None = None,
        exclude: Sequence[str] = DEFAULT_EXCLUDED_QUEUES,
    ) -> None:
        super().__init__(queues)
        if not self.configured_queues and management is None:
            raise BrokerConfigError(
                "RabbitMQ cannot list its queues over AMQP: give --queue NAME (repeatable) or enable the "
                "management plugin and add --broker-transport-option management_url=http://HOST:15672"
            )
        self.connection_kwargs = dict(connection_kwargs)
        self.vhost = vhost
        self.management = management
        self.exclude = tuple(exclude)
        self._connection: amqp.Connection | None = None
        self._channel: Any = None

    def _ensure_channel(self) -> Any:
        if self._connection is None or not self._connection.connected:
            self._connection = amqp.Connection(**self.connection_kwargs)
            self._connection.connect()
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def _ready_count(self, queue: str) -> int | None:
        """The ready count, or None when the queue does not exist."""
        channel = self._ensure_channel()
        try:
            _name, ready, _consumers = channel.queue_declare(queue=queue, passive=True)
        except amqp.exceptions.NotFound:
            self._channel = None  # the broker closed the channel
            return None
        return int(ready)

    def _unacked_counts(self) -> dict[str, int] | None:
        """Unacknowledged counts by queue from the management API; None when it cannot be read and
        the queues are named with --queue (the ready counts are still exact; in-flight goes absent)."""
        if self.management is None:
            return None
        try:
            rows = self.management.queues(self.vhost)
        except (urllib.error.URLError, ValueError, OSError) as exc:
            if not self.configured_queues:
                raise
            log.warning("rabbitmq management API unreadable, in-flight counts absent this read: %s", exc)
            return None
        unacked: dict[str, int] = {}
        for row in rows:
            name = str(row.get("name", ""))
            if name and not is_excluded(name, self.exclude):
                unacked[name] = int(row.get("messages_unacknowledged") or 0)
        return unacked

    def read(self) -> BrokerSnapshot:
        started = time.perf_counter()
        try:
            unacked = self._unacked_counts()
            names = self.configured_queues or tuple(sorted(unacked or ()))
            depths: dict[str, QueueDepth] = {}
            for name in names:
                ready = self._ready_count(name)
                if ready is None:
                    continue
                # A queue the management API does not list yet (its stats lag) has no known in-flight count.
                depths[name] = QueueDepth(waiting=ready, inflight=None if unacked is None else unacked.get(name))
        except (urllib.error.URLError, ValueError, OSError) as exc:
            self._drop_connection()
            if isinstance(exc, urllib.error.HTTPError):
                reason = "auth" if exc.code in (401, 403) else "response"
            else:
                reason = "connection" if isinstance(exc, OSError) else "response"
            raise BrokerReadError(reason, f"rabbitmq read failed: {exc}") from exc
        except amqp.exceptions.AccessRefused as exc:
            self._drop_connection()
            raise BrokerReadError("auth", f"rabbitmq refused access: {exc}") from exc
        except (amqp.exceptions.AMQPError, amqp.exceptions.RecoverableConnectionError) as exc:
            self._drop_connection()
            raise BrokerReadError("connection", f"rabbitmq connection failed: {exc}") from exc
        return BrokerSnapshot(queues=depths, read_at=time.time(), duration=time.perf_counter() - started)

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._drop_connection()


def open_amqp_reader(url: str, options: Mapping[str, Any], queues: Iterable[str]) -> AmqpQueueReader:
    parsed = urlsplit(url)
    secure = parsed.scheme == "amqps"
    username = unquote(parsed.username) if parsed.username else "guest"
    password = unquote(parsed.password) if parsed.password else "guest"
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    vhost = options.get("vhost") or (unquote(path) if path else "/")
    connection_kwargs: dict[str, Any] = {
        "host": f"{parsed.hostname or 'localhost'}:{parsed.port or (5671 if secure else 5672)}",
        "userid": username,
        "password": password,
        "virtual_host": vhost,
        "connect_timeout": float(options.get("connect_timeout", 5.0)),
        "read_timeout": 5.0,
        "write_timeout": 5.0,
    }
    if secure:
        connection_kwargs["ssl"] = ssl.create_default_context()
    management_url = options.get("management_url")
    management = management_client(str(management_url), username, password) if management_url else None
    return AmqpQueueReader(connection_kwargs, queues, vhost=vhost, management=management)
