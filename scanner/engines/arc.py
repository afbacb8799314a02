"""ARC chain verification (RFC 8617) with dkimpy, keys prefetched through the shared resolver.

The chain validation status is ``none`` (no ARC sets), ``pass`` or ``fail``; a DNS failure
fetching a key is ``temperror``. Symbols: ``ARC_<CV>``, ``arc=<cv>``, and
``smtp.remote-ip``-style details are left to the Authentication-Results builder. The finding
is informative only (outcome ``clean``/``error``): whether to trust a sealer's earlier
Authentication-Results is a policy question, not the engine's.
"""

from __future__ import annotations

import asyncio

import dkim

from mxgate.resolver import Resolver
from scanner.engines.base import Finding, ParsedMessage
from scanner.engines.dkim import (
    DkimpyEngine,
    dnsfunc_for,
    header_values,
    prefetch_keys,
    signature_tags,
    to_crlf,
)

__all__ = ["ArcEngine", "verify_arc"]

_MAX_SETS = 50  # RFC 8617 5.1.1.1: i= is at most 50


async def verify_arc(resolver: Resolver, raw: bytes, min_key_bits: int = 1024) -> tuple[str, str]:
    """(chain validation status, reason). Never raises."""
    raw = to_crlf(raw)
    try:
        seals = header_values(raw, b"arc-seal")
        sigs = header_values(raw, b"arc-message-signature")
    except Exception as e:
        return "fail", f"unparsable headers: {type(e).__name__}"
    if not seals and not sigs:
        return "none", "no ARC sets"
    if len(seals) > _MAX_SETS or len(sigs) > _MAX_SETS:
        return "fail", "too many ARC sets"
    names = []
    for v in seals + sigs:
        t = signature_tags(v)
        if t.get("s") and t.get("d"):
            names.append(f"{t['s']}._domainkey.{t['d']}")
    keys = await prefetch_keys(resolver, names)
    if any(isinstance(k, Exception) for k in keys.values()):
        return "temperror", "key lookup failed"

    def run() -> tuple[str, str]:
        try:
            cv, _results, reason = dkim.arc_verify(
                raw, dnsfunc=dnsfunc_for(keys), minkey=min_key_bits
            )
        except Exception as e:  # hostile input: a result, never a crash
            return "fail", f"{type(e).__name__}: {e}"[:200]
        cv_text = cv.decode() if isinstance(cv, bytes) else str(cv)
        return cv_text.lower(), str(reason)[:200]

    return await asyncio.to_thread(run)


class ArcEngine(DkimpyEngine):
    """The ``arc`` auth engine."""

    name: str = "arc"

    @property
    def rules_version(self) -> str:
        """The RFC implemented."""
        return "rfc8617"

    async def check(self, message: ParsedMessage) -> Finding:
        """The chain validation status."""
        cv, reason = await verify_arc(self._resolver, message.raw, self._min)
        return Finding(
            engine=self.name,
            engine_version=self.version,
            rules_version=self.rules_version,
            outcome="error" if cv == "temperror" else "clean",
            symbols=(f"ARC_{cv.upper()}", f"arc={cv}"),
            kind=self.kind,
            error=f"temperror: {reason}" if cv == "temperror" else None,
            detail={"cv": cv, "reason": reason},
        )

    async def aclose(self) -> None:
        """Nothing to release."""
