"""The one explicit engine registry: configuration names an engine, this maps it to a factory.

Adding an engine means one module under ``scanner/engines`` and one line in :data:`ENGINES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mxgate.errors import ConfigError
from mxgate.settings import ScannerSettings
from scanner.engines import factories_spam as _spam  # auth + antispam (issue 7)
from scanner.engines.attachments import AttachmentsEngine
from scanner.engines.base import Engine
from scanner.engines.clamav import ClamAVEngine
from scanner.engines.content_rules import ContentRulesEngine
from scanner.engines.isolated import IsolatedEngine
from scanner.engines.office import OfficeEngine
from scanner.engines.reputation import ReputationEngine
from scanner.engines.sandbox import SandboxEngine
from scanner.engines.yara_engine import YaraEngine

__all__ = ["ENGINES", "build_engines"]

_ENV = "MXGATE_SCANNER__ENGINES"
_KEY = "scanner.engines"


def _yara(settings: ScannerSettings) -> Engine:
    # libyara's own per-part timeout is whole seconds; match the scanner's per-engine budget so
    # a thread the scanner gave up on does not keep working long after.
    return YaraEngine(settings.yara_rules, match_timeout=math.ceil(settings.engine_timeout))


def _content(settings: ScannerSettings) -> Engine:
    return ContentRulesEngine()


_CLAMAV_ENV = "MXGATE_SCANNER__CLAMAV_SOCKET"


def _clamav(settings: ScannerSettings) -> Engine:
    if not settings.clamav_socket:
        raise ConfigError(_CLAMAV_ENV, "scanner.clamav_socket", "clamav needs clamd's socket")
    try:
        return ClamAVEngine(settings.clamav_socket, db_dir=settings.clamav_db_dir)
    except ValueError as e:
        raise ConfigError(_CLAMAV_ENV, "scanner.clamav_socket", str(e)) from None


def _attachments(settings: ScannerSettings) -> Engine:
    return AttachmentsEngine()


def _office(settings: ScannerSettings) -> Engine:
    return OfficeEngine()


def _reputation(settings: ScannerSettings) -> Engine:
    return ReputationEngine(
        settings.reputation_file,
        kafka=settings.reputation_kafka or None,
        topic=settings.reputation_topic,
    )


def _sandbox(settings: ScannerSettings) -> Engine:
    # Its runner timeout is settings.engine_timeouts["sandbox"], which ScannerSettings makes
    # longer than sandbox_timeout, so the engine's own "timeout" finding comes first.
    return SandboxEngine(
        settings.sandbox_url,
        types=settings.sandbox_types,
        timeout=settings.sandbox_timeout,
        poll_interval=settings.sandbox_poll_interval,
        token=settings.sandbox_token,
        cache_entries=settings.cache_entries,
    )


ENGINES: dict[str, Callable[[ScannerSettings], Engine]] = {
    "yara": _yara,
    "content": _content,
    "clamav": _clamav,
    "attachments": _attachments,
    "office": _office,
    "reputation": _reputation,
    "sandbox": _sandbox,
    "spf": _spam.spf,
    "dkim": _spam.dkim,
    "dmarc": _spam.dmarc,
    "arc": _spam.arc,
    "bayes": _spam.bayes,
    "heuristics": _spam.heuristics,
    "dnsbl": _spam.dnsbl,
    "spamassassin": _spam.spamassassin,
    "rspamd": _spam.rspamd,
    "backscatter": _spam.backscatter,
}
"""Engine name (as in ``MXGATE_SCANNER__ENGINES``) -> factory."""


def build_engines(settings: ScannerSettings) -> list[Engine]:
    """Build the enabled engines, in the configured order.

    Raises :class:`ConfigError` for an unknown or repeated name, or an engine whose own
    configuration is invalid (e.g. no YARA rules).
    """
    known = ", ".join(sorted(ENGINES))
    seen: set[str] = set()
    for name in settings.engines:
        if name not in ENGINES:
            raise ConfigError(_ENV, _KEY, f"unknown engine {name!r}; known: {known}")
        if name in seen:
            raise ConfigError(_ENV, _KEY, f"engine {name!r} is listed twice")
        seen.add(name)
    out: list[Engine] = []
    for name in settings.engines:
        engine = ENGINES[name](settings)  # built here too: bad configuration fails at start
        if name in settings.isolated:
            # Scans of an isolated engine run only in its workers. The build above stays a
            # probe: it fails bad configuration at start and tells the kind; it is dropped.
            kind, cacheable = engine.kind, bool(getattr(engine, "cacheable", False))
            engine = IsolatedEngine(
                name,
                kind,
                ENGINES[name],
                settings,
                workers=settings.isolation_workers,
                memory_mb=settings.isolation_memory_mb,
                cacheable=cacheable,
            )
        out.append(engine)
    return out
