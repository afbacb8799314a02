"""Factories of the sender-authentication and antispam engines, for the engine registry.

Each takes :class:`~mxgate.settings.ScannerSettings` and builds one engine; engines that use
DNS share one resolver (and its cache) per settings object. Imports are lazy so that a scanner
without these engines never loads dkimpy or the public suffix list.
"""

from __future__ import annotations

from mxgate.settings import ScannerSettings
from scanner.engines.base import Engine

__all__ = [
    "arc",
    "backscatter",
    "bayes",
    "dkim",
    "dmarc",
    "dnsbl",
    "heuristics",
    "rspamd",
    "spamassassin",
    "spf",
]


def _resolver(s: ScannerSettings):  # type: ignore[no-untyped-def]
    from mxgate.resolver import shared_resolver

    return shared_resolver(s.auth)


def spf(s: ScannerSettings) -> Engine:
    """SPF (RFC 7208)."""
    from scanner.engines.spf import SpfEngine

    return SpfEngine(_resolver(s))


def dkim(s: ScannerSettings) -> Engine:
    """DKIM (RFC 6376/8463)."""
    from scanner.engines.dkim import DkimEngine

    return DkimEngine(_resolver(s), s.auth.dkim_min_key_bits)


def dmarc(s: ScannerSettings) -> Engine:
    """DMARC (RFC 7489)."""
    from scanner.engines.dmarc import DmarcEngine

    return DmarcEngine(_resolver(s), s.auth.dkim_min_key_bits)


def arc(s: ScannerSettings) -> Engine:
    """ARC (RFC 8617)."""
    from scanner.engines.arc import ArcEngine

    return ArcEngine(_resolver(s), s.auth.dkim_min_key_bits)


def bayes(s: ScannerSettings) -> Engine:
    """In-process Bayes over the rocksdict token store (read-only: `mxgate train` writes)."""
    from scanner.engines.bayes import BayesEngine

    return BayesEngine(s.spam.bayes_path, s.spam.bayes_min_trained, readonly=True)


def heuristics(s: ScannerSettings) -> Engine:
    """Heuristic rules from a TOML table."""
    from scanner.engines.heuristics import HeuristicsEngine

    return HeuristicsEngine(s.spam.heuristics_file)


def dnsbl(s: ScannerSettings) -> Engine:
    """DNSBL and URIBL lookups."""
    from scanner.engines.dnsbl import DnsblEngine

    return DnsblEngine(_resolver(s), s.spam.dnsbl_zones, s.spam.uribl_zones, s.spam.dnsbl_score)


def spamassassin(s: ScannerSettings) -> Engine:
    """SpamAssassin's spamd over the spamc protocol."""
    from scanner.engines.spamassassin import SpamassassinEngine

    return SpamassassinEngine(
        s.spam.spamd_host, s.spam.spamd_port, s.spam.spamd_user, s.spam.max_size
    )


def rspamd(s: ScannerSettings) -> Engine:
    """rspamd over HTTP (/checkv2)."""
    from mxgate.errors import ConfigError
    from scanner.engines.rspamd import RspamdEngine

    try:
        return RspamdEngine(
            s.spam.rspamd_url, s.spam.rspamd_controller_url, s.spam.rspamd_password, s.spam.max_size
        )
    except ValueError as e:  # a URL rspamd cannot be reached at: fail at start, by name
        raise ConfigError(
            "MXGATE_SCANNER__SPAM__RSPAMD_URL", "scanner.spam.rspamd_url", str(e)
        ) from None


def backscatter(s: ScannerSettings) -> Engine:
    """BATV bounce verification."""
    from scanner.engines.backscatter import BackscatterEngine

    return BackscatterEngine(s.auth.batv_keys, s.auth.batv_max_age_days, s.auth.batv_domains)
