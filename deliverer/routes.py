"""Where a recipient's mail goes: the tenant's static hops in failover order, or MX hosts.

Static hops come from the tenant's :class:`mxgate.tenants.Route`; MX routes (and mail to
domains no tenant owns, such as DSNs to external senders) are resolved with dnspython at
delivery time, following RFC 5321 section 5.1: MX records by preference, the domain's own
address when it has no MX (implicit MX), and no delivery at all for a null MX (RFC 7505).
Lookups go through the shared resolver (:mod:`mxgate.resolver`), uncached as before.

MX routes then follow the MTA-STS policy (RFC 8461, :mod:`deliverer.mta_sts`) of the domain
whose MX records were looked up: the tenant route's ``mx`` domain (the recipient's own
domain points at this gateway, so its policy names our hosts, not the customer's), or the
recipient's domain for mail leaving for the outside world. ``enforce`` keeps only the MX
hosts the policy names and requires verified TLS to them; no matching host is a temporary
failure, never a fall back to the others. ``testing`` changes nothing but reports.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from deliverer.mta_sts import MtaSts
from deliverer.mta_sts import report as sts_report
from mxgate.resolver import DnsTempError, Resolver
from mxgate.settings import DelivererSettings
from mxgate.tenants import Route, Tenants

TlsPolicy = Literal["opportunistic", "required", "verified"]


@dataclass(frozen=True, slots=True)
class Destination:
    """One concrete next hop as the connection pool knows it."""

    host: str
    port: int
    tls: TlsPolicy = "opportunistic"
    tls_ca_file: str | None = None
    max_connections: int | None = None
    # The MTA-STS mode this hop is delivered under (None: no policy) and whose policy it is.
    # enforce comes with tls="verified"; testing keeps the route's TLS and only reports.
    mta_sts: Literal["enforce", "testing"] | None = None
    policy_domain: str = ""

    @property
    def key(self) -> str:
        """The pool key: connections are shared per host, port and TLS policy."""
        sts = f"/sts-{self.mta_sts}" if self.mta_sts else ""
        return f"{self.host}:{self.port}/{self.tls}{sts}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class RouteError(Exception):
    """No destination could be found. ``permanent`` means a retry cannot help (null MX,
    NXDOMAIN); otherwise the lookup failed for now (SERVFAIL, timeout)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def order_by_preference(records: Sequence[tuple[int, str]], rng: random.Random) -> list[str]:
    """Hosts in MX order: ascending preference, shuffled within equal preference (RFC 5321
    5.1 asks senders to spread load over equal-preference hosts)."""
    by_pref: dict[int, list[str]] = {}
    for pref, host in records:
        by_pref.setdefault(pref, []).append(host)
    out: list[str] = []
    for pref in sorted(by_pref):
        group = by_pref[pref]
        rng.shuffle(group)
        out.extend(group)
    return out


