"""The listening lifecycle both faces share: an aiohttp runner on HOST:PORT until a stop event, behind a
connection gate.

The gate accepts TCP itself (``loop.create_server`` with a plain protocol) and only then, for a slot
under the cap, wraps the connection in TLS: a connection over the cap never reaches Python's SSL
machinery, whose buffers cost about 300 KB a connection. When the cap is reached the oldest connection
that has sent no request byte yet is closed to make room, else the oldest one that is not answering a
request (in its handshake, sending its request head, or idle between requests), so hostile connections
cannot keep a normal client out; memory is bounded by
the cap whatever the number of connections. Each stage has a deadline: the TLS handshake, the request
head (slowloris), the keep-alive idle time (aiohttp's ``keepalive_timeout``).

A client's malformed request is answered by the face's ``error_body`` (the adapter: a metav1.Status),
logged at DEBUG (a WARNING at most once a minute, with the counts) and counted by reason; never a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import socket
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from prometheus_client.core import CounterMetricFamily

from lensing_core.catalog import counter

#: why a connection or request was refused: the ``reason`` label of ``*_http_rejected_total``
REASONS = (
    "bad_request",  # a request the HTTP parser refused
    "header_too_large",  # a request line or header over the limits (431)
    "body_too_large",  # a declared body over the limit (413)
    "invalid_utf8",  # bytes that are not UTF-8 in the path, query or a header
    "head_timeout",  # the request head was not complete within --header-timeout
    "tls_handshake",  # the TLS handshake failed or was not done within --tls-handshake-timeout
    "evicted",  # closed, not answering a request, to make room under --max-connections
)
WARNING_INTERVAL = 60.0
#: a burst this large that closes triggers malloc_trim: glibc keeps freed arenas otherwise
TRIM_AFTER_PEAK = 64


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 512
    tls_handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    max_body_size: int = 64 * 1024


class Rejections:
    """Counts refused requests and connections by reason; logs each at DEBUG and, at most once a
    ``WARNING_INTERVAL``, one WARNING with the counts since the last one."""

    def __init__(self, metric: str, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.metric = metric
        self.log = log
        self.counts: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self._clock = clock
        self._since_warning: Counter[str] = Counter()
        self._next_warning = 0.0

    def reject(self, reason: str, peer: object, detail: str = "") -> None:
        self.counts[reason] += 1
        self._since_warning[reason] += 1
        self.log.debug("refused a connection from %s: %s %s", peer, reason, detail[:200])
        now = self._clock()
        if now >= self._next_warning:
            summary = ", ".join(f"{r} {n}" for r, n in sorted(self._since_warning.items()))
            self.log.warning("refused malformed or idle client requests (since the last warning): %s", summary)
            self._since_warning.clear()
            self._next_warning = now + WARNING_INTERVAL

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = counter(self.metric)
        for reason, count in sorted(self.counts.items()):
            family.add_metric([reason], count)
        yield family


ErrorBody = Callable[[int, str], web.Response]


def text_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _classify(status: int, exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, LineTooLong) or (isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)):
        return 431, "header_too_large"
    if isinstance(exc, (HttpProcessingError, BadHttpMethod)):
        return 400, "bad_request"
    return status, "bad_request"


class GuardedHandler(RequestHandler):
    """aiohttp's handler, answering the parser's errors with the face's body, counted, without a traceback."""

    rejections: Rejections
    error_body: ErrorBody

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        code, reason = _classify(status, exc)
        self.rejections.reject(reason, request.remote, str(exc))
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        text = {431: "request header fields too large"}.get(code, "the request could not be parsed")
        response = self.error_body(code, f"{text}: {getattr(exc, 'message', '') or exc}"[:300])
        response.force_close()
        return response


