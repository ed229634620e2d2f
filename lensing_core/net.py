"""The listening lifecycle both faces share: an aiohttp runner on HOST:PORT until a stop event."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from aiohttp import web


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
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 128,
) -> None:
    """Listen, then ``start`` the background work; when ``stop`` is set, close the listener first (no request
    reaches work being stopped) and run ``shutdown`` on a thread (it joins background threads). A listener
    that cannot bind raises OSError before anything is started."""
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=backlog)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    start()
    log.info("%s listening on %s", name, url)
    try:
        await stop.wait()
    finally:
        log.info("%s stopping", name)
        await runner.cleanup()
        await asyncio.to_thread(shutdown)
