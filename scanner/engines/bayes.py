"""The in-process Bayesian classifier: Robinson/Fisher chi-square over header and body tokens.

The approach is Gary Robinson's as used by SpamBayes: each token's spam probability
``p = (s/nspam) / (s/nspam + h/nham)`` is shrunk towards 0.5 by its evidence,
``f = (S*x + n*p) / (S + n)``; the 150 most telling tokens (``|f - 0.5| >= 0.1``) are combined
by Fisher's method into a spam and a ham indicator, and ``(S - H + 1) / 2`` is the message's
spam probability. Token counts live in rocksdict (:mod:`scanner.bayes_store`).

Tokens: lower-cased words of the decoded text parts (HTML tags dropped, a few tag names kept),
URL host names, and prefixed header tokens (Subject words, From address and domain, mailer,
content type, which headers are present). Until ``min_trained`` messages of each class are
learnt the engine answers ``skipped``.

Settings (:class:`BayesSettings`): ``scanner.spam.bayes_path``, ``scanner.spam.bayes_min_trained``.
``detail``: ``probability`` and ``clues``, or ``reason`` when skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import AliasPath, Field

from scanner.bayes_store import BayesStore
from scanner.engines.common import (
    EngineBase,
    EngineSettings,
    EngineSpec,
    Finding,
    Outcome,
    ParsedMessage,
)

__all__ = [
    "ENGINE",
    "BayesEngine",
    "BayesSettings",
    "message_text",
    "spam_probability",
    "tokenize",
]

S_STRENGTH = 0.45
X_UNKNOWN = 0.5
MIN_STRENGTH = 0.1
MAX_CLUES = 150
_MAX_TEXT = 200_000  # characters of text looked at per message: bounds CPU on huge mail

_WORD = re.compile(r"[a-z0-9$'][a-z0-9$'._-]{1,30}")
_TAG = re.compile(r"<\s*(/?[a-zA-Z][a-zA-Z0-9]*)[^>]{0,2000}>")
_URL = re.compile(r"(?:https?|ftp)://([A-Za-z0-9.-]{1,253})", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|#\d{1,5});", re.IGNORECASE)
_KEPT_TAGS = {"font", "img", "table", "a", "center", "b", "br", "p", "form", "script", "style"}
_HEADERS_FOR_WORDS = ("subject",)
_HEADERS_VALUE = ("x-mailer", "user-agent", "content-type", "x-priority", "x-msmail-priority")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def message_text(message: ParsedMessage) -> tuple[str, bool]:
    """The decoded text of the top-level text parts (capped), and whether any part was HTML."""
    out: list[str] = []
    size = 0
    html = False
    for p in message.parts:
        if p.depth or p.path == "raw" or not p.content_type.startswith("text/"):
            continue
        text = _decode(p.data[: _MAX_TEXT - size])
        if p.content_type == "text/html":
            html = True
        out.append(text)
        size += len(text)
        if size >= _MAX_TEXT:
            break
    if not out and not any(p.path != "raw" for p in message.parts):
        # Nothing parsed (broken MIME): look at the raw body.
        _, _, body = message.raw.partition(b"\n\n")
        out.append(_decode(body[:_MAX_TEXT]))
    return "\n".join(out), html


def tokenize(message: ParsedMessage) -> Iterator[str]:
    """The message's tokens (with repeats; the classifier uses the set)."""
    seen_headers: set[str] = set()
    for name, value in message.headers:
        n = name.lower()
        if n not in seen_headers:
            seen_headers.add(n)
            yield f"hdr:{n}"
        if n in _HEADERS_FOR_WORDS:
            for w in _WORD.findall(value.lower()):
                yield f"subject:{w}"
        elif n == "from":
            v = value.lower()
            for addr in re.findall(r"[\w.+-]+@([\w.-]+)", v):
                yield f"from:dom:{addr}"
            for w in _WORD.findall(v):
                yield f"from:{w}"
        elif n in _HEADERS_VALUE:
            yield f"{n}:{value.lower().split(';')[0].strip()[:40]}"
        elif n == "message-id":
            m = re.search(r"@([\w.-]+)>?", value)
            yield f"mid:{'dom' if m else 'nodom'}"
    text, html = message_text(message)
    if html:
        yield "meta:html"
    for tag in _TAG.findall(text):
        t = tag.lower().lstrip("/")
        if t in _KEPT_TAGS:
            yield f"tag:{t}"
    for host in _URL.findall(text):
        parts = host.lower().rstrip(".").split(".")
        yield "url:" + ".".join(parts[-2:])
        if len(parts) > 2:
            yield "url:" + ".".join(parts[-3:])
    plain = _ENTITY.sub(" ", _TAG.sub(" ", text)).lower()
    for w in _WORD.findall(plain):
        w = w.strip("._-'")
        if 2 < len(w) <= 20:
            yield w
        elif len(w) > 20:
            yield f"skip:{w[0]}{len(w) // 10 * 10}"


