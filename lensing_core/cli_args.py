"""The command-line options both faces take: the broker to read and the logging."""

from __future__ import annotations

import argparse
import json

from lensing_core.logsetup import LOG_FORMATS, LOG_LEVELS
from lensing_core.options import add_option, positive_float


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """The broker options shared by the exporter and the adapter."""
    add_option(
        parser,
        "--broker-url",
        env="CELERY_BROKER_URL",
        default="",
        help="Celery broker URL: redis://, rediss:// (TLS), sentinel://h1:26379;sentinel://h2:26379, "
        "amqp://, amqps://, sqs://",
    )
    add_option(
        parser,
        "--broker-transport-option",
        dest="transport_options",
        action="append",
        metavar="KEY=VALUE",
        env="CELERY_BROKER_TRANSPORT_OPTIONS",
        env_parser=transport_options_from_env,
        help="Celery broker_transport_options entry, repeatable; VALUE may be JSON. Redis: global_keyprefix, "
        "sep, priority_steps, unacked_key, master_name, sentinel_kwargs; RabbitMQ: management_url (enables "
        "discovery and in-flight counts); SQS: queue_name_prefix, predefined_queues, region, endpoint_url. "
        "The variable holds a JSON object or KEY=VALUE entries separated by ';'",
    )
    add_option(
        parser,
        "--queue",
        dest="queues",
        action="append",
        metavar="NAME",
        env="LENSING_QUEUES",
        help="queue to watch, repeatable; default: discover queues from the broker (Redis bindings, "
        "SQS prefix listing or predefined_queues, RabbitMQ management API)",
    )
    add_option(
        parser,
        "--poll-interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        env="LENSING_POLL_INTERVAL",
        help="seconds between broker reads (default 1)",
    )


def transport_options_from_env(raw: str) -> list[str]:
    """``{"global_keyprefix": "app:"}`` or ``global_keyprefix=app:;sep=.`` as KEY=VALUE items."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
        if not isinstance(mapping, dict):
            raise ValueError("expected a JSON object")
        return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in mapping.items()]
    return [item.strip() for item in text.split(";") if item.strip()]


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        env="LENSING_LOG_LEVEL",
        help="log level (default info)",
    )
    add_option(
        parser,
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        env="LENSING_LOG_FORMAT",
        help="log format (default text)",
    )
