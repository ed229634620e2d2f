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
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.sentinel

from lensing_core.brokers import redact_url
from lensing_core.brokers.base import (
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
# Label values are bounded: beyond this many discovered queues the rest are not exported (a warning says so).
DEFAULT_MAX_QUEUES = 5000
# The whole per-poll read, server-side, in one round trip: per queue the sum of its lists' lengths, and
# the delivery tags of the unacked hash. Both come back as one string each, so parsing costs next to
# nothing however many queues there are (a reply of thousands of elements costs milliseconds to parse).
# KEYS: the lists of every queue (ARGV[1] per queue, in order), then the unacked hash.
READ_SCRIPT = """
local steps = tonumber(ARGV[1])
local last = #KEYS - 1
local sums = {}
for i = 1, last, steps do
  local total = 0
  for j = i, i + steps - 1 do total = total + redis.call('LLEN', KEYS[j]) end
  sums[#sums + 1] = total
end
return {table.concat(sums, ','), table.concat(redis.call('HKEYS', KEYS[#KEYS]), '\\0')}
"""
_CELERY_CERT_REQS = {"CERT_REQUIRED": "required", "CERT_OPTIONAL": "optional", "CERT_NONE": "none"}


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisQueueReader(QueueReader):
    """Reads every queue with one pipelined round trip per poll.

    Two things take extra round trips, and neither grows with the number of polls:
    discovery (a SCAN for binding sets, every ``discovery_interval`` seconds) and learning the
    queue of a delivery tag seen for the first time (HMGET, once per tag, in chunks).
    """

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
        max_queues: int = DEFAULT_MAX_QUEUES,
    ) -> None:
        super().__init__(queues)
        self.client = client
        self.prefix = global_keyprefix
        self.sep = sep
        self.priority_steps = tuple(sorted(set(priority_steps)))
        self.unacked_key = global_keyprefix + unacked_key
        self.discovery_interval = discovery_interval
        self.exclude = tuple(exclude)
        self.max_queues = max_queues
        self._discovered: tuple[str, ...] = ()
        self._routes: dict[tuple[str, str], str] = {}  # (exchange, routing_key) -> queue
        self._discovered_at = float("-inf")
        # delivery tag -> ((exchange, routing_key), task id) of its message, read once per tag (one HMGET);
        # None: unreadable entry. The route, not the queue, is kept so a tag learned before its binding was
        # discovered still resolves. The task id is what the backlog unites with the running tasks.
        self._tag_route: dict[bytes, tuple[tuple[str, str], str | None] | None] = {}
        self._scripting = True  # EVAL; falls back to a pipeline where the server refuses scripts
        self._packed: tuple[tuple[str, ...], list[bytes]] | None = None
        self._truncated_warned = False

    # -- keys -------------------------------------------------------------------------------
    def list_keys(self, queue: str) -> list[str]:
        """Every list kombu may hold this queue's waiting messages in."""
        base = self.prefix + queue
        return [base if step == 0 else f"{base}{self.sep}{step}" for step in self.priority_steps]

    # -- discovery --------------------------------------------------------------------------
    def _discover(self) -> None:
        binding_prefix = self.prefix + BINDING_PREFIX
        match = _glob_escape(binding_prefix) + "*"
        binding_keys = sorted({_text(k) for k in self.client.scan_iter(match=match, count=1000)})
        pipe = self.client.pipeline(transaction=False)
        for key in binding_keys:
            pipe.smembers(key)
        members_per_key = pipe.execute() if binding_keys else []
        routes: dict[tuple[str, str], str] = {}
        queues: set[str] = set()
        for key, members in zip(binding_keys, members_per_key, strict=True):
            exchange = key[len(binding_prefix) :]
            for member in members:
                parts = _text(member).split(self.sep)
                if len(parts) != 3:
                    continue
                routing_key, _pattern, queue = parts
                if not queue or is_excluded(queue, self.exclude):
                    continue
                routes[(exchange, routing_key)] = queue
                queues.add(queue)
        ordered = sorted(queues)
        if len(ordered) > self.max_queues:
            if not self._truncated_warned:
                log.warning(
                    "%d queues discovered; exporting the first %d by name (name the queues with --queue)",
                    len(ordered),
                    self.max_queues,
                )
                self._truncated_warned = True
            ordered = ordered[: self.max_queues]
        self._routes = routes
        self._discovered = tuple(ordered)
        self._discovered_at = time.monotonic()

    def queues(self) -> tuple[str, ...]:
        if self.configured_queues:
            return self.configured_queues
        return self._discovered

    # -- in-flight attribution ----------------------------------------------------------------
    def _queue_of(self, route: tuple[str, str] | None, known: frozenset[str]) -> str | None:
        if route is None:
            return None
        queue = self._routes.get(route)
        if queue is not None:
            return queue if queue in known else None
        # The default exchange routes by queue name; Celery's per-queue exchanges do the same.
        routing_key = route[1]
        return routing_key if routing_key in known else None

    def _learn_tags(self, tags: list[bytes]) -> None:
        for start in range(0, len(tags), UNACKED_FETCH_CHUNK):
            chunk = tags[start : start + UNACKED_FETCH_CHUNK]
            for tag, raw in zip(chunk, self.client.hmget(self.unacked_key, chunk), strict=True):
                if raw is None:  # acknowledged between HKEYS and HMGET
                    continue
                self._tag_route[tag] = _entry_of(raw)

    # -- the read -----------------------------------------------------------------------------
    def _packed_read(self, queues: tuple[str, ...], connection: Any) -> list[bytes]:
        """The EVAL command of this queue set, packed once per set (packing thousands of keys is not free)."""
        if self._packed is None or self._packed[0] != queues:
            keys = [key for queue in queues for key in self.list_keys(queue)]
            packed = connection.pack_command(
                "EVAL", READ_SCRIPT, len(keys) + 1, *keys, self.unacked_key, len(self.priority_steps)
            )
            self._packed = (queues, packed)
        return self._packed[1]

    def _read_scripted(self, queues: tuple[str, ...]) -> tuple[list[int], list[bytes]] | None:
        """(waiting per queue, unacked tags) in one round trip, or None where scripting is not allowed."""
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(self._packed_read(queues, connection))
            reply = connection.read_response()
        except redis.ResponseError as exc:
            pool.release(connection)
            text = str(exc).lower()
            if "noperm" in text or "unknown command" in text or ("script" in text and "disabled" in text):
                log.warning("redis refuses EVAL (%s); reading with a pipeline instead", exc)
                self._scripting = False
                return None
            raise
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        pool.release(connection)
        sums, tags = reply
        waiting = [int(n) for n in sums.split(b",")] if sums else []
        return waiting, tags.split(b"\0") if tags else []

    def _read_pipelined(self, queues: tuple[str, ...]) -> tuple[list[int], list[bytes]]:
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in self.list_keys(queue):
                pipe.llen(key)
        pipe.hkeys(self.unacked_key)
        replies: list[Any] = pipe.execute()
        steps = len(self.priority_steps)
        waiting = [sum(replies[i : i + steps]) for i in range(0, len(replies) - 1, steps)]
        return waiting, [t if isinstance(t, bytes) else t.encode() for t in replies[-1]]

    def read(self) -> BrokerSnapshot:
        started = time.perf_counter()
        try:
            if time.monotonic() - self._discovered_at >= self.discovery_interval:
                self._discover()  # with --queue too: the bindings attribute in-flight messages
            queues = self.queues()
            result = self._read_scripted(queues) if self._scripting else None
            waiting, tags = result if result is not None else self._read_pipelined(queues)
            unknown = [t for t in tags if t not in self._tag_route]
            if unknown:
                self._learn_tags(unknown)
            if len(self._tag_route) > len(tags):
                live = set(tags)
                self._tag_route = {t: r for t, r in self._tag_route.items() if t in live}
        except redis.AuthenticationError as exc:
            raise BrokerReadError("auth", f"redis authentication failed: {exc}") from exc
        except redis.TimeoutError as exc:
            raise BrokerReadError("timeout", f"redis read timed out: {exc}") from exc
        except redis.ConnectionError as exc:
            raise BrokerReadError("connection", f"redis connection failed: {exc}") from exc
        except redis.RedisError as exc:
            raise BrokerReadError("response", f"redis error: {exc}") from exc

        known = frozenset(queues)
        inflight: dict[str, int] = dict.fromkeys(queues, 0)
        ids: dict[str, set[str]] = {queue: set() for queue in queues}
        unattributed = 0
        resolved: dict[tuple[str, str] | None, str | None] = {}
        for tag in tags:
            entry = self._tag_route.get(tag)
            route, task_id = entry if entry is not None else (None, None)
            if route not in resolved:
                resolved[route] = self._queue_of(route, known)
            owner = resolved[route]
            if owner is not None:
                inflight[owner] += 1
                # a message without a task id (not Celery's) still counts in flight, under its tag
                ids[owner].add(task_id if task_id is not None else "tag:" + tag.decode(errors="replace"))
            else:
                unattributed += 1
        depths = {
            queue: QueueDepth(waiting=count, inflight=inflight[queue], unacked_ids=frozenset(ids[queue]))
            for queue, count in zip(queues, waiting, strict=True)
        }
        return BrokerSnapshot(
            queues=depths,
            read_at=time.time(),
            duration=time.perf_counter() - started,
            details={"unattributed_inflight": str(unattributed)},
        )

    def close(self) -> None:
        self.client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_of(raw: bytes | str) -> tuple[tuple[str, str], str | None] | None:
    """((exchange, routing_key), task id) of an ``unacked`` entry ``[message, exchange, routing_key]``.

    The task id is the message's ``headers.id`` (Celery's protocol 2) or its ``correlation_id``
    (protocol 1 sets it to the task id too); None for a message that is not a Celery task."""
    try:
        entry = json.loads(raw)
        message, exchange, routing_key = entry
    except (ValueError, TypeError):
        return None
    task_id: str | None = None
    if isinstance(message, dict):
        headers, properties = message.get("headers"), message.get("properties")
        candidate = headers.get("id") if isinstance(headers, dict) else None
        if not isinstance(candidate, str) and isinstance(properties, dict):
            candidate = properties.get("correlation_id")
        task_id = candidate if isinstance(candidate, str) and candidate else None
    # Interned: thousands of in-flight tags share a handful of routes.
    return (sys.intern(str(exchange or "")), sys.intern(str(routing_key or ""))), task_id


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
            if not parsed.path.strip("/").isdigit():
                raise BrokerConfigError(
                    f"broker URL part {redact_url(part)!r}: the path must be a database number such as /0"
                )
            db = int(parsed.path.strip("/"))
    socket_timeout, connect_timeout = timeouts["socket_timeout"], timeouts["socket_connect_timeout"]
    sentinel = redis.sentinel.Sentinel(
        hosts,
        sentinel_kwargs=options.get("sentinel_kwargs") or {},
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
    )
    return sentinel.master_for(
        master_name, db=db, password=password, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
    )


