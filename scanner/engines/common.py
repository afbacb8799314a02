"""The engine kit: the one engine interface and the base every engine module builds on.

Engines report findings; they never choose the action. Every engine is one module under
``scanner/engines`` that declares

- a class deriving from :class:`EngineBase`, whose identity (``name``, ``kind``, ``version``,
  ``rules_version``, ``cacheable``) is declared once and stamped on every finding by
  :meth:`EngineBase.finding`;
- its own settings model, a subclass of :class:`EngineSettings` whose fields name the
  operator-facing settings they are read from (see there);
- a module-level ``ENGINE = EngineSpec(TheEngine, TheSettings, factory)``, which the registry
  (:mod:`scanner.engines.registry`) finds by itself: adding an engine is one file and its tests.

The scanner gives each engine the parsed message and its own timeout; an engine that raises or
times out becomes an ``error`` or ``timeout`` finding (:func:`failure`), never a lost message.
Work that several engines share for one message (SPF, DKIM and DMARC need the same SPF and
DKIM results) lives in the message's :class:`ScanContext`, created with the message and gone
with it, so ``check(message)`` stays the whole interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

import mxgate
from mxgate.resolver import Resolver, shared_resolver
from mxgate.settings import ScannerSettings

__all__ = [
    "MISSING",
    "DnsSettings",
    "Engine",
    "EngineBase",
    "EngineBusy",
    "EngineSettings",
    "EngineSpec",
    "Finding",
    "Kind",
    "NoSettings",
    "Outcome",
    "ParsedMessage",
    "Part",
    "ScanContext",
    "failure",
    "queue_wait",
]

Kind = Literal["antivirus", "antispam", "auth", "policy"]
# clean: nothing found. infected: malware. spam: unwanted. match: a policy/content rule hit.
# error / timeout: the engine could not answer. skipped: not applicable to this message.
# disabled: switched off by ops, so not asked. unscannable: the message could not be parsed or
# unpacked completely (pseudo-engine "mime"), so some content went unscanned.
Outcome = Literal[
    "clean",
    "infected",
    "spam",
    "match",
    "error",
    "timeout",
    "skipped",
    "disabled",
    "unscannable",
]
MISSING: tuple[Outcome, ...] = ("error", "timeout", "disabled")
"""Outcomes that mean the engine gave no verdict (the policy's missing-verdict rules apply)."""

T = TypeVar("T")
S = TypeVar("S", bound="EngineSettings")


class ScanContext:
    """Per-message scratch space that the engines scanning one message share.

    An engine that computes something other engines need for the same message (the SPF
    result, the DKIM results) keeps it here under a key of its own, so it is computed once per
    message however many engines ask, and never outlives the message: a new message has a new
    context. What is kept is usually bound to the event loop (futures), so a context used from
    another loop starts empty, and a pickled context (a message sent to an isolated engine's
    worker process) arrives empty.
    """

    __slots__ = ("_items", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: dict[Hashable, object] = {}

    def shared(self, kind: type[T], key: Hashable, make: Callable[[], T]) -> T:
        """The ``kind`` object kept under ``key``, made by ``make()`` on first use.

        Call it from a coroutine: the running loop decides whether what is kept still holds.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._items = loop, {}
        found = self._items.get((kind, key))
        if isinstance(found, kind):
            return found
        made = make()
        self._items[(kind, key)] = made
        return made

    def __reduce__(self) -> tuple[type[ScanContext], tuple[()]]:
        # Futures do not cross processes: the other side starts with an empty context.
        return (ScanContext, ())


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
    """A message parsed once and shared read-only by every engine.

    ``context`` is the one mutable member: the engines' per-message :class:`ScanContext`. It
    takes no part in equality, and :func:`dataclasses.replace` gives the copy a fresh one.
    """

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
    context: ScanContext = field(default_factory=ScanContext, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Finding:
    """What one engine found in one message.

    ``detail`` is the engine's structured result (keys documented in each engine's module);
    ``symbols`` are its stable, human-readable tokens.
    """

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
    """One scanning engine. Implementations must be safe to call concurrently.

    :class:`EngineBase` implements everything but ``check`` and ``rules_version``.
    """

    # Read-only members, so a class attribute (``kind = "antivirus"``) satisfies them.
    @property
    def name(self) -> str:
        """The engine's name, as ``MXGATE_SCANNER__ENGINES`` lists it."""
        ...

    @property
    def kind(self) -> Kind:
        """What it looks for: antivirus, antispam, auth or policy."""
        ...

    @property
    def cacheable(self) -> bool:
        """True when a conclusive finding depends only on the body and the versions, so the
        runner may reuse it for an identical body (verdict cache)."""
        ...

    @property
    def version(self) -> str:
        """The engine's own version (library or daemon)."""
        ...

    @property
    def rules_version(self) -> str:
        """The version of its signatures/rules (e.g. a hash of the rule files)."""
        ...

    async def start(self) -> None:
        """Get ready before the first message (spawn workers); raise if it cannot."""
        ...

    async def check(self, message: ParsedMessage) -> Finding:
        """Scan ``message`` and report; raise only on engine failure."""
        ...

    async def aclose(self) -> None:
        """Release resources (sockets, pools)."""
        ...


class EngineBase:
    """What every engine shares: identity declared once, the finding helper, no-op lifecycle.

    A subclass sets ``name`` and ``kind`` (and ``cacheable`` when it may be cached), defines
    ``rules_version`` and ``check``, and overrides ``version`` unless it is mxgate's own code.
    """

    name: str
    kind: Kind
    cacheable: bool = False

    @property
    def version(self) -> str:
        """In-process engines: mxgate's version."""
        return mxgate.__version__

    @property
    def rules_version(self) -> str:
        """The version of the engine's rules; every engine defines its own."""
        raise NotImplementedError

    def finding(
        self,
        outcome: Outcome,
        *,
        score: float = 0.0,
        symbols: tuple[str, ...] = (),
        detail: dict[str, str] | None = None,
        error: str | None = None,
        rules_version: str | None = None,
    ) -> Finding:
        """A finding of this engine, its identity filled in.

        ``rules_version`` overrides the property for an engine that scanned with a snapshot of
        its rules (a reload may have happened since).
        """
        return Finding(
            engine=self.name,
            engine_version=self.version,
            rules_version=self.rules_version if rules_version is None else rules_version,
            outcome=outcome,
            score=score,
            symbols=symbols,
            error=error,
            kind=self.kind,
            detail=dict(detail or {}),
        )

    async def start(self) -> None:
        """Nothing to prepare by default."""

    async def aclose(self) -> None:
        """Nothing to release by default."""


def failure(
    engine: Engine,
    outcome: Literal["error", "timeout", "disabled"],
    error: str,
    ms: float,
    *,
    missing: str | None = None,
) -> Finding:
    """The finding recorded for an engine that gave no verdict: it raised, timed out, was
    switched off, its circuit was open or no worker was free.

    ``detail["missing"]`` says which (``error``, ``timeout``, ``disabled``, ``circuit-open``,
    ``queue-wait``; default: the outcome), so the policy's reason and the trace can name it.
    """
    return Finding(
        engine=engine.name,
        engine_version=_safe(lambda: engine.version),
        rules_version=_safe(lambda: engine.rules_version),
        outcome=outcome,
        duration_ms=ms,
        error=error[:500],
        kind=engine.kind,
        detail={"missing": missing or outcome},
    )


class EngineBusy(Exception):
    """No worker became free for the engine within its queue-wait budget (not an engine fault:
    the runner records it as a missing verdict and does not count it against the breaker)."""


class _ScanClock:
    """The runner's timeout for one engine scan, which :func:`queue_wait` can pause."""

    def __init__(self, timeout: asyncio.Timeout) -> None:
        self.timeout = timeout
        self.remaining: float | None = None

    def pause(self) -> None:
        when = self.timeout.when()
        if when is not None and self.remaining is None:
            loop = asyncio.get_running_loop()
            self.remaining = max(0.0, when - loop.time())
            self.timeout.reschedule(None)

    def resume(self) -> None:
        if self.remaining is not None:
            loop = asyncio.get_running_loop()
            self.timeout.reschedule(loop.time() + self.remaining)
            self.remaining = None


_SCAN_CLOCK: contextvars.ContextVar[_ScanClock | None] = contextvars.ContextVar(
    "mxgate_scan_clock", default=None
)


@contextlib.contextmanager
def scan_clock(timeout: asyncio.Timeout) -> Iterator[None]:
    """Within this block (the runner's), :func:`queue_wait` can pause ``timeout``."""
    token = _SCAN_CLOCK.set(_ScanClock(timeout))
    try:
        yield
    finally:
        _SCAN_CLOCK.reset(token)


@contextlib.contextmanager
def queue_wait() -> Iterator[None]:
    """Time spent in this block does not count against the engine's timeout.

    An engine that waits for a resource shared by all scans (an isolated engine's worker
    slot) wraps the wait in it, so 50 messages queued on 2 workers do not time out because of
    each other; the engine must bound the wait itself (and raise :class:`EngineBusy`).
    """
    clock = _SCAN_CLOCK.get()
    if clock is None:
        yield
        return
    clock.pause()
    try:
        yield
    finally:
        clock.resume()


def _safe(f: Callable[[], object]) -> str:
    try:
        return str(f())
    except Exception:
        return "unknown"


class EngineSettings(BaseModel):
    """Base of each engine's own settings model.

    Operators keep one flat settings surface: the fields stay in
    :class:`mxgate.settings.ScannerSettings` (``MXGATE_SCANNER__CLAMAV_SOCKET``,
    ``MXGATE_SCANNER__AUTH__DKIM_MIN_KEY_BITS``, ...), which the core owns and documents, since
    the core may not import the engines. Each engine module declares the few it reads as a
    small frozen model whose fields name their source with ``validation_alias`` (a field name
    of ``ScannerSettings`` or an ``AliasPath`` into a section), and :meth:`from_scanner` builds
    it. Tests may build one by field name. The model pickles, so an isolated engine's worker
    gets only its own engine's settings.
    """

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    @classmethod
    def from_scanner(cls, scanner: ScannerSettings) -> Self:
        """This engine's settings, read from the scanner's."""
        return cls.model_validate(scanner.model_dump())


class NoSettings(EngineSettings):
    """For engines that read no settings."""


class DnsSettings(EngineSettings):
    """The scanner's DNS (``scanner.auth.dns_*``), for the engines that look names up.

    An engine settings model holds it as ``dns: DnsSettings = Field(validation_alias="auth")``.
    Equal values give the same :meth:`resolver`, so those engines share one cache.
    """

    dns_servers: tuple[str, ...] = ()
    dns_timeout: float = 3.0
    dns_cache_size: int = 10_000

    def resolver(self) -> Resolver:
        """The shared resolver for these settings."""
        return shared_resolver(self)


@dataclass(frozen=True, slots=True)
class EngineSpec(Generic[S]):
    """What the registry needs of one engine module: its class, settings model and factory.

    ``factory`` must be a module-level function (it is pickled into isolated workers); it may
    raise :class:`mxgate.errors.ConfigError` for configuration it cannot work with.
    """

    engine: type[EngineBase]
    settings: type[S]
    factory: Callable[[S], Engine]

    @property
    def name(self) -> str:
        """The engine's name, as ``MXGATE_SCANNER__ENGINES`` lists it."""
        return self.engine.name

    def build(self, scanner: ScannerSettings) -> Engine:
        """Build the engine from the scanner's settings."""
        return self.factory(self.settings.from_scanner(scanner))
