"""The command-line options both faces take: the broker to read, the logging and the connection limits."""

from __future__ import annotations

import argparse
import json

from lensing_core.logsetup import LOG_FORMATS, LOG_LEVELS
from lensing_core.net import Limits
from lensing_core.options import add_option, positive_float, positive_int

DEFAULTS = Limits()


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


def add_connection_arguments(parser: argparse.ArgumentParser, env_prefix: str, max_connections: int) -> None:
    """--max-connections and the deadlines of a connection; ``max_connections`` is the face's default,
    sized to its chart memory limit (docs/benchmarks.md, "Hostile connections")."""
    group = parser.add_argument_group("connections")
    for flag, default, kind, text in (
        (
            "--max-connections",
            max_connections,
            positive_int,
            "connections held at once; past it the oldest one not answering a request is closed "
            f"(default {max_connections})",
        ),
        (
            "--tls-handshake-timeout",
            DEFAULTS.tls_handshake_timeout,
            positive_float,
            f"seconds a TLS handshake may take (default {DEFAULTS.tls_handshake_timeout:g})",
        ),
        (
            "--header-timeout",
            DEFAULTS.header_timeout,
            positive_float,
            "seconds from a connection (or a request's first byte) to the end of its request head "
            f"(default {DEFAULTS.header_timeout:g})",
        ),
        (
            "--idle-timeout",
            DEFAULTS.idle_timeout,
            positive_float,
            f"seconds a keep-alive connection may sit idle between requests (default {DEFAULTS.idle_timeout:g})",
        ),
    ):
        env = env_prefix + flag.lstrip("-").upper().replace("-", "_")
        add_option(group, flag, type=kind, default=default, metavar="N", env=env, help=text)


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        max_connections=args.max_connections,
        tls_handshake_timeout=args.tls_handshake_timeout,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
    )
