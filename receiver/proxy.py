"""The PROXY protocol (v1 text, v2 binary) in front of the receiver.

aiosmtpd parses both versions (``aiosmtpd.proxy_protocol.get_proxy``) when the server is
built with ``proxy_protocol_timeout``; a connection without a valid header is closed before
the banner. This module turns what it parsed into the client address every later step uses
(limits, DNSBL, logs and the MessageReceived event).
"""

from __future__ import annotations

from typing import Any

from aiosmtpd.smtp import Session

__all__ = ["client_address"]


def client_address(session: Session) -> tuple[str, int]:
    """The real client's (ip, port): the PROXY source when there is one, else the peer.

    A v2 LOCAL command or a v1 ``UNKNOWN`` header carries no address (a load balancer's own
    health check): the TCP peer is used then.
    """
    proxy: Any = getattr(session, "proxy_data", None)
    if proxy is not None and proxy.valid and proxy.src_addr is not None:
        return str(proxy.src_addr), int(proxy.src_port or 0)
    peer: Any = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return str(peer or ""), 0
