"""ARC chain verification (RFC 8617) with dkimpy, keys prefetched through the shared resolver.

The chain validation status is ``none`` (no ARC sets), ``pass`` or ``fail``; a DNS failure
fetching a key is ``temperror``. The ``arc`` engine (:mod:`scanner.engines.arc`) reports it.
"""

from __future__ import annotations

import asyncio
import re

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
# A key name's labels (selector and d=): letters, digits, hyphens, underscores (RFC 6376 3.1).
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _valid_name(name: str) -> bool:
    labels = name.removesuffix(".").split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.match(x) for x in labels)


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
            name = f"{t['s']}._domainkey.{t['d']}"
            if not _valid_name(name):  # not a DNS failure: the set is broken (5.2 step 3)
                return "fail", f"invalid key name {name[:80]!r}"
            names.append(name)
    for v in sigs:
        # dkimpy defaults a missing c= to simple/simple; the ARC suite (ams_fields_c_na) wants
        # an AMS without c= to break the chain.
        if "c" not in signature_tags(v):
            return "fail", "ARC-Message-Signature without c="
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
        cv_text = (cv.decode() if isinstance(cv, bytes) else str(cv)).lower()
        if cv_text == "none":
            # ARC headers are present (checked above), so none is wrong: dkimpy answers none
            # when a seal says cv=fail ("reported failure, the chain is terminated"), but
            # RFC 8617 5.2 step 2 makes such a chain fail.
            return "fail", str(reason)[:200]
        return cv_text, str(reason)[:200]

    return await asyncio.to_thread(run)
