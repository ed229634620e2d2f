"""One queue-depth reader per broker, behind :class:`QueueReader`. The exporter and the adapter both use these.

``open_reader(url, option_items, queues)`` picks the reader from the URL's scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from lensing_core.brokers.base import (
    BrokerConfigError,
    BrokerReadError,
    BrokerSnapshot,
    QueueDepth,
    QueueReader,
)
from lensing_core.brokers.options import parse_transport_options

__all__ = [
    "SCHEMES",
    "BrokerConfigError",
    "BrokerReadError",
    "BrokerSnapshot",
    "QueueDepth",
    "QueueReader",
    "open_reader",
    "redact_url",
    "transport_of",
]

#: URL scheme -> transport family
SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "sqs": "sqs",
}
ACCEPTED = "redis://, rediss://, sentinel://, amqp://, amqps://, pyamqp://, sqs://"


def transport_of(url: str) -> str:
    """The transport family of a broker URL, or BrokerConfigError naming what is accepted."""
    if not url or not url.strip():
        raise BrokerConfigError(f"no broker URL: set --broker-url or CELERY_BROKER_URL (accepted: {ACCEPTED})")
    scheme, sep, _rest = url.partition("://")
    if not sep:
        raise BrokerConfigError(f"broker URL {redact_url(url)!r} is not a URL (accepted: {ACCEPTED})")
    family = SCHEMES.get(scheme.lower())
    if family is None:
        raise BrokerConfigError(f"unknown broker transport {scheme!r} in the broker URL (accepted: {ACCEPTED})")
    for part in url.split(";"):
        try:
            urlsplit(part.strip()).port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise BrokerConfigError(f"broker URL {redact_url(url)!r}: {exc} (accepted: {ACCEPTED})") from None
    return family


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and errors."""
    out = []
    for part in url.split(";"):
        try:
            parsed = urlsplit(part)
        except ValueError:  # not a URL (an unclosed "[" of an IPv6 host): hide whatever sits before "@"
            out.append(re.sub(r"//[^/@]*@", "//***@", part))
            continue
        if parsed.password:
            netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
            part = parsed._replace(netloc=netloc).geturl()
        out.append(part)
    return ";".join(out)


def open_redis(url: str, option_items: Iterable[str] = ()) -> tuple[Any, str, dict[str, Any]]:
    """A Redis client for a redis://, rediss:// or sentinel:// broker URL, its ``global_keyprefix`` and the
    parsed transport options. Raises BrokerConfigError for anything unusable; connects lazily."""
    family = transport_of(url)
    if family != "redis":
        raise BrokerConfigError(f"broker URL {redact_url(url)!r} is not a Redis broker")
    from lensing_core.brokers.redis import open_redis_client

    options = parse_transport_options(option_items, family)
    return open_redis_client(url, options), options.get("global_keyprefix", ""), options


def open_reader(url: str, option_items: Iterable[str] = (), queues: Iterable[str] = (), **kwargs: Any) -> QueueReader:
    """Build the reader for ``url``. Raises BrokerConfigError for anything unusable; connects lazily."""
    family = transport_of(url)
    options = parse_transport_options(option_items, family)
    if family == "redis":
        from lensing_core.brokers.redis import open_redis_reader

        return open_redis_reader(url, options, queues, **kwargs)
    if family == "amqp":
        from lensing_core.brokers.amqp import open_amqp_reader

        return open_amqp_reader(url, options, queues)
    from lensing_core.brokers.sqs import open_sqs_reader

    return open_sqs_reader(url, options, queues)
