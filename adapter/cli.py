"""`lensing-metrics adapter` (also `python -m adapter`): serve external.metrics.k8s.io to the aggregation layer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence

from adapter import custom_cli, pod_cost
from adapter.apiserver.groups import ExternalMetricsAPI, MetricsAPI
from adapter.apiserver.metrics import AdapterStats
from adapter.apiserver.server import MAX_CONNECTIONS, AdapterServer
from adapter.authconfig import AuthSettingsSource
from adapter.authn import Authenticator
from adapter.authz import Authorizer
from adapter.config import BrokerConfig, ConfigError, load_config, single_broker
from adapter.kubeapi import KubeAPIError, KubeClient, KubeConfigError, in_cluster, load_kubeconfig
from adapter.pki import load_pem_certificates
from adapter.providers.brokers import BrokerMetrics, open_bindings
from adapter.tls import ReloadingServerContext, TLSConfigError, serving_files
from lensing_core.background import supervise
from lensing_core.brokers import BrokerConfigError
from lensing_core.cli_args import add_broker_arguments, add_connection_arguments, add_logging_arguments, limits_from
from lensing_core.logsetup import configure_logging
from lensing_core.options import MAX_NUMBER, ArgumentParser, add_option, positive_float
from lensing_sources import events

log = logging.getLogger("adapter")

DESCRIPTION = """\
Serve external.metrics.k8s.io/v1beta1 to the Kubernetes aggregation layer: celery_queue_length (waiting)
and celery_queue_backlog (waiting + in flight) per queue, read from the broker in the background.
With --prometheus-url, also custom.metrics.k8s.io/v1beta2 and v1beta1 (http_requests_per_second per pod
and per namespace by default; PromQL rules in --config) and PromQL-backed external metrics.

