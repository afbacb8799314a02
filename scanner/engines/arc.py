"""The ``arc`` auth engine: the ARC chain (RFC 8617) validated by :mod:`scanner.mailauth.arc`.

Symbols (stable): ``ARC_<CV>``, ``arc=<cv>``. ``detail``: ``cv`` (``none``, ``pass``, ``fail``
or ``temperror``) and ``reason``. The finding is informative only (outcome ``clean``, or
``error`` for a DNS failure): whether to trust a sealer's earlier Authentication-Results is a
policy question, not the engine's.
Settings (:class:`ArcSettings`): the scanner's DNS and ``scanner.auth.dkim_min_key_bits``.
"""

from __future__ import annotations

from scanner.engines.common import EngineSpec, Finding, ParsedMessage
from scanner.engines.dkim import DkimEngine, DkimSettings
from scanner.mailauth.arc import verify_arc

__all__ = ["ENGINE", "ArcEngine", "ArcSettings"]


class ArcEngine(DkimEngine):
    """The ``arc`` auth engine (dkimpy, like ``dkim``)."""

    name = "arc"

    @property
    def rules_version(self) -> str:
        """The RFC implemented."""
        return "rfc8617"

    async def check(self, message: ParsedMessage) -> Finding:
        """The chain validation status."""
        cv, reason = await verify_arc(self._resolver, message.raw, self._min)
        return self.finding(
            "error" if cv == "temperror" else "clean",
            symbols=(f"ARC_{cv.upper()}", f"arc={cv}"),
            error=f"temperror: {reason}" if cv == "temperror" else None,
            detail={"cv": cv, "reason": reason},
        )


class ArcSettings(DkimSettings):
    """The ``arc`` engine's settings: those of ``dkim`` (DNS and the key floor)."""


def build(settings: ArcSettings) -> ArcEngine:
    """ARC through the shared resolver."""
    return ArcEngine(settings.dns.resolver(), settings.min_key_bits)


ENGINE = EngineSpec(ArcEngine, ArcSettings, build)
"""The registry's entry for ``arc``."""
