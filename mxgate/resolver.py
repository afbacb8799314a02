"""The one async DNS resolver every scanner engine shares: timeouts, a small TTL cache.

Built on ``dns.asyncresolver`` (dnspython). Engines never talk to DNS themselves; they ask a
:class:`Resolver`, which

- caches answers (positive and negative) for their TTL, bounded in entries and in TTL, so the
  SPF, DMARC and DKIM engines checking one message share their lookups;
- runs identical concurrent queries once (single flight);
- turns every failure (timeout, SERVFAIL, refused, broken packet) into :class:`DnsTempError`,
  which engines report as a ``temperror`` finding: DNS trouble never stalls a message.

NXDOMAIN and "no records of that type" are answers, not errors: :class:`Answer` with no
records and ``nxdomain`` telling them apart (SPF counts both as void lookups).
The nameservers come from settings (``ip`` or ``ip:port``), so tests point the resolver at an
authoritative server on loopback instead of patching it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

__all__ = ["Answer", "DnsTempError", "Resolver", "parse_servers", "shared_resolver"]


class DnsTempError(Exception):
    """A lookup that got no usable answer (timeout, SERVFAIL, ...): try again later."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one lookup as text (TXT strings joined), or none.

    ``nxdomain`` is True when the name does not exist; False with no records means the name
    exists but has no records of that type.
    """

    records: tuple[str, ...]
    nxdomain: bool = False

    @property
    def void(self) -> bool:
        """No records at all (RFC 7208 4.6.4 "void lookup")."""
        return not self.records


def parse_servers(servers: Sequence[str]) -> list[dns.nameserver.Nameserver]:
    """``ip`` / ``ip:port`` / ``[ipv6]:port`` strings as dnspython nameservers."""
    out: list[dns.nameserver.Nameserver] = []
    for s in servers:
        host, port = s.strip(), 53
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif host.count(":") == 1:  # an IPv6 address has several colons
            host, p = host.split(":")
            port = int(p)
        out.append(dns.nameserver.Do53Nameserver(host, port))
    return out


class Resolver:
    """Async resolver with a TTL cache; safe to share between engines on one event loop."""

    def __init__(
        self,
        servers: Sequence[str] = (),
        *,
        timeout: float = 3.0,
        cache_size: int = 10_000,
        max_ttl: float = 3600.0,
        negative_ttl: float = 300.0,
    ) -> None:
        """``servers`` empty: the system's resolvers. ``timeout`` bounds one lookup in all.

        ``cache_size`` 0 turns the cache off: every query goes to the network (single flight
        still applies), for callers that must see a DNS change at once.
        """
        if servers:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = parse_servers(servers)
        else:
            r = dns.asyncresolver.Resolver()
        r.timeout = timeout
        r.lifetime = timeout
        self._r = r
        self.timeout = timeout
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._cache_size = cache_size
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.queries = 0  # lookups that went to the network (tests and metrics read it)

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        """The nameservers asked, as (address, port)."""
        out: list[tuple[str, int]] = []
        for n in self._r.nameservers:
            if isinstance(n, dns.nameserver.Do53Nameserver):
                out.append((str(n.address), int(n.port)))
            else:  # the system's resolvers come as plain addresses on the default port
                out.append((str(n), int(self._r.port)))
        return tuple(out)

    @classmethod
    def from_settings(cls, auth: object) -> Resolver:
        """From an :class:`mxgate.settings.AuthSettings`."""
        return cls(
            tuple(auth.dns_servers),  # type: ignore[attr-defined]
            timeout=float(auth.dns_timeout),  # type: ignore[attr-defined]
            cache_size=int(auth.dns_cache_size),  # type: ignore[attr-defined]
        )

    async def query(self, name: str, rdtype: str) -> Answer:
        """Records of type ``rdtype`` ("A", "AAAA", "TXT", "MX", "PTR") for ``name``.

        Raises :class:`DnsTempError` when no answer could be had. A syntactically impossible
        name (empty label, over 255 octets) is an NXDOMAIN, as no server could hold it.
        """
        key = (name.lower().rstrip("."), rdtype)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            answer, ttl = await self._lookup(key[0], rdtype)
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e if isinstance(e, Exception) else DnsTempError("cancelled"))
                fut.exception()  # mark retrieved: waiters may be gone
            raise
        else:
            fut.set_result(answer)
            self._store(key, answer, ttl)
            return answer
        finally:
            self._inflight.pop(key, None)

    async def _lookup(self, name: str, rdtype: str) -> tuple[Answer, float]:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return Answer((), nxdomain=True), self._negative_ttl
        self.queries += 1
        try:
            ans = await self._r.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer((), nxdomain=True), self._negative_ttl
        except dns.resolver.NoNameservers as e:
            raise DnsTempError(f"{name}/{rdtype}: servfail") from e
        except dns.exception.Timeout as e:
            raise DnsTempError(f"{name}/{rdtype}: timeout") from e
        except dns.exception.DNSException as e:
            raise DnsTempError(f"{name}/{rdtype}: {type(e).__name__}") from e
        if ans.rrset is None:
            return Answer(()), self._negative_ttl
        return Answer(tuple(_text(r, rdtype) for r in ans.rrset)), float(ans.rrset.ttl)

    def _store(self, key: tuple[str, str], answer: Answer, ttl: float) -> None:
        ttl = min(max(ttl, 0.0), self._max_ttl)
        if ttl <= 0 or self._cache_size <= 0:
            return
        self._cache[key] = (time.monotonic() + ttl, answer)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def txt(self, name: str) -> Answer:
        """TXT records, each one's strings joined (RFC 7208 3.3)."""
        return await self.query(name, "TXT")

    async def addresses(self, name: str, ipv6: bool) -> Answer:
        """AAAA records when ``ipv6`` else A records."""
        return await self.query(name, "AAAA" if ipv6 else "A")


def _text(rdata: object, rdtype: str) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rdtype == "MX":
        # "preference host" so callers can sort; host without the trailing dot.
        return f"{rdata.preference} {str(rdata.exchange).rstrip('.')}"  # type: ignore[attr-defined]
    if rdtype == "PTR":
        return str(rdata.target).rstrip(".")  # type: ignore[attr-defined]
    return str(rdata)


@functools.lru_cache(maxsize=8)
def shared_resolver(auth: object) -> Resolver:
    """The one resolver (and cache) for every engine built from the same ``AuthSettings``."""
    return Resolver.from_settings(auth)
