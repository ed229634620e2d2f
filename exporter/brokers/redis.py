"""Queue depth on Redis (also rediss:// and sentinel://), laid out as kombu's Redis transport lays it out.

- A queue is the bare list ``<prefix><queue>`` plus one list per priority step above 0,
  ``<prefix><queue><sep><step>``: waiting = the sum of their lengths.
- Messages delivered to a worker and not yet acknowledged sit in the hash ``<prefix>unacked``,
  keyed by delivery tag, valued ``[message, exchange, routing_key]``; the exchange and routing key
  resolve to a queue through the binding sets ``<prefix>_kombu.binding.<exchange>``, whose members
  are ``routing_key<sep>pattern<sep>queue``. Those sets are also how queues are discovered without
  asking a worker.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.sentinel

from exporter.brokers.base import (
    DEFAULT_EXCLUDED_QUEUES,
    BrokerConfigError,
    BrokerReadError,
    BrokerSnapshot,
    QueueDepth,
    QueueReader,
    is_excluded,
)

log = logging.getLogger(__name__)

KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
BINDING_PREFIX = "_kombu.binding."
# HMGET this many unacked entries per round trip when learning which queue new deliveries belong to.
UNACKED_FETCH_CHUNK = 500
_CELERY_CERT_REQS = {"CERT_REQUIRED": "required", "CERT_OPTIONAL": "optional", "CERT_NONE": "none"}


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisQueueReader(QueueReader):
    transport = "redis"

    def __init__(
        self,
        client: redis.Redis,
        queues: Iterable[str] = (),
        *,
        global_keyprefix: str = "",
        sep: str = KOMBU_SEP,
        priority_steps: Sequence[int] = KOMBU_PRIORITY_STEPS,
        unacked_key: str = "unacked",
        discovery_interval: float = 10.0,
        exclude: Sequence[str] = DEFAULT_EXCLUDED_QUEUES,
    ) -> None:
        super().__init__(queues)
        self.client = client
        self.prefix = global_keyprefix
        self.sep = sep
        self.priority_steps = tuple(sorted(set(priority_steps)))
        self.unacked_key = global_keyprefix + unacked_key
        self.discovery_interval = discovery_interval
        self.exclude = tuple(exclude)
        self._discovered: tuple[str, ...] = ()
        self._routes: dict[tuple[str, str], str] = {}  # (exchange, routing_key) -> queue
        self._discovered_at = float("-inf")
        self._tag_queue: dict[str, str | None] = {}  # delivery tag -> queue, learned once per tag

    # -- keys -------------------------------------------------------------------------------
    def list_keys(self, queue: str) -> list[str]:
        """Every list kombu may hold this queue's waiting messages in."""
        base = self.prefix + queue
        return [base if step == 0 else f"{base}{self.sep}{step}" for step in self.priority_steps]

    # -- discovery --------------------------------------------------------------------------
    def _discover(self) -> None:
        match = _glob_escape(self.prefix + BINDING_PREFIX) + "*"
        binding_keys = sorted(
            {k.decode() if isinstance(k, bytes) else k for k in self.client.scan_iter(match=match, count=1000)}
        )
        pipe = self.client.pipeline(transaction=False)
        for key in binding_keys:
            pipe.smembers(key)
        members_per_key = pipe.execute() if binding_keys else []
        routes: dict[tuple[str, str], str] = {}
        queues: set[str] = set()
        for key, members in zip(binding_keys, members_per_key, strict=True):
            exchange = key[len(self.prefix + BINDING_PREFIX) :]
            for member in members:
                text = member.decode() if isinstance(member, bytes) else member
                parts = text.split(self.sep)
                if len(parts) != 3:
                    continue
                routing_key, _pattern, queue = parts
                if not queue or is_excluded(queue, self.exclude):
                    continue
                routes[(exchange, routing_key)] = queue
                queues.add(queue)
        self._routes = routes
        self._discovered = tuple(sorted(queues))
        self._discovered_at = time.monotonic()

    def queues(self) -> tuple[str, ...]:
        if self.configured_queues:
            return self.configured_queues
        return self._discovered

    # -- in-flight attribution ----------------------------------------------------------------
    def _queue_of(self, exchange: str, routing_key: str) -> str | None:
        queue = self._routes.get((exchange, routing_key))
        if queue is not None:
            return queue
        # The default exchange routes by queue name; Celery's per-queue exchanges do the same.
        known = self.queues()
        return routing_key if routing_key in known else None

    def _learn_tags(self, tags: list[str]) -> None:
        for start in range(0, len(tags), UNACKED_FETCH_CHUNK):
            chunk = tags[start : start + UNACKED_FETCH_CHUNK]
            for tag, raw in zip(chunk, self.client.hmget(self.unacked_key, chunk), strict=True):
                if raw is None:  # acknowledged between HKEYS and HMGET
                    continue
                try:
                    _message, exchange, routing_key = json.loads(raw)
                    self._tag_queue[tag] = self._queue_of(str(exchange or ""), str(routing_key or ""))
                except (ValueError, TypeError):
                    self._tag_queue[tag] = None

    # -- the read -----------------------------------------------------------------------------
    def read(self) -> BrokerSnapshot:
        started = time.perf_counter()
        try:
            if not self.configured_queues and time.monotonic() - self._discovered_at >= self.discovery_interval:
                self._discover()
            elif self.configured_queues and not self._routes and self._discovered_at == float("-inf"):
                self._discover()  # bindings are still needed to attribute in-flight messages
            queues = self.queues()
            pipe = self.client.pipeline(transaction=False)
            for queue in queues:
                for key in self.list_keys(queue):
                    pipe.llen(key)
            pipe.hkeys(self.unacked_key)
            replies: list[Any] = pipe.execute()
            tags = [t.decode() if isinstance(t, bytes) else t for t in replies[-1]]
            unknown = [t for t in tags if t not in self._tag_queue]
            if unknown:
                self._learn_tags(unknown)
            live = set(tags)
            for gone in [t for t in self._tag_queue if t not in live]:
                del self._tag_queue[gone]
        except redis.AuthenticationError as exc:
            raise BrokerReadError("auth", f"redis authentication failed: {exc}") from exc
        except redis.TimeoutError as exc:
            raise BrokerReadError("timeout", f"redis read timed out: {exc}") from exc
        except redis.ConnectionError as exc:
            raise BrokerReadError("connection", f"redis connection failed: {exc}") from exc
        except redis.RedisError as exc:
            raise BrokerReadError("response", f"redis error: {exc}") from exc

        inflight: dict[str, int] = dict.fromkeys(queues, 0)
        unattributed = 0
        for tag in tags:
            owner = self._tag_queue.get(tag)
            if owner is not None and owner in inflight:
                inflight[owner] += 1
            else:
                unattributed += 1
        steps = len(self.priority_steps)
        depths = {
            queue: QueueDepth(waiting=sum(replies[i * steps : (i + 1) * steps]), inflight=inflight[queue])
            for i, queue in enumerate(queues)
        }
        return BrokerSnapshot(
            queues=depths,
            read_at=time.time(),
            duration=time.perf_counter() - started,
            details={"unattributed_inflight": str(unattributed)},
        )

    def close(self) -> None:
        self.client.close()


