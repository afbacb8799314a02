"""YARA: in-process signature matching over every part of the message.

Compiles every ``*.yar`` file of a rules directory (default: the packaged ``scanner/rules/``) and
matches each part that :func:`scanner.mime.parse` produced, archive members included, so a
signature sees the decoded bytes whatever the attachment claims to be. Matching runs in a worker
thread (libyara releases the GIL). A rule reports ``infected`` unless its ``meta: outcome`` says
``"match"`` (e.g. "an executable is attached": the tenant's content policy decides, not on_virus).

Rule files are re-checked at most every ``reload_interval`` seconds (one ``stat`` per file) and
recompiled when they change; a broken edit is logged and the previous rules stay in force.

Settings (:class:`YaraSettings`): ``scanner.yara_rules`` and ``scanner.engine_timeout``.
``detail``: each matched rule -> the part paths it matched (at most 5 listed), and ``errors``
when some parts could not be scanned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yara
from pydantic import Field

from mxgate.errors import ConfigError
from scanner.engines.common import (
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    Outcome,
    ParsedMessage,
    Part,
)
from scanner.mime import RAW_PATH

__all__ = ["ENGINE", "PACKAGED_RULES", "YaraEngine", "YaraSettings"]

PACKAGED_RULES = Path(__file__).resolve().parent.parent / "rules"
"""The rules shipped with mxgate."""

_log = logging.getLogger(__name__)
_ENV = "MXGATE_SCANNER__YARA_RULES"
_KEY = "scanner.yara_rules"
# Paths listed per rule in the finding's detail; a zip of 10,000 copies needs no 10,000 paths.
_MAX_PATHS = 5


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One consistent generation of rules: what was compiled and from which files."""

    rules: yara.Rules
    version: str
    stamp: tuple[tuple[str, int, int], ...]


class YaraEngine(EngineBase):
    """The ``yara`` antivirus engine. Safe to call concurrently."""

    name = "yara"
    kind = "antivirus"

    def __init__(
        self,
        rules_dir: Path | str | None = None,
        *,
        match_timeout: int = 60,
        reload_interval: float = 1.0,
    ) -> None:
        """Compile the rules in ``rules_dir``; raise :class:`ConfigError` if there are none.

        ``match_timeout`` bounds libyara's work per part (seconds), so a pathological rule or
        input cannot keep a worker thread busy after the scanner has given up on the engine.
        """
        self._dir = Path(rules_dir) if rules_dir is not None else PACKAGED_RULES
        self._match_timeout = max(1, int(match_timeout))
        self._reload_interval = reload_interval
        self._lock = threading.Lock()
        self._compiled = _compile(self._dir)
        self._next_check = time.monotonic() + reload_interval
        self._failed_stamp: tuple[tuple[str, int, int], ...] | None = None

    @property
    def version(self) -> str:
        """The libyara binding's version."""
        return str(yara.__version__)

    @property
    def rules_version(self) -> str:
        """Short sha256 over the rule files (names and contents) currently in force."""
        return self._compiled.version

    @property
    def rules_dir(self) -> Path:
        """The directory the rules are read from."""
        return self._dir

    async def check(self, message: ParsedMessage) -> Finding:
        """Match every part (and the raw message); ``infected``/``match`` or ``clean``."""
        return await asyncio.to_thread(self._scan, message)

    def reload(self) -> bool:
        """Recompile now if the rule files changed; True if new rules are in force."""
        with self._lock:
            stamp = _stamp(self._dir)
            if stamp == self._compiled.stamp or stamp == self._failed_stamp:
                return False
            try:
                self._compiled = _compile(self._dir)
            except ConfigError as e:
                self._failed_stamp = stamp
                _log.warning("yara rules not reloaded, keeping %s: %s", self.rules_version, e)
                return False
            self._failed_stamp = None
            _log.info("yara rules reloaded: %s", self._compiled.version)
            return True

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._reload_interval
        try:
            self.reload()
        except OSError as e:  # the directory vanished: keep scanning with what we have
            _log.warning("yara rules dir unreadable, keeping %s: %s", self.rules_version, e)

    def _scan(self, message: ParsedMessage) -> Finding:
        self._maybe_reload()
        compiled = self._compiled  # one generation for the whole message
        hits: dict[str, list[str]] = {}
        outcomes: dict[str, str] = {}
        errors: list[str] = []
        for part in _targets(message):
            try:
                matches = compiled.rules.match(data=part.data, timeout=self._match_timeout)
            except yara.Error as e:
                errors.append(f"{part.path}: {e}")
                continue
            for m in matches:
                hits.setdefault(m.rule, []).append(part.path)
                outcomes[m.rule] = "match" if m.meta.get("outcome") == "match" else "infected"
        if not hits and errors:
            # Nothing found but some parts went unscanned: that is not "clean".
            raise RuntimeError(f"yara could not scan {len(errors)} part(s): {errors[0]}")
        symbols = tuple(sorted(hits))
        detail = {rule: _paths(paths) for rule, paths in sorted(hits.items())}
        if errors:
            detail["errors"] = "; ".join(errors[:_MAX_PATHS])
        outcome: Outcome
        if not hits:
            outcome = "clean"
        elif "infected" in outcomes.values():
            outcome = "infected"
        else:
            outcome = "match"
        return self.finding(outcome, symbols=symbols, detail=detail, rules_version=compiled.version)