Flags that kube-apiserver also has keep its names and meanings. Every request is authenticated (client
certificate, front-proxy certificate + X-Remote-* headers, or bearer token via TokenReview) and authorized
(SubjectAccessReview, cached). A value older than --max-staleness is never served: the answer is 503.
"""

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def duration(text: str) -> float:
    """Seconds, from a Go duration (``10s``, ``1m30s``, ``500ms``) or a plain number of seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not text or not match or not any(match.groups()):
            raise argparse.ArgumentTypeError(f"expected a duration such as 10s, 1m30s or 500ms, got {text!r}") from None
        h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
        value = h * 3600 + m * 60 + s + ms / 1000
    if not math.isfinite(value) or not 0 <= value <= MAX_NUMBER:
        raise argparse.ArgumentTypeError(
            f"expected a duration from 0 to {MAX_NUMBER:g} seconds such as 10s, 1m30s or 500ms, got {text!r}"
        )
    return value


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or ArgumentParser(prog="lensing-metrics adapter")
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    opt = parser.add_argument_group("serving")
    add_option(
        opt,
        "--secure-port",
        metavar="PORT",
        type=port,
        default=6443,
        env="LENSING_ADAPTER_SECURE_PORT",
        help="HTTPS port (default 6443)",
    )
    add_option(
        opt,
        "--bind-address",
        metavar="ADDRESS",
        default="0.0.0.0",
        env="LENSING_ADAPTER_BIND_ADDRESS",
        help="address to listen on (default 0.0.0.0)",
    )
    add_option(
        opt,
        "--tls-cert-file",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_TLS_CERT_FILE",
        help="serving certificate (PEM, with intermediates); reloaded when it changes on disk",
    )
    add_option(
        opt,
        "--tls-private-key-file",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_TLS_PRIVATE_KEY_FILE",
        help="private key of --tls-cert-file",
    )
    add_option(
        opt,
        "--cert-dir",
        metavar="DIR",
        default="apiserver.local.config/certificates",
        env="LENSING_ADAPTER_CERT_DIR",
        help="where a self-signed certificate is written when no --tls-cert-file is given "
        "(default apiserver.local.config/certificates)",
    )
    add_connection_arguments(parser, "LENSING_ADAPTER_", max_connections=MAX_CONNECTIONS)
    auth = parser.add_argument_group("authentication and authorization")
    add_option(
        auth,
        "--client-ca-file",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_CLIENT_CA_FILE",
        help="CA bundle for client certificates (user = CN, groups = O); default: from the "
        "extension-apiserver-authentication ConfigMap",
    )
    add_option(
        auth,
        "--requestheader-client-ca-file",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_REQUESTHEADER_CLIENT_CA_FILE",
        help="CA bundle of the front proxy (the aggregator); its certificates may name the user in headers",
    )
    add_option(
        auth,
        "--requestheader-allowed-names",
        metavar="NAMES",
        type=csv_list,
        default=[],
        env="LENSING_ADAPTER_REQUESTHEADER_ALLOWED_NAMES",
        help="comma-separated CNs allowed as front proxy (default: any CN the front-proxy CA signed)",
    )
    add_option(
        auth,
        "--requestheader-username-headers",
        metavar="HEADERS",
        type=csv_list,
        default=[],
        env="LENSING_ADAPTER_REQUESTHEADER_USERNAME_HEADERS",
        help="user name headers (default X-Remote-User)",
    )
    add_option(
        auth,
        "--requestheader-group-headers",
        metavar="HEADERS",
        type=csv_list,
        default=[],
        env="LENSING_ADAPTER_REQUESTHEADER_GROUP_HEADERS",
        help="group headers (default X-Remote-Group)",
    )
    add_option(
        auth,
        "--requestheader-extra-headers-prefix",
        metavar="PREFIXES",
        type=csv_list,
        default=[],
        env="LENSING_ADAPTER_REQUESTHEADER_EXTRA_HEADERS_PREFIX",
        help="extra-attribute header prefixes (default X-Remote-Extra-)",
    )
    add_option(
        auth,
        "--authentication-kubeconfig",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_AUTHENTICATION_KUBECONFIG",
        help="kubeconfig of the API server for TokenReview and the ConfigMap (default: in-cluster, if any)",
    )
    add_option(
        auth,
        "--authorization-kubeconfig",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_AUTHORIZATION_KUBECONFIG",
        help="kubeconfig of the API server for SubjectAccessReview (default: in-cluster, if any)",
    )
    add_option(
        auth,
        "--authorization-always-allow-paths",
        metavar="PATHS",
        type=csv_list,
        default=["/healthz", "/readyz", "/livez"],
        env="LENSING_ADAPTER_AUTHORIZATION_ALWAYS_ALLOW_PATHS",
        help="paths served without authentication or authorization; a trailing * matches a prefix "
        "(default /healthz,/readyz,/livez)",
    )
    add_option(
        auth,
        "--authorization-always-allow-groups",
        metavar="GROUPS",
        type=csv_list,
        default=["system:masters"],
        env="LENSING_ADAPTER_AUTHORIZATION_ALWAYS_ALLOW_GROUPS",
        help="groups allowed everything without asking (default system:masters)",
    )
    add_option(
        auth,
        "--authentication-token-webhook-cache-ttl",
        metavar="DURATION",
        type=duration,
        default=10.0,
        env="LENSING_ADAPTER_TOKEN_CACHE_TTL",
        help="how long TokenReview answers are kept (default 10s)",
    )
    add_option(
        auth,
        "--authorization-webhook-cache-authorized-ttl",
        metavar="DURATION",
        type=duration,
        default=10.0,
        env="LENSING_ADAPTER_AUTHORIZED_TTL",
        help="how long an allow is kept (default 10s)",
    )
    add_option(
        auth,
        "--authorization-webhook-cache-unauthorized-ttl",
        metavar="DURATION",
        type=duration,
        default=10.0,
        env="LENSING_ADAPTER_UNAUTHORIZED_TTL",
        help="how long a deny is kept (default 10s)",
    )
    brokers = parser.add_argument_group("brokers")
    add_option(
        brokers,
        "--config",
        metavar="FILE",
        default="",
        env="LENSING_ADAPTER_CONFIG",
        help="YAML file of brokers, each bound to namespaces (see docs/adapter.md); replaces --broker-url",
    )
    add_broker_arguments(brokers)  # type: ignore[arg-type]
    add_option(
        brokers,
        "--max-staleness",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        env="LENSING_ADAPTER_MAX_STALENESS",
        help="answer 503 when the last good broker read is older than this (default 10)",
    )
    # the running part of the backlog: the exporter's event consumer, with the flags it needs
    events_group = parser.add_argument_group("Celery events (the running part of celery_queue_backlog)")
    events.add_arguments(events_group, only=events.ADAPTER_OPTIONS)  # type: ignore[arg-type]
    custom_cli.add_arguments(parser)
    pod_cost.add_arguments(parser)
    add_logging_arguments(parser)
    return parser


