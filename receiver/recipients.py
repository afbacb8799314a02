"""Recipient verification at RCPT time, per tenant: accept only what can be delivered.

A tenant's ``recipients`` check is an SMTP callout to the tenant's own server (the default,
also for a tenant without a ``recipients`` table: ``MAIL FROM:<>`` then ``RCPT TO``, as
Postfix's address verification does), a static list, or ``none`` (the tenant opted out).
Callout answers are cached in rocksdict: a 2xx for ``positive_ttl`` seconds, a 5xx for
``negative_ttl``. A callout that gets no definite answer is not cached and, by the tenant's
``on_error``, defers the recipient with a 451 that says why (4.4.1 no server answered,
4.4.2 the connection broke or timed out, 4.4.3 the server or the DNS answered but could not
say) or accepts it. It is never a 5xx: the user may exist. Concurrent RCPTs for the same
address share one callout.

The callout goes where the tenant's mail goes: its route's host, its hops in priority order,
or the hosts of its ``mx`` domain by preference; an unreachable host or a 4xx moves on to the
next one. STARTTLS follows the route's ``tls`` (the callout names a recipient, so it is not
sent in clear where the mail itself would not be).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import structlog
from rocksdict import Rdict

from mxgate.resolver import DnsTempError, Resolver
from mxgate.tenants import RecipientCheck, Route, Tenant
from receiver.checks import CheckResult, accept, refuse
from receiver.replies import CALLOUT_BROKEN, CALLOUT_UNREACHABLE, UNKNOWN_USER, UNVERIFIED

__all__ = [
    "CALLOUT_BROKEN",
    "CALLOUT_UNREACHABLE",
    "UNKNOWN_USER",
    "UNVERIFIED",
    "RecipientVerifier",
]

log = structlog.get_logger("mxgate.receiver")

# A callout's outcome: True the user exists (2xx), False it does not (5xx), or a str: no
# definite answer, and the 451 reply that says why.
Outcome = bool | str

# When several hosts fail differently, the reply names the failure that got furthest.
_FURTHEST = (CALLOUT_UNREACHABLE, CALLOUT_BROKEN, UNVERIFIED)


def _static_ok(check: RecipientCheck, address: str) -> bool:
    """True when ``address`` (lowercased) is in the static list, or its domain is."""
    domain = "@" + address.rpartition("@")[2]
    return address in check.addresses or domain in check.addresses


class _NoHosts(Exception):
    """The route's hosts could not be found (MX lookup failed): a 4.4.3."""


