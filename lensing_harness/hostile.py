"""What a hostile client does to a server on loopback, bounded in count and time: connections that stay
silent (after the TLS handshake, or before the ClientHello), slow request heads, and fuzzed requests;
and the server's resident memory sampled meanwhile. Used by tests/adapter/test_hostile.py,
tests/integration/test_exporter_hostile.py and benchmarks/hostile_connections.py, fuzz_adapter.py."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@dataclass
class Held:
    """Connections held open by a hostile client: close them with :meth:`close`."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    failed: int = 0

    def __len__(self) -> int:
        return len(self.writers) + len(self.sockets)

    async def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        for sock in self.sockets:
            sock.close()
        self.writers.clear()
        self.sockets.clear()
        await asyncio.sleep(0)


async def open_silent_tls(port: int, count: int, *, concurrency: int = 64, timeout: float = 10.0) -> Held:
    """``count`` connections that finish the TLS handshake (no client certificate) and then send nothing."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    held = Held()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=context), timeout
                )
            except (OSError, TimeoutError, ssl.SSLError):
                held.failed += 1
                return
            held.writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return held


def open_silent_tcp(port: int, count: int, *, deadline_s: float = 30.0) -> Held:
    """``count`` TCP connections that send nothing at all (no ClientHello, no request)."""
    held = Held()
    deadline = time.monotonic() + deadline_s
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            held.failed += 1
            sock.close()
            continue
        held.sockets.append(sock)
    return held


def alive(held: Held) -> int:
    """How many of the held plain sockets the server has not closed yet."""
    count = 0
    for sock in held.sockets:
        sock.setblocking(False)
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            count += 1
            continue
        except OSError:
            continue
        if data:
            count += 1
    return count


# -- fuzzing -------------------------------------------------------------------------------------------
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\x80\x80", b"\xf4\x90\x80\x80"]


def fuzz_request(rng: random.Random, path: str, token: str = "t0ken") -> bytes:
    """One request, valid or broken in one or more of the ways a fuzzer breaks HTTP."""
    method = rng.choice([b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"G\x00T", b"\xffGET", b"", b"GET GET"])
    target = path.encode()
    query = rng.choice(
        [
            b"",
            b"?labelSelector=queue%3Danalyses",
            b"?labelSelector=queue%253Danalyses",
            b"?labelSelector=queue%3D%FF",
            b"?labelSelector=" + b"%" * rng.randint(1, 5),
            b"?labelSelector=queue+in+(" + b",".join(b"q%d" % i for i in range(rng.randint(1, 900))) + b")",
            b"?labelSelector=" + rng.choice(BAD_BYTES),
            b"?" + bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))),
        ]
    )
    if rng.random() < 0.1:
        target = rng.choice([b"*", b"", b"//", b"/apis/" + rng.choice(BAD_BYTES), b"/%ff%fe", b"/" + b"a" * 9000])
    version = rng.choice([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b"", b"HTTP/1.1 extra"])
    headers = [b"Host: localhost", b"Connection: close"]
    token_bytes = token.encode()
    if rng.random() < 0.3:
        token_bytes = token_bytes + rng.choice(BAD_BYTES)
    if rng.random() < 0.6:
        headers.append(b"Authorization: Bearer " + token_bytes)
    for _ in range(rng.choice([0, 0, 0, 1, 3, 200])):
        headers.append(b"X-%d: %s" % (rng.randrange(1000), bytes(rng.randrange(32, 256) for _ in range(20))))
    extra = rng.random()
    if extra < 0.05:
        headers.append(b"X-Big: " + b"a" * rng.choice([9000, 70000]))
    elif extra < 0.1:
        headers.append(b"Content-Length: " + rng.choice([b"-1", b"99999999", b"abc", b"1, 2"]))
    elif extra < 0.15:
        headers.append(b"Transfer-Encoding: " + rng.choice([b"chunked", b"gzip, chunked", b"\xff"]))
    elif extra < 0.2:
        headers.append(rng.choice([b"NoColon", b": empty-name", b"Bad Name: x", b"X-\xff: y", b" folded"]))
    elif extra < 0.25:
        headers.append(b"Accept: " + rng.choice(BAD_BYTES) * 3)
    line_end = rng.choice([b"\r\n"] * 8 + [b"\n", b"\r"])
    head = method + b" " + target + query + b" " + version + line_end + line_end.join(headers) + line_end + line_end
    if rng.random() < 0.05:
        head = head[: rng.randrange(len(head))]  # truncated: the head deadline closes it
    if rng.random() < 0.05:
        head += b"0\r\n\r\n" if rng.random() < 0.5 else bytes(rng.randrange(256) for _ in range(64))
    return head


@dataclass
class FuzzResult:
    statuses: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    seconds: float = 0.0

    def server_errors(self) -> dict[str, int]:
        """5xx answers other than 503: none is acceptable."""
        return {code: n for code, n in self.statuses.items() if code.startswith("5") and code != "503"}


async def fuzz(
    port: int,
    count: int,
    make_context: Callable[[], ssl.SSLContext] | None,
    path: str,
    *,
    seed: int = 1,
    concurrency: int = 16,
    deadline_s: float = 600.0,
    reply_timeout: float = 10.0,
) -> FuzzResult:
    """Send ``count`` fuzzed requests, one a connection, ``concurrency`` at a time; stops at ``deadline_s``.
    ``make_context``: TLS (None: plain HTTP)."""
    rng = random.Random(seed)
    result = FuzzResult()
    started = time.monotonic()
    contexts = [make_context() for _ in range(2)] if make_context else []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(fuzz_request(rng, path))

    async def worker(index: int) -> None:
        while not queue.empty() and time.monotonic() - started < deadline_s:
            request = queue.get_nowait()
            context = contexts[index % 2] if contexts else None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=context), reply_timeout
                )
            except (OSError, TimeoutError, ssl.SSLError):
                result.statuses["connect-failed"] += 1
                continue
            try:
                writer.write(request)
                first = await asyncio.wait_for(reader.readline(), reply_timeout)
                match = STATUS_LINE.match(first)
                result.statuses[match.group(1).decode() if match else "closed"] += 1
            except (OSError, TimeoutError, ssl.SSLError, ValueError, asyncio.IncompleteReadError):
                result.statuses["closed"] += 1
            finally:
                result.sent += 1
                writer.transport.abort()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result
