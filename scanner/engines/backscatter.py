"""Backscatter: bounces to tenant addresses must answer mail that went out through us (BATV).

Bounces (null envelope sender) carry the original envelope sender as their recipient. For
tenants that relay outbound mail through the gateway, that sender was rewritten to a BATV
``prvs=`` address (draft-levine-smtp-batv-01 "prvs" scheme)::

    prvs=KDDDSSSSSS=user@domain
    K: key number (0-9), DDD: expiry day (days since epoch, mod 1000),
    SSSSSS: first 3 bytes of HMAC-SHA1(key, "KDDD" + "user@domain"), hex

A bounce whose recipient has no valid, unexpired tag is a ``match`` finding with symbol
``BACKSCATTER`` (the tenant's policy quarantines or refuses it). A valid tag is ``clean``
(``BATV_VALID``); non-bounces and domains outside ``batv_domains`` are ``skipped``.
Matching the bounced Message-ID against what was sent needs an outbound log, which mxgate
does not keep yet; only BATV is checked.

Settings (:class:`BackscatterSettings`): ``scanner.auth.batv_keys``, ``batv_max_age_days`` and
``batv_domains``. ``detail`` of a ``match``: each recipient without a valid tag -> why.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from pydantic import AliasPath, Field

from scanner.engines.common import EngineBase, EngineSettings, EngineSpec, Finding, ParsedMessage

__all__ = ["ENGINE", "BackscatterEngine", "BackscatterSettings", "batv_sign", "batv_verify"]

_PRVS = re.compile(r"^prvs=(\d)(\d{3})([0-9a-f]{6})=(.+@.+)$", re.IGNORECASE)


def _day(now: float | None) -> int:
    return int((time.time() if now is None else now) // 86400)


def _mac(key: str, knum: int, ddd: str, address: str) -> str:
    msg = f"{knum}{ddd}{address}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha1).hexdigest()[:6]


def batv_sign(
    address: str, keys: Sequence[str], max_age_days: int, now: float | None = None
) -> str:
    """``address`` as a prvs= sender, signed with the newest key, valid ``max_age_days``."""
    ddd = f"{(_day(now) + max_age_days) % 1000:03d}"
    return f"prvs=0{ddd}{_mac(keys[0], 0, ddd, address)}={address}"


def batv_verify(
    address: str, keys: Sequence[str], max_age_days: int, now: float | None = None
) -> tuple[bool, str]:
    """(valid, why) for a prvs= address."""
    m = _PRVS.match(address)
    if m is None:
        return False, "no prvs tag"
    knum, ddd, mac, orig = int(m.group(1)), m.group(2), m.group(3).lower(), m.group(4)
    if knum >= len(keys):
        return False, "unknown key number"
    if not hmac.compare_digest(_mac(keys[knum], knum, ddd, orig), mac):
        return False, "bad signature"
    # Days until expiry, modulo 1000 (the tag stores the day number mod 1000).
    left = (int(ddd) - _day(now) % 1000) % 1000
    if left > max_age_days:
        return False, "expired"
    return True, "valid"


def _is_bounce(mail_from: str) -> bool:
    s = mail_from.strip()
    return s in ("", "<>")


class BackscatterEngine(EngineBase):
    """The ``backscatter`` antispam engine."""

    name = "backscatter"
    kind = "antispam"

    def __init__(
        self, keys: Sequence[str], max_age_days: int = 7, domains: Sequence[str] = ()
    ) -> None:
        """BATV ``keys`` (index = key number); ``domains`` empty: every recipient domain."""
        self._keys = tuple(keys)
        self._max = max_age_days
        self._domains = {d.lower().rstrip(".") for d in domains}

    @property
    def rules_version(self) -> str:
        """How many keys are configured (not the keys)."""
        return f"batv-prvs/{len(self._keys)}keys/{self._max}d"

    async def check(self, message: ParsedMessage) -> Finding:
        """A bounce without a valid tag on each protected recipient is BACKSCATTER."""
        if not self._keys or not _is_bounce(message.mail_from):
            return self.finding("skipped")
        protected = [
            r
            for r in message.rcpt_to
            if not self._domains or r.rpartition("@")[2].lower() in self._domains
        ]
        if not protected:
            return self.finding("skipped")
        bad: dict[str, str] = {}
        for r in protected:
            ok, why = batv_verify(r, self._keys, self._max)
            if not ok:
                bad[r] = why
        if bad:
            return self.finding("match", symbols=("BACKSCATTER",), detail=bad)
        return self.finding("clean", symbols=("BATV_VALID",))


class BackscatterSettings(EngineSettings):
    """The ``backscatter`` engine's settings (``scanner.auth.batv_*``)."""

    keys: tuple[str, ...] = Field(default=(), validation_alias=AliasPath("auth", "batv_keys"))
    max_age_days: int = Field(default=7, validation_alias=AliasPath("auth", "batv_max_age_days"))
    domains: tuple[str, ...] = Field(default=(), validation_alias=AliasPath("auth", "batv_domains"))


def build(settings: BackscatterSettings) -> BackscatterEngine:
    """BATV bounce verification with the configured keys."""
    return BackscatterEngine(settings.keys, settings.max_age_days, settings.domains)


ENGINE = EngineSpec(BackscatterEngine, BackscatterSettings, build)
"""The registry's entry for ``backscatter``."""
