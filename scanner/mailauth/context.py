"""One message's sender authentication, each part computed at most once.

SPF, DKIM and DMARC are separate engines, but DMARC needs the very SPF and DKIM results the
other two compute. :class:`AuthContext` holds them for one message: the first engine to ask
starts the work, the others wait for the same result. It lives in the message's
:class:`~scanner.engines.common.ScanContext`, so it is created with the message and goes with
it: nothing is remembered across messages, and nothing needs evicting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mxgate.resolver import Resolver
from scanner.engines.common import ParsedMessage
from scanner.mailauth.dkim import DkimResult, verify_dkim
from scanner.mailauth.dmarc import DmarcResult, evaluate
from scanner.mailauth.spf import SpfResult, check_host, identity

__all__ = ["AuthContext"]

T = TypeVar("T")


class AuthContext:
    """The SPF, DKIM and DMARC results of one message under one resolver."""

    def __init__(self, message: ParsedMessage, resolver: Resolver) -> None:
        """Prefer :meth:`of`, which finds the message's own context."""
        self.message = message
        self.resolver = resolver
        self._spf: asyncio.Future[SpfResult] | None = None
        # By RSA key floor: engines configured alike share one result.
        self._dkim: dict[int, asyncio.Future[list[DkimResult]]] = {}
        self._dmarc: dict[int, asyncio.Future[DmarcResult]] = {}

    @classmethod
    def of(cls, message: ParsedMessage, resolver: Resolver) -> AuthContext:
        """The context of ``message`` for the engines using ``resolver``.

        Engines built from the same settings share the resolver, hence the context. Call it
        from a coroutine.
        """
        return message.context.shared(cls, id(resolver), lambda: cls(message, resolver))

    async def spf(self) -> SpfResult:
        """SPF (RFC 7208) of the envelope: MAIL FROM, or HELO for a null sender."""
        if self._spf is None:
            self._spf = _start(self._check_spf)
        return await asyncio.shield(self._spf)

    async def dkim(self, min_key_bits: int = 1024) -> list[DkimResult]:
        """One result per DKIM-Signature (RFC 6376), in header order; shorter RSA keys fail."""
        fut = self._dkim.get(min_key_bits)
        if fut is None:
            raw = self.message.raw
            fut = _start(lambda: verify_dkim(self.resolver, raw, min_key_bits))
            self._dkim[min_key_bits] = fut
        return await asyncio.shield(fut)

    async def dmarc(self, min_key_bits: int = 1024) -> DmarcResult:
        """DMARC (RFC 7489), from the SPF and DKIM results above."""
        fut = self._dmarc.get(min_key_bits)
        if fut is None:
            fut = _start(lambda: self._check_dmarc(min_key_bits))
            self._dmarc[min_key_bits] = fut
        return await asyncio.shield(fut)

    async def _check_spf(self) -> SpfResult:
        m = self.message
        domain, sender, ident = identity(m.mail_from, m.helo)
        r = await check_host(self.resolver, m.client_ip, domain, sender, m.helo)
        return SpfResult(r.result, r.domain, ident, r.reason, r.explanation)

    async def _check_dmarc(self, min_key_bits: int) -> DmarcResult:
        spf = await self.spf()
        dk = await self.dkim(min_key_bits)
        m = self.message
        return await evaluate(self.resolver, m.headers, spf, dk, m.message_id)


def _start(work: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
    # A task of its own, awaited through shield(): an engine cut off by its timeout does not
    # cancel the work another engine still waits for.
    async def run() -> T:
        return await work()

    return asyncio.ensure_future(run())
