"""Authorization: whether the user may do what the request asks (its ``RequestInfo``, parsed once by
adapter.apiserver.request), by SubjectAccessReview, decisions cached.

Requests to ``--authorization-always-allow-paths`` and from ``--authorization-always-allow-groups`` are
allowed without asking. With no API server to ask, everything else is denied.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapter.apiserver.metrics import AdapterStats
from adapter.apiserver.request import RequestInfo
from adapter.authn import UserInfo
from adapter.cache import TTLCache
from adapter.kubeapi import KubeAPIError, KubeClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    source: str  # always-allow-path | always-allow-group | webhook | cache | none

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"


class AuthorizationUnavailable(RuntimeError):
    """The SubjectAccessReview could not be made; the server answers 503, never a guess."""


class Authorizer:
    def __init__(
        self,
        kube: KubeClient | None,
        stats: AdapterStats,
        *,
        always_allow_paths: Sequence[str] = ("/healthz", "/readyz", "/livez"),
        always_allow_groups: Sequence[str] = ("system:masters",),
        allowed_ttl: float = 10.0,
        denied_ttl: float = 10.0,
    ) -> None:
        self.kube = kube
        self.stats = stats
        self.always_allow_paths = tuple(always_allow_paths)
        self.always_allow_groups = frozenset(always_allow_groups)
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self._cache = TTLCache()
        self._pending: dict[str, asyncio.Future[Decision]] = {}

    def path_always_allowed(self, path: str) -> bool:
        """As kube-apiserver: exact paths, or a prefix when the entry ends in ``*``."""
        for allowed in self.always_allow_paths:
            if allowed.endswith("*"):
                if path.startswith(allowed[:-1]):
                    return True
            elif path == allowed:
                return True
        return False

    async def authorize(self, user: UserInfo, info: RequestInfo) -> Decision:
        if self.path_always_allowed(info.path):
            return self._count(Decision(True, "always-allowed path", "always-allow-path"))
        if self.always_allow_groups.intersection(user.groups):
            return self._count(Decision(True, "always-allowed group", "always-allow-group"))
        if self.kube is None:
            return self._count(Decision(False, "no authorizer configured", "none"))
        spec = _sar_spec(user, info)
        key = json.dumps(spec, sort_keys=True)
        cached = self._cache.get(key)
        if cached is not None:
            return self._count(Decision(cached.allowed, cached.reason, "cache"))
        pending = self._pending.get(key)
        if pending is not None:  # identical question in flight: wait for its answer
            decision = await asyncio.shield(pending)
            return self._count(Decision(decision.allowed, decision.reason, "cache"))
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            review = await self.kube.subject_access_review(spec)
        except KubeAPIError as exc:
            self.stats.authz("error", "webhook")
            log.warning("SubjectAccessReview failed: %s", exc)
            future.set_exception(AuthorizationUnavailable(str(exc)))
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise AuthorizationUnavailable(f"authorization is unavailable: {exc}") from None
        finally:
            self._pending.pop(key, None)
        status = review.get("status") or {}
        allowed = bool(status.get("allowed")) and not status.get("denied")
        decision = Decision(allowed, str(status.get("reason") or ""), "webhook")
        self._cache.put(key, decision, self.allowed_ttl if allowed else self.denied_ttl)
        future.set_result(decision)
        return self._count(decision)

    def _count(self, decision: Decision) -> Decision:
        self.stats.authz(decision.decision, decision.source)
        return decision


def _sar_spec(user: UserInfo, info: RequestInfo) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups)}
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in sorted(user.extra.items())}
    if info.is_resource:
        attrs = {
            "namespace": info.namespace,
            "verb": info.verb,
            "group": info.api_group,
            "version": info.api_version,
            "resource": info.resource,
            "subresource": info.subresource,
            "name": info.name,
        }
        spec["resourceAttributes"] = {k: v for k, v in attrs.items() if v}
    else:
        spec["nonResourceAttributes"] = {"path": info.path, "verb": info.verb}
    return spec


def forbidden_message(user: UserInfo, info: RequestInfo, reason: str) -> str:
    """The API server's wording of a 403."""
    if not info.is_resource:
        message = f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"'
    else:
        resource = info.resource + (f"/{info.subresource}" if info.subresource else "")
        qualified = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
        subject = f'{qualified} "{info.name}"' if info.name else qualified
        message = (
            f'{subject} is forbidden: User "{user.name}" cannot {info.verb} resource "{resource}" '
            f'in API group "{info.api_group}"'
        )
        message += f' in the namespace "{info.namespace}"' if info.namespace else " at the cluster scope"
    return f"{message}: {reason}" if reason else message
