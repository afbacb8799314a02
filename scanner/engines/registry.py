"""The engine registry: configuration names an engine, its module's ``ENGINE`` builds it.

Every module of :mod:`scanner.engines` that declares a module-level
:class:`~scanner.engines.common.EngineSpec` named ``ENGINE`` is an engine; :func:`discover`
finds them, so adding an engine is one module (and its tests) and no edit here. Discovery
imports the engine modules; what is costly (rules, the public suffix list, connections) is
built by the factories, only for the engines that are enabled.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from mxgate.errors import ConfigError
from mxgate.settings import ScannerSettings
from scanner.engines.common import Engine, EngineSpec
from scanner.engines.isolated import IsolatedEngine

__all__ = ["ENGINES", "build_engines", "discover"]

_ENV = "MXGATE_SCANNER__ENGINES"
_KEY = "scanner.engines"


def discover(package: str = "scanner.engines") -> dict[str, EngineSpec[Any]]:
    """Engine name -> spec, for every module of ``package`` that declares ``ENGINE``."""
    pkg = importlib.import_module(package)
    found: dict[str, EngineSpec[Any]] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, "ENGINE", None)  # modules without one are not engines
        if not isinstance(spec, EngineSpec):
            continue
        if spec.name in found:
            raise RuntimeError(f"engine {spec.name!r} is declared twice ({module.__name__})")
        found[spec.name] = spec
    return found


ENGINES: dict[str, EngineSpec[Any]] = discover()
"""Engine name (as in ``MXGATE_SCANNER__ENGINES``) -> its spec."""


def build_engines(
    settings: ScannerSettings, engines: dict[str, EngineSpec[Any]] | None = None
) -> list[Engine]:
    """Build the enabled engines, in the configured order (from ``engines``: default all).

    Raises :class:`ConfigError` for an unknown or repeated name, or an engine whose own
    configuration is invalid (e.g. no YARA rules).
    """
    table = ENGINES if engines is None else engines
    known = ", ".join(sorted(table))
    seen: set[str] = set()
    for name in settings.engines:
        if name not in table:
            raise ConfigError(_ENV, _KEY, f"unknown engine {name!r}; known: {known}")
        if name in seen:
            raise ConfigError(_ENV, _KEY, f"engine {name!r} is listed twice")
        seen.add(name)
    out: list[Engine] = []
    for name in settings.engines:
        spec = table[name]
        own = spec.settings.from_scanner(settings)
        engine = spec.factory(own)  # built here too: bad configuration fails at start
        if name in settings.isolated:
            # Scans of an isolated engine run only in its workers, each built by the same
            # factory from the engine's own settings. The build above stays a probe: it fails
            # bad configuration at start; it is dropped.
            engine = IsolatedEngine(
                name,
                spec.engine.kind,
                spec.factory,
                own,
                workers=settings.isolation_workers,
                memory_mb=settings.isolation_memory_mb,
                cacheable=spec.engine.cacheable,
                queue_timeout=settings.isolation_queue_timeout,
            )
        out.append(engine)
    return out
