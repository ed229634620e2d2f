"""Authentication, as an aggregated API server's delegated authenticator does it, first success wins:

1. front proxy: a client certificate signed by the request-header CA whose CN is an allowed name (any, when
   none are listed): the user, groups and extras come from the request headers, and only then;
2. client certificate signed by the client CA: user = CN, groups = O;
3. bearer token: a TokenReview (answers cached for ``token_ttl`` seconds).

A request none of these authenticates is anonymous; the server answers it 401.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from adapter.apiserver.metrics import AdapterStats
from adapter.authconfig import AuthSettings, AuthSettingsSource
from adapter.cache import TTLCache
from adapter.kubeapi import KubeAPIError, KubeClient

log = logging.getLogger(__name__)

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uid: str = ""


@dataclass(frozen=True, slots=True)
class PeerCert:
    """What the authenticator needs from a verified client certificate."""

    common_name: str
    organizations: tuple[str, ...]
    by_client_ca: bool
    by_requestheader_ca: bool


def _issued_by(cert: x509.Certificate, cas: Iterable[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def inspect_peer_cert(der: bytes, settings: AuthSettings) -> PeerCert:
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return PeerCert(
        common_name=str(names[0].value) if names else "",
        organizations=tuple(str(o.value) for o in orgs),
        by_client_ca=_issued_by(cert, settings.client_cas),
        by_requestheader_ca=_issued_by(cert, settings.requestheader_cas),
    )


class Authenticator:
    def __init__(
        self,
        settings: AuthSettingsSource,
        kube: KubeClient | None,
        stats: AdapterStats,
        *,
        token_ttl: float = 10.0,
        audiences: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.stats = stats
        self.token_ttl = token_ttl
        self.audiences = audiences
        self._certs = TTLCache()
        self._tokens = TTLCache()
        self._pending: dict[str, asyncio.Future[UserInfo | None]] = {}

    def peer(self, der: bytes | None, settings: AuthSettings) -> PeerCert | None:
        if not der:
            return None
        key = (der, settings.generation)
        cached = self._certs.get(key)
        if cached is None:
            try:
                cached = inspect_peer_cert(der, settings)
            except ValueError:
                return None
            self._certs.put(key, cached, 3600.0)
        return cached

    async def authenticate(self, der: bytes | None, headers: Mapping[str, str], all_headers: Any) -> UserInfo | None:
        """``all_headers`` is the multi-valued header mapping (``getall``), for repeated group headers."""
        user = await self._authenticate(der, headers, all_headers)
        return None if user is None else with_authenticated_group(user)

    async def _authenticate(self, der: bytes | None, headers: Mapping[str, str], all_headers: Any) -> UserInfo | None:
        settings = self.settings.current()
        peer = self.peer(der, settings)
        if peer is not None and peer.by_requestheader_ca:
            if not settings.allowed_names or peer.common_name in settings.allowed_names:
                user = _from_headers(settings, all_headers)
                if user is not None:
                    self.stats.authn("front-proxy", "success")
                    return user
            else:
                self.stats.authn("front-proxy", "failure")
        if peer is not None and peer.by_client_ca:
            self.stats.authn("x509", "success")
            return UserInfo(peer.common_name, peer.organizations)
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return await self._token(token.strip())
        self.stats.authn("anonymous", "failure")
        return None

    async def _token(self, token: str) -> UserInfo | None:
        if self.kube is None:
            self.stats.authn("token", "failure")
            return None
        try:
            key = hashlib.sha256(token.encode()).hexdigest()
        except UnicodeEncodeError:  # bytes that are not UTF-8 (a lone surrogate from the parser): no token
            self.stats.authn("token", "failure")
            return None
        cached = self._tokens.get(key)
        if cached is not None:
            self.stats.authn("token", "success" if cached[0] else "failure")
            return cached[0]
        pending = self._pending.get(key)
        if pending is not None:  # the same token asked for concurrently: one TokenReview
            return await asyncio.shield(pending)
        future: asyncio.Future[UserInfo | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        user: UserInfo | None = None
        try:
            user = await self._review(token)
        except KubeAPIError as exc:
            log.warning("TokenReview failed: %s", exc)
            self.stats.authn("token", "error")
            return None  # not cached: the next request asks again
        else:
            self._tokens.put(key, (user,), self.token_ttl)
            self.stats.authn("token", "success" if user else "failure")
            return user
        finally:
            self._pending.pop(key, None)
            if not future.done():
                future.set_result(user)

    async def _review(self, token: str) -> UserInfo | None:
        assert self.kube is not None
        review = await self.kube.token_review(token, self.audiences)
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        extra = {str(k): tuple(str(v) for v in vs or ()) for k, vs in (user.get("extra") or {}).items()}
        return UserInfo(
            str(user.get("username", "")),
            tuple(str(g) for g in user.get("groups") or ()),
            extra,
            str(user.get("uid", "")),
        )


def with_authenticated_group(user: UserInfo) -> UserInfo:
    """Every authenticated user is in system:authenticated, as k8s.io/apiserver's AuthenticatedGroupAdder makes
    it: RBAC grants to that group (system:discovery, for one) then apply to the SubjectAccessReview. The
    aggregator fetches /openapi/v2 as the bare user system:aggregator, which is allowed only that way."""
    if any(g in (AUTHENTICATED, UNAUTHENTICATED) for g in user.groups):
        return user
    return dataclasses.replace(user, groups=(*user.groups, AUTHENTICATED))


def _from_headers(settings: AuthSettings, all_headers: Any) -> UserInfo | None:
    name = ""
    for header in settings.username_headers:
        name = all_headers.get(header) or ""  # as the API server: the first non-empty one, untrimmed
        if name:
            break
    if not name:
        return None
    groups: list[str] = []
    for header in settings.group_headers:
        groups.extend(v for v in all_headers.getall(header, ()) if v)
    extra: dict[str, list[str]] = {}
    prefixes = [p.lower() for p in settings.extra_prefixes]
    for header, value in all_headers.items():
        lower = header.lower()
        for prefix in prefixes:
            if lower.startswith(prefix) and len(lower) > len(prefix):
                key = urllib.parse.unquote(lower[len(prefix) :])
                extra.setdefault(key, []).append(value)
                break
    return UserInfo(name, tuple(groups), {k: tuple(v) for k, v in extra.items()})
