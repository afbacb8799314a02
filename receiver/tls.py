"""STARTTLS contexts for the front door, and certificate renewal without a restart.

Certificates are renewed in place (ACME clients, a distribution's ``snakeoil`` tooling) while the
receiver keeps running: :class:`TlsCertificate` looks at the certificate and key files when a
session starts and builds a new context when either changed. A pair that no longer loads (a
key written before its certificate, a typo) keeps the last good context serving and is logged,
so a botched renewal never turns STARTTLS off for everyone.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import structlog

__all__ = ["TlsCertificate", "tls_context"]

log = structlog.get_logger("mxgate.receiver")


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for STARTTLS: TLS 1.2 or newer, no client certificate asked.

    Raises :class:`OSError` or :class:`ssl.SSLError` when the pair does not load.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # TLS 1.0 and 1.1 are deprecated (RFC 8996); a sender that cannot do 1.2 still delivers
    # in plaintext, which is what opportunistic STARTTLS means.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _signature(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is rewritten or replaced (inode for rename-into-place)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class TlsCertificate:
    """The current STARTTLS context of one receiver process, reloaded when its files change.

    Built with a pair that loads (a broken pair at start is a config error, raised here);
    :meth:`context` is called once per new session and costs two ``stat`` calls.
    """

    cert: Path
    key: Path
    _ctx: ssl.SSLContext = field(init=False)
    _seen: tuple[tuple[int, int, int], ...] = field(init=False)
    _failed: tuple[tuple[int, int, int], ...] | None = field(init=False, default=None)
    _last_error: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._seen = _signature(self.cert, self.key)
        self._ctx = tls_context(self.cert, self.key)

    def context(self) -> ssl.SSLContext:
        """The context for a new session: a fresh one if the files changed and load."""
        try:
            now = _signature(self.cert, self.key)
        except OSError as e:
            # Mid-rename or deleted: keep serving what we have.
            self._log_once(f"certificate files unreadable: {e}")
            return self._ctx
        if now == self._seen or now == self._failed:
            return self._ctx
        # Called on the receiver's event loop only: no two reloads run at once.
        try:
            ctx = tls_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            self._failed = now
            self._log_once(f"new certificate does not load, keeping the old one: {e}")
            return self._ctx
        self._ctx, self._seen, self._failed, self._last_error = ctx, now, None, ""
        log.info("STARTTLS certificate reloaded", cert=str(self.cert))
        return self._ctx

    def _log_once(self, msg: str) -> None:
        # One line per distinct problem, not one per session.
        if msg != self._last_error:
            self._last_error = msg
            log.error(msg, cert=str(self.cert), key=str(self.key))
