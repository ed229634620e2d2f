"""The serving TLS context: the certificate from ``--tls-cert-file``/``--tls-private-key-file`` or a
self-signed one written into ``--cert-dir``, and the client CAs from :class:`AuthSettingsSource`.

Python's ``SSLContext`` cannot swap its certificate in place, so every handshake goes through the SNI
callback (OpenSSL calls it for every ClientHello, with or without a server name) and is moved to the
context built from the files as they are now. A context is rebuilt only when a file's mtime, size or
inode, or the client-CA generation, changed: a certificate replaced on disk is used from the next handshake.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path

from adapter.authconfig import AuthSettingsSource
from adapter.pki import self_signed_serving

log = logging.getLogger(__name__)

SELF_SIGNED_CERT = "apiserver.crt"
SELF_SIGNED_KEY = "apiserver.key"


class TLSConfigError(ValueError):
    pass


def serving_files(cert_file: str | None, key_file: str | None, cert_dir: str, hosts: Sequence[str]) -> tuple[str, str]:
    """The certificate and key to serve: the given pair, or a self-signed pair in ``cert_dir`` (kept
    across restarts, as kube-apiserver keeps its own)."""
    if bool(cert_file) != bool(key_file):
        raise TLSConfigError("--tls-cert-file and --tls-private-key-file go together: give both or neither")
    if cert_file and key_file:
        for path in (cert_file, key_file):
            if not os.path.isfile(path):
                raise TLSConfigError(f"{path}: no such file")
        return cert_file, key_file
    directory = Path(cert_dir)
    cert, key = directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY
    if not (cert.is_file() and key.is_file()):
        try:
            self_signed_serving(hosts).write(cert, key)
        except OSError as exc:
            raise TLSConfigError(f"--cert-dir {cert_dir}: cannot write a self-signed certificate: {exc}") from None
        log.info("wrote a self-signed serving certificate for %s to %s", ", ".join(hosts), cert)
    return str(cert), str(key)


class ReloadingServerContext:
    """Hands out the ``SSLContext`` for the server socket; each handshake gets the current files."""

    def __init__(self, cert_file: str, key_file: str, auth: AuthSettingsSource) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.auth = auth
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._current: ssl.SSLContext | None = None
        self.reloads = 0
        self.current()  # fails here, at start-up, on an unusable certificate
        # The listening context decides whether client certificates are asked for (OpenSSL keeps the
        # verify mode of the first context); its callback moves each connection to the newest context.
        self.listening = self._build()
        self.listening.sni_callback = self._on_client_hello

    def _stamp_now(self) -> tuple[object, ...]:
        stamps: list[object] = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        stamps.append(self.auth.current().generation)
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        settings = self.auth.current()
        pem = settings.verify_pem
        if pem.strip():
            context.load_verify_locations(cadata=pem.decode())
            # ask for a client certificate; one is optional (bearer tokens, health probes)
            context.verify_mode = ssl.CERT_OPTIONAL
        else:
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        return context

    def current(self) -> ssl.SSLContext:
        stamp = self._stamp_now()
        if stamp == self._stamp and self._current is not None:
            return self._current
        with self._lock:
            if stamp != self._stamp or self._current is None:
                try:
                    self._current = self._build()
                    self._stamp = stamp
                    self.reloads += 1
                    if self.reloads > 1:
                        log.info("serving certificate or client CAs changed: reloaded")
                except (OSError, ssl.SSLError, ValueError) as exc:
                    if self._current is None:
                        raise TLSConfigError(f"serving certificate {self.cert_file}: {exc}") from exc
                    # caught mid-replacement (new cert, old key): keep serving the previous pair
                    log.warning("serving certificate not reloaded yet: %s", exc)
        return self._current

    def _on_client_hello(self, ssl_object: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        try:
            ssl_object.context = self.current()
        except Exception:  # never fail a handshake from here: the listening context still serves
            log.exception("cannot switch the TLS context")
        return None
