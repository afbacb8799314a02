"""Run every engine on one message, concurrently, each under its own timeout. Never raises.

An engine that raises becomes an ``error`` finding and one that does not answer in time a
``timeout`` finding (:func:`scanner.engines.common.failure`); the other engines still report, and
the tenant's policy decides what a missing verdict means. Time an engine spends waiting for a
shared worker (:func:`scanner.engines.common.queue_wait`) does not count against its timeout;
an engine whose wait runs out raises :class:`~scanner.engines.common.EngineBusy`, recorded as an
``error`` with ``detail["missing"] = "queue-wait"``.

Engines must be cooperative: the timeout cancels ``check()`` at its next ``await``, so blocking
work belongs in a worker thread or process (see :mod:`scanner.engines.isolated`), never on the
event loop.

:class:`EngineRunner` adds what a long-running scanner needs around :func:`run_engines`:

- **circuit breaker** per engine: ``breaker_failures`` failures in a row open the circuit; an
  open engine is not asked (its finding is an ``error`` with ``circuit-open``, so the policy
  sees an antivirus engine missing) until ``breaker_cooldown`` has passed, then one message
  probes it: success closes the circuit, failure opens it again;
- **runtime switch**: an engine that ops disabled (``mxgate engines disable``, see
  :mod:`mxgate.enginecontrol`) is not run and not listed as active, with no restart; it is
  recorded as a ``disabled`` finding, so the policy sees the verdict missing (fail closed);
- **verdict cache**: a conclusive finding of a ``cacheable`` engine is reused for an identical
  body scanned by the same engine, engine version and rules version;
- **status**: per-engine state, error rate over the last scans and p50/p99 scan time, which the
  scanner publishes on the control topic for ``mxgate engines``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from scanner.engines.common import (
    Engine,
    EngineBusy,
    Finding,
    ParsedMessage,
    failure,
    scan_clock,
)

__all__ = ["Controls", "EngineRunner", "RunResult", "VerdictCache", "run_engines"]

_FAILED = ("error", "timeout")
_CONCLUSIVE = ("clean", "infected", "spam", "match")
CIRCUIT_OPEN = "circuit-open"
_RECENT = 200  # scans kept per engine for the error rate and the percentiles


async def run_engines(
    engines: Sequence[Engine],
    msg: ParsedMessage,
    timeout: float,
    timeouts: dict[str, float] | None = None,
) -> list[Finding]:
    """One finding per engine, in the engines' order, each with ``duration_ms`` filled in."""
    t = timeouts or {}
    return list(await asyncio.gather(*(_run_one(e, msg, t.get(e.name, timeout)) for e in engines)))


async def _run_one(engine: Engine, msg: ParsedMessage, timeout: float) -> Finding:
    start = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - start) * 1000.0

    try:
        async with asyncio.timeout(timeout) as cm:
            with scan_clock(cm):
                finding = await engine.check(msg)
    except EngineBusy as e:
        return failure(engine, "error", f"queue-wait: {e}", elapsed(), missing="queue-wait")
    except TimeoutError:
        return failure(engine, "timeout", f"no answer within {timeout:g}s", elapsed())
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the scanner itself is being cancelled (shutdown, rebalance): let it
        # The engine cancelled something of its own and let that escape: an engine failure.
        return failure(engine, "error", "CancelledError()", elapsed())
    except Exception as e:
        return failure(engine, "error", repr(e), elapsed())
    if not isinstance(finding, Finding):
        return failure(engine, "error", f"check() returned {type(finding).__name__}", elapsed())
    return dataclasses.replace(finding, duration_ms=elapsed())


class Controls(Protocol):
    """Where the runner learns which engines ops switched off (the control topic's view)."""

    def disabled_reason(self, engine: str) -> str | None:
        """The reason ``engine`` is switched off cluster-wide, or None when it is on."""
        ...


class VerdictCache:
    """A bounded LRU of conclusive findings keyed by (body SHA-256, engine, version, rules)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._data: OrderedDict[tuple[str, str, str, str], Finding] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str, str]) -> Finding | None:
        """The cached finding, marked ``detail["cached"]``, or None."""
        f = self._data.get(key)
        if f is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return dataclasses.replace(f, duration_ms=0.0, detail={**f.detail, "cached": "true"})

    def put(self, key: tuple[str, str, str, str], finding: Finding) -> None:
        """Remember ``finding``; the least recently used entry goes when full."""
        if self.entries <= 0:
            return
        self._data[key] = finding
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)


State = Literal["enabled", "disabled", "open", "half-open"]


@dataclass
class _Health:
    """One engine's circuit and recent history."""

    failures_in_row: int = 0
    opened_at: float | None = None
    probing: bool = False
    recent: deque[tuple[bool, float]] = field(default_factory=lambda: deque(maxlen=_RECENT))
    scans: int = 0
    errors: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """The findings for one message and the engines that were active for it."""

    findings: list[Finding]
    active: list[str]


