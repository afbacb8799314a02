"""The ``dmarc`` auth engine: DMARC (RFC 7489) evaluated by :mod:`scanner.mailauth.dmarc`, from
the SPF and DKIM results the message's :class:`~scanner.mailauth.context.AuthContext` shares.

Outcomes, kept apart from actions (the tenant's policy decides):

- ``pass`` / ``none`` / ``permerror`` -> ``clean``;
- a failure whose applied policy is ``quarantine`` or ``reject`` -> ``match`` with symbol
  ``DMARC_POLICY_QUARANTINE`` / ``DMARC_POLICY_REJECT`` (the policy's content-match action
  applies until policy.py grows a DMARC rule);
- a failure under ``p=none`` (or sampled out by ``pct``) -> ``spam``;
- DNS failure -> ``error`` (temperror), also when DMARC's own lookups worked but an SPF or
  DKIM check that could have aligned hit one: no policy is applied then (policy.py acts only
  on the ``DMARC_POLICY_*`` symbols of a ``match``).

Symbols (stable): ``dmarc=<result>``, ``header.from=<domain>``, ``policy.dmarc=<published>``.
``detail``: ``result``, ``policy`` (the one applied), ``header.from``, ``policy.dmarc`` (the
record's policy, "" when none) and ``reason``.
Settings (:class:`DmarcSettings`): the scanner's DNS and ``scanner.auth.dkim_min_key_bits``.
"""

from __future__ import annotations

from mxgate.resolver import Resolver
from scanner.engines.common import EngineBase, EngineSpec, Finding, Outcome, ParsedMessage
from scanner.engines.dkim import DkimSettings
from scanner.mailauth.context import AuthContext
from scanner.mailauth.dmarc import psl_version

__all__ = ["ENGINE", "DmarcEngine", "DmarcSettings"]


class DmarcEngine(EngineBase):
    """The ``dmarc`` auth engine."""

    name = "dmarc"
    kind = "auth"

    def __init__(self, resolver: Resolver, min_key_bits: int = 1024) -> None:
        """Shares ``resolver`` (and the per-message SPF/DKIM results) with the other engines."""
        self._resolver = resolver
        self._min = min_key_bits

    @property
    def rules_version(self) -> str:
        """The RFC and the public suffix list in use."""
        return f"rfc7489/psl-{psl_version()}"

    async def check(self, message: ParsedMessage) -> Finding:
        """The DMARC result; an enforced failure is a ``match`` finding."""
        r = await AuthContext.of(message, self._resolver).dmarc(self._min)
        symbols = [f"dmarc={r.result}"]
        if r.from_domain:
            symbols.append(f"header.from={r.from_domain}")
        if r.published:
            symbols.append(f"policy.dmarc={r.published}")
        outcome: Outcome = "clean"
        if r.result == "temperror":
            outcome = "error"
        elif r.result == "fail" and r.policy != "none":
            outcome = "match"
            symbols.insert(0, f"DMARC_POLICY_{r.policy.upper()}")
        elif r.result == "fail":
            outcome = "spam"  # failed, but the owner asked for no action (p=none or pct)
        return self.finding(
            outcome,
            symbols=tuple(symbols),
            error=f"temperror: {r.reason}" if r.result == "temperror" else None,
            detail={
                "result": r.result,
                "policy": r.policy,
                "header.from": r.from_domain,
                "policy.dmarc": r.published or "",
                "reason": r.reason[:200],
            },
        )


class DmarcSettings(DkimSettings):
    """The ``dmarc`` engine's settings: those of ``dkim``, whose results it uses."""


def build(settings: DmarcSettings) -> DmarcEngine:
    """DMARC through the shared resolver."""
    return DmarcEngine(settings.dns.resolver(), settings.min_key_bits)


ENGINE = EngineSpec(DmarcEngine, DmarcSettings, build)
"""The registry's entry for ``dmarc``."""
