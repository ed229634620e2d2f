"""A stand-in for the platform's Celery app: analysis tasks with the shape of the real ones.

Used by `make demo` and by the tests, which start real workers on it:

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A lensing_harness.sample_tasks worker -Q analyses

Settings come from the environment so a test can point a worker at its own broker, key prefix
or queues: CELERY_BROKER_URL, LENSING_TRANSPORT_OPTIONS (JSON), LENSING_PREFETCH (worker prefetch
multiplier), LENSING_ACKS_LATE (1 = acknowledge after the task ran, so running tasks stay unacked;
default 0: Celery's early acknowledgement, as the platform runs), LENSING_COUNTER_URL (the Redis the
tracked tasks decrement their counter in; default the broker).
"""

from __future__ import annotations

import json
import os
import random
import time

from celery import Celery

app = Celery("lensing_sample", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_transport_options=json.loads(os.environ.get("LENSING_TRANSPORT_OPTIONS", "{}")),
    worker_prefetch_multiplier=int(os.environ.get("LENSING_PREFETCH", "4")),
    task_acks_late=os.environ.get("LENSING_ACKS_LATE", "0") == "1",
    task_default_queue="analyses",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_send_sent_event=True,
)


@app.task(name="lensing.analyse_lens")
def analyse_lens(lens_id: int, seconds: float = 1.0) -> dict[str, float]:
    """Pretend to fit a lens model: sleep for ``seconds``, return a made-up Einstein radius."""
    time.sleep(seconds)
    return {"lens_id": lens_id, "einstein_radius_arcsec": round(random.uniform(0.5, 2.0), 3)}


def _finished(counter: str) -> None:
    import redis

    url = os.environ.get("LENSING_COUNTER_URL") or os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url)
    try:
        client.decr(counter)
    finally:
        client.close()


@app.task(name="lensing.tracked")
def tracked(counter: str, seconds: float = 1.0) -> None:
    """Sleep ``seconds``, then decrement the Redis key ``counter``: the producer's count of unfinished tasks."""
    time.sleep(seconds)
    _finished(counter)


@app.task(name="lensing.tracked_late", acks_late=True)
def tracked_late(counter: str, seconds: float = 1.0) -> None:
    """:func:`tracked`, acknowledged after it ran whatever the app's default (a mix of acknowledgement modes)."""
    time.sleep(seconds)
    _finished(counter)


@app.task(name="lensing.fail")
def fail(message: str = "model did not converge") -> None:
    raise RuntimeError(message)


@app.task(name="lensing.flaky", bind=True, max_retries=1, default_retry_delay=0.2)
def flaky(self, seconds: float = 0.1) -> str:  # type: ignore[no-untyped-def]
    """Fails on its first run, succeeds on the retry."""
    time.sleep(seconds)
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("transient failure"))
    return "ok"
