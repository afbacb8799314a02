"""ARC chain verification (RFC 8617) with dkimpy, keys prefetched through the shared resolver.

The chain validation status is ``none`` (no ARC sets), ``pass`` or ``fail``; a DNS failure
fetching a key is ``temperror``. The ``arc`` engine (:mod:`scanner.engines.arc`) reports it.
"""

from __future__ import annotations

import asyncio

import dkim

from mxgate.resolver import Resolver
from scanner.mailauth.dkim import (
    dnsfunc_for,
    header_values,
    prefetch_keys,
    signature_tags,
    to_crlf,
)

__all__ = ["verify_arc"]

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
