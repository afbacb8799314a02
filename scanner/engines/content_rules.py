"""Content rules: fixed strings in the message text, each worth a spam score.

The rules are data (:data:`DEFAULT_RULES`), not code: each names a symbol, the bytes to look for
and a score. Rules look at the raw message and at every decoded part (attachments and archive
members too), so a needle hidden behind base64, quoted-printable or a zip is found too; and at
the text extracted from documents, whose own compression would hide it: a PDF's page text (its
``Tj``/``TJ`` strings, inflated: :func:`scanner.engines.pdf.text`) and an OOXML package's
(docx, xlsx, pptx: :mod:`scanner.engines.doc_text`), as parts ``<path>#text``. Extraction is
bounded: ``_MAX_EXTRACTED`` bytes of text per message, and runs in a worker thread. The
shipped table holds GTUBE, the SpamAssassin "Generic Test for Unsolicited Bulk Email", which
lets anyone check end to end that spam handling works, as EICAR does for antivirus.

No settings. ``detail``: each rule symbol that hit -> the part path it was found in.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scanner.engines import doc_text, pdf
from scanner.engines.common import (
    EngineBase,
    EngineSpec,
    Finding,
    NoSettings,
    ParsedMessage,
    Part,
)
from scanner.mime import RAW_PATH

__all__ = ["DEFAULT_RULES", "ENGINE", "ContentRule", "ContentRulesEngine"]

# Text extracted from documents: per document, and per message in all.
_MAX_PART_TEXT = 4 * 1024 * 1024
_MAX_EXTRACTED = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ContentRule:
    """One rule: if ``needle`` occurs in the message text, add ``score`` under ``symbol``."""

    symbol: str
    needle: bytes
    score: float
    description: str = ""


DEFAULT_RULES: tuple[ContentRule, ...] = (
    ContentRule(
        symbol="GTUBE",
        needle=b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X",
        score=1000.0,
        description="SpamAssassin Generic Test for Unsolicited Bulk Email",
    ),
)
"""The shipped rule table."""


class ContentRulesEngine(EngineBase):
    """The ``content`` antispam engine: literal needles over the raw message and text parts."""

    name = "content"
    kind = "antispam"

    def __init__(self, rules: Sequence[ContentRule] = DEFAULT_RULES) -> None:
        """Use ``rules`` (default: :data:`DEFAULT_RULES`)."""
        self._rules = tuple(rules)
        digest = hashlib.sha256()
        for r in self._rules:
            digest.update(f"{r.symbol}\0{r.score!r}\0".encode() + r.needle + b"\0")
        self._rules_version = digest.hexdigest()[:12]

    @property
    def rules_version(self) -> str:
        """Short sha256 of the rule table."""
        return self._rules_version

    @property
    def rules(self) -> tuple[ContentRule, ...]:
        """The rules in force."""
        return self._rules

    async def check(self, message: ParsedMessage) -> Finding:
        """``spam`` with the summed score of every rule that hit, else ``clean``."""
        # Plain substring search (memchr-fast) over a size-capped message: cheap enough to run
        # on the event loop; extracting a document's text (inflating a PDF) is not.
        if any(_extractable(p) for p in message.parts if p.path != RAW_PATH):
            return await asyncio.to_thread(self.inspect, message)
        return self.inspect(message)

    def inspect(self, message: ParsedMessage) -> Finding:
        """The synchronous work of :meth:`check`."""
        texts = tuple(_texts(message))
        hits: dict[str, str] = {}
        for rule in self._rules:
            for part in texts:
                if rule.needle and rule.needle in part.data:
                    hits[rule.symbol] = part.path
                    break
        score = math.fsum(r.score for r in self._rules if r.symbol in hits)
        return self.finding(
            "spam" if hits else "clean", score=score, symbols=tuple(hits), detail=hits
        )


def _texts(message: ParsedMessage) -> Iterable[Part]:
    """The raw message first, then every decoded part: text parts, attachments whatever they
    are declared as (a ``gtube.txt`` sent as application/octet-stream) and archive members.
    A literal search is cheap, and the parts are bounded by the parser's budgets."""
    raw = next((p for p in message.parts if p.path == RAW_PATH), None)
    yield raw or Part(path=RAW_PATH, filename=None, content_type="message/rfc822", data=message.raw)
    extracted = 0
    for p in message.parts:
        if p.path == RAW_PATH:
            continue
        yield p
        kind = _extractable(p)
        if kind is None or extracted >= _MAX_EXTRACTED:
            continue
        room = min(_MAX_PART_TEXT, _MAX_EXTRACTED - extracted)
        text = pdf.text(p.data, room) if kind == "pdf" else doc_text.ooxml_text(p.data, room)
        extracted += len(text)
        if text:
            yield Part(path=f"{p.path}#text", filename=None, content_type="text/plain", data=text)


def _extractable(p: Part) -> str | None:
    """``"pdf"`` or ``"ooxml"`` if ``p`` is a document whose text is extracted."""
    if b"%PDF-" in p.data[:1024]:
        return "pdf"
    if p.data[:4] == b"PK\x03\x04" and b"[Content_Types].xml" in p.data:
        return "ooxml"
    return None


def build(settings: NoSettings) -> ContentRulesEngine:
    """The engine with the shipped rule table."""
    return ContentRulesEngine()


ENGINE = EngineSpec(ContentRulesEngine, NoSettings, build)
"""The registry's entry for ``content``."""
