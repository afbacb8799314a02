"""Heuristic antispam rules whose scores are data (a TOML table), as SpamAssassin's are.

The packaged table is ``scanner/rules/heuristics.toml``; ``MXGATE_SCANNER__SPAM__HEURISTICS_FILE``
points at another. A rule looks at one header, the absence of a header, the decoded text parts
or the raw header block, and adds its score on a hit (negative scores are ham signs). The
engine alone calls a message spam at :data:`SPAM_THRESHOLD`; the policy sums its score with
the other antispam engines' by weight. A bad table is a :class:`~mxgate.errors.ConfigError`.

Settings (:class:`HeuristicsSettings`): ``scanner.spam.heuristics_file``. No ``detail``: the
symbols are the rules that hit.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasPath, Field

from mxgate.errors import ConfigError
from scanner.engines.bayes import message_text
from scanner.engines.common import EngineBase, EngineSettings, EngineSpec, Finding, ParsedMessage

__all__ = [
    "DEFAULT_RULES_FILE",
    "ENGINE",
    "HeuristicRule",
    "HeuristicsEngine",
    "HeuristicsSettings",
    "load_rules",
]

DEFAULT_RULES_FILE = Path(__file__).resolve().parents[1] / "rules" / "heuristics.toml"
SPAM_THRESHOLD = 5.0
_RAW_HEAD = 64 * 1024
_WHERE = {"header", "body", "absent", "raw"}


@dataclass(frozen=True, slots=True)
class HeuristicRule:
    """One rule of the table."""

    symbol: str
    where: str
    score: float
    pattern: re.Pattern[str] | None
    header: str = ""


def load_rules(path: Path | None = None) -> tuple[str, tuple[HeuristicRule, ...]]:
    """(version, rules) from a TOML table (default: the packaged one)."""
    p = path or DEFAULT_RULES_FILE
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(p), "-", f"cannot read heuristics: {e}") from None
    rules: list[HeuristicRule] = []
    for symbol, body in (data.get("rules") or {}).items():
        key = f"rules.{symbol}"
        where = body.get("where")
        if where not in _WHERE:
            raise ConfigError(str(p), f"{key}.where", f"must be one of {sorted(_WHERE)}")
        score = body.get("score")
        if not isinstance(score, int | float) or not math.isfinite(score):
            raise ConfigError(str(p), f"{key}.score", "must be a finite number")
        header = str(body.get("header", ""))
        if where in ("header", "absent") and not header:
            raise ConfigError(str(p), f"{key}.header", "needed for header/absent rules")
        pattern = None
        if where != "absent":
            flags = 0 if body.get("case_sensitive") else re.IGNORECASE
            try:
                pattern = re.compile(str(body.get("pattern", "")), flags)
            except re.error as e:
                raise ConfigError(str(p), f"{key}.pattern", f"bad regex: {e}") from None
        rules.append(HeuristicRule(symbol, where, float(score), pattern, header.lower()))
    version = str(data.get("version", "")) or hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    return version, tuple(rules)


class HeuristicsEngine(EngineBase):
    """The ``heuristics`` antispam engine."""

    name = "heuristics"
    kind = "antispam"

    def __init__(self, rules_file: Path | None = None) -> None:
        """Rules from ``rules_file`` (default: packaged)."""
        self._version, self._rules = load_rules(rules_file)

    @property
    def rules_version(self) -> str:
        """The table's ``version``."""
        return self._version

    @property
    def rules(self) -> tuple[HeuristicRule, ...]:
        """The rules in force."""
        return self._rules

    async def check(self, message: ParsedMessage) -> Finding:
        """Sum of the scores of the rules that hit."""
        headers: dict[str, list[str]] = {}
        for k, v in message.headers:
            headers.setdefault(k.lower(), []).append(v)
        body: str | None = None
        raw_head: str | None = None
        hits: list[HeuristicRule] = []
        for r in self._rules:
            if r.where == "absent":
                hit = r.header not in headers
            elif r.where == "header":
                hit = any(r.pattern.search(v) for v in headers.get(r.header, ()))  # type: ignore[union-attr]
            elif r.where == "body":
                if body is None:
                    body = message_text(message)[0]
                hit = r.pattern.search(body) is not None  # type: ignore[union-attr]
            else:
                if raw_head is None:
                    raw_head = message.raw[:_RAW_HEAD].decode("latin-1").replace("\r\n", "\n")
                hit = r.pattern.search(raw_head) is not None  # type: ignore[union-attr]
            if hit:
                hits.append(r)
        score = round(math.fsum(r.score for r in hits), 3)
        return self.finding(
            "spam" if score >= SPAM_THRESHOLD else "clean",
            score=score,
            symbols=tuple(r.symbol for r in hits),
        )


class HeuristicsSettings(EngineSettings):
    """The ``heuristics`` engine's settings (``scanner.spam.heuristics_file``)."""

    rules_file: Path | None = Field(
        default=None, validation_alias=AliasPath("spam", "heuristics_file")
    )


def build(settings: HeuristicsSettings) -> HeuristicsEngine:
    """The engine over ``settings.rules_file`` (default: packaged); a bad table is ConfigError."""
    return HeuristicsEngine(settings.rules_file)


ENGINE = EngineSpec(HeuristicsEngine, HeuristicsSettings, build)
"""The registry's entry for ``heuristics``."""
