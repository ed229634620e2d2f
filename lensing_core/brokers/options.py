"""Parsing of ``--broker-transport-option KEY=VALUE`` with Celery's meanings."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lensing_core.brokers.base import BrokerConfigError

log = logging.getLogger(__name__)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _separator(value: Any) -> str:
    # Accept the escaped form people type in shells and YAML ("\\x06\\x16") as well as the raw bytes.
    text = _str(value)
    if "\\" in text:
        text = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    if not text:
        raise ValueError("the separator must not be empty")
    return text


def _priority_steps(value: Any) -> list[int]:
    if isinstance(value, str):
        value = [part for part in value.replace("[", "").replace("]", "").split(",") if part.strip()]
    if not isinstance(value, list) or not value:
        raise ValueError("expected a list of integers such as [0,3,6,9] or 0,3,6,9")
    try:
        steps = sorted({int(v) for v in value})
    except (TypeError, ValueError):
        raise ValueError("expected a list of integers such as [0,3,6,9] or 0,3,6,9") from None
    if steps[0] < 0:
        raise ValueError("priority steps must be >= 0")
    return steps


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object such as {"celery": {"url": "https://..."}}')
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def _timeout(value: Any) -> float:
    seconds = _number(value)
    if not math.isfinite(seconds) or not 0 < seconds <= 3600:
        raise ValueError("expected seconds above 0 and at most 3600")
    return seconds


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ValueError("expected true or false")


Parser = Callable[[Any], Any]

#: Options the readers use, per transport family, with their parser.
KNOWN_OPTIONS: Mapping[str, Mapping[str, Parser]] = {
    "redis": {
        "global_keyprefix": _str,
        "sep": _separator,
        "priority_steps": _priority_steps,
        "unacked_key": _str,
        "master_name": _str,
        "sentinel_kwargs": _mapping,
        "socket_timeout": _timeout,
        "socket_connect_timeout": _timeout,
    },
    "amqp": {
        "management_url": _str,
        "vhost": _str,
        "connect_timeout": _timeout,
    },
    "sqs": {
        "queue_name_prefix": _str,
        "predefined_queues": _mapping,
        "region": _str,
        "is_secure": _bool,
        "endpoint_url": _str,
    },
}


def _decode(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_transport_options(items: Iterable[str], transport: str) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into typed options; values may be JSON (lists, objects, numbers)."""
    known = KNOWN_OPTIONS.get(transport, {})
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BrokerConfigError(
                f"--broker-transport-option {item!r}: expected KEY=VALUE, for example global_keyprefix=app:"
            )
        parser = known.get(key)
        if parser is None:
            log.warning(
                "transport option %r is not used by the %s reader and is ignored (used: %s)",
                key,
                transport,
                ", ".join(sorted(known)),
            )
            continue
        try:
            # Separators and prefixes are taken literally: "\x06\x16" must not be JSON-decoded away.
            options[key] = parser(raw if parser in (_str, _separator) else _decode(raw))
        except ValueError as exc:
            raise BrokerConfigError(f"--broker-transport-option {key}={raw!r}: {exc}") from None
    return options
