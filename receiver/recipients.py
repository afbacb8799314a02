"""Recipient verification at RCPT time, per tenant: accept only what can be delivered.

A tenant's ``recipients`` check is either a static list or an SMTP callout to the tenant's
own server (``MAIL FROM:<>`` then ``RCPT TO``, as Postfix's address verification does).
Callout answers are cached in rocksdict: a 2xx for ``positive_ttl`` seconds, a 5xx for
``negative_ttl``. A callout that gets no definite answer (timeout, refused, 4xx) is not
cached and, by the tenant's ``on_error``, defers the recipient (451 4.4.3) or accepts it.
Concurrent RCPTs for the same address share one callout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import structlog
from rocksdict import Rdict

from mxgate.tenants import RecipientCheck, Tenant
from receiver.checks import CheckResult, accept, refuse
from receiver.replies import UNKNOWN_USER, UNVERIFIED

__all__ = ["UNKNOWN_USER", "UNVERIFIED", "RecipientVerifier"]

log = structlog.get_logger("mxgate.receiver")


def _static_ok(check: RecipientCheck, address: str) -> bool:
    """True when ``address`` (lowercased) is in the static list, or its domain is."""
    domain = "@" + address.rpartition("@")[2]
    return address in check.addresses or domain in check.addresses


class RecipientVerifier:
    """Answers "does this recipient exist?" for every tenant, with a persistent cache."""

    def __init__(
        self,
        cache_path: Path,
        helo: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (create) the rocksdict cache at ``cache_path``."""
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(cache_path))
        self._helo = helo
        self._clock = clock
        self._pending: dict[str, asyncio.Future[bool | None]] = {}
        self.callouts = 0  # callouts actually made (cache misses); for metrics and tests

    def close(self) -> None:
        """Close the cache."""
        self._db.close()

    async def check(self, tenant: Tenant, address: str) -> CheckResult:
        """The ``recipient`` check's result: may ``address`` receive mail?"""
        check = tenant.recipients
        if check is None:
            return accept("recipient")
        addr = address.lower()
        if check.mode == "static":
            exists: bool | None = _static_ok(check, addr)
        else:
            exists = await self._callout_cached(tenant, check, addr)
        if exists is None:
            if check.on_error == "accept":
                return accept("recipient", "unverified_accepted")
            return refuse("recipient", "unverified", UNVERIFIED)
        return accept("recipient") if exists else refuse("recipient", "unknown_user", UNKNOWN_USER)

    def _cache_get(self, key: str) -> bool | None:
        entry = self._db.get(key)
        if entry is None:
            return None
        exists, expires = entry
        if expires <= self._clock():
            return None
        return bool(exists)

    async def _callout_cached(
        self, tenant: Tenant, check: RecipientCheck, addr: str
    ) -> bool | None:
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
            if exists is not None:
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

    async def _callout(self, tenant: Tenant, check: RecipientCheck, addr: str) -> bool | None:
        """Ask the tenant's server: True 2xx, False 5xx, None no definite answer."""
        self.callouts += 1
        route = tenant.route
        client = aiosmtplib.SMTP(
            hostname=route.host,
            port=route.port,
            timeout=check.timeout,
            start_tls=False,
            local_hostname=self._helo,
        )
        try:
            async with asyncio.timeout(check.timeout):
                await client.connect()
                await client.ehlo()
                await client.mail("")
                try:
                    await client.rcpt(addr)
                    exists: bool | None = True
                except aiosmtplib.SMTPRecipientRefused as e:
                    exists = False if 500 <= e.code < 600 else None
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    pass
                return exists
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as e:
            log.warning("recipient callout failed", tenant=tenant.name, rcpt=addr, error=repr(e))
            return None
        finally:
            client.close()
