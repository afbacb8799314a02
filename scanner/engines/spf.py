"""The ``spf`` auth engine: SPF (RFC 7208) of the envelope, evaluated by :mod:`scanner.mailauth`.

MAIL FROM's domain is checked, or the HELO name for a null sender; the result is computed once
per message (:class:`~scanner.mailauth.context.AuthContext`) and shared with DMARC.

Symbols (stable, read by Authentication-Results): ``SPF_<RESULT>``, ``spf=<result>``,
``smtp.mailfrom=<domain>`` or ``smtp.helo=<domain>``. ``detail``: ``result``, ``domain``,
``smtp.mailfrom`` or ``smtp.helo`` (the domain, under the identity checked), ``reason`` and
``explanation`` (a fail's text from the domain's ``exp=``, RFC 7208 6.2; "" when none).
Outcome: ``fail`` is ``spam``, ``temperror`` (DNS failure) is ``error``, the rest ``clean``.
Settings (:class:`SpfSettings`): the scanner's DNS (``scanner.auth.dns_*``).
"""

from __future__ import annotations

from pydantic import Field

from mxgate.resolver import Resolver
from scanner.engines.common import (
    DnsSettings,
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    Outcome,
    ParsedMessage,
)
from scanner.mailauth.context import AuthContext

__all__ = ["ENGINE", "SpfEngine", "SpfSettings"]

_OUTCOME: dict[str, Outcome] = {"temperror": "error", "fail": "spam"}


class SpfEngine(EngineBase):
    """The ``spf`` auth engine: checks MAIL FROM (or HELO for bounces) against SPF."""

    name = "spf"
    kind = "auth"

    def __init__(self, resolver: Resolver) -> None:
        """Use the scanner's shared ``resolver``."""
        self._resolver = resolver

    @property
    def rules_version(self) -> str:
        """The RFC implemented."""
        return "rfc7208"

    async def check(self, message: ParsedMessage) -> Finding:
        """SPF result as symbols; ``temperror`` is an ``error`` outcome."""
        r = await AuthContext.of(message, self._resolver).spf()
        prop = "smtp.mailfrom" if r.identity == "mailfrom" else "smtp.helo"
        symbols = (f"SPF_{r.result.upper()}", f"spf={r.result}", f"{prop}={r.domain or 'unknown'}")
        return self.finding(
            _OUTCOME.get(r.result, "clean"),
            symbols=symbols,
            error=f"temperror: {r.reason}" if r.result == "temperror" else None,
            detail={
                "result": r.result,
                "domain": r.domain,
                prop: r.domain,
                "reason": r.reason[:200],
                "explanation": r.explanation[:200],
            },
        )


class SpfSettings(EngineSettings):
    """The ``spf`` engine's settings: the scanner's DNS (``scanner.auth.dns_*``)."""

    dns: DnsSettings = Field(default_factory=DnsSettings, validation_alias="auth")


def build(settings: SpfSettings) -> SpfEngine:
    """SPF through the shared resolver."""
    return SpfEngine(settings.dns.resolver())


ENGINE = EngineSpec(SpfEngine, SpfSettings, build)
"""The registry's entry for ``spf``."""