def open_redis_client(url: str, options: Mapping[str, Any]) -> redis.Redis:
    """The one way to reach a Celery Redis broker (URL, TLS, sentinel, timeouts): the queue reader and the
    event stream both connect through it."""
    timeouts = {
        "socket_timeout": float(options.get("socket_timeout", 5.0)),
        "socket_connect_timeout": float(options.get("socket_connect_timeout", 3.0)),
    }
    if url.startswith("sentinel://"):
        return _sentinel_client(url, options, timeouts)
    parsed = urlsplit(url)
    if parsed.path.strip("/") and not parsed.path.strip("/").isdigit():
        raise BrokerConfigError(f"broker URL {redact_url(url)!r}: the path must be a database number such as /0")
    try:
        return redis.Redis.from_url(_redis_url_with_ssl_defaults(url), **timeouts)
    except ValueError as exc:  # a query parameter redis-py cannot parse (socket_timeout=abc)
        raise BrokerConfigError(f"broker URL {redact_url(url)!r}: {exc}") from None


def open_redis_reader(
    url: str, options: Mapping[str, Any], queues: Iterable[str], **reader_kwargs: Any
) -> RedisQueueReader:
    return RedisQueueReader(
        open_redis_client(url, options),
        queues,
        global_keyprefix=options.get("global_keyprefix", ""),
        sep=options.get("sep", KOMBU_SEP),
        priority_steps=options.get("priority_steps", KOMBU_PRIORITY_STEPS),
        unacked_key=options.get("unacked_key", "unacked"),
        **reader_kwargs,
    )
