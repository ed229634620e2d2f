"""Remote control of the workers, on a thread of its own (never on the scrape or event path).

- ``enable_events`` broadcast every ``--enable-events-interval`` seconds (and at each connection),
  so workers started without ``-E`` send task events;
- a ``heartbeat`` broadcast at each connection, so live workers are known within a round trip;
- once per new worker hostname: ``inspect active_queues`` (the queues behind ``celery_workers{queue}``)
  and ``inspect stats`` (its pool size, behind ``celery_worker_slots``).
"""

from __future__ import annotations

import logging
import queue
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lensing_core.background import BackgroundThread
from lensing_sources.events.state import ActiveTask

log = logging.getLogger(__name__)

#: how long a hostname already asked is not asked again (a flapping worker costs one inspect per period)
REASK_AFTER = 300.0
INSPECT_TIMEOUT = 2.0
MAX_PENDING = 1000
#: a worker asked while it starts may not consume from its queues yet: ask again after these delays
RETRY_DELAYS = (3.0, 10.0, 30.0)

#: a worker running tasks the stream did not fully show is asked `inspect active` at most this often
ACTIVE_EVERY = 1.0

WorkerInfo = Callable[[str, list[str] | None, int | None], None]
ActiveTasks = Callable[[str, list[ActiveTask], list[ActiveTask]], None]


