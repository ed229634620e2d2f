"""A small bounded cache whose entries expire: for authentication and authorization answers."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

DEFAULT_LIMIT = 4096


class TTLCache:
    """At most ``limit`` entries (the oldest go first); each lives for the TTL it was put with."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._items[key]
            return None
        return hit[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
