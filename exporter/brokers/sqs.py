"""Queue depth on Amazon SQS (sqs://), named as kombu's SQS transport names queues.

waiting = ApproximateNumberOfMessages, in-flight = ApproximateNumberOfMessagesNotVisible,
delayed = ApproximateNumberOfMessagesDelayed. Queues are ``predefined_queues`` when given, else
the queues listed under ``queue_name_prefix``, else those given with ``--queue``.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.config
import botocore.exceptions

from exporter.brokers.base import BrokerReadError, BrokerSnapshot, QueueDepth, QueueReader

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
    transport = "sqs"

    def __init__(
        self,
        client: Any,
        queues: Iterable[str] = (),
        *,
        queue_name_prefix: str = "",
        predefined_queues: Mapping[str, Mapping[str, Any]] | None = None,
        discovery_interval: float = 30.0,
    ) -> None:
        super().__init__(queues)
        self.client = client
        self.prefix = queue_name_prefix
        self.predefined = {name: str(cfg["url"]) for name, cfg in (predefined_queues or {}).items()}
        self.discovery_interval = discovery_interval
        self._urls: dict[str, str] = dict(self.predefined)
        self._discovered_at = float("-inf")

    def _discover(self) -> None:
        urls: dict[str, str] = {}
        if self.configured_queues:
            for queue in self.configured_queues:
                try:
                    response = self.client.get_queue_url(QueueName=sqs_entity_name(self.prefix + queue))
                except botocore.exceptions.ClientError as exc:
                    if "NonExistentQueue" in str(exc) or "QueueDoesNotExist" in str(exc):
                        continue
                    raise
                urls[queue] = response["QueueUrl"]
        else:
            paginator = self.client.get_paginator("list_queues")
            for page in paginator.paginate(QueueNamePrefix=sqs_entity_name(self.prefix)):
                for url in page.get("QueueUrls", []):
                    entity = url.rstrip("/").rsplit("/", 1)[-1]
                    urls[entity[len(sqs_entity_name(self.prefix)) :]] = url
        self._urls = urls
        self._discovered_at = time.monotonic()

    def read(self) -> BrokerSnapshot:
        started = time.perf_counter()
        depths: dict[str, QueueDepth] = {}
        try:
            if not self.predefined and time.monotonic() - self._discovered_at >= self.discovery_interval:
                self._discover()
            for queue, url in sorted(self._urls.items()):
                if self.configured_queues and queue not in self.configured_queues:
                    continue
                try:
                    attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=ATTRIBUTES)["Attributes"]
                except botocore.exceptions.ClientError as exc:
                    if "NonExistentQueue" in str(exc) or "QueueDoesNotExist" in str(exc):
                        self._discovered_at = float("-inf")
                        continue
                    raise
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


def open_sqs_reader(url: str, options: Mapping[str, Any], queues: Iterable[str]) -> SqsQueueReader:
    parsed = urlsplit(url)
    is_secure = options.get("is_secure", True)
    endpoint_url = options.get("endpoint_url")
    if endpoint_url is None and parsed.hostname:
        port = f":{parsed.port}" if parsed.port else ""
        endpoint_url = f"{'https' if is_secure else 'http'}://{parsed.hostname}{port}"
    session = boto3.Session(
        aws_access_key_id=unquote(parsed.username) if parsed.username else None,
        aws_secret_access_key=unquote(parsed.password) if parsed.password else None,
        region_name=options.get("region") or boto3.Session().region_name or "us-east-1",
    )
    client = session.client(
        "sqs",
        endpoint_url=endpoint_url,
        config=botocore.config.Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}),
    )
    return SqsQueueReader(
        client,
        queues,
        queue_name_prefix=options.get("queue_name_prefix", ""),
        predefined_queues=options.get("predefined_queues"),
    )