class WorkerControl:
    def __init__(
        self,
        broker_url: str,
        transport_options: Mapping[str, Any],
        on_worker_info: WorkerInfo,
        enable_events_interval: float = 60.0,
        on_active_tasks: ActiveTasks | None = None,
    ) -> None:
        from celery import Celery

        self.app = Celery("lensing-metrics-control", broker=broker_url, set_as_current=False)
        self.app.conf.broker_transport_options = dict(transport_options)
        self.app.conf.broker_connection_retry_on_startup = False
        self.on_worker_info = on_worker_info
        self.on_active_tasks = on_active_tasks
        self._active_asked: dict[str, float] = {}
        self.enable_events_interval = enable_events_interval
        self._pending: queue.Queue[tuple[str, str]] = queue.Queue(MAX_PENDING)
        self._asked: OrderedDict[str, float] = OrderedDict()
        self._retry: dict[str, tuple[float, int]] = {}  # hostname -> (when, attempt)
        self._worker = BackgroundThread(self._run, name="events-control")
        self._stop = self._worker.stopping
        self._failing = False

    # -- called from the consumer thread; never blocks -------------------------------------------
    def connected(self) -> None:
        self._put(("connected", ""))

    def new_workers(self, hostnames: Iterable[str]) -> None:
        for hostname in hostnames:
            self._put(("inspect", hostname))

    def unresolved(self, hostnames: Iterable[str]) -> None:
        now = time.monotonic()
        for hostname in hostnames:
            if now - self._active_asked.get(hostname, float("-inf")) >= ACTIVE_EVERY:
                self._active_asked[hostname] = now
                self._put(("active", hostname))
        if len(self._active_asked) > MAX_PENDING:
            self._active_asked = {h: t for h, t in self._active_asked.items() if now - t < ACTIVE_EVERY}

    def _put(self, item: tuple[str, str]) -> None:
        try:
            self._pending.put_nowait(item)
        except queue.Full:
            log.debug("remote-control queue full: %s dropped", item)

    # -- the control thread -------------------------------------------------------------------
    def _run(self) -> None:
        next_enable = time.monotonic() + self.enable_events_interval
        while not self._stop.is_set():
            timeout = max(next_enable - time.monotonic(), 0.0) if self.enable_events_interval > 0 else 1.0
            try:
                kind, hostname = self._pending.get(timeout=min(timeout, 1.0))
            except queue.Empty:
                kind, hostname = "", ""
            try:
                if kind == "connected":
                    self._broadcast_enable()
                    self.app.control.heartbeat()
                    next_enable = time.monotonic() + self.enable_events_interval
                elif kind == "inspect":
                    self._inspect(hostname)
                elif kind == "active" and self.on_active_tasks is not None:
                    self._active(hostname, self.on_active_tasks)
                for hostname, (due, attempt) in list(self._retry.items()):
                    if time.monotonic() >= due:
                        del self._retry[hostname]
                        self._inspect(hostname, attempt)
                if self.enable_events_interval > 0 and time.monotonic() >= next_enable:
                    self._broadcast_enable()
                    next_enable = time.monotonic() + self.enable_events_interval
                if self._failing:
                    log.info("remote control of the workers works again")
                    self._failing = False
            except Exception as exc:  # the broker is down, or a worker answered nonsense: try later
                if not self._failing:
                    log.warning("remote control of the workers failed (%s); retrying later", exc)
                self._failing = True
                self._stop.wait(1.0)

    def _broadcast_enable(self) -> None:
        if self.enable_events_interval > 0:
            self.app.control.enable_events()

    def _active(self, hostname: str, on_answer: ActiveTasks) -> None:
        # The worker runs tasks the stream did not show: most often its task events are off because
        # an enable_events (fire and forget) went out while it was not listening yet. Ask again.
        if self.enable_events_interval > 0:
            self.app.control.enable_events(destination=[hostname])
        inspect = self.app.control.inspect(destination=[hostname], timeout=INSPECT_TIMEOUT)
        active = (inspect.active() or {}).get(hostname)
        reserved = (inspect.reserved() or {}).get(hostname)
        if active is not None or reserved is not None:
            on_answer(hostname, parse_active_tasks(active), parse_active_tasks(reserved))

    def _inspect(self, hostname: str, attempt: int = 0) -> None:
        now = time.monotonic()
        asked = self._asked.get(hostname)
        if attempt == 0 and asked is not None and now - asked < REASK_AFTER:
            return
        self._asked[hostname] = now
        self._asked.move_to_end(hostname)
        while len(self._asked) > MAX_PENDING:
            self._asked.popitem(last=False)
        if self.enable_events_interval > 0:
            self.app.control.enable_events(destination=[hostname])
        inspect = self.app.control.inspect(destination=[hostname], timeout=INSPECT_TIMEOUT)
        queues = parse_active_queues((inspect.active_queues() or {}).get(hostname))
        slots = parse_pool_size((inspect.stats() or {}).get(hostname))
        self.on_worker_info(hostname, queues or None, slots)
        if not queues or slots is None:
            if attempt < len(RETRY_DELAYS) and len(self._retry) < MAX_PENDING:
                self._retry[hostname] = (now + RETRY_DELAYS[attempt], attempt + 1)
            else:
                log.info("worker %s did not tell its queues: they are learned from its tasks", hostname)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
        self.app.close()


def parse_active_queues(answer: Any) -> list[str] | None:
    if not isinstance(answer, list):
        return None
    return [q["name"] for q in answer if isinstance(q, dict) and isinstance(q.get("name"), str)]


def parse_pool_size(answer: Any) -> int | None:
    pool = answer.get("pool") if isinstance(answer, dict) else None
    size = pool.get("max-concurrency") if isinstance(pool, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def parse_active_tasks(answer: Any) -> list[ActiveTask]:
    """The requests of ``inspect active``: id, name, the routing key it was delivered with (Celery
    routes to a queue by its name by default) and when it started (the worker's wall clock)."""
    out: list[ActiveTask] = []
    for request in answer if isinstance(answer, list) else ():
        if not isinstance(request, dict) or not isinstance(request.get("id"), str):
            continue
        info = request.get("delivery_info")
        key = info.get("routing_key") if isinstance(info, dict) else None
        name, started, acked = request.get("name"), request.get("time_start"), request.get("acknowledged")
        out.append(
            ActiveTask(
                request["id"],
                name if isinstance(name, str) else None,
                key if isinstance(key, str) else None,
                float(started) if isinstance(started, int | float) and not isinstance(started, bool) else None,
                acked if isinstance(acked, bool) else None,
            )
        )
    return out
