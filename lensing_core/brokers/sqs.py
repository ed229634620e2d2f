"""Queue depth on Amazon SQS (sqs://), named as kombu's SQS transport names queues.

waiting = ApproximateNumberOfMessages, in-flight = ApproximateNumberOfMessagesNotVisible,
delayed = ApproximateNumberOfMessagesDelayed. Queues are ``predefined_queues`` when given, else
the queues listed under ``queue_name_prefix``, else those given with ``--queue``.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.config
import botocore.exceptions

from lensing_core.brokers.base import BrokerConfigError, BrokerReadError, BrokerSnapshot, QueueDepth, QueueReader

ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
# kombu: dots become dashes, other punctuation but '-' and '_' becomes '_'.
_ENTITY_TABLE = {ord(c): 0x5F for c in string.punctuation if c not in "-_."}
_ENTITY_TABLE[0x2E] = 0x2D


def sqs_entity_name(name: str) -> str:
    if name.endswith(".fifo"):
        return name[: -len(".fifo")].translate(_ENTITY_TABLE) + ".fifo"
    return name.translate(_ENTITY_TABLE)


class SqsQueueReader(QueueReader):
    """One GetQueueAttributes per queue, up to ``parallel`` at a time (SQS has no batch form)."""

    transport = "sqs"

    def __init__(
        self,
        client: Any,
        queues: Iterable[str] = (),
        *,
        queue_name_prefix: str = "",
        predefined_queues: Mapping[str, Mapping[str, Any]] | None = None,
        discovery_interval: float = 30.0,
        client_for: Callable[[Mapping[str, Any]], Any] | None = None,
        parallel: int = 8,
    ) -> None:
        super().__init__(queues)
        self.client = client
        self.prefix = queue_name_prefix
        for name, cfg in (predefined_queues or {}).items():
            if not isinstance(cfg, Mapping) or not cfg.get("url"):
                raise BrokerConfigError(
                    f'predefined_queues[{name!r}] needs a "url": {{"{name}": {{"url": "https://sqs..."}}}}'
                )
        self.predefined = {name: str(cfg["url"]) for name, cfg in (predefined_queues or {}).items()}
        # kombu gives a predefined queue its own client when it names its own region or keys.
        self._clients: dict[str, Any] = {}
        for name, cfg in (predefined_queues or {}).items():
            if client_for is not None and {"region", "access_key_id", "secret_access_key"} & set(cfg):
                self._clients[name] = client_for(cfg)
        self.discovery_interval = discovery_interval
        self._urls: dict[str, str] = dict(self.predefined)
        self._discovered_at = float("-inf")
        self._pool = ThreadPoolExecutor(max_workers=max(parallel, 1), thread_name_prefix="sqs-read")

    def _discover(self) -> None:
        urls: dict[str, str] = {}
        if self.configured_queues:
            for queue in self.configured_queues:
                try:
                    response = self.client.get_queue_url(QueueName=sqs_entity_name(self.prefix + queue))
                except botocore.exceptions.ClientError as exc:
                    if _missing(exc):
                        continue
                    raise
                urls[queue] = response["QueueUrl"]
        else:
            entity_prefix = sqs_entity_name(self.prefix)
            paginator = self.client.get_paginator("list_queues")
            for page in paginator.paginate(QueueNamePrefix=entity_prefix):
                for url in page.get("QueueUrls", []):
                    entity = url.rstrip("/").rsplit("/", 1)[-1]
                    # The label is the SQS name less the prefix: kombu's translation ('.' -> '-') is one-way.
                    urls[entity[len(entity_prefix) :]] = url
        self._urls = urls
        self._discovered_at = time.monotonic()

    def _attributes(self, queue: str, url: str) -> dict[str, str] | None:
        client = self._clients.get(queue, self.client)
        try:
            return dict(client.get_queue_attributes(QueueUrl=url, AttributeNames=ATTRIBUTES)["Attributes"])
        except botocore.exceptions.ClientError as exc:
            if _missing(exc):
                return None
            raise

    def read(self) -> BrokerSnapshot:
        started = time.perf_counter()
        depths: dict[str, QueueDepth] = {}
        try:
            if not self.predefined and time.monotonic() - self._discovered_at >= self.discovery_interval:
                self._discover()
            wanted = [
                (queue, url)
                for queue, url in sorted(self._urls.items())
                if not self.configured_queues or queue in self.configured_queues
            ]
            results = list(self._pool.map(lambda item: self._attributes(*item), wanted))
            for (queue, _url), attrs in zip(wanted, results, strict=True):
                if attrs is None:  # deleted since discovery: gone from the export, rediscovered next read
                    self._discovered_at = float("-inf")
                    continue
                depths[queue] = QueueDepth(
                    waiting=int(attrs.get("ApproximateNumberOfMessages", 0)),
                    inflight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                    delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
                )
        except botocore.exceptions.NoCredentialsError as exc:
            raise BrokerReadError("auth", f"sqs: no AWS credentials: {exc}") from exc
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            reason = "auth" if "Access" in code or "Signature" in code or "Token" in code else "response"
            raise BrokerReadError(reason, f"sqs: {exc}") from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise BrokerReadError("connection", f"sqs: {exc}") from exc
        return BrokerSnapshot(queues=depths, read_at=time.time(), duration=time.perf_counter() - started)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _missing(exc: botocore.exceptions.ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return "NonExistentQueue" in code or "QueueDoesNotExist" in code


def open_sqs_reader(url: str, options: Mapping[str, Any], queues: Iterable[str]) -> SqsQueueReader:
    parsed = urlsplit(url)
    is_secure = options.get("is_secure", True)
    endpoint_url = options.get("endpoint_url")
    if endpoint_url is None and parsed.hostname:
        port = f":{parsed.port}" if parsed.port else ""
        endpoint_url = f"{'https' if is_secure else 'http'}://{parsed.hostname}{port}"
    access_key = unquote(parsed.username) if parsed.username else None
    secret_key = unquote(parsed.password) if parsed.password else None
    region = options.get("region") or boto3.Session().region_name or "us-east-1"
    config = botocore.config.Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1})

    def client_for(cfg: Mapping[str, Any]) -> Any:
        session = boto3.Session(
            aws_access_key_id=cfg.get("access_key_id", access_key),
            aws_secret_access_key=cfg.get("secret_access_key", secret_key),
            region_name=cfg.get("region", region),
        )
        return session.client("sqs", endpoint_url=endpoint_url, config=config)

    return SqsQueueReader(
        client_for({}),
        queues,
        queue_name_prefix=options.get("queue_name_prefix", ""),
        predefined_queues=options.get("predefined_queues"),
        client_for=client_for,
    )