class _Connection(asyncio.Protocol):
    """One accepted socket: until its first byte arrives only the socket itself (no transport, no TLS
    buffers); then TLS (when the listener has a context) and aiohttp's handler, with the head deadline
    kept here from the bytes that go by."""

    def __init__(self, gate: Gate, sock: socket.socket, peer: object) -> None:
        self.gate = gate
        self.sock: socket.socket | None = sock
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.handler: RequestHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_head = True  # until the first request head is complete
        self._tail = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._closed = False
        self._handed_over = False  # connect_accepted_socket has the socket: asyncio closes it
        self._spoke = False  # an HTTP byte came (after TLS, if any)

    # -- from the gate ----------------------------------------------------------------------------
    def start(self) -> None:
        """Wait (cheaply: a reader on the socket) for the ClientHello, within the handshake deadline."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        if self.gate.ssl_context is None:
            self._task = self.gate.spawn(self._wrap())
            return
        self._deadline = loop.call_later(self.gate.limits.tls_handshake_timeout, self.abort, "tls_handshake")
        loop.add_reader(self.sock.fileno(), self._readable)

    def silent(self) -> bool:
        """Has sent no request byte yet (no ClientHello, in its handshake, or TLS and then nothing): the first
        to make room, so that a flood of new connections never closes a client's kept-alive connection."""
        return not self._spoke and not self._closed

    def evictable(self) -> bool:
        """Not answering a request: in the handshake, sending a head, or idle between requests."""
        handler = self.handler
        return handler is None or self._in_head or getattr(handler, "_current_request", None) is None

    def abort(self, reason: str) -> None:
        if self._closed:
            return
        self.gate.rejections.reject(reason, self.peer)
        self._shut()

    # -- from the event loop -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.sock = None  # the transport owns it now
        self.transport = transport
        if self._closed:
            transport.abort()
            return
        self._arm(self.gate.limits.header_timeout)
        handler = self.gate.handler_factory()
        self.handler = handler
        handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._closed or self.handler is None:
            return
        self._spoke = True
        self.gate.touch(self)
        if not self._in_head:
            self._in_head = True
            self._arm(self.gate.limits.header_timeout)
        seen = self._tail + data
        if b"\r\n\r\n" in seen:
            # The head is complete (pipelined heads are aiohttp's to parse: it is bounded by its limits).
            self._in_head = False
            self._disarm()
        self._tail = seen[-3:]
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            self.handler.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        self.gate.release(self)
        if self.handler is not None:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    # -- inside ---------------------------------------------------------------------------------
    def _readable(self) -> None:
        sock = self.sock
        assert sock is not None
        asyncio.get_running_loop().remove_reader(sock.fileno())
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            first = b"?"
        except OSError:
            first = b""
        if not first:  # closed before a ClientHello: no TLS machinery for it
            self._shut()
            return
        self._task = self.gate.spawn(self._wrap())

    async def _wrap(self) -> None:
        sock = self.sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        self._handed_over = True
        try:
            await loop.connect_accepted_socket(
                lambda: self,
                sock,
                ssl=self.gate.ssl_context,
                ssl_handshake_timeout=self.gate.limits.tls_handshake_timeout if self.gate.ssl_context else None,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.gate.rejections.log.debug("TLS handshake with %s: %s", self.peer, exc)
            self.abort("tls_handshake")
        else:
            self._disarm() if self.handler is None else None

    def _shut(self) -> None:
        self._closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()  # connection_lost releases the slot
            return
        sock, self.sock = self.sock, None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            if self._handed_over:
                # asyncio owns the socket (the handshake is under way): cancelling it closes the half-built
                # transport, socket included; touching the socket here would race the transport for its fd
                sock = None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self.gate.release(self)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._head_timeout)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timeout(self) -> None:
        self._deadline = None
        if self._in_head:
            self.abort("head_timeout")


