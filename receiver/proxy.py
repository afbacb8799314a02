"""The PROXY protocol (v1 text, v2 binary) in front of the receiver.

aiosmtpd parses both versions (``aiosmtpd.proxy_protocol.get_proxy``) when the server is
built with ``proxy_protocol_timeout``; a connection without a valid header is closed before
the banner. Only peers in ``receiver.proxy_trusted`` are asked for one (:class:`TrustedProxies`):
anyone else is served as itself, and a PROXY line it sends is refused, so a client that reaches
the port directly cannot choose its own address (and with it SPF, DNSBL and rate limits). This
module turns what was parsed into the client address every later step uses (limits, DNSBL, logs
and the MessageReceived event).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from aiosmtpd.smtp import Session

__all__ = ["TrustedProxies", "client_address", "peer_ip"]


class TrustedProxies:
    """The networks whose PROXY header is believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self._nets)

    def trusts(self, ip: str) -> bool:
        """True when ``ip`` (the TCP peer) is one of the trusted proxies."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._nets)


def peer_ip(session: Session) -> str:
    """The TCP peer's address."""
    peer: Any = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0])
    return str(peer or "")


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
