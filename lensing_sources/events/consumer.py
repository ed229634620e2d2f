"""Reads the event stream on its own thread into :class:`EventState`; reconnects with backoff."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

from lensing_core.background import BackgroundThread
from lensing_sources.events.decode import DropMessage
from lensing_sources.events.state import EventState
from lensing_sources.events.stream import EventStream, StreamError

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.5
SWEEP_EVERY = 1.0
TRIM_EVERY = 10.0


def _heap_trimmer() -> Callable[[], None]:
    """glibc's malloc_trim, or a no-op where there is none.

    Each event passes through a few short-lived objects too big for Python's small-object allocator
    (the message, the decoded dict); between long-lived ones they leave holes glibc does not give back,
    and RSS creeps up in steps under a steady stream. Trimming now and then keeps it flat.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None

    def trim_now() -> None:
        trim(0)

    return trim_now


trim_heap = _heap_trimmer()


class EventConsumer:
    def __init__(
        self,
        stream: EventStream,
        state: EventState,
        *,
        on_connected: Callable[[], None] | None = None,
        on_new_workers: Callable[[list[str]], None] | None = None,
        on_unresolved: Callable[[list[str]], None] | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        self.stream = stream
        self.state = state
        self.on_connected = on_connected
        self.on_new_workers = on_new_workers
        self.on_unresolved = on_unresolved
        self.max_backoff = max_backoff
        self.last_error: str | None = None
        self._worker = BackgroundThread(self._run, name="events-consumer", on_crash=self._crashed)
        self._stop = self._worker.stopping
        self._ever_connected = False

    def process(self, payloads: list[object]) -> None:
        """Decode and apply one batch (the consumer thread's work; public for the benchmark)."""
        decode = self.stream.decode
        state = self.state
        with state.lock:
            for payload in payloads:
                try:
                    events = decode(payload)
                except DropMessage as exc:
                    state.received += 1
                    state.dropped[exc.reason] += 1
                    continue
                for event in events:
                    state.apply(event)
            new = state.drain_new_workers() if state.new_workers else []
        if new and self.on_new_workers is not None:
            self.on_new_workers(new)

    def _session(self) -> None:
        """One connection: subscribe, then read until the stream fails or we are stopped."""
        self.stream.connect()
        with self.state.lock:
            if self._ever_connected:
                self.state.reconnects += 1
            self.state.on_connected()
        self._ever_connected = True
        self.last_error = None
        log.info("event stream connected: %s", self.stream.description)
        if self.on_connected is not None:
            self.on_connected()
        next_sweep = time.monotonic() + SWEEP_EVERY
        next_trim = time.monotonic() + TRIM_EVERY
        while not self._stop.is_set():
            payloads = self.stream.read(READ_TIMEOUT)
            if payloads:
                self.process(payloads)
            now = time.monotonic()
            if now >= next_sweep:
                self.housekeeping(trim=now >= next_trim)
                next_sweep = now + SWEEP_EVERY
                if now >= next_trim:
                    next_trim = now + TRIM_EVERY

    def housekeeping(self, trim: bool = False) -> None:
        """Expire state (every second); give freed heap back to the OS (every few seconds)."""
        with self.state.lock:
            self.state.sweep()
            unresolved = self.state.unresolved_workers
        if unresolved and self.on_unresolved is not None:
            self.on_unresolved(unresolved)
        if trim:
            trim_heap()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._session()
                failures = 0
            except StreamError as exc:
                self._down(exc.reason, str(exc), failures)
                failures += 1
            finally:
                self.stream.close()
            if not self._stop.is_set() and failures:
                self._stop.wait(min(0.5 * 2 ** (failures - 1), self.max_backoff))

    def _down(self, reason: str, message: str, failures: int) -> None:
        with self.state.lock:
            was_up = self.state.connected
            self.state.on_disconnected()
        self.last_error = f"{reason}: {message}"
        if was_up or failures == 0:
            log.warning("event stream %s lost (%s); reconnecting with backoff", self.stream.description, message)

    def _crashed(self, exc: BaseException | None) -> None:
        """The consumer loop died (it is restarted): until it subscribes again the stream reads as down."""
        self._down("internal", repr(exc), 0)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
