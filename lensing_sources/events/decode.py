"""Celery event messages off the wire into event dicts.

A worker's EventDispatcher publishes one event (a dict) or, for buffered task events, a list of
them (routing key ``task.multi``), serialized as JSON. On Redis kombu wraps the body in a JSON
envelope with the body base64-encoded; on RabbitMQ the body is the message body itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

JSON_TYPES = frozenset({"application/json", None})


class DropMessage(ValueError):
    """The message is not usable; ``reason`` is the bounded label of celery_events_dropped_total."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_body(body: bytes | str, content_type: str | None, headers: Mapping[str, Any] | None = None) -> list[Any]:
    """The events in one message body. Only JSON is read: pickle from a broker would run code."""
    if headers and headers.get("compression"):
        raise DropMessage("compressed")
    if content_type not in JSON_TYPES:
        raise DropMessage("serializer")
    try:
        decoded = json.loads(body)
    except (ValueError, TypeError):
        raise DropMessage("malformed") from None
    if isinstance(decoded, list):
        return decoded
    return [decoded]


def decode_kombu_envelope(payload: bytes | str) -> list[Any]:
    """The events in one message of kombu's virtual transports (Redis pub/sub)."""
    try:
        envelope = json.loads(payload)
        body = envelope["body"]
        properties = envelope.get("properties") or {}
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return decode_body(body, envelope.get("content-type"), envelope.get("headers"))
    except DropMessage:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise DropMessage("malformed") from None
