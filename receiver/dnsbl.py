"""DNSBL check of the client IP at connect, through the shared resolver (mxgate.resolver).

A listing is an A record under the zone (``4.3.2.1.zone.`` for 1.2.3.4). The zones are
queried in parallel; a timeout, SERVFAIL or any other DNS failure counts as "not listed",
so a broken resolver never blocks mail (it is logged and counted by the caller).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.reversename

from mxgate.resolver import DnsTempError, Resolver
from receiver import replies
from receiver.checks import CheckResult, accept, refuse

__all__ = ["DnsblChecker", "DnsblResult", "make_resolver"]

_LISTING = ipaddress.ip_network("127.0.0.0/8")


def make_resolver(servers: Sequence[str], timeout: float) -> Resolver:
    """The receiver's resolver for ``servers`` (``ip`` or ``ip:port``; empty: the system's).

    Uncached, as the DNSBL check always was: a delisting (or a listing) applies to the next
    connection, and the zones' own servers (often a local rbldnsd) are the cache.
    """
    return Resolver(tuple(servers), timeout=timeout, cache_size=0)


@dataclass(frozen=True)
class DnsblResult:
    """Zones listing the IP, and zones whose lookup failed (counted as not listed)."""

    listed: tuple[str, ...] = ()
    failed: tuple[str, ...] = field(default=())

    def outcome(self, ip: str, threshold: int) -> CheckResult:
        """The ``dnsbl`` check's result: refused when listed in ``threshold`` zones or more;
        failed lookups count as not listed (the accept records that it failed open)."""
        if len(self.listed) >= threshold:
            return refuse("dnsbl", "listed", replies.dnsbl_blocked(ip, self.listed))
        return accept("dnsbl", "lookup_failed" if self.failed else "")


class DnsblChecker:
    """Looks an IP up in several DNSBL zones."""

    def __init__(self, zones: tuple[str, ...], resolver: Resolver, timeout: float) -> None:
        self.zones = tuple(z.strip(".") for z in zones)
        self.resolver = resolver
        self.timeout = timeout

    async def _one(self, ip: str, zone: str) -> bool | None:
        """True listed, False not listed, None lookup failed."""
        rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        name = rev.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa") + "." + zone
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.resolver.addresses(name, ipv6=False)
        except (TimeoutError, DnsTempError, OSError):  # OSError: no route to a nameserver
            return None
        # Only 127.0.0.0/8 answers are listings; anything else is a zone misbehaving.
        return any(ipaddress.ip_address(rr) in _LISTING for rr in answer.records)

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