def _kube(path: str) -> KubeClient | None:
    connection = load_kubeconfig(path) if path else in_cluster()
    return KubeClient(connection) if connection else None


def brokers_from(args: argparse.Namespace) -> list[BrokerConfig]:
    if args.config:
        # Pods often carry CELERY_BROKER_URL for the workers' sake: settings that only came from the
        # environment give way to the file; the same settings given as flags are a contradiction.
        from_flags = [
            flag
            for flag, value, env in (
                ("--broker-url", args.broker_url, "CELERY_BROKER_URL"),
                ("--broker-transport-option", args.transport_options, "CELERY_BROKER_TRANSPORT_OPTIONS"),
                ("--queue", args.queues, "LENSING_QUEUES"),
            )
            if value and not os.environ.get(env)
        ]
        if from_flags:
            raise ConfigError(
                f"--config names the brokers: {', '.join(from_flags)} go in the file, not on the command line"
            )
        if args.broker_url or args.transport_options or args.queues:
            log.info("--config names the brokers; the broker settings from the environment are not used")
        return load_config(args.config)
    if not args.broker_url:
        raise ConfigError("no broker: give --broker-url (or CELERY_BROKER_URL) or --config")
    return [single_broker(args.broker_url, args.transport_options, args.queues)]


def build_apis(args: argparse.Namespace, custom: custom_cli.CustomSetup) -> tuple[list[MetricsAPI], BrokerMetrics]:
    """The API groups the adapter serves, each with its providers: external metrics from the brokers (plus
    PromQL rules when configured), custom metrics from Prometheus when --prometheus-url is set; and the
    broker provider itself. Raises ConfigError/BrokerConfigError for unusable settings."""
    bindings = open_bindings(brokers_from(args), args.poll_interval, args)
    brokers = BrokerMetrics(bindings, max_staleness=args.max_staleness)
    try:
        external = ExternalMetricsAPI([brokers, *custom.external_providers()])
    except ValueError as exc:  # a PromQL metric named as a broker metric
        raise ConfigError(str(exc)) from None
    return [external, *custom.apis()], brokers


def build_pod_cost(args: argparse.Namespace, brokers: BrokerMetrics) -> pod_cost.PodCostAnnotator | None:
    """The pod deletion cost loop (--pod-deletion-cost), fed by the event stream of the broker that serves the
    workers' namespace. Raises ConfigError when it is asked for and cannot work."""
    settings = pod_cost.settings_from(args)
    if settings is None:
        return None
    binding = brokers.binding_for(settings.namespace)
    if binding is None or binding.events is None:
        raise ConfigError(
            f"--pod-deletion-cost needs the Celery event stream of the broker serving namespace "
            f"{settings.namespace!r} (--events on, a Redis or RabbitMQ broker)"
        )
    kube = _kube(args.lister_kubeconfig)
    if kube is None:
        raise ConfigError("--pod-deletion-cost needs the Kubernetes API: run in a pod, or give --lister-kubeconfig")
    log.info(
        "pod deletion cost: worker pods %s in namespace %s, every %gs",
        settings.selector,
        settings.namespace,
        settings.interval,
    )
    return pod_cost.PodCostAnnotator(kube, binding.events.running_by_worker, settings)


