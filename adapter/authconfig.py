"""Who may present which certificate: the client CA, the front-proxy (request-header) CA and its header
names, as an aggregated API server learns them.

They come from the ``--client-ca-file`` / ``--requestheader-*`` flags (the files are re-read when they
change on disk) or, for what the flags leave unset, from the ``kube-system/extension-apiserver-authentication``
ConfigMap, re-read every ``configmap_interval`` seconds. Each change makes a new immutable
:class:`AuthSettings` with a higher ``generation``: the TLS layer and the authenticator key their caches by it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from adapter.kubeapi import KubeAPIError, KubeClient
from adapter.pki import load_pem_certificates

log = logging.getLogger(__name__)

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"
DEFAULT_USERNAME_HEADERS = ("X-Remote-User",)
DEFAULT_GROUP_HEADERS = ("X-Remote-Group",)
DEFAULT_EXTRA_PREFIXES = ("X-Remote-Extra-",)
#: CA files are looked at (stat) at most this often: a replaced CA is in use within a second
FILE_CHECK_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    client_ca_pem: bytes = b""
    requestheader_ca_pem: bytes = b""
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = DEFAULT_USERNAME_HEADERS
    group_headers: tuple[str, ...] = DEFAULT_GROUP_HEADERS
    extra_prefixes: tuple[str, ...] = DEFAULT_EXTRA_PREFIXES
    generation: int = 0
    client_cas: tuple[x509.Certificate, ...] = field(default=(), compare=False)
    requestheader_cas: tuple[x509.Certificate, ...] = field(default=(), compare=False)

    @property
    def verify_pem(self) -> bytes:
        """Both bundles: TLS accepts a client certificate signed by either, the authenticator tells which."""
        return self.client_ca_pem.strip() + b"\n" + self.requestheader_ca_pem.strip() + b"\n"


class AuthSettingsSource:
    """The current :class:`AuthSettings`; cheap to call per request and per handshake."""

    def __init__(
        self,
        *,
        client_ca_file: str | None = None,
        requestheader_ca_file: str | None = None,
        allowed_names: Sequence[str] | None = None,
        username_headers: Sequence[str] | None = None,
        group_headers: Sequence[str] | None = None,
        extra_prefixes: Sequence[str] | None = None,
    ) -> None:
        self.client_ca_file = client_ca_file
        self.requestheader_ca_file = requestheader_ca_file
        self._flags: dict[str, tuple[str, ...] | None] = {
            "allowed_names": tuple(allowed_names) if allowed_names else None,
            "username_headers": tuple(username_headers) if username_headers else None,
            "group_headers": tuple(group_headers) if group_headers else None,
            "extra_prefixes": tuple(extra_prefixes) if extra_prefixes else None,
        }
        self._configmap: dict[str, Any] = {}
        self._stamp: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._settings = AuthSettings()
        self._next_check = 0.0
        self.refresh()

    @staticmethod
    def _file_stamp(path: str | None) -> tuple[int, int, int] | None:
        if not path:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return (-1, -1, -1)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> AuthSettings:
        now = time.monotonic()
        if now < self._next_check:
            return self._settings
        self._next_check = now + FILE_CHECK_INTERVAL
        stamp = (self._file_stamp(self.client_ca_file), self._file_stamp(self.requestheader_ca_file))
        if self._stamp is None or stamp != self._stamp[:2]:
            self.refresh()
        return self._settings

    def refresh(self) -> None:
        """Re-read the CA files and rebuild the settings when anything changed."""
        with self._lock:
            stamp = (
                self._file_stamp(self.client_ca_file),
                self._file_stamp(self.requestheader_ca_file),
                json.dumps(self._configmap, sort_keys=True),
            )
            if stamp == self._stamp:
                return
            try:
                built = self._build()
            except (OSError, ValueError) as exc:
                # a file caught mid-write, or not PEM: keep what works and try again next time
                log.warning("client CA settings not reloaded: %s", exc)
                return
            self._stamp = stamp
            if built != self._settings:
                built = dataclasses.replace(built, generation=self._settings.generation + 1)
                self._settings = built
                log.info(
                    "client authentication settings loaded (generation %d): client CA %d cert(s), "
                    "front-proxy CA %d cert(s), allowed names %s",
                    built.generation,
                    len(built.client_cas),
                    len(built.requestheader_cas),
                    ",".join(built.allowed_names) or "(any)",
                )

    def _build(self) -> AuthSettings:
        def read(path: str | None, configmap_key: str) -> bytes:
            if path:
                with open(path, "rb") as handle:
                    return handle.read()
            return str(self._configmap.get(configmap_key, "")).encode()

        def listed(flag: str, configmap_key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            given = self._flags[flag]
            if given is not None:
                return given
            raw = self._configmap.get(configmap_key)
            if raw:
                value = json.loads(raw)
                if isinstance(value, list):
                    return tuple(str(v) for v in value)
            return default

        client_pem = read(self.client_ca_file, "client-ca-file")
        front_pem = read(self.requestheader_ca_file, "requestheader-client-ca-file")
        client_cas = tuple(load_pem_certificates(client_pem))
        front_cas = tuple(load_pem_certificates(front_pem))
        candidate = AuthSettings(
            client_ca_pem=client_pem,
            requestheader_ca_pem=front_pem,
            allowed_names=listed("allowed_names", "requestheader-allowed-names", ()),
            username_headers=listed("username_headers", "requestheader-username-headers", DEFAULT_USERNAME_HEADERS),
            group_headers=listed("group_headers", "requestheader-group-headers", DEFAULT_GROUP_HEADERS),
            extra_prefixes=listed("extra_prefixes", "requestheader-extra-headers-prefix", DEFAULT_EXTRA_PREFIXES),
            generation=self._settings.generation,
            client_cas=client_cas,
            requestheader_cas=front_cas,
        )
        return candidate

    def apply_configmap(self, data: dict[str, Any]) -> None:
        self._configmap = {k: v for k, v in data.items() if isinstance(v, str)}
        self.refresh()

    async def read_configmap(self, kube: KubeClient, last_version: str | None = None) -> str | None:
        """Read the ConfigMap once; apply it when its resourceVersion changed. Returns the version seen.
        Raises KubeAPIError when it cannot be read."""
        configmap = await kube.configmap(CONFIGMAP_NAMESPACE, CONFIGMAP_NAME)
        version = (configmap.get("metadata") or {}).get("resourceVersion")
        if version is None or version != last_version:
            self.apply_configmap(dict(configmap.get("data") or {}))
        return str(version) if version is not None else None

    async def follow_configmap(self, kube: KubeClient, interval: float = 10.0, last_version: str | None = None) -> None:
        """Re-read the ConfigMap every ``interval`` seconds until cancelled; an unreadable one keeps the last."""
        warned = False
        while True:
            await asyncio.sleep(interval)
            try:
                last_version = await self.read_configmap(kube, last_version)
                warned = False
            except KubeAPIError as exc:
                if not warned:
                    log.warning(
                        "%s/%s cannot be read (%s); keeping the last settings", CONFIGMAP_NAMESPACE, CONFIGMAP_NAME, exc
                    )
                    warned = True