class EngineRunner:
    """Runs the configured engines with breakers, runtime switches and a verdict cache."""

    def __init__(
        self,
        engines: Sequence[Engine],
        *,
        timeout: float,
        timeouts: dict[str, float] | None = None,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
        cache_entries: int = 10_000,
        controls: Controls | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engines = list(engines)
        self.timeout = timeout
        self.timeouts = dict(timeouts or {})
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self.cache = VerdictCache(cache_entries)
        self.controls = controls
        self._clock = clock
        self._health = {e.name: _Health() for e in self.engines}

    def timeout_of(self, name: str) -> float:
        """The seconds engine ``name`` is given per message."""
        return self.timeouts.get(name, self.timeout)

    def state(self, name: str) -> State:
        """``disabled`` (by ops), ``open``/``half-open`` (circuit) or ``enabled``."""
        if self.controls is not None and self.controls.disabled_reason(name) is not None:
            return "disabled"
        h = self._health[name]
        if h.opened_at is None:
            return "enabled"
        if h.probing or self._clock() - h.opened_at >= self.breaker_cooldown:
            return "half-open"
        return "open"

    async def run(self, msg: ParsedMessage, only: Iterable[str] | None = None) -> RunResult:
        """Scan ``msg`` with every switched-on engine (or only those named). Never raises."""
        wanted = set(only) if only is not None else None
        body_hash = ""
        tasks: list[asyncio.Future[Finding] | Any] = []
        active: list[str] = []
        for e in self.engines:
            if wanted is not None and e.name not in wanted:
                continue
            reason = self.controls.disabled_reason(e.name) if self.controls else None
            if reason is not None:
                # Not asked, but recorded: a switched-off antivirus is a missing verdict.
                tasks.append(_done(failure(e, "disabled", f"disabled: {reason}", 0.0)))
                continue
            h = self._health[e.name]
            if h.opened_at is not None:
                if h.probing or self._clock() - h.opened_at < self.breaker_cooldown:
                    f = failure(e, "error", CIRCUIT_OPEN, 0.0, missing=CIRCUIT_OPEN)
                    tasks.append(_done(f))
                    continue
                h.probing = True  # this message is the probe; others still see it open
            active.append(e.name)
            digest = ""
            if e.cacheable and self.cache.entries > 0:
                body_hash = body_hash or hashlib.sha256(msg.raw).hexdigest()
                digest = body_hash
                key = (digest, e.name, _v(e, "version"), _v(e, "rules_version"))
                # A version we cannot name cannot key a cache safely.
                hit = self.cache.get(key) if "unknown" not in key[2:] else None
                if hit is not None:
                    tasks.append(_done(hit))
                    continue
            tasks.append(self._scan(e, msg, digest))
        findings = list(await asyncio.gather(*tasks))
        return RunResult(findings, active)

    async def _scan(self, e: Engine, msg: ParsedMessage, digest: str) -> Finding:
        f = await _run_one(e, msg, self.timeout_of(e.name))
        self._record(e.name, f)
        # Keyed by the versions the finding reports: they are what actually scanned the body.
        if (
            digest
            and f.outcome in _CONCLUSIVE
            and "unknown"
            not in (
                f.engine_version,
                f.rules_version,
            )
        ):
            self.cache.put((digest, e.name, f.engine_version, f.rules_version), f)
        return f

    def _record(self, name: str, f: Finding) -> None:
        h = self._health[name]
        failed = f.outcome in _FAILED
        h.scans += 1
        h.recent.append((failed, f.duration_ms))
        if f.detail.get("missing") == "queue-wait":
            # Every worker was busy: load, not a broken engine. Counted in the error rate, but
            # it must not open the circuit (which would fail every other message too).
            h.errors += 1
            h.last_error = f.error
            h.probing = False
            return
        if failed:
            h.errors += 1
            h.last_error = f.error
            h.failures_in_row += 1
            if h.probing or h.failures_in_row >= self.breaker_failures:
                h.opened_at = self._clock()
        else:
            h.failures_in_row = 0
            h.opened_at = None
        h.probing = False

    def status(self) -> list[dict[str, Any]]:
        """Each engine's kind, versions, state, error rate and p50/p99 (recent scans)."""
        out = []
        for e in self.engines:
            h = self._health[e.name]
            times = sorted(ms for _, ms in h.recent)
            out.append(
                {
                    "engine": e.name,
                    "kind": e.kind,
                    "version": _v(e, "version"),
                    "rules_version": _v(e, "rules_version"),
                    "state": self.state(e.name),
                    "scans": h.scans,
                    "errors": h.errors,
                    "error_rate": (sum(1 for bad, _ in h.recent if bad) / len(h.recent))
                    if h.recent
                    else 0.0,
                    "p50_ms": _pct(times, 0.50),
                    "p99_ms": _pct(times, 0.99),
                    "last_error": h.last_error,
                }
            )
        return out


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _v(engine: Engine, prop: Literal["version", "rules_version"]) -> str:
    """An engine's version or rules version; "unknown" when the property itself fails."""
    try:
        return str(engine.version if prop == "version" else engine.rules_version)
    except Exception:
        return "unknown"


async def _done(f: Finding) -> Finding:
    return f