def check_ca_files(args: argparse.Namespace) -> None:
    """A CA file named on the command line must be there and hold PEM certificates: refusing to start
    beats starting and refusing every client."""
    for flag, path in (
        ("--client-ca-file", args.client_ca_file),
        ("--requestheader-client-ca-file", args.requestheader_client_ca_file),
    ):
        if not path:
            continue
        try:
            with open(path, "rb") as handle:
                certificates = load_pem_certificates(handle.read())
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot be read: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{flag} {path}: not PEM certificates: {str(exc).split('.')[0]}") from None
        if not certificates:
            raise ConfigError(f"{flag} {path}: no PEM certificate in the file")


async def _serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    check_ca_files(args)
    stats = AdapterStats()
    authn_kube = _kube(args.authentication_kubeconfig)
    authz_kube = _kube(args.authorization_kubeconfig) if args.authorization_kubeconfig else authn_kube
    settings = AuthSettingsSource(
        client_ca_file=args.client_ca_file or None,
        requestheader_ca_file=args.requestheader_client_ca_file or None,
        allowed_names=args.requestheader_allowed_names or None,
        username_headers=args.requestheader_username_headers or None,
        group_headers=args.requestheader_group_headers or None,
        extra_prefixes=args.requestheader_extra_headers_prefix or None,
    )
    follow: asyncio.Task[None] | None = None
    if authn_kube is not None and not (args.client_ca_file and args.requestheader_client_ca_file):
        # read before serving, so the TLS layer knows at start whether to ask for client certificates
        version = None
        try:
            version = await settings.read_configmap(authn_kube)
        except KubeAPIError as exc:
            log.warning("the extension-apiserver-authentication ConfigMap cannot be read yet: %s", exc)
        kube, seen = authn_kube, version
        follow = asyncio.create_task(
            supervise(lambda: settings.follow_configmap(kube, last_version=seen), "auth-configmap")
        )
    hosts = ["localhost", "127.0.0.1", socket.gethostname()]
    cert, key = serving_files(args.tls_cert_file or None, args.tls_private_key_file or None, args.cert_dir, hosts)
    tls = ReloadingServerContext(cert, key, settings)
    custom = custom_cli.build(args)
    apis, brokers = build_apis(args, custom)
    annotator = build_pod_cost(args, brokers)
    server = AdapterServer(
        apis,
        Authenticator(settings, authn_kube, stats, token_ttl=args.authentication_token_webhook_cache_ttl),
        Authorizer(
            authz_kube,
            stats,
            always_allow_paths=args.authorization_always_allow_paths,
            always_allow_groups=args.authorization_always_allow_groups,
            allowed_ttl=args.authorization_webhook_cache_authorized_ttl,
            denied_ttl=args.authorization_webhook_cache_unauthorized_ttl,
        ),
        stats,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    background = [follow] if follow is not None else []
    if annotator is not None:
        stats.registry.register(annotator.collector())
        background.append(asyncio.create_task(supervise(annotator.run, "pod-deletion-cost")))
    try:
        await server.serve(args.bind_address, args.secure_port, tls.listening, stop, limits_from(args))
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if annotator is not None:
            await annotator.close()
        for client in {authn_kube, authz_kube} - {None}:
            assert client is not None
            await client.close()
        await custom.close()
    return 0


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    try:
        return asyncio.run(_serve(args))
    except (ConfigError, BrokerConfigError, TLSConfigError, KubeConfigError) as exc:
        print(f"lensing-metrics adapter: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"lensing-metrics adapter: error: cannot listen on {args.bind_address}:{args.secure_port}: {exc}",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
