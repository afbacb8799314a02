"""Passwords for encrypted archives, taken from the message that carries them.

Phishing and malware mail ships a password-protected zip or 7z and writes the password in the
body ("Password: 1234", "パスワード: abc", "Kennwort: x"), so that no scanner on the way sees
inside while the victim opens it in two clicks. :func:`candidates` collects the words such a
message offers as passwords; :class:`PasswordTrials` hands them to the unpacker
(:mod:`scanner.mime`) and counts every try, so that a message with thousands of encrypted
members or hundreds of candidate words costs a bounded number of trials.

Candidates, best first, at most ``limit`` of them:

1. the word after a password cue with a separator (``:`` and ``=``, fullwidth too, `` is ``, ``は``,
   ``是`` ...), in the body and the Subject, in several languages (:data:`CUES`); quoted
   values (``Password: "a b"``, ``「abc」``) keep their spaces;
2. quoted strings anywhere in the first lines;
3. the word after a cue with only a blank between (``PW 1234``);
4. as a fallback, other short tokens (4 to 32 characters, no blanks) from the first lines.

A value that ends in sentence punctuation (``invoice2026.``) is tried without it first, then
as written; one that runs on into non-ASCII text (``abcです``) as its ASCII start first. The
body's words come before the Subject's.
HTML parts are reduced to their text first (tags removed, entities decoded).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["CUES", "BodyText", "PasswordTrials", "body_text", "candidates"]

# Words that announce a password, per language. Latin-script (and Cyrillic) cues must stand as
# words of their own ("pw" not inside "pwned"); CJK ones are matched anywhere, since those
# scripts put no blank between words ("解凍パスワード").
_WORD_CUES = (
    "password", "passwort", "passwd", "passcode", "passphrase", "pass", "pwd", "pw",
    "kennwort", "mot de passe", "mdp", "contraseña", "contrasena", "clave", "senha",
    "wachtwoord", "hasło", "haslo", "parola", "lösenord", "losenord", "adgangskode",
    "salasana", "heslo", "jelszó", "şifre", "sifre", "пароль", "κωδικός",
)  # fmt: skip
_CJK_CUES = ("パスワード", "暗証番号", "密码", "密碼", "口令", "비밀번호", "암호")
CUES: tuple[str, ...] = _WORD_CUES + _CJK_CUES
"""Every password cue :func:`candidates` looks for (case-insensitive)."""

_BLANK = r"[ \t\u3000]"
_COLONS = ":\uff1a"  # ASCII and fullwidth
_SEP = f"[{_COLONS}=\uff1d]"
_QUOTES = {
    '"': '"', "'": "'", "「": "」", "『": "』", "“": "”", "\u2018": "\u2019", "«": "»", "„": "“",
}  # fmt: skip
_QUOTED_VALUE = "|".join(
    rf"{re.escape(o)}[^{re.escape(c)}\r\n]{{1,64}}{re.escape(c)}" for o, c in _QUOTES.items()
)
# Quoted strings outside a cue: an apostrophe counts as a quote only when it does not stand
# between letters ("don't ... it's" quotes nothing), and they are kept short.
_QUOTED = re.compile(
    "|".join(
        rf"(?<!\w){re.escape(o)}[^{re.escape(c)}\r\n]{{1,32}}{re.escape(c)}(?!\w)"
        if o in "'\u2018"
        else rf"{re.escape(o)}[^{re.escape(c)}\r\n]{{1,32}}{re.escape(c)}"
        for o, c in _QUOTES.items()
    )
)
_CUE = (
    r"(?:(?<!\w)(?:"
    + "|".join(re.escape(c).replace(r"\ ", r"\s+") for c in _WORD_CUES)
    + r")(?!\w)|(?:"
    + "|".join(_CJK_CUES)
    + r"))"
)
# Cue, an optional "(case sensitive)" aside, then a separator: strong (":", "is", "は", ...;
# the value may be on the next line) or weak (blanks only).
# Every run of blanks is matched possessively (``*+``) and the weak separator is only a look
# back at a blank: overlapping quantifiers would make "pw" and 30,000 blanks cost seconds.
_CUE_VALUE = re.compile(
    _CUE
    + rf"{_BLANK}*+(?:\([^()\r\n]{{0,40}}\){_BLANK}*+)?"
    + rf"(?:(?P<strong>{_SEP}\s*+|(?:is|ist|lautet|est|es|é|er|jest|är|on|è)(?=[\s{_COLONS}])"
    + rf"{_BLANK}*+[{_COLONS}]?{_BLANK}*+|(?:は|是|为|為|는|은){_BLANK}*+)"
    + rf"|(?P<weak>(?<={_BLANK})))"
    + rf"(?P<value>{_QUOTED_VALUE}|[^\s]{{1,64}})",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?)]}>。、」』\"'\uff0c\uff0e\uff01\uff1f\uff09"  # fullwidth , . ! ? ) too
_LEADING = "([{<\"'"
_ASCII_START = re.compile(r"[!-~]+")
# HTML: the text a reader sees. Block ends become line breaks so that a value in a table cell
# does not run into the next one; the rest of the markup goes. A tag is at most 2,000
# characters without another "<" inside: "<" repeated (or an unclosed "<script") must not make
# every start scan to the end of the text.
_TAG_BODY = r"[^<>]{0,2000}"
_HTML_HIDDEN = re.compile(rf"<(script|style)\b{_TAG_BODY}>", re.IGNORECASE)
_HTML_BREAK = re.compile(rf"<(?:br|/p|/div|/td|/th|/tr|/li|/h[1-6])\b{_TAG_BODY}>", re.IGNORECASE)
_HTML_TAG = re.compile(rf"<{_TAG_BODY}>")

# How much of each body is searched: cue values sit near the top, and the work stays bounded.
_MAX_TEXT_CHARS = 64 * 1024
_MAX_BODIES = 8
_FALLBACK_LINES = 10
_TOKEN_MIN, _TOKEN_MAX = 4, 32


@dataclass(frozen=True, slots=True)
class BodyText:
    """One text part as the parser found it: its type, declared charset and decoded bytes."""

    content_type: str
    charset: str | None
    data: bytes


def body_text(body: BodyText) -> str:
    """The text of ``body`` as a reader sees it: decoded by its charset, HTML reduced to text.

    Never raises; bytes that do not decode are replaced. Only the first 64 KiB are read.
    """
    data = body.data[: _MAX_TEXT_CHARS * 4]
    text = None
    for charset in (body.charset, "utf-8"):
        if not charset:
            continue
        try:
            text = data.decode(charset)
            break
        except (LookupError, UnicodeError):
            continue
    if text is None:
        text = data.decode("cp1252", "replace")
    text = text[:_MAX_TEXT_CHARS]
    if body.content_type.lower() == "text/html":
        text = _without_hidden(text)
        text = _HTML_BREAK.sub("\n", text)
        text = html.unescape(_HTML_TAG.sub("", text))
    return text


def _without_hidden(text: str) -> str:
    """``text`` without the contents of its <script> and <style> elements (one pass)."""
    lower = text.lower()
    out: list[str] = []
    pos = 0
    for m in _HTML_HIDDEN.finditer(text):
        if m.start() < pos:
            continue  # inside an element already dropped
        out.append(text[pos : m.start()])
        end = lower.find("</" + m.group(1).lower(), m.end())
        pos = len(text) if end < 0 else end  # its closing tag goes with the other tags
    out.append(text[pos:])
    return " ".join(out)


def candidates(subject: str, bodies: Iterable[BodyText], limit: int = 20) -> tuple[str, ...]:
    """The passwords ``subject`` and the text ``bodies`` offer, best first, at most ``limit``.

    Plain and HTML text parts count (others are skipped); at most 8 bodies and 64 KiB of each
    are read. See the module docstring for the order.
    """
    texts: list[str] = []
    for body in bodies:
        if len(texts) >= _MAX_BODIES:
            break
        if body.content_type.lower() in ("text/plain", "text/html"):
            texts.append(body_text(body))
    if subject:
        texts.append(subject[:_MAX_TEXT_CHARS])  # after the body, which says more
    strong: list[str] = []
    weak: list[str] = []
    quoted: list[str] = []
    fallback: list[str] = []
    for text in texts:
        for m in _CUE_VALUE.finditer(text):
            (strong if m.group("strong") is not None else weak).extend(_variants(m["value"]))
        head = _first_lines(text)
        quoted.extend(m.group()[1:-1] for m in _QUOTED.finditer(head))
        for token in head.split():
            if "://" in token:
                continue  # links are not passwords, and a long body has many
            for v in _variants(token):
                if _TOKEN_MIN <= len(v) <= _TOKEN_MAX:
                    fallback.append(v)
    out: dict[str, None] = {}
    for value in (*strong, *quoted, *weak, *fallback):
        if len(out) >= limit:
            break
        if value and value.strip() == value and len(value) <= 64:
            out.setdefault(value, None)
    return tuple(out)


def _variants(value: str) -> list[str]:
    """``value`` as it may have been meant: unquoted; its ASCII start when it runs on into
    other text ("abcです"); without trailing punctuation; then as written."""
    if len(value) >= 2 and _QUOTES.get(value[0]) == value[-1]:
        return [value[1:-1]]
    out = []
    m = _ASCII_START.match(value)
    if m and m.end() < len(value) and not value[m.end()].isascii():
        out.append(m.group().lstrip(_LEADING).rstrip(_TRAILING))
    out.append(value.lstrip(_LEADING).rstrip(_TRAILING))
    out.append(value)
    return [v for v in out if v]


def _first_lines(text: str) -> str:
    lines = [line for line in text.splitlines()[:200] if line.strip()]
    return "\n".join(lines[:_FALLBACK_LINES])


class PasswordTrials:
    """One message's password candidates and its allowance of trials.

    ``source`` is called once, the first time a candidate is needed: a message without an
    encrypted archive pays nothing. Each try of one password on one encrypted member (or one
    7z archive) is one trial; :meth:`take` refuses once ``max_trials`` are spent. A password
    that worked is tried first from then on, since one message's archives share one.
    """

    def __init__(self, source: Callable[[], Sequence[str]], max_trials: int = 50) -> None:
        self._source = source
        self._loaded: list[str] | None = None
        self.max_trials = max_trials
        self.trials = 0
        self.refused = False

    @property
    def candidates(self) -> tuple[str, ...]:
        """The candidates, the ones that worked first."""
        if self._loaded is None:
            try:
                self._loaded = list(self._source())
            except Exception:
                self._loaded = []  # a failure here must not cost the archive's other members
        return tuple(self._loaded)

    def take(self) -> bool:
        """Count one trial; False (and :attr:`refused` set) once the allowance is spent."""
        if self.trials >= self.max_trials:
            self.refused = True
            return False
        self.trials += 1
        return True

    def worked(self, password: str) -> None:
        """Record that ``password`` opened something: it goes first from now on."""
        loaded = list(self.candidates)
        if password in loaded:
            loaded.remove(password)
        self._loaded = [password, *loaded]