def _targets(message: ParsedMessage) -> tuple[Part, ...]:
    """The parts, plus the raw message if whoever built ``message`` did not include it."""
    if any(p.path == RAW_PATH for p in message.parts):
        return message.parts
    raw = Part(path=RAW_PATH, filename=None, content_type="message/rfc822", data=message.raw)
    return (*message.parts, raw)


def _paths(paths: list[str]) -> str:
    shown = ", ".join(paths[:_MAX_PATHS])
    more = len(paths) - _MAX_PATHS
    return f"{shown} (+{more} more)" if more > 0 else shown


def _rule_files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.glob("*.yar") if p.is_file())


def _stamp(rules_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap change detector: name, mtime and size of every rule file."""
    out = []
    for p in _rule_files(rules_dir):
        st = p.stat()
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _compile(rules_dir: Path) -> _Compiled:
    """Compile every rule file of ``rules_dir`` into one namespace per file."""
    try:
        stamp = _stamp(rules_dir)
        files = _rule_files(rules_dir)
        contents = {p.stem: p.read_bytes() for p in files}
    except OSError as e:
        raise ConfigError(_ENV, _KEY, f"cannot read YARA rules in {rules_dir}: {e}") from None
    if not contents:
        raise ConfigError(_ENV, _KEY, f"no *.yar files in {rules_dir}")
    digest = hashlib.sha256()
    for p in files:
        # Names are hashed with the contents so that renaming a rule file changes the version.
        digest.update(p.name.encode() + b"\0" + contents[p.stem] + b"\0")
    try:
        # Compile the bytes that were hashed, so the version always describes what is running.
        rules = yara.compile(
            sources={ns: text.decode("utf-8", "replace") for ns, text in contents.items()}
        )
    except yara.Error as e:
        raise ConfigError(_ENV, _KEY, f"invalid YARA rules in {rules_dir}: {e}") from None
    return _Compiled(rules=rules, version=digest.hexdigest()[:12], stamp=stamp)


class YaraSettings(EngineSettings):
    """The ``yara`` engine's settings (``scanner.yara_rules``, ``scanner.engine_timeout``)."""

    rules: Path | None = Field(default=None, validation_alias="yara_rules")
    engine_timeout: float = Field(default=20.0, gt=0)


def build(settings: YaraSettings) -> YaraEngine:
    """The engine over ``settings.rules`` (default: packaged)."""
    # libyara's own per-part timeout is whole seconds; match the scanner's per-engine budget so
    # a thread the scanner gave up on does not keep working long after.
    return YaraEngine(settings.rules, match_timeout=math.ceil(settings.engine_timeout))


ENGINE = EngineSpec(YaraEngine, YaraSettings, build)
"""The registry's entry for ``yara``."""
