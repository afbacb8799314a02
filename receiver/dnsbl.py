"""DNSBL check of the client IP at connect (async dnspython, one timeout for all zones).

A listing is an A record under the zone (``4.3.2.1.zone.`` for 1.2.3.4). The zones are
queried in parallel; a timeout, SERVFAIL or any other DNS failure counts as "not listed",
so a broken resolver never blocks mail (it is logged and counted by the caller).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import dns.reversename

__all__ = ["DnsblChecker", "DnsblResult", "make_resolver"]


def make_resolver(servers: tuple[str, ...], timeout: float) -> dns.asyncresolver.Resolver:
    """An async resolver for ``servers`` (``ip`` or ``ip:port``; empty: the system's)."""
    if not servers:
        r = dns.asyncresolver.Resolver()
    else:
        r = dns.asyncresolver.Resolver(configure=False)
        nameservers: list[dns.nameserver.Nameserver] = []
        for s in servers:
            host, port = s, 53
            if s.count(":") == 1:  # ip:port (an IPv6 address has several colons)
                host, p = s.split(":")
                port = int(p)
            nameservers.append(dns.nameserver.Do53Nameserver(host, port))
        r.nameservers = nameservers
    r.lifetime = timeout
    r.timeout = timeout
    return r


@dataclass(frozen=True)
class DnsblResult:
    """Zones listing the IP, and zones whose lookup failed (counted as not listed)."""

    listed: tuple[str, ...] = ()
    failed: tuple[str, ...] = field(default=())


class DnsblChecker:
    """Looks an IP up in several DNSBL zones."""

    def __init__(
        self, zones: tuple[str, ...], resolver: dns.asyncresolver.Resolver, timeout: float
    ) -> None:
        self.zones = tuple(z.strip(".") for z in zones)
        self.resolver = resolver
        self.timeout = timeout

    async def _one(self, ip: str, zone: str) -> bool | None:
        """True listed, False not listed, None lookup failed."""
        rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        name = rev.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa") + "." + zone
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.resolver.resolve(name, "A", raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return False
        except (TimeoutError, dns.exception.DNSException, OSError):
            return None
        # Only 127.0.0.0/8 answers are listings; anything else is a zone misbehaving.
        return any(
            ipaddress.ip_address(rr.address) in ipaddress.ip_network("127.0.0.0/8")
            for rr in (answer.rrset or [])
        )

    async def check(self, ip: str) -> DnsblResult:
        """Query every zone for ``ip``; never raises."""
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return DnsblResult()
        results = await asyncio.gather(*(self._one(ip, z) for z in self.zones))
        return DnsblResult(
            listed=tuple(z for z, r in zip(self.zones, results, strict=True) if r),
            failed=tuple(z for z, r in zip(self.zones, results, strict=True) if r is None),
        )