def parse_hostport(value: str, default_port: int = 25) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port`` or a bare host) to (host, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return value, default_port


def make_resolver(nameservers: Sequence[str] = (), lookup_timeout: float = 10.0) -> Resolver:
    """The deliverer's resolver asking ``nameservers`` (ip or ip:port), or the system's.

    Uncached, as before: each delivery attempt sees MX moves and a new MTA-STS id at once.
    """
    return Resolver(tuple(nameservers), timeout=lookup_timeout, cache_size=0)


class Router:
    """Resolves a recipient to the destinations to try, in order."""

    def __init__(
        self,
        tenants: Tenants,
        *,
        nameservers: Sequence[str] = (),
        outbound_route: str = "",
        lookup_timeout: float = 10.0,
        rng: random.Random | None = None,
        resolver: Resolver | None = None,
        mta_sts: MtaSts | None = None,
    ) -> None:
        """``resolver`` replaces the one built from ``nameservers``; ``mta_sts`` (None: no
        MTA-STS) should share that resolver, so MX and policy come from the same DNS."""
        self.tenants = tenants
        self.rng = rng or random.Random()
        self.outbound: tuple[str, int] | None = (
            parse_hostport(outbound_route) if outbound_route else None
        )
        self.resolver = resolver or make_resolver(nameservers, lookup_timeout)
        self.mta_sts = mta_sts

    @classmethod
    def from_settings(cls, tenants: Tenants, settings: DelivererSettings) -> Router:
        """The deliverer's router: MX lookups and MTA-STS through the configured resolvers."""
        resolver = make_resolver(settings.dns_nameservers, settings.connect_timeout)
        sts = None
        if settings.mta_sts_enabled:
            sts = MtaSts(
                resolver,
                port=settings.mta_sts_port,
                ca_file=settings.mta_sts_ca_file,
                timeout=settings.mta_sts_timeout,
                cache_path=settings.state_path / "mta-sts" if settings.mta_sts_cache else None,
            )
        return cls(tenants, outbound_route=settings.outbound_route, resolver=resolver, mta_sts=sts)

    def close(self) -> None:
        """Release the MTA-STS cache."""
        if self.mta_sts is not None:
            self.mta_sts.close()

    def route_for(self, recipient: str) -> Route | None:
        """The tenant route of ``recipient``'s domain; None for a domain no tenant owns."""
        t = self.tenants.for_address(recipient)
        return t.route if t is not None else None

    async def destinations(self, recipient: str) -> list[Destination]:
        """Destinations for ``recipient`` in the order to try them; raises :class:`RouteError`."""
        route = self.route_for(recipient)
        if route is None:
            # Not a tenant's domain: DSNs and digests to the outside world.
            if self.outbound is not None:
                return [Destination(*self.outbound)]
            domain = recipient.rpartition("@")[2]
            hosts = await self.mx_hosts(domain)
            return await self._mx_destinations(domain, hosts, 25, "opportunistic", None, None)
        ca_file = str(route.tls_ca_file) if route.tls_ca_file else None

        def hop(host: str, port: int) -> Destination:
            return Destination(host, port, route.tls, ca_file, route.max_connections)

        if route.mx:
            hosts = await self.mx_hosts(route.mx)
            if not route.mta_sts:
                return [hop(h, route.port) for h in hosts]
            return await self._mx_destinations(
                route.mx, hosts, route.port, route.tls, ca_file, route.max_connections
            )
        hops = route.static_hops()
        by_pref = order_by_preference([(h.priority, f"{h.host}\0{h.port}") for h in hops], self.rng)
        return [hop(h, int(p)) for h, p in (x.split("\0") for x in by_pref)]

    async def _mx_destinations(
        self,
        domain: str,
        hosts: list[str],
        port: int,
        tls: TlsPolicy,
        ca_file: str | None,
        max_connections: int | None,
    ) -> list[Destination]:
        """MX ``hosts`` of ``domain`` as destinations, under its MTA-STS policy if any."""
        plain = [Destination(h, port, tls, ca_file, max_connections) for h in hosts]
        if self.mta_sts is None:
            return plain
        policy = await self.mta_sts.policy_for(domain)
        if policy is None or policy.mode == "none":
            return plain
        # The route's own CA file wins (a tenant may pin its servers' CA); otherwise the one
        # configured for MTA-STS, or the system CAs.
        sts_ca = ca_file or self.mta_sts.ca_file
        domain = domain.rstrip(".").lower()
        for h in hosts:
            if not policy.matches(h):
                sts_report("mx-mismatch", domain=domain, mode=policy.mode, host=h,
                           detail=f"policy allows {', '.join(policy.mx)}")  # fmt: skip
        if policy.mode == "testing":
            return [
                Destination(h, port, tls, sts_ca, max_connections, "testing", domain) for h in hosts
            ]
        allowed = [h for h in hosts if policy.matches(h)]
        if not allowed:
            # RFC 8461 5: a temporary failure; the domain's owner may be moving MX hosts.
            raise RouteError(
                f"{domain}: MTA-STS enforce: no MX host matches the policy "
                f"(MX {', '.join(hosts)}; policy {', '.join(policy.mx)})",
                permanent=False,
            )
        return [
            Destination(h, port, "verified", sts_ca, max_connections, "enforce", domain)
            for h in allowed
        ]

    async def mx_hosts(self, domain: str) -> list[str]:
        """The hosts to try for ``domain`` by its MX records (RFC 5321 5.1, RFC 7505)."""
        domain = domain.rstrip(".").lower()
        if not domain:
            raise RouteError("empty domain", permanent=True)
        try:
            answer = await self.resolver.query(domain, "MX")
        except DnsTempError as e:
            raise RouteError(f"{domain}: MX lookup failed: {e}", permanent=False) from None
        if answer.nxdomain:
            raise RouteError(f"{domain}: no such domain", permanent=True)
        if not answer.records:
            # Implicit MX: the domain itself, when it has an address.
            if await self._has_address(domain):
                return [domain]
            raise RouteError(f"{domain}: no MX and no address", permanent=True)
        records = [_mx_record(r) for r in answer.records]
        if any(host in ("", ".") for _, host in records):
            raise RouteError(f"{domain}: null MX, accepts no mail", permanent=True)
        return order_by_preference(records, self.rng)

    async def _has_address(self, domain: str) -> bool:
        for ipv6 in (False, True):
            try:
                if (await self.resolver.addresses(domain, ipv6)).records:
                    return True
            except DnsTempError as e:
                raise RouteError(f"{domain}: address lookup failed: {e}", permanent=False) from e
        return False


def _mx_record(text: str) -> tuple[int, str]:
    """(preference, host) from the resolver's "preference host" form of an MX record."""
    pref, _, host = text.partition(" ")
    return int(pref), host