# -- construction from a Celery broker URL ------------------------------------------------------
def _redis_url_with_ssl_defaults(url: str) -> str:
    """Celery writes ``ssl_cert_reqs=CERT_REQUIRED``; redis-py wants ``required``."""
    parts = urlsplit(url)
    query = [(k, _CELERY_CERT_REQS.get(v, v) if k == "ssl_cert_reqs" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _sentinel_client(url: str, options: Mapping[str, Any], timeouts: dict[str, float]) -> redis.Redis:
    master_name = options.get("master_name")
    if not master_name:
        raise BrokerConfigError("sentinel:// needs the master's name: add --broker-transport-option master_name=<name>")
    hosts: list[tuple[str, int]] = []
    password: str | None = None
    db = 0
    for part in url.split(";"):
        part = part.strip()
        if not part:
            continue
        parsed = urlsplit(part)
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise BrokerConfigError(
                f"broker URL part {part!r}: expected sentinel://[:password@]host:port[/db], parts joined by ';'"
            )
        hosts.append((parsed.hostname, parsed.port or 26379))
        password = unquote(parsed.password) if parsed.password else password
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
    sentinel = redis.sentinel.Sentinel(hosts, sentinel_kwargs=options.get("sentinel_kwargs") or {}, **timeouts)
    return sentinel.master_for(master_name, db=db, password=password, **timeouts)


def open_redis_reader(
    url: str, options: Mapping[str, Any], queues: Iterable[str], **reader_kwargs: Any
) -> RedisQueueReader:
    timeouts = {
        "socket_timeout": float(options.get("socket_timeout", 5.0)),
        "socket_connect_timeout": float(options.get("socket_connect_timeout", 3.0)),
    }
    if url.startswith("sentinel://"):
        client = _sentinel_client(url, options, timeouts)
    else:
        parsed = urlsplit(url)
        if parsed.path.strip("/") and not parsed.path.strip("/").isdigit():
            raise BrokerConfigError(f"broker URL {url!r}: the path must be a database number such as /0")
        client = redis.Redis.from_url(_redis_url_with_ssl_defaults(url), **timeouts)
    return RedisQueueReader(
        client,
        queues,
        global_keyprefix=options.get("global_keyprefix", ""),
        sep=options.get("sep", KOMBU_SEP),
        priority_steps=options.get("priority_steps", KOMBU_PRIORITY_STEPS),
        unacked_key=options.get("unacked_key", "unacked"),
        **reader_kwargs,
    )
