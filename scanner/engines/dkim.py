"""The ``dkim`` auth engine: every DKIM signature (RFC 6376, RFC 8463) verified by
:mod:`scanner.mailauth.dkim`, once per message (shared with DMARC).

Symbols (stable, read by Authentication-Results): ``DKIM_<BEST>`` then per signature
``dkim=<result>``, ``header.d=<domain>``, ``header.s=<selector>``, ``header.a=<alg>``; a message
without signatures adds ``dkim=none``. ``detail``: ``result`` (the best), and ``header.d``,
``header.s``, ``header.a`` and ``reason`` of the first signature with that result (absent
without signatures); ``signatures``, their count; and ``<d>/<s>`` -> ``<result> <reason>`` for
each signature. Outcome: ``error`` when the best is ``temperror``, otherwise ``clean``.
Settings (:class:`DkimSettings`): the scanner's DNS and ``scanner.auth.dkim_min_key_bits``.
"""

from __future__ import annotations

from pydantic import AliasPath, Field

from mxgate.resolver import Resolver
from scanner.engines.common import (
    DnsSettings,
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    ParsedMessage,
)
from scanner.mailauth.context import AuthContext
from scanner.mailauth.dkim import best_result, dkimpy_version

__all__ = ["ENGINE", "DkimEngine", "DkimSettings"]


class DkimEngine(EngineBase):
    """The ``dkim`` auth engine."""

    name = "dkim"
    kind = "auth"

    def __init__(self, resolver: Resolver, min_key_bits: int = 1024) -> None:
        """Keys come from the shared ``resolver``; RSA keys under ``min_key_bits`` fail."""
        self._resolver = resolver
        self._min = min_key_bits

    @property
    def version(self) -> str:
        """dkimpy's version."""
        return dkimpy_version()

    @property
    def rules_version(self) -> str:
        """The RFCs implemented, with the key size floor."""
        return f"rfc6376+rfc8463/min{self._min}"

    async def check(self, message: ParsedMessage) -> Finding:
        """Every signature's result; the best one names the finding."""
        results = await AuthContext.of(message, self._resolver).dkim(self._min)
        best = best_result(results)
        symbols: list[str] = [f"DKIM_{best.upper()}"]
        for r in results:
            symbols += [f"dkim={r.result}", f"header.d={r.domain or 'unknown'}"]
            if r.selector:
                symbols.append(f"header.s={r.selector}")
            if r.algorithm:
                symbols.append(f"header.a={r.algorithm}")
        if not results:
            symbols.append("dkim=none")
        detail = {f"{r.domain}/{r.selector}": f"{r.result} {r.reason}".strip() for r in results}
        detail |= {"result": best, "signatures": str(len(results))}
        named = next((r for r in results if r.result == best), None)
        if named is not None:
            detail |= {
                "header.d": named.domain,
                "header.s": named.selector,
                "header.a": named.algorithm,
                "reason": named.reason[:200],
            }
        temp = best == "temperror"
        return self.finding(
            "error" if temp else "clean",
            symbols=tuple(symbols),
            error="temperror: " + "; ".join(r.reason for r in results if r.result == "temperror")
            if temp
            else None,
            detail=detail,
        )


class DkimSettings(EngineSettings):
    """The ``dkim`` engine's settings: DNS and ``scanner.auth.dkim_min_key_bits``."""

    dns: DnsSettings = Field(default_factory=DnsSettings, validation_alias="auth")
    min_key_bits: int = Field(default=1024, validation_alias=AliasPath("auth", "dkim_min_key_bits"))


def build(settings: DkimSettings) -> DkimEngine:
    """DKIM through the shared resolver."""
    return DkimEngine(settings.dns.resolver(), settings.min_key_bits)


ENGINE = EngineSpec(DkimEngine, DkimSettings, build)
"""The registry's entry for ``dkim``."""
