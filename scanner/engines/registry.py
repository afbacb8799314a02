"""The one explicit engine registry: configuration names an engine, this maps it to a factory.

Adding an engine means one module under ``scanner/engines`` and one line in :data:`ENGINES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mxgate.errors import ConfigError
from mxgate.settings import ScannerSettings
from scanner.engines.base import Engine
from scanner.engines.content_rules import ContentRulesEngine
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


ENGINES: dict[str, Callable[[ScannerSettings], Engine]] = {
    "yara": _yara,
    "content": _content,
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
    return [ENGINES[name](settings) for name in settings.engines]
