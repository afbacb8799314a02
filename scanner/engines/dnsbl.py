"""DNSBL and URIBL lookups: the client IP in IP blocklists, link domains in URI blocklists.

Zones come from settings. An IP is listed in ``zone`` when ``<reversed ip>.zone`` has an A
record in 127.0.0.0/8 (RFC 5782); a link's registered domain (public suffix + 1) is listed when
``<domain>.zone`` has one. Each listing adds ``score`` under ``DNSBL_<zone>`` or
``URIBL_<zone>``. Lookups go through the shared resolver (cached); when every lookup failed the
finding is ``error`` (temperror), otherwise failed zones are only noted in ``detail``.

Settings (:class:`DnsblSettings`): ``scanner.spam.dnsbl_zones``, ``uribl_zones``, ``dnsbl_score``
and the scanner's DNS (``scanner.auth.dns_*``). ``detail``: each symbol that hit -> the name
that was listed, and ``failed``: the names whose lookup failed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence

from pydantic import AliasPath, Field

from mxgate.resolver import DnsTempError, Resolver
from scanner.engines.bayes import message_text
from scanner.engines.common import (
    DnsSettings,
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    ParsedMessage,
)
from scanner.mailauth.dmarc import org_domain

__all__ = ["ENGINE", "DnsblEngine", "DnsblSettings", "link_domains"]

_URL = re.compile(
    r"(?:https?|ftp)://([A-Za-z0-9.-]{1,253})|\bwww\.([A-Za-z0-9.-]{1,253})", re.IGNORECASE
)
MAX_DOMAINS = 20  # distinct link domains looked up per message (bounds DNS work)


def link_domains(text: str) -> list[str]:
    """Registered domains of the links in ``text``, first seen first, at most 20."""
    out: dict[str, None] = {}
    for m in _URL.finditer(text):
        host = (m.group(1) or "www." + m.group(2)).lower().rstrip(".")
        try:
            ipaddress.ip_address(host)
            continue  # numeric hosts are for the IP lists, not URI lists
        except ValueError:
            pass
        if "." not in host:
            continue
        out.setdefault(org_domain(host), None)
        if len(out) >= MAX_DOMAINS:
            break
    return list(out)


def _listed(records: Sequence[str]) -> bool:
    for r in records:
        try:
            if ipaddress.ip_address(r) in ipaddress.ip_network("127.0.0.0/8"):
                return True
        except ValueError:
            continue
    return False


class DnsblEngine(EngineBase):
    """The ``dnsbl`` antispam engine (IP and URI lists)."""

    name = "dnsbl"
    kind = "antispam"

    def __init__(
        self,
        resolver: Resolver,
        ip_zones: Sequence[str],
        uri_zones: Sequence[str],
        score: float = 3.0,
    ) -> None:
        """Query ``ip_zones`` for the client IP and ``uri_zones`` for link domains."""
        self._r = resolver
        self._ip = tuple(z.strip(".").lower() for z in ip_zones)
        self._uri = tuple(z.strip(".").lower() for z in uri_zones)
        self._score = score

    @property
    def rules_version(self) -> str:
        """The zones in use."""
        return ",".join(self._ip + self._uri) or "none"

    async def check(self, message: ParsedMessage) -> Finding:
        """One lookup per zone and name, in parallel."""
        queries: list[tuple[str, str]] = []  # (symbol, name)
        try:
            ip = ipaddress.ip_address(message.client_ip)
        except ValueError:
            ip = None
        if ip is not None and not ip.is_loopback:
            rev = (
                ".".join(reversed(str(ip).split(".")))
                if ip.version == 4
                else ".".join(reversed(ip.exploded.replace(":", "")))
            )
            queries += [(f"DNSBL_{z}", f"{rev}.{z}") for z in self._ip]
        if self._uri:
            domains = link_domains(message_text(message)[0])
            queries += [(f"URIBL_{z}", f"{d}.{z}") for z in self._uri for d in domains]
        if not queries:
            return self.finding("skipped")

        async def one(name: str) -> bool | None:
            try:
                return _listed((await self._r.query(name, "A")).records)
            except DnsTempError:
                return None

        results = await asyncio.gather(*(one(n) for _, n in queries))
        hits = {sym: name for (sym, name), r in zip(queries, results, strict=True) if r}
        failed = [name for (_, name), r in zip(queries, results, strict=True) if r is None]
        if len(failed) == len(queries):
            return self.finding("error", error="temperror: every lookup failed")
        detail = dict(hits)
        if failed:
            detail["failed"] = ",".join(failed)[:500]
        score = self._score * len(hits)
        return self.finding(
            "spam" if hits else "clean", score=score, symbols=tuple(hits), detail=detail
        )


class DnsblSettings(EngineSettings):
    """The ``dnsbl`` engine's settings (``scanner.spam.dnsbl_*``/``uribl_zones``, DNS)."""

    ip_zones: tuple[str, ...] = Field(default=(), validation_alias=AliasPath("spam", "dnsbl_zones"))
    uri_zones: tuple[str, ...] = Field(
        default=(), validation_alias=AliasPath("spam", "uribl_zones")
    )
    score: float = Field(default=3.0, validation_alias=AliasPath("spam", "dnsbl_score"))
    dns: DnsSettings = Field(default_factory=DnsSettings, validation_alias="auth")


def build(settings: DnsblSettings) -> DnsblEngine:
    """The engine over the configured zones, through the shared resolver."""
    return DnsblEngine(
        settings.dns.resolver(), settings.ip_zones, settings.uri_zones, settings.score
    )


ENGINE = EngineSpec(DnsblEngine, DnsblSettings, build)
"""The registry's entry for ``dnsbl``."""
