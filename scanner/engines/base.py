"""The one engine interface. Engines report findings; they never choose the action.

Every engine is one module under ``scanner/engines`` with a class that has ``name``, ``kind``,
``version``, ``rules_version`` and an async ``check``. The scanner gives each engine the parsed
message and its own timeout; an engine that raises or times out becomes an ``error`` or
``timeout`` finding (see :func:`scanner.engines.base.failure`), never a lost message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Kind = Literal["antivirus", "antispam", "auth", "policy"]
# clean: nothing found. infected: malware. spam: unwanted. match: a policy/content rule hit.
# error / timeout: the engine could not answer. skipped: not applicable to this message.
Outcome = Literal["clean", "infected", "spam", "match", "error", "timeout", "skipped"]


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf of the message: a MIME part or a member extracted from an archive.

    ``path`` says where it came from, e.g. ``"2/report.zip!inner.zip!eicar.com"``.
    """

    path: str
    filename: str | None
    content_type: str
    data: bytes
    depth: int = 0


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A message parsed once and shared read-only by every engine."""

    message_id: str
    tenant: str
    raw: bytes
    headers: tuple[tuple[str, str], ...]
    parts: tuple[Part, ...]
    # Problems met while parsing/unpacking (malformed MIME, archive limits): engines may report
    # them; they are never raised.
    defects: tuple[str, ...] = ()
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    client_ip: str = ""
    helo: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """What one engine found in one message."""

    engine: str
    engine_version: str
    rules_version: str
    outcome: Outcome
    score: float = 0.0
    symbols: tuple[str, ...] = ()
    duration_ms: float = 0.0
    error: str | None = None
    kind: Kind = "antivirus"
    detail: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """One scanning engine. Implementations must be safe to call concurrently."""

    name: str
    kind: Kind

    @property
    def version(self) -> str:
        """The engine's own version (library or daemon)."""
        ...

    @property
    def rules_version(self) -> str:
        """The version of its signatures/rules (e.g. a hash of the rule files)."""
        ...

    async def check(self, message: ParsedMessage) -> Finding:
        """Scan ``message`` and report; raise only on engine failure."""
        ...

    async def aclose(self) -> None:
        """Release resources (sockets, pools)."""
        ...


def failure(engine: Engine, outcome: Literal["error", "timeout"], error: str, ms: float) -> Finding:
    """The finding recorded for an engine that raised or timed out."""
    return Finding(
        engine=engine.name,
        engine_version=_safe(lambda: engine.version),
        rules_version=_safe(lambda: engine.rules_version),
        outcome=outcome,
        duration_ms=ms,
        error=error[:500],
        kind=engine.kind,
    )


def _safe(f) -> str:  # type: ignore[no-untyped-def]
    try:
        return str(f())
    except Exception:
        return "unknown"