def _chi2q(x2: float, v: int) -> float:
    """P(chisq >= x2) with v (even) degrees of freedom."""
    m = x2 / 2.0
    term = math.exp(-m) if m < 700 else 0.0
    total = term
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def spam_probability(counts: Iterable[tuple[int, int]], nspam: int, nham: int) -> tuple[float, int]:
    """(spam probability, clues used) from each token's (spam, ham) counts."""
    clues: list[float] = []
    for s, h in counts:
        n = s + h
        if n == 0:
            continue
        sr = s / max(nspam, 1)
        hr = h / max(nham, 1)
        p = sr / (sr + hr) if sr + hr else 0.5
        f = (S_STRENGTH * X_UNKNOWN + n * p) / (S_STRENGTH + n)
        if abs(f - 0.5) >= MIN_STRENGTH:
            clues.append(min(max(f, 0.01), 0.99))
    clues.sort(key=lambda f: -abs(f - 0.5))
    clues = clues[:MAX_CLUES]
    if not clues:
        return 0.5, 0
    s_log = sum(math.log(1.0 - f) for f in clues)
    h_log = sum(math.log(f) for f in clues)
    n = len(clues)
    s_ind = 1.0 - _chi2q(-2.0 * s_log, 2 * n)
    h_ind = 1.0 - _chi2q(-2.0 * h_log, 2 * n)
    return (s_ind - h_ind + 1.0) / 2.0, n


def score_for(prob: float) -> float:
    """Spam-score contribution: -6 (surely ham) .. +6 (surely spam); 0.86 crosses 5."""
    return round((prob - 0.5) * 14.0, 3)


class BayesEngine(EngineBase):
    """The ``bayes`` antispam engine."""

    name = "bayes"
    kind = "antispam"
    SPAM_PROBABILITY = 0.86  # where the engine alone calls a message spam (score 5)

    def __init__(self, path: Path, min_trained: int = 50, *, readonly: bool = True) -> None:
        """Token store at ``path``; ``min_trained`` messages of each class before answering."""
        self._store = BayesStore(path, readonly=readonly)
        self._min = min_trained

    @property
    def store(self) -> BayesStore:
        """The token store (``mxgate train`` learns through it)."""
        return self._store

    @property
    def rules_version(self) -> str:
        """The training state: messages learnt of each class."""
        s, h = self._store.totals()
        return f"chi2/{s}s{h}h"

    def classify(self, message: ParsedMessage) -> tuple[float, int]:
        """(spam probability, clues) of ``message`` under the current counts."""
        tokens = list(set(tokenize(message)))
        nspam, nham = self._store.totals()
        return spam_probability(self._store.counts(tokens), nspam, nham)

    async def check(self, message: ParsedMessage) -> Finding:
        """Probability as a score; ``skipped`` while untrained."""
        # Tokenizing and one multi-get take about a millisecond on typical mail: kept on the
        # loop, as a thread hop would cost as much as the work.
        nspam, nham = self._store.totals()
        if nspam < self._min or nham < self._min:
            return self.finding("skipped", detail={"reason": "not trained"})
        prob, clues = self.classify(message)
        bucket = min(int(prob * 100), 99)
        symbol = f"BAYES_{bucket // 10 * 10:02d}" if bucket < 99 else "BAYES_99"
        outcome: Outcome = "spam" if prob >= self.SPAM_PROBABILITY else "clean"
        return self.finding(
            outcome,
            score=score_for(prob),
            symbols=(symbol,),
            detail={"probability": f"{prob:.4f}", "clues": str(clues)},
        )

    async def aclose(self) -> None:
        """Close the token store."""
        self._store.close()


class BayesSettings(EngineSettings):
    """The ``bayes`` engine's settings (``scanner.spam.bayes_*``)."""

    path: Path = Field(default=Path("var/bayes"), validation_alias=AliasPath("spam", "bayes_path"))
    min_trained: int = Field(default=50, validation_alias=AliasPath("spam", "bayes_min_trained"))


def build(settings: BayesSettings) -> BayesEngine:
    """Bayes over the rocksdict token store, read-only (``mxgate train`` writes)."""
    return BayesEngine(settings.path, settings.min_trained, readonly=True)


ENGINE = EngineSpec(BayesEngine, BayesSettings, build)
"""The registry's entry for ``bayes``."""
