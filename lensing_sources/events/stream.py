"""Subscriptions to Celery's event stream: Redis pub/sub fanout and RabbitMQ's ``celeryev`` topic exchange.

Each stream is used from one thread: ``connect()``, then ``read(timeout)`` until it raises
:class:`StreamError`, then ``close()``. ``read`` returns raw payloads; ``decode`` turns one into events.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import redis

from lensing_sources.events.decode import decode_body, decode_kombu_envelope

EVENT_EXCHANGE = "celeryev"
#: messages read per call of ``read`` at most, so the state lock is never held for long
BATCH = 512


class StreamError(RuntimeError):
    """The subscription is lost; ``reason`` is a short label (connection, auth, protocol)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EventStream(Protocol):
    description: str

    def connect(self) -> None: ...

    def read(self, timeout: float) -> list[Any]: ...

    def decode(self, payload: Any) -> list[Any]: ...

    def close(self) -> None: ...


class RedisEventStream:
    """PSUBSCRIBE to the topics kombu publishes fanout messages on: ``<global_keyprefix>/<db>.celeryev/<routing key>``
    (``fanout_patterns``, kombu's default) and ``<global_keyprefix>/<db>.celeryev`` (without it).

    It reads one connection of its own, outside redis-py's PubSub, whose transparent reconnection
    would hide the gap in the stream.
    """

    def __init__(self, client: redis.Redis, global_keyprefix: str = "", idle_ping: float = 5.0) -> None:
        self.client = client
        db = client.connection_pool.connection_kwargs.get("db", 0)
        base = f"{global_keyprefix}/{db}.{EVENT_EXCHANGE}"
        literal = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in base)  # a prefix is not a pattern
        self.patterns = (literal + "/*", literal)
        self.description = f"redis pub/sub {base}/*"
        self.idle_ping = idle_ping
        self._conn: Any = None
        self._last_rx = 0.0
        self._ping_sent: float | None = None

    def connect(self) -> None:
        self.close()
        conn = self.client.connection_pool.make_connection()
        try:
            conn.connect()
            conn.send_command("PSUBSCRIBE", *self.patterns)
        except (redis.RedisError, OSError) as exc:
            with contextlib.suppress(Exception):
                conn.disconnect()
            raise _redis_error(exc) from exc
        self._conn = conn
        self._last_rx = time.monotonic()
        self._ping_sent = None

    def read(self, timeout: float) -> list[Any]:
        conn = self._conn
        if conn is None:
            raise StreamError("connection", "not connected")
        out: list[Any] = []
        try:
            if conn.can_read(timeout=timeout):
                while True:
                    # push_request: pub/sub messages are returned, not handed to redis-py's push handler
                    response = conn.read_response(push_request=True)
                    if isinstance(response, list) and response and response[0] == b"pmessage":
                        out.append(response[3])
                    if len(out) >= BATCH or not conn.can_read(timeout=0):
                        break
                self._last_rx = time.monotonic()
                self._ping_sent = None
            self._check_alive()
        except (redis.RedisError, OSError) as exc:
            raise _redis_error(exc) from exc
        return out

    def _check_alive(self) -> None:
        """With no worker sending, silence is normal: a PING tells a quiet connection from a dead one."""
        now = time.monotonic()
        if self._ping_sent is not None:
            if now - self._ping_sent > self.idle_ping:
                raise StreamError("connection", f"no answer to PING in {self.idle_ping:.0f}s")
        elif now - self._last_rx > self.idle_ping:
            self._conn.send_command("PING")
            self._ping_sent = now

    def decode(self, payload: Any) -> list[Any]:
        return decode_kombu_envelope(payload)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()


def _redis_error(exc: Exception) -> StreamError:
    if isinstance(exc, redis.AuthenticationError):
        return StreamError("auth", f"redis refused the credentials: {exc}")
    if isinstance(exc, redis.ResponseError):
        return StreamError("protocol", f"redis answered an error: {exc}")
    return StreamError("connection", f"redis connection lost: {exc}")


class AmqpEventStream:
    """A queue of our own (auto-deleted, messages expire as in Celery's EventReceiver) bound to
    ``celeryev`` with ``#``, consumed without acknowledgements."""

    def __init__(self, url: str, queue_ttl: float = 5.0, queue_expires: float = 60.0) -> None:
        self.url = url
        self.queue_ttl = queue_ttl
        self.queue_expires = queue_expires
        self.description = f"rabbitmq exchange {EVENT_EXCHANGE}"
        self._conn: Any = None
        self._buffer: list[Any] = []

    def connect(self) -> None:
        import kombu

        self.close()
        conn = kombu.Connection(self.url, connect_timeout=5, heartbeat=10)
        try:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            # declared exactly as Celery declares it, or RabbitMQ refuses the second declaration
            exchange = kombu.Exchange(EVENT_EXCHANGE, type="topic", channel=channel)
            exchange.declare()
            queue = kombu.Queue(
                f"celeryev.lensing-metrics.{uuid.uuid4().hex}",
                exchange,
                routing_key="#",
                auto_delete=True,
                durable=False,
                message_ttl=self.queue_ttl,
                expires=self.queue_expires,
                channel=channel,
            )
            queue.declare()
            channel.basic_consume(queue.name, no_ack=True, callback=self._on_message)
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.release()
            raise self._error(conn, exc) from exc
        self._conn = conn
        self._buffer = []

    def _on_message(self, message: Any) -> None:
        properties: Mapping[str, Any] = getattr(message, "properties", {}) or {}
        self._buffer.append((message.body, properties.get("content_type"), properties.get("application_headers")))

    def read(self, timeout: float) -> list[Any]:
        conn = self._conn
        if conn is None:
            raise StreamError("connection", "not connected")
        try:
            conn.heartbeat_check()
            with contextlib.suppress(socket.timeout, TimeoutError):
                conn.drain_events(timeout=timeout)
                while len(self._buffer) < BATCH:
                    conn.drain_events(timeout=0)
        except Exception as exc:
            raise self._error(conn, exc) from exc
        out, self._buffer = self._buffer, []
        return out

    @staticmethod
    def _error(conn: Any, exc: Exception) -> Exception:
        if isinstance(exc, StreamError):
            return exc
        errors = tuple(getattr(conn, "connection_errors", ())) + tuple(getattr(conn, "channel_errors", ()))
        if isinstance(exc, (*errors, OSError)):
            reason = "auth" if "ACCESS_REFUSED" in str(exc) else "connection"
            return StreamError(reason, f"rabbitmq event stream lost: {exc!r}")
        return exc

    def decode(self, payload: Any) -> list[Any]:
        body, content_type, headers = payload
        return decode_body(body, content_type, headers)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.release()
