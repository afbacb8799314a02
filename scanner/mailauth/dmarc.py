"""DMARC (RFC 7489): does an aligned SPF or DKIM pass vouch for the From: domain?

The organizational domain comes from the Public Suffix List shipped inside the
``publicsuffixlist`` package (no download at run time). SPF and DKIM results are shared with
the ``spf`` and ``dkim`` engines (computed once per message, :mod:`scanner.mailauth.context`);
the ``dmarc`` engine (:mod:`scanner.engines.dmarc`) turns the result into a finding.

``pct`` sampling is deterministic per message ID, so replaying a message gives the same answer.
No aligned pass is ``fail`` only when nothing that could have aligned hit a DNS failure: an
aligned SPF or DKIM ``temperror`` makes the result ``temperror`` with no policy applied, so a
DNS outage never turns a ``p=reject`` into rejected mail. A ``v=DMARC1`` record that cannot
be applied (no or a bad ``p=``, a bad ``sp=``) is ``permerror`` with the reason, not ``none``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import getaddresses
from functools import lru_cache
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mxgate.resolver import DnsTempError, Resolver
from scanner.mailauth.dkim import DkimResult
from scanner.mailauth.spf import SpfResult

__all__ = [
    "DmarcRecord",
    "DmarcResult",
    "InvalidRecord",
    "aligned",
    "evaluate",
    "from_domain",
    "org_domain",
    "parse_record",
    "psl_version",
]

Disposition = Literal["none", "quarantine", "reject"]


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # Loaded on first use and then kept: immutable data for the process, not per-message state.
    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 3.2): public suffix plus one label."""
    d = domain.lower().rstrip(".")
    return _psl().privatesuffix(d) or d


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment: strict = same domain, relaxed = same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a DMARC record that decide."""

    p: Disposition
    sp: Disposition | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


class InvalidRecord(ValueError):
    """A ``v=DMARC1`` record that cannot be applied (RFC 7489 6.6.3): ``permerror``."""


_DISPOSITIONS = ("none", "quarantine", "reject")


def parse_record(text: str) -> DmarcRecord | None:
    """A ``v=DMARC1`` record; None when it is not one (``v=DMARC1`` must come first).

    Raises :class:`InvalidRecord` when it is one but cannot be applied: ``p`` missing or not
    none/quarantine/reject, an invalid ``sp`` (RFC 7489 6.6.3), a tag without ``=``. Bad
    values of the other tags fall back to their defaults (RFC 7489 6.3).
    """
    tags: dict[str, str] = {}
    for i, item in enumerate(text.split(";")):
        k, eq, v = item.partition("=")
        k, v = k.strip().lower(), v.strip()
        if i == 0 and (k != "v" or v != "DMARC1"):
            return None
        if not eq:
            if k:  # "; ;" and a trailing ";" are allowed, a word on its own is not
                raise InvalidRecord(f"tag {k!r} without a value")
            continue
        if k not in tags:
            tags[k] = v
    if "p" not in tags:
        raise InvalidRecord("no p= tag")
    p = tags["p"].lower()
    if p not in _DISPOSITIONS:
        raise InvalidRecord(f"invalid p={tags['p']!r}")
    sp = tags.get("sp", "").lower()
    if "sp" in tags and sp not in _DISPOSITIONS:
        raise InvalidRecord(f"invalid sp={tags['sp']!r}")
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(
        p=p,  # type: ignore[arg-type]
        sp=sp if sp else None,  # type: ignore[arg-type]
        pct=pct,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
    )


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """``result`` pass/fail/none/permerror/temperror, the policy applied and why."""

    result: str
    from_domain: str
    policy: Disposition = "none"
    published: Disposition | None = None
    reason: str = ""


def from_domain(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The one RFC5322.From domain; None when there are zero or several (RFC 7489 6.6.1)."""
    values = [v for k, v in headers if k.lower() == "from"]
    if len(values) != 1:
        return None
    addrs = [a for _, a in getaddresses(values) if a]
    domains = {a.rpartition("@")[2].lower().rstrip(".") for a in addrs if "@" in a}
    if len(domains) != 1:
        return None
    d = domains.pop()
    return d or None


async def _lookup(resolver: Resolver, domain: str) -> list[str]:
    ans = await resolver.txt(f"_dmarc.{domain}")
    return [r for r in ans.records if r.replace(" ", "").startswith("v=DMARC1")]


def _sampled(message_id: str, pct: int) -> bool:
    if pct >= 100:
        return True
    h = int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:4], "big") % 100
    return h < pct


_WEAKER: dict[Disposition, Disposition] = {
    "reject": "quarantine",
    "quarantine": "none",
    "none": "none",
}


async def evaluate(
    resolver: Resolver,
    headers: tuple[tuple[str, str], ...],
    spf: SpfResult,
    dkim_results: list[DkimResult],
    message_id: str,
) -> DmarcResult:
    """RFC 7489 section 6.6 for one message. Never raises."""
    fd = from_domain(headers)
    if fd is None:
        return DmarcResult("permerror", "", reason="not exactly one From domain")
    try:
        recs = await _lookup(resolver, fd)
        org = org_domain(fd)
        at_org = False
        if not recs and org != fd:
            recs, at_org = await _lookup(resolver, org), True
    except DnsTempError as e:
        return DmarcResult("temperror", fd, reason=str(e))
    if len(recs) != 1:
        return DmarcResult("none", fd, reason="no record" if not recs else "several records")
    try:
        rec = parse_record(recs[0])
    except InvalidRecord as e:
        # Reported, not silently "none": the domain owner published a record that says nothing.
        return DmarcResult("permerror", fd, reason=f"invalid record: {e}")
    if rec is None:
        return DmarcResult("none", fd, reason="no record")
    spf_ok = (
        spf.result == "pass" and spf.identity == "mailfrom" and aligned(spf.domain, fd, rec.aspf)
    )
    dkim_ok = any(r.result == "pass" and aligned(r.domain, fd, rec.adkim) for r in dkim_results)
    published: Disposition = rec.sp if (at_org and rec.sp is not None) else rec.p
    if spf_ok or dkim_ok:
        return DmarcResult(
            "pass", fd, "none", published, "aligned " + ("spf" if spf_ok else "dkim")
        )
    # A check that could have given an aligned pass but hit a DNS failure makes the result
    # temperror, never fail: a DNS outage must not turn the owner's p=reject into lost mail.
    temp = [
        f"dkim {r.domain}"
        for r in dkim_results
        if r.result == "temperror" and aligned(r.domain, fd, rec.adkim)
    ]
    if (
        spf.result == "temperror"
        and spf.identity == "mailfrom"
        and aligned(spf.domain, fd, rec.aspf)
    ):
        temp.insert(0, f"spf {spf.domain}")
    if temp:
        return DmarcResult("temperror", fd, "none", published, "DNS failure: " + ", ".join(temp))
    applied = published if _sampled(message_id, rec.pct) else _WEAKER[published]
    return DmarcResult("fail", fd, applied, published, "no aligned pass")


@lru_cache(maxsize=1)
def psl_version() -> str:
    """The version of the public suffix list package in use."""
    import importlib.metadata

    try:
        return importlib.metadata.version("publicsuffixlist")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