class Gate:
    """The connections of one listener, oldest activity first, at most ``limits.max_connections``. It
    accepts the sockets itself, so that a connection costs a socket until it sends its first byte."""

    def __init__(
        self,
        handler_factory: Callable[[], RequestHandler],
        limits: Limits,
        rejections: Rejections,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.handler_factory = handler_factory
        self.limits = limits
        self.rejections = rejections
        self.ssl_context = ssl_context
        self.connections: OrderedDict[_Connection, None] = OrderedDict()
        self.peak = 0
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._trim: asyncio.TimerHandle | None = None

    def listen(self, host: str, port: int, backlog: int) -> None:
        """Bind and listen (OSError when it cannot), then accept on the event loop."""
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.create_server((host, port), family=family, backlog=backlog)
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):  # a batch, then the loop's other work
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next readiness retries
                self.rejections.log.warning("accepting a connection failed: %s", exc)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, sock, peer)
            if self.admit(connection):
                connection.start()

    def admit(self, connection: _Connection) -> bool:
        while len(self.connections) >= self.limits.max_connections:
            victim = next((c for c in self.connections if c.silent()), None) or next(
                (c for c in self.connections if c.evictable()), None
            )
            if victim is None:  # every slot is answering a request: the newcomer goes
                connection.abort("evicted")
                return False
            self.connections.pop(victim, None)
            victim.abort("evicted")
        self.connections[connection] = None
        self.peak = max(self.peak, len(self.connections))
        return True

    def touch(self, connection: _Connection) -> None:
        if connection in self.connections:
            self.connections.move_to_end(connection)

    def release(self, connection: _Connection) -> None:
        if self.connections.pop(connection, 0) == 0:
            return
        if self.peak >= TRIM_AFTER_PEAK and len(self.connections) <= self.peak // 8 and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(1.0, self._release_memory)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _release_memory(self) -> None:
        self._trim = None
        self.peak = len(self.connections)
        malloc_trim()

    def close(self) -> None:
        """Stop accepting; close what has no handler yet (aiohttp's shutdown closes the others)."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for connection in list(self.connections):
            if connection.handler is None:
                connection._shut()
        for task in list(self._tasks):
            task.cancel()
        if self._trim is not None:
            self._trim.cancel()


def malloc_trim() -> bool:
    """Hand freed heap back to the system (glibc keeps it otherwise); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(name).malloc_trim(0))
    return False


def handler_factory(
    server: web.Server, limits: Limits, rejections: Rejections, error_body: ErrorBody
) -> Callable[[], RequestHandler]:
    """aiohttp handlers for ``server`` with the limits, answering malformed requests with ``error_body``."""
    handler_class = type(
        "Handler", (GuardedHandler,), {"rejections": rejections, "error_body": staticmethod(error_body)}
    )
    loop = asyncio.get_running_loop()

    def make() -> RequestHandler:
        return handler_class(
            server,
            loop=loop,
            keepalive_timeout=limits.idle_timeout,
            lingering_time=0.0,  # an unread body closes the connection after the answer: no waiting on it
            access_log=None,
            logger=rejections.log,
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_field_size,
            max_headers=limits.max_headers,
        )

    return make


async def serve_until(
    runner: web.BaseRunner,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    name: str,
    url: str,
    log: logging.Logger,
    start: Callable[[], None],
    shutdown: Callable[[], None],
    limits: Limits,
    rejections: Rejections,
    error_body: ErrorBody = text_error,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 128,
) -> None:
    """Listen, then ``start`` the background work; when ``stop`` is set, close the listener first (no request
    reaches work being stopped) and run ``shutdown`` on a thread (it joins background threads). A listener
    that cannot bind raises OSError before anything is started."""
    await runner.setup()
    assert runner.server is not None
    gate = Gate(handler_factory(runner.server, limits, rejections, error_body), limits, rejections, ssl_context)
    try:
        gate.listen(host, port, backlog)
    except BaseException:
        await runner.cleanup()
        raise
    start()
    log.info("%s listening on %s (at most %d connections)", name, url, limits.max_connections)
    try:
        await stop.wait()
    finally:
        log.info("%s stopping", name)
        gate.close()
        await runner.cleanup()
        await asyncio.to_thread(shutdown)