class RecipientVerifier:
    """Answers "does this recipient exist?" for every tenant, with a persistent cache."""

    def __init__(
        self,
        cache_path: Path,
        helo: str,
        clock: Callable[[], float] = time.time,
        resolver: Resolver | None = None,
    ) -> None:
        """Open (create) the rocksdict cache at ``cache_path``. ``resolver`` finds the hosts
        of ``mx`` routes (default: the system's resolvers)."""
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(cache_path))
        self._helo = helo
        self._clock = clock
        self._resolver = resolver
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        self.callouts = 0  # callouts actually made (cache misses); for metrics and tests

    def close(self) -> None:
        """Close the cache."""
        self._db.close()

    async def check(self, tenant: Tenant, address: str) -> CheckResult:
        """The ``recipient`` check's result: may ``address`` receive mail?"""
        check = tenant.recipients
        if check.mode == "none":
            return accept("recipient")
        addr = address.lower()
        if check.mode == "static":
            exists: Outcome = _static_ok(check, addr)
        else:
            exists = await self._callout_cached(tenant, check, addr)
        if isinstance(exists, str):
            if check.on_error == "accept":
                return accept("recipient", "unverified_accepted")
            return refuse("recipient", "unverified", exists)
        return accept("recipient") if exists else refuse("recipient", "unknown_user", UNKNOWN_USER)

    def _cache_get(self, key: str) -> bool | None:
        entry = self._db.get(key)
        if entry is None:
            return None
        exists, expires = entry
        if expires <= self._clock():
            return None
        return bool(exists)

    async def _callout_cached(self, tenant: Tenant, check: RecipientCheck, addr: str) -> Outcome:
        key = f"{tenant.name}\x00{addr}"
        cached = self._cache_get(key)
        if cached is not None:
            return cached
        fut = self._pending.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            exists = await self._callout(tenant, check, addr)
            if isinstance(exists, bool):
                ttl = check.positive_ttl if exists else check.negative_ttl
                self._db[key] = (exists, self._clock() + ttl)
            fut.set_result(exists)
            return exists
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved here: waiters, if any, get it too
            raise
        finally:
            del self._pending[key]

    async def _callout(self, tenant: Tenant, check: RecipientCheck, addr: str) -> Outcome:
        """Ask the tenant's servers in turn until one gives a definite answer."""
        self.callouts += 1
        try:
            hosts = await self._hosts(tenant.route)
        except _NoHosts as e:
            log.warning("recipient callout failed", tenant=tenant.name, rcpt=addr, error=str(e))
            return UNVERIFIED
        failure = CALLOUT_UNREACHABLE
        for host, port in hosts:
            outcome = await self._ask(tenant, check, host, port, addr)
            if isinstance(outcome, bool):
                return outcome
            failure = max(failure, outcome, key=_FURTHEST.index)
        return failure

    async def _hosts(self, route: Route) -> list[tuple[str, int]]:
        """Where the callout goes: the route's static hops, or its MX hosts by preference."""
        if not route.mx:
            return [(h.host, h.port) for h in route.static_hops()]
        resolver = self._resolver = self._resolver or Resolver()
        domain = route.mx.rstrip(".").lower()
        try:
            answer = await resolver.query(domain, "MX")
        except DnsTempError as e:
            raise _NoHosts(f"{domain}: MX lookup failed: {e}") from None
        if answer.nxdomain:
            raise _NoHosts(f"{domain}: no such domain")
        if not answer.records:  # implicit MX (RFC 5321 5.1); a name with no address fails later
            return [(domain, route.port)]
        records = sorted((int(p), h) for p, _, h in (r.partition(" ") for r in answer.records))
        hosts = [h for _, h in records if h not in ("", ".")]
        if not hosts:
            raise _NoHosts(f"{domain}: null MX")
        return [(h, route.port) for h in hosts]

    async def _ask(
        self, tenant: Tenant, check: RecipientCheck, host: str, port: int, addr: str
    ) -> Outcome:
        """One host's answer: True 2xx, False 5xx at RCPT, else the 451 that says why."""
        route = tenant.route
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            timeout=check.timeout,
            start_tls=False,
            local_hostname=self._helo,
            validate_certs=route.tls == "verified",
            cert_bundle=str(route.tls_ca_file) if route.tls_ca_file else None,
        )
        stage = "connect"
        try:
            async with asyncio.timeout(check.timeout):
                await client.connect()
                stage = "session"
                await client.ehlo()
                if route.tls != "opportunistic" or client.supports_extension("starttls"):
                    await client.starttls()
                    await client.ehlo()  # the extensions again, over TLS
                utf8 = not addr.isascii()
                if utf8 and not client.supports_extension("smtputf8"):
                    return UNVERIFIED  # it could not take this recipient's mail either
                await client.mail("", options=["SMTPUTF8"] if utf8 else [])
                # The address as the client gave it (aiosmtplib's quoting would re-parse it).
                reply = await client.execute_command(b"RCPT", b"TO:<%s>" % addr.encode())
                exists: Outcome = (
                    True if reply.code < 300 else False if reply.code >= 500 else UNVERIFIED
                )
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    pass
                return exists
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as e:
            log.warning(
                "recipient callout failed",
                tenant=tenant.name, host=host, port=port, rcpt=addr, error=repr(e),
            )  # fmt: skip
            if isinstance(e, aiosmtplib.SMTPResponseException):
                # The server answered, but not about the recipient: a 421 banner, a refused
                # MAIL FROM:<>, a refused STARTTLS.
                return UNVERIFIED
            if stage == "connect":
                return CALLOUT_UNREACHABLE  # refused, no route, no banner in time
            if isinstance(e, TimeoutError | ConnectionError):
                return CALLOUT_BROKEN  # dropped or stalled mid-session
            return UNVERIFIED  # no STARTTLS where the route requires it, a failed handshake
        finally:
            client.close()
