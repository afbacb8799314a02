"""Parse a raw message once into the parts every engine scans. Never raises.

:func:`parse` reads the message once with the stdlib ``email`` parser, walks every
leaf part, undoes its transfer encoding and opens archives it finds by *content* (magic bytes, not
name or declared type): zip, tar, gzip, bzip2, xz and 7z (py7zr), recursively. Whatever goes
wrong (broken headers, broken base64, corrupt or encrypted archives, zip bombs) is recorded as a
defect string on the :class:`~scanner.engines.common.ParsedMessage`; nothing is raised, and nothing
that could be scanned is dropped: a part whose encoding is broken is kept both decoded (best
effort) and as received, and the whole raw message is always the last part (path ``"raw"``).

Cost is bounded for hostile input, since a 50 MB message is allowed. ``policy.default``'s header
parser is ~20x slower than compat32 per MIME part and superlinear on long structured headers
(an 80 KB Content-Type takes seconds), so the MIME *structure* is parsed with compat32 semantics
(headers as plain strings, each cut to 16 KiB before parameter parsing) while the top-level
``headers`` are decoded with ``policy.default`` one by one, within a total budget. The number of
MIME parts is capped too (``UnpackLimits.max_parts``).

Defect strings are stable codes, so policies and dashboards can key on them:

- ``mime:<StdlibDefectClass>`` — a defect the stdlib parser registered (e.g.
  ``mime:StartBoundaryNotFoundDefect``, ``mime:InvalidBase64CharactersDefect``);
- ``header-error:<name>`` — a header the parser could not interpret (kept raw);
- ``header-limit`` — a header too long to decode, or the decoding budget was spent: kept raw;
- ``mime-limit:parts`` — more MIME parts than ``max_parts``; the rest is only in ``raw``;
- ``mime-limit:depth`` — MIME nesting deeper than ``max_mime_depth``; the deeper structure is
  kept as one undecoded part (its siblings are still parsed);
- ``mime-ambiguous:<header>`` — a part has two Content-Type, Content-Transfer-Encoding or
  Content-Disposition headers: which one counts depends on the reader;
- ``mime-error:<Exception>`` — the parser itself failed; only ``raw`` is scanned;
- ``budget:time`` — the message's parse budget (``max_seconds``) ran out; what was parsed and
  unpacked by then is kept, the rest only in ``raw``;
- ``encoding-broken`` — a transfer encoding could not be undone cleanly;
- ``uuencode-broken`` — a uuencoded block in a text part (decoded into a part of its own,
  path ``<part>#uu<n>/<name>``) had a mode that is not octal, lines that did not decode, or
  no ``end``;
- ``mime-limit:uuencode`` — more uuencoded blocks in one text part than are decoded;
- ``archive-limit:depth|members|bytes|ratio`` — an unpacking limit stopped that branch;
- ``archive-password:found`` — an encrypted zip member (ZipCrypto or WinZip AES, through
  pyzipper) or 7z archive opened with a password taken from the message's own text or Subject
  (:mod:`scanner.archive_passwords`), and was unpacked and scanned like any other;
- ``archive-encrypted`` — an encrypted member or archive that no candidate opened (there was
  none, none worked, or the trials ran out); ``archive-password:limit`` says the last:
  the trials of one message are capped (``max_password_trials``, and for 7z's slow key
  derivation ``max_kdf_rounds``) and stay within its time budget;
- ``archive-corrupt``, ``archive-unsupported``.

A defect that means some content was *not* scanned as decoded (a parse failure, a limit, the
budget: :data:`UNSCANNABLE_DEFECTS`) also becomes a verdict: :func:`scan_finding` turns it into
an ``unscannable`` finding of the ``mime`` pseudo-engine, which the tenant's policy acts on
(``Policy.on_unscannable``, quarantine by default), so hostile structure cannot buy a message a
lighter scan than an honest one gets.

Time is bounded per message (``UnpackLimits.max_seconds``, CPU seconds): the deadline is
checked while the structure is fed to the parser, between parts and while unpacking (zip, tar,
gzip/bz2/xz, 7z). It runs in the scanner's worker thread, not a process: every step here works
on a bounded chunk between two checks, so the checks bound it; a worker process would cost a
spawn per scanner and send the raw message and every decoded part across a pipe (up to
hundreds of MB per message), and the native code that can crash already runs in the engines'
isolated workers.
"""

from __future__ import annotations

import binascii
import bz2
import io
import lzma
import re
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.feedparser import FeedParser
from email.header import decode_header, make_header
from email.message import Message
from email.policy import Compat32
from typing import Any, Literal

import mxgate
from scanner.archive_passwords import BodyText, PasswordTrials, candidates
from scanner.engines.common import Finding, ParsedMessage, Part

__all__ = ["RAW_PATH", "UNSCANNABLE_DEFECTS", "UnpackLimits", "parse", "scan_finding"]

RAW_PATH = "raw"
"""The path of the part that holds the whole raw message."""

_OCTET = "application/octet-stream"
_CHUNK = 64 * 1024
# Defect strings are attacker-influenced (header names); bound how many one message can carry.
_MAX_DEFECTS = 200
# One header value is cut to this before parameter parsing (legitimate MIME headers are far
# shorter), and the top-level headers get this many characters of policy.default parsing in all:
# beyond about 8 KiB its parser turns superlinear, and it costs ~5 us per character even below.
_MAX_HEADER_CHARS = 16 * 1024
_HEADER_DECODE_BUDGET = 128 * 1024
# xz/lzma streams declare their dictionary size; without a cap a tiny file can demand GiBs.
_LZMA_MEMLIMIT = 128 * 1024 * 1024
# Compressed input is fed to a stream decompressor in steps that start small and double within
# one member: the decompressor copies what it did not use (``unused_data``) at a member's end,
# so a fixed big step would make many tiny concatenated members quadratic again.
_FIRST_STEP = 256
_MAX_STEP = 1024 * 1024
# 7z password trials: one key at 7-Zip's default strength (2**19 SHA-256 rounds) costs
# ~0.12 s of CPU here (4 s at 2**24); 24 such keys keep a message's trials to ~3 s of its 20 s
# parse budget. A stronger key (an archive may declare up to 2**24 rounds, per folder) counts
# for what it costs, so an archive built to be slow to try gets fewer trials, or none.
_DEFAULT_KDF_ROUNDS = 24 * 2**19

UNSCANNABLE_DEFECTS: tuple[str, ...] = (
    "mime-error:",
    "mime-limit:",
    "mime-ambiguous:",
    "archive-limit:",
    "budget:",
    # The declared structure was not found, so the parts were never split out and decoded:
    # the body went to the engines still encoded (mail clients may well find the parts).
    "mime:StartBoundaryNotFoundDefect",
    "mime:NoBoundaryInMultipartDefect",
    "mime:MultipartInvariantViolationDefect",
)
"""Defect prefixes that mean some content was not scanned decoded: each makes the message
``unscannable`` (:func:`scan_finding`)."""
# Headers that decide how a part is read: when one is given twice, readers disagree on which
# counts (compat32 takes the first, other parsers the last), so the scan may not see what the
# recipient's client shows.
_STRUCTURAL_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition")

ArchiveKind = Literal["zip", "zip-embedded", "tar", "gzip", "bz2", "xz", "7z"]


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """Bounds on archive unpacking for one message; exceeding one stops that branch only.

    ``max_depth``: archives nested deeper than this are kept but not opened.
    ``max_members``: archive members extracted per message, all archives together.
    ``max_total_bytes``: bytes extracted per message, all archives together.
    ``max_ratio``: expanded/compressed size allowed for one member, checked on the declared
    sizes before reading and enforced again while reading; members that expand to no more than
    ``ratio_floor`` bytes are exempt, since small text legitimately compresses beyond 100:1.
    ``max_parts``: MIME leaf parts decoded per message; parsing stops before the boundary line
    that would start one more, and the rest of the message is scanned only as ``raw``.
    ``max_mime_depth``: MIME nesting (multipart and message/*) parsed; a part nested deeper is
    kept whole as one undecoded part. It also keeps the stdlib parser, which recurses once per
    level, far from the interpreter's recursion limit.
    ``max_seconds``: the parse budget of one message (CPU seconds of the parsing thread); when it
    runs out parsing stops where it is (defect ``budget:time``).
    ``max_password_candidates``: passwords taken from the message's text and Subject
    (:mod:`scanner.archive_passwords`) for its encrypted archives.
    ``max_password_trials``: tries of one candidate on one encrypted zip member or 7z archive,
    per message, all archives together.
    ``max_kdf_rounds``: SHA-256 rounds of 7z's key derivation (2**19 per key at 7-Zip's
    default strength, but an archive declares its own, up to 2**24, per folder) spent on
    password trials per message; a trial that would pass it is not made.
    """

    max_depth: int = 5
    max_members: int = 1000
    max_total_bytes: int = 100 * 1024 * 1024
    max_ratio: float = 100.0
    ratio_floor: int = 1024 * 1024
    max_parts: int = 5000
    max_mime_depth: int = 50
    max_seconds: float = 20.0
    max_password_candidates: int = 20
    max_password_trials: int = 50
    max_kdf_rounds: int = _DEFAULT_KDF_ROUNDS


class _StructurePolicy(Compat32):
    """compat32 with every header value cut to a bound before anyone parses it.

    compat32 hands headers out as plain strings, which keeps walking the MIME tree cheap and
    free of header-parser exceptions; the cut keeps its parameter parsing (quadratic in the
    number of parameters) bounded.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        """The stored value, cut to ``_MAX_HEADER_CHARS``."""
        return super().header_fetch_parse(name, value[:_MAX_HEADER_CHARS])


_STRUCTURE = _StructurePolicy()


def parse(
    raw: bytes,
    *,
    message_id: str,
    tenant: str,
    mail_from: str = "",
    rcpt_to: tuple[str, ...] = (),
    client_ip: str = "",
    helo: str = "",
    limits: UnpackLimits = UnpackLimits(),
    clock: Callable[[], float] = time.thread_time,
) -> ParsedMessage:
    """Parse ``raw`` into headers, decoded leaf parts and archive members. Never raises.

    Parts come in document order, each archive's members right after the archive itself
    (depth first), and the raw message last as path ``"raw"``. ``clock`` measures the time
    budget (``limits.max_seconds``): by default the CPU time of the calling thread, so that 50
    messages parsed side by side under one GIL do not spend each other's budget; tests pass
    their own.
    """
    raw = bytes(raw)  # accept bytearray/memoryview; parts must be immutable
    defects = _Defects()
    deadline = _Deadline(clock, limits.max_seconds, defects)
    headers: tuple[tuple[str, str], ...] = ()
    leaves: list[Part] = []
    texts: list[BodyText] = []
    try:
        msg = _parse_structure(_cut_parts(raw, limits, defects), limits, defects, deadline)
        headers = _headers(msg, defects)
        leaves = _leaves(msg, limits, defects, deadline, texts)
    except Exception as e:
        # The stdlib parser has had crash bugs on hostile input; raw is still scanned.
        defects.add(f"mime-error:{type(e).__name__}")
    subject = next((v for n, v in headers if n.lower() == "subject"), "")
    passwords = PasswordTrials(
        lambda: candidates(subject, texts, limits.max_password_candidates),
        limits.max_password_trials,
    )
    parts = _expand(leaves, limits, defects, deadline, passwords)
    parts.append(Part(path=RAW_PATH, filename=None, content_type="message/rfc822", data=raw))
    return ParsedMessage(
        message_id=message_id,
        tenant=tenant,
        raw=raw,
        headers=headers,
        parts=tuple(parts),
        defects=defects.as_tuple(),
        mail_from=mail_from,
        rcpt_to=tuple(rcpt_to),
        client_ip=client_ip,
        helo=helo,
    )


def scan_finding(parsed: ParsedMessage) -> Finding | None:
    """The ``unscannable`` finding for a message whose parse left content unscanned, or None.

    Its symbols are the defects concerned (see :data:`UNSCANNABLE_DEFECTS`), so the policy's
    reason names them; kind ``policy``, engine ``mime``.
    """
    symbols = tuple(d for d in parsed.defects if d.startswith(UNSCANNABLE_DEFECTS))
    if not symbols:
        return None
    return Finding(
        engine="mime",
        engine_version=mxgate.__version__,
        rules_version="mime-1",
        outcome="unscannable",
        symbols=symbols,
        kind="policy",
        detail={"defects": ",".join(symbols)[:1000]},
    )


class _BudgetSpent(Exception):
    """Raised inside the parse when its time budget is gone; caught where work can stop."""


class _Deadline:
    """One message's parse deadline; :meth:`check` raises :class:`_BudgetSpent` past it."""

    def __init__(self, clock: Callable[[], float], seconds: float, defects: _Defects) -> None:
        self._clock = clock
        self._at = clock() + seconds
        self._defects = defects
        self.spent = False

    def check(self) -> None:
        """Raise :class:`_BudgetSpent` (recording ``budget:time`` once) if the time is up."""
        if self.spent or self._clock() > self._at:
            if not self.spent:
                self._defects.add("budget:time")
            self.spent = True
            raise _BudgetSpent


class _StructureMessage(Message):
    """A compat32 message that the parser can be told to treat as one opaque leaf."""

    flattened = False

    def get_content_type(self) -> str:
        """text/plain for a flattened part, so that the parser does not descend into it."""
        return "text/plain" if self.flattened else super().get_content_type()

    def get_content_maintype(self) -> str:
        """See :meth:`get_content_type`."""
        return "text" if self.flattened else super().get_content_maintype()


# The parser's private hook, looked up once (the stubs do not declare it).
_FEED_NEW_MESSAGE: Callable[[FeedParser], None] = vars(FeedParser)["_new_message"]


class _BoundedParser(FeedParser):
    """The stdlib feed parser, stopped from descending past ``max_depth`` nested parts.

    The stdlib parser recurses once per nesting level (multipart or message/*), so ~1,000
    levels raise RecursionError and lose the whole parse, siblings included. Each message it
    starts below the limit is marked flattened: the parser then reads it as a single leaf up to
    its parent's boundary, so the deep branch is scanned as one undecoded part and the rest of
    the message is parsed as usual. ``_new_message``/``_msgstack`` are the parser's own hooks
    (stable since Python 3.2); there is no public one.
    """

    def __init__(self, max_depth: int, defects: _Defects) -> None:
        super().__init__(_StructureMessage, policy=_STRUCTURE)
        self._max_depth = max(1, max_depth)
        self._mx_defects = defects

    def _new_message(self) -> None:
        _FEED_NEW_MESSAGE(self)
        stack: list[Message] = vars(self)["_msgstack"]
        if len(stack) > self._max_depth:
            cur = stack[-1]
            if isinstance(cur, _StructureMessage):
                cur.flattened = True
                self._mx_defects.add("mime-limit:depth")


def _parse_structure(
    raw: bytes, limits: UnpackLimits, defects: _Defects, deadline: _Deadline
) -> Message:
    """The MIME tree of ``raw`` (compat32, bounded depth), fed in chunks against the deadline."""
    text = raw.decode("ascii", "surrogateescape")  # what BytesParser does
    parser = _BoundedParser(limits.max_mime_depth, defects)
    try:
        for start in range(0, len(text), _CHUNK):
            deadline.check()
            parser.feed(text[start : start + _CHUNK])
    except _BudgetSpent:
        pass  # close() finishes the tree from what was fed; the rest is only in raw
    return parser.close()


@dataclass
class _Defects:
    """Ordered, de-duplicated, bounded defect codes."""

    items: dict[str, None] = field(default_factory=dict)

    def add(self, code: str) -> None:
        if len(self.items) < _MAX_DEFECTS:
            self.items.setdefault(_clean(code)[:200], None)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self.items)


def _clean(s: str) -> str:
    """Make ``s`` valid UTF-8 text: the bytes parser smuggles raw 8-bit bytes in as surrogates."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def _cut_parts(raw: bytes, limits: UnpackLimits, defects: _Defects) -> bytes:
    """``raw`` up to the boundary-like line that could start part ``max_parts + 1``."""
    # Every MIME part needs a line starting with "--" before it; counting those is a cheap
    # upper bound on the parts, and cutting there bounds the parser's work.
    pos = -1
    for _ in range(max(limits.max_parts, 0) + 1):
        pos = raw.find(b"\n--", pos + 1)
        if pos < 0:
            return raw
    defects.add("mime-limit:parts")
    return raw[: pos + 1]


def _headers(msg: Message, defects: _Defects) -> tuple[tuple[str, str], ...]:
    """Top-level headers, decoded (RFC 2047, unfolded) with ``policy.default``.

    One at a time, so that a header the parser chokes on is kept raw with a defect instead of
    costing the others; within a character budget, so that a flood of headers stays cheap.
    """
    out: list[tuple[str, str]] = []
    budget = _HEADER_DECODE_BUDGET
    # raw_items() gives the values as received; items() would run them through the policy.
    for name, value in msg.raw_items():
        value = str(value)
        text = None
        if len(value) > _MAX_HEADER_CHARS or len(value) > budget:
            defects.add("header-limit")
        else:
            budget -= len(value)
            try:
                text = str(email_policy.default.header_fetch_parse(name, value))
            except Exception:
                defects.add(f"header-error:{_clean(name).lower()[:64]}")
        if text is None:
            text = "".join(value.splitlines())  # at least unfolded
        out.append((_clean(name), _clean(text)))
    return tuple(out)


def _leaves(
    msg: Message,
    limits: UnpackLimits,
    defects: _Defects,
    deadline: _Deadline,
    texts: list[BodyText] | None = None,
) -> list[Part]:
    """Every non-multipart part, depth first, with IMAP-like section numbers ("1", "2.1").

    The first few text parts are also added to ``texts`` with their charsets, for the
    passwords of encrypted archives (:mod:`scanner.archive_passwords`).
    """
    out: list[Part] = []
    # An explicit stack rather than Message.walk(): hostile nesting must not hit the recursion
    # limit here (the parser has its own, and its failure is caught by parse()).
    stack: list[tuple[Message, str]] = [(msg, "")]
    while stack:
        try:
            deadline.check()
        except _BudgetSpent:
            break
        node, section = stack.pop()
        if node.is_multipart():
            _add_defects(node, defects)
            children = node.get_payload()
            if not isinstance(children, list):
                continue
            prefix = f"{section}." if section else ""
            for i in range(len(children), 0, -1):
                child = children[i - 1]
                if isinstance(child, Message):
                    stack.append((child, f"{prefix}{i}"))
            continue
        if len(out) >= limits.max_parts:
            defects.add("mime-limit:parts")
            break
        leaf = _leaf(node, section or "1", defects)
        if texts is not None and len(texts) < _MAX_TEXTS and leaf[0].content_type in _TEXT_TYPES:
            charset = _safe(node.get_content_charset, None)
            texts.append(BodyText(leaf[0].content_type, charset, leaf[0].data))
        out.extend(leaf)
    return out


# The text parts whose words may be an archive's password: the first few plain/HTML ones.
_TEXT_TYPES = ("text/plain", "text/html")
_MAX_TEXTS = 8


def _add_defects(node: Message, defects: _Defects) -> None:
    for d in getattr(node, "defects", ()):
        defects.add(f"mime:{type(d).__name__}")
    for name in _STRUCTURAL_HEADERS:
        if len(node.get_all(name) or ()) > 1:
            defects.add(f"mime-ambiguous:{name}")


def _leaf(node: Message, section: str, defects: _Defects) -> list[Part]:
    """One leaf as a part; plus the undecoded payload when its transfer encoding is broken."""
    content_type = _safe(lambda: _clean(node.get_content_type()), _OCTET)
    filename = _safe(lambda: _filename(node), None)
    path = f"{section}/{filename}" if filename else section
    broken = False
    _safe(lambda: _normalise_cte(node), None)
    try:
        data = node.get_payload(decode=True)
        if not isinstance(data, bytes):
            data = _raw_payload(node)
    except Exception as e:
        defects.add(f"mime-error:{type(e).__name__}")
        data, broken = _raw_payload(node), True
    # get_payload(decode=True) registers base64 problems on the part rather than raising.
    broken = broken or any(type(d).__name__.startswith("InvalidBase64") for d in node.defects)
    _add_defects(node, defects)
    parts = [Part(path=path, filename=filename, content_type=content_type, data=data)]
    if content_type.startswith("text/"):
        parts.extend(_uudecoded(data, path, defects))
    if broken:
        defects.add("encoding-broken")
        encoded = _raw_payload(node)
        if encoded != data:
            parts.append(
                Part(
                    path=f"{path}#encoded",
                    filename=filename,
                    content_type=content_type,
                    data=encoded,
                )
            )
    return parts


# "begin <mode> <name>" opens a uuencoded block; the name runs to the end. The mode should be
# octal, but lenient decoders (and so mail clients) do not check it: a mode-like token (a digit
# then 2-3 more characters, e.g. "9x9") opens a block too and is recorded (uuencode-broken),
# rather than leaving the block undecoded; prose such as "begin the meeting" does not.
_UU_BEGIN = re.compile(rb"begin +([0-9][0-9A-Za-z]{2,3}) +(\S[^\r\n]*?)[ \t]*")
_UU_MODE = re.compile(rb"[0-7]{3,4}")
# A text part may hold this many uuencoded blocks; more is a limit (the rest stays undecoded).
_MAX_UU_BLOCKS = 64


def _uudecoded(data: bytes, path: str, defects: _Defects) -> list[Part]:
    """Each uuencoded block (``begin 644 name`` ... ``end``) in a text body, as a part.

    No MIME header announces these, yet mail clients show them as attachments, so they must
    reach the engines decoded. Decoding is line by line and tolerant: a line that does not
    decode (even cut to the length its first character declares) is skipped, and a skipped
    line or a missing ``end`` is recorded as ``uuencode-broken``.
    """
    if b"begin " not in data:
        return []  # the cheap test for the common case: no block at all
    out: list[Part] = []
    name: str | None = None
    buf = bytearray()

    def close() -> None:
        if name is not None and buf:
            out.append(
                Part(path=f"{path}#uu{len(out) + 1}/{name}", filename=name or None,
                     content_type=_OCTET, data=bytes(buf))
            )  # fmt: skip

    for line in data.splitlines():
        if name is None:
            m = _UU_BEGIN.fullmatch(line)
            if m is None:
                continue
            if len(out) >= _MAX_UU_BLOCKS:
                defects.add("mime-limit:uuencode")
                break
            if not _UU_MODE.fullmatch(m.group(1)):
                defects.add("uuencode-broken")
            name, buf = _clean(m.group(2).decode("utf-8", "replace")), bytearray()
            continue
        if line.strip() == b"end":
            close()
            name = None
            continue
        if not line.strip():
            continue  # a2b_uu reads an empty line as 32 zero bytes; mailers add blank lines
        buf += _uu_line(line, defects)
    if name is not None:
        defects.add("uuencode-broken")  # no "end": keep what was decoded
        close()
    return out


def _uu_line(line: bytes, defects: _Defects) -> bytes:
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        pass
    # Encoders that pad with junk past the declared length (the stdlib uu module's workaround).
    try:
        return binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3])
    except binascii.Error:
        defects.add("uuencode-broken")
        return b""


_CTE_TOKEN = re.compile(r"\s*([A-Za-z0-9_.-]+)")
_COMMENT = re.compile(r"\([^()]*\)")


def _normalise_cte(node: Message) -> None:
    """Reduce Content-Transfer-Encoding to its bare token ("BASE64 (x)" -> "base64").

    compat32 compares the whole value, so trailing blanks or a comment would otherwise leave an
    attachment undecoded: an easy way to slip a payload past scanners that mail clients decode.
    """
    value = node.get("Content-Transfer-Encoding")
    if value is None:
        return
    value = str(value)
    m = _CTE_TOKEN.match(_COMMENT.sub(" ", value))
    token = m.group(1).lower() if m else ""
    if token and token != value:
        node.replace_header("Content-Transfer-Encoding", token)


def _filename(node: Message) -> str | None:
    """The part's file name, RFC 2231 and RFC 2047 decoded (mailers use both)."""
    name = node.get_filename()
    if not name:
        return None
    name = str(name)
    if "=?" in name:
        encoded = name
        name = _safe(lambda: str(make_header(decode_header(encoded))), name)
    return _clean(name) or None


def _safe(f: Callable[[], Any], default: Any) -> Any:
    try:
        return f()
    except Exception:
        return default


def _raw_payload(node: Message) -> bytes:
    """The part's body exactly as received (still transfer-encoded)."""
    # _payload is the stdlib's storage for the undecoded body; get_payload() cannot be used here
    # because it interprets the Content-Transfer-Encoding header, which may be what is broken.
    payload = getattr(node, "_payload", b"")
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        try:
            return payload.encode("utf-8", "surrogateescape")
        except UnicodeError:
            return payload.encode("utf-8", "replace")
    return b""


# --- archives ------------------------------------------------------------------------------


@dataclass
class _Budget:
    """What is left of one message's unpacking allowance."""

    limits: UnpackLimits
    defects: _Defects
    deadline: _Deadline
    passwords: PasswordTrials
    members: int = 0
    total: int = 0
    kdf_rounds: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limits.max_total_bytes - self.total)

    def take_member(self) -> bool:
        """Count one member; False (and a defect) once the member allowance is spent."""
        if self.members >= self.limits.max_members:
            self.defects.add("archive-limit:members")
            return False
        self.members += 1
        return True

    def ratio_cap(self, compressed: int) -> int:
        """The most bytes a member of ``compressed`` bytes may expand to."""
        return max(int(max(compressed, 1) * self.limits.max_ratio), self.limits.ratio_floor)

    def check_declared(self, declared: int, compressed: int) -> bool:
        """Judge a declared size before reading anything; False (and a defect) if too big."""
        if declared > self.ratio_cap(compressed):
            self.defects.add("archive-limit:ratio")
            return False
        if declared > self.remaining:
            self.defects.add("archive-limit:bytes")
            return False
        return True

    def charge(self, data: bytes, *, overflow: bool, compressed: int) -> None:
        """Account for extracted ``data``; ``overflow`` means it was cut at the cap."""
        self.total += len(data)
        if overflow:
            # Which limit made the cap: the ratio one unless the message budget was smaller.
            ratio_hit = len(data) >= self.ratio_cap(compressed)
            self.defects.add("archive-limit:ratio" if ratio_hit else "archive-limit:bytes")


def _expand(
    leaves: list[Part],
    limits: UnpackLimits,
    defects: _Defects,
    deadline: _Deadline,
    passwords: PasswordTrials,
) -> list[Part]:
    """The leaves with every archive's members inserted after it, depth first.

    Once the time budget is spent, the parts already decoded are still kept (they cost nothing
    more to hand to the engines), but no further archive is opened. Encrypted members are
    tried with ``passwords`` (see :func:`_zip_decrypted`, :func:`_open_7z`).
    """
    budget = _Budget(limits, defects, deadline, passwords)
    out: list[Part] = []
    stack = list(reversed(leaves))
    while stack:
        part = stack.pop()
        out.append(part)
        if deadline.spent:
            continue
        kind = _archive_kind(part.data)
        if kind is None:
            continue
        if part.depth >= limits.max_depth:
            defects.add("archive-limit:depth")
            continue
        try:
            deadline.check()
            members = _OPENERS[kind](part, budget)
        except _BudgetSpent:
            members = []  # an opener stopped mid-archive: what it had is lost, the rest raw
        except Exception:
            # Each opener handles its own errors; this is the last line of defence.
            if kind != "zip-embedded":
                defects.add("archive-corrupt")
            members = []
        stack.extend(reversed(members))
    return out


def _archive_kind(data: bytes) -> ArchiveKind | None:
    """Recognise an archive by its magic bytes."""
    head = data[:8]
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if data[257:262] == b"ustar":
        return "tar"
    # Self-extracting executables and polyglots carry a zip after other data; zip readers (and
    # so victims) open those too. The check only reads the file's tail.
    if len(data) >= 22 and _safe(lambda: zipfile.is_zipfile(io.BytesIO(data)), False):
        return "zip-embedded"
    return None


def _member(parent: Part, name: str, data: bytes) -> Part:
    name = _clean(name)
    return Part(
        path=f"{parent.path}!{name}",
        filename=name or None,
        content_type=_OCTET,  # a member's real type is whatever its bytes say
        data=data,
        depth=parent.depth + 1,
    )


def _read_bounded(
    f: io.BufferedIOBase | Any, cap: int, deadline: _Deadline
) -> tuple[bytes, bool, bool]:
    """Read at most ``cap`` bytes: (data, more data was left, the read failed part-way).

    Raises :class:`_BudgetSpent` when the time budget runs out between chunks.
    """
    buf = bytearray()
    try:
        while len(buf) <= cap:
            deadline.check()
            chunk = f.read(min(_CHUNK, cap + 1 - len(buf)))
            if not chunk:
                return bytes(buf), False, False
            buf += chunk
    except _BudgetSpent:
        raise
    except Exception:
        return bytes(buf[:cap]), False, True
    return bytes(buf[:cap]), True, False


def _open_zip(part: Part, budget: _Budget, *, embedded: bool = False) -> list[Part]:
    defects = budget.defects
    try:
        zf = zipfile.ZipFile(io.BytesIO(part.data))
    except Exception:
        if not embedded:
            defects.add("archive-corrupt")
        return []
    out: list[Part] = []
    encrypted = _EncryptedZip(part.data)
    with zf, encrypted:
        try:
            for index, info in enumerate(zf.infolist()):
                if not budget.take_member():
                    break
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    member = _zip_decrypted(part, encrypted, index, info, budget)
                    if member is not None:
                        out.append(member)
                    continue
                if not budget.check_declared(info.file_size, info.compress_size):
                    if budget.remaining < info.file_size <= budget.ratio_cap(info.compress_size):
                        break  # the message's byte allowance is spent: stop this archive
                    continue  # only this member is a bomb; its siblings may still carry malware
                cap = min(budget.remaining, budget.ratio_cap(info.compress_size))
                try:
                    f = zf.open(info)
                except NotImplementedError:
                    defects.add("archive-unsupported")
                    continue
                except Exception:
                    defects.add("archive-corrupt")
                    continue
                with f:
                    data, overflow, failed = _read_bounded(f, cap, budget.deadline)
                if failed:
                    defects.add("archive-corrupt")
                budget.charge(data, overflow=overflow, compressed=info.compress_size)
                out.append(_member(part, info.filename, data))
        except _BudgetSpent:
            pass  # keep the members read so far
    return out


class _EncryptedZip:
    """The zip again through pyzipper, opened at its first encrypted member only.

    pyzipper (the stdlib's zipfile plus WinZip AES) reads both traditional PKWARE encryption
    (ZipCrypto) and AES (AE-1/AE-2); the stdlib reads only the former. The plain members stay
    with the stdlib reader, which the rest of the unpacker is tested against.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._zf: Any = None
        self._failed = False

    def info(self, index: int, name: str) -> Any:
        """pyzipper's entry for member ``index`` (named ``name``), or None if it cannot tell."""
        if self._zf is None and not self._failed:
            import pyzipper  # imported here: only messages with an encrypted zip pay for it

            try:
                self._zf = pyzipper.AESZipFile(io.BytesIO(self._data))
            except Exception:
                self._failed = True
        if self._zf is None:
            return None
        infos = self._zf.infolist()
        # Both readers list the same central directory in order; the name guards that.
        if index < len(infos) and infos[index].filename == name:
            return infos[index]
        return None

    def open(self, info: Any, password: str) -> Any:
        """The member opened with ``password`` (UTF-8, as 7-Zip and WinZip write AES zips)."""
        return self._zf.open(info, pwd=password.encode("utf-8"))

    def __enter__(self) -> _EncryptedZip:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zf is not None:
            self._zf.close()


def _zip_decrypted(
    part: Part, encrypted: _EncryptedZip, index: int, info: zipfile.ZipInfo, budget: _Budget
) -> Part | None:
    """Member ``info`` decrypted with a password from the message, or None.

    A candidate opens the member only if the whole member then reads back clean: ZipCrypto's
    one check byte lets 1 wrong password in 256 through, so the CRC (AES: the HMAC) at the end
    decides. A member cut at its byte cap is taken as read (the cap is then a recorded limit
    anyway). ``archive-password:found`` is recorded when one works; ``archive-encrypted`` when
    none does, plus ``archive-password:limit`` when the trial allowance ran out first.
    """
    defects, trials = budget.defects, budget.passwords
    if not budget.check_declared(info.file_size, info.compress_size):
        return None  # too big to unpack whatever the password: the limit is the verdict
    cap = min(budget.remaining, budget.ratio_cap(info.compress_size))
    for password in trials.candidates:
        budget.deadline.check()
        entry = encrypted.info(index, info.filename)
        if entry is None or not trials.take():
            break
        try:
            f = encrypted.open(entry, password)
        except NotImplementedError:
            defects.add("archive-unsupported")  # the method, not the password: same for all
            break
        except Exception:
            continue  # the check bytes say: wrong password
        with f:
            data, overflow, failed = _read_bounded(f, cap, budget.deadline)
        if failed:
            continue
        trials.worked(password)
        defects.add("archive-password:found")
        budget.charge(data, overflow=overflow, compressed=info.compress_size)
        return _member(part, info.filename, data)
    defects.add("archive-encrypted")
    if trials.refused:
        defects.add("archive-password:limit")
    return None


def _open_tar(part: Part, budget: _Budget) -> list[Part]:
    defects = budget.defects
    out: list[Part] = []
    try:
        tf = tarfile.open(fileobj=io.BytesIO(part.data), mode="r:")
    except Exception:
        defects.add("archive-corrupt")
        return out
    with tf:
        try:
            for ti in tf:  # iterating reads one header at a time
                if not budget.take_member():
                    break
                if not ti.isreg():
                    continue
                # tar stores members uncompressed, except sparse ones: their holes are a ratio
                # (one stored byte can stand for GiBs of zeros), judged on the stored bytes.
                if ti.issparse():
                    # (offset, size) pairs; typeshed does not declare the attribute's shape.
                    segments: list[tuple[int, int]] = getattr(ti, "sparse", None) or []
                    stored = sum(n for _, n in segments)
                    if ti.size > budget.ratio_cap(stored):
                        defects.add("archive-limit:ratio")
                        continue
                if ti.size > budget.remaining:
                    defects.add("archive-limit:bytes")
                    break
                f = tf.extractfile(ti)
                if f is None:
                    continue
                data, overflow, failed = _read_bounded(
                    f, min(ti.size, budget.remaining), budget.deadline
                )
                if failed:
                    defects.add("archive-corrupt")
                budget.charge(data, overflow=overflow, compressed=len(part.data))
                out.append(_member(part, ti.name, data))
        except _BudgetSpent:
            pass  # keep the members read so far
        except Exception:
            defects.add("archive-corrupt")
    return out


# Single-stream compressors. Decompressor objects (not GzipFile & co.) because one call with
# max_length bounds the output, and LZMADecompressor is the only way to cap xz's memory use.
_STREAMS: dict[str, tuple[Callable[[], Any], bytes, tuple[str, ...]]] = {
    "gzip": (lambda: zlib.decompressobj(wbits=31), b"\x1f\x8b", (".gz", ".gzip", ".z")),
    "bz2": (bz2.BZ2Decompressor, b"BZh", (".bz2", ".bz")),
    "xz": (lambda: lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT), b"\xfd7zXZ", (".xz",)),
}
_TAR_ALIASES = {".tgz": ".tar", ".tbz": ".tar", ".tbz2": ".tar", ".txz": ".tar"}


def _open_stream(part: Part, budget: _Budget, kind: str) -> list[Part]:
    factory, magic, suffixes = _STREAMS[kind]
    defects = budget.defects
    if not budget.take_member():
        return []
    data = part.data
    compressed = len(data)
    # No declared size to trust here (gzip's trailer is mod 2**32 and garbage when truncated):
    # the cap alone bounds the work, and it is proportional to the compressed size.
    cap = min(budget.remaining, budget.ratio_cap(compressed))
    out = bytearray()
    overflow = False
    view = memoryview(data)
    pos = 0
    try:
        # Loop for concatenated streams (multi-member gzip, pbzip2 output). Input is fed from
        # offsets into one memoryview in growing steps, so the work is linear in the input
        # however many members it holds (see _FIRST_STEP).
        while view[pos : pos + len(magic)] == magic and not overflow:
            budget.deadline.check()
            d = factory()
            step = _FIRST_STEP
            while not d.eof and pos < compressed and not overflow:
                chunk = view[pos : pos + step]
                pos += len(chunk)
                out += d.decompress(chunk, cap + 1 - len(out))
                overflow = len(out) > cap
                step = min(step * 2, _MAX_STEP)
            if not d.eof:
                break  # truncated, or cut at the cap: keep what we have
            pos -= len(d.unused_data)  # the next member starts where this one's input ended
    except _BudgetSpent:
        pass  # keep what was decompressed so far
    except Exception:
        defects.add("archive-corrupt")
    extracted = bytes(out[:cap])
    budget.charge(extracted, overflow=overflow, compressed=compressed)
    return [_member(part, _stream_member_name(part.filename, suffixes), extracted)]


def _stream_member_name(filename: str | None, suffixes: tuple[str, ...]) -> str:
    """``report.txt.gz`` -> ``report.txt``; ``x.tgz`` -> ``x.tar``; otherwise ``data``."""
    if not filename:
        return "data"
    base = filename.rsplit("/", 1)[-1]
    lower = base.lower()
    for alias, replacement in _TAR_ALIASES.items():
        if lower.endswith(alias):
            return base[: -len(alias)] + replacement
    for suffix in suffixes:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return "data"


class _SevenZipOverflow(Exception):
    """Raised from inside py7zr's extraction to stop a member at its byte cap."""


class _CappedWriter:
    """A py7zr writer that keeps at most ``cap`` bytes and aborts the extraction beyond it.

    Aborting (rather than discarding, as py7zr's own BytesIO writer does) bounds the CPU a
    7z bomb costs, not just the memory.
    """

    def __init__(self, cap: int, deadline: _Deadline) -> None:
        self.cap = cap
        self.deadline = deadline
        self.buf = io.BytesIO()
        self.overflow = False

    def write(self, s: bytes | bytearray) -> int:
        self.deadline.check()  # py7zr lets it out of extract(), which stops the work
        if self.buf.tell() + len(s) > self.cap:
            self.buf.write(bytes(s[: self.cap - self.buf.tell()]))
            self.overflow = True
            raise _SevenZipOverflow
        return self.buf.write(s)

    def read(self, size: int | None = None) -> bytes:
        return self.buf.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buf.seek(offset, whence)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # the bytes are read after extraction

    def size(self) -> int:
        return self.buf.getbuffer().nbytes


def _open_7z(part: Part, budget: _Budget) -> list[Part]:
    """7z through py7zr (pure Python, maintained); same limits as zip, judged up front on the
    declared sizes and enforced while writing. An encrypted archive (its data, or its header
    too) is tried with the message's passwords (:func:`_7z_decrypted`)."""
    import py7zr  # imported here: only messages with a 7z attachment pay for it

    defects = budget.defects
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(part.data), mode="r")
    except py7zr.exceptions.PasswordRequired:
        # The header is encrypted too: not even the names can be read without the password.
        return _7z_decrypted(part, budget, _7z_header_folders(part.data), None)
    except Exception:
        defects.add("archive-corrupt")
        return []
    with archive:
        try:
            encrypted = archive.needs_password()
            infos = [i for i in archive.list() if not i.is_directory]
            folders = _7z_main_folders(archive)
        except Exception:
            defects.add("archive-corrupt")
            return []
        if not encrypted:
            wanted = _7z_wanted(infos, part, budget)
            if not wanted:
                return []
            return _7z_extract(archive, wanted, part, budget, verify=False) or []
    # Names and sizes are plain, the data is not: the members are chosen once, tried per password.
    wanted = _7z_wanted(infos, part, budget)
    return _7z_decrypted(part, budget, folders, wanted) if wanted else []


def _7z_wanted(infos: list[Any], part: Part, budget: _Budget) -> list[str]:
    """The members of a 7z to extract within the limits (counting each against them)."""
    compressed = len(part.data)
    wanted: list[str] = []
    declared_total = 0
    for info in infos:
        if not budget.take_member():
            break
        size = int(info.uncompressed or 0)
        # Solid archives share one compressed stream: judge the ratio on the whole archive.
        if not budget.check_declared(declared_total + size, compressed):
            continue
        declared_total += size
        wanted.append(info.filename)
    # Members of a solid archive are decompressed in order even when skipped, so the whole
    # declared size bounds the work; refuse archives that declare far beyond the budget.
    if wanted and sum(int(i.uncompressed or 0) for i in infos) > 4 * budget.limits.max_total_bytes:
        budget.defects.add("archive-limit:bytes")
        return []
    return wanted


def _7z_extract(
    archive: Any, wanted: list[str], part: Part, budget: _Budget, *, verify: bool
) -> list[Part] | None:
    """The ``wanted`` members of an open 7z, as parts.

    ``verify`` (a password trial): None unless the extraction ended without error and at
    least one member was read whole and had its CRC checked by py7zr. A wrong password most
    often makes the decompressor or a CRC fail; a member without a CRC, or cut at its cap,
    proves nothing, so an archive with only such members stays encrypted (fail closed).
    """
    from py7zr.io import WriterFactory

    compressed = len(part.data)
    cap = min(budget.remaining, budget.ratio_cap(compressed))
    writers: dict[str, _CappedWriter] = {}
    used = 0

    class _Factory(WriterFactory):
        def create(self, filename: str) -> Any:
            w = _CappedWriter(max(0, cap - used), budget.deadline)
            writers[filename] = w
            return w

    complete = True
    try:
        archive.extract(targets=wanted, factory=_Factory())
    except (_SevenZipOverflow, _BudgetSpent):
        complete = False  # keep what was written so far; the last member is cut
    except Exception:
        if verify:
            return None
        budget.defects.add("archive-corrupt")
    if verify:
        crcs = {i.filename: i.crc32 for i in archive.list()}
        whole = list(writers) if complete else list(writers)[:-1]
        if not any(crcs.get(name) is not None for name in whole):
            return None
    out: list[Part] = []
    for name, w in writers.items():
        data = w.buf.getvalue()
        used += len(data)
        budget.charge(data, overflow=w.overflow, compressed=compressed)
        out.append(_member(part, name, data))
    return out


def _7z_decrypted(
    part: Part, budget: _Budget, folders: list[Any], wanted: list[str] | None
) -> list[Part]:
    """An encrypted 7z's members, decrypted with a password from the message, or none.

    ``wanted`` is None when the header is encrypted too: the members are chosen once a
    password opens it. ``folders`` are the folders whose keys a trial derives before that
    (the header's, or the data's); each trial costs their key derivation, counted in SHA-256
    rounds against ``max_kdf_rounds`` before it is made, so a 7z that declares a slow key
    gets fewer trials, or none. Records ``archive-password:found`` when one works, else
    ``archive-encrypted`` (and ``archive-password:limit`` if the allowance ran out first).
    """
    import py7zr

    defects, trials = budget.defects, budget.passwords
    for password in trials.candidates:
        budget.deadline.check()
        if not _charge_kdf(budget, folders) or not trials.take():
            break
        try:
            archive = py7zr.SevenZipFile(io.BytesIO(part.data), mode="r", password=password)
        except Exception:
            continue  # the header did not decrypt: wrong password
        with archive:
            members: list[Part] | None = []
            try:
                chosen = wanted
                if chosen is None:
                    infos = [i for i in archive.list() if not i.is_directory]
                    if not _charge_kdf(budget, _7z_main_folders(archive)):
                        break
                    chosen = _7z_wanted(infos, part, budget)
                if chosen:
                    members = _7z_extract(archive, chosen, part, budget, verify=True)
            except _BudgetSpent:
                raise
            except Exception:
                members = None
        if members is None:
            continue
        trials.worked(password)
        defects.add("archive-password:found")
        return members
    defects.add("archive-encrypted")
    if trials.refused:
        defects.add("archive-password:limit")
    return []


# 7-Zip's AES-256 + SHA-256 coder; its first property byte holds log2 of the key's rounds.
_7Z_AES = b"\x06\xf1\x07\x01"


def _kdf_rounds(folders: list[Any]) -> int:
    """SHA-256 rounds py7zr spends deriving the keys of ``folders`` (one per AES coder)."""
    rounds = 0
    for folder in folders:
        for coder in getattr(folder, "coders", None) or ():
            props = coder.get("properties") or b"\x00"
            if coder.get("method") == _7Z_AES and props[0] & 0x3F != 0x3F:  # 0x3F: no hashing
                rounds += 1 << (props[0] & 0x3F)
    return rounds


def _charge_kdf(budget: _Budget, folders: list[Any]) -> bool:
    """Count the key derivation of ``folders``; False (trials refused) if it would pass the
    message's ``max_kdf_rounds``."""
    rounds = _kdf_rounds(folders)
    if budget.kdf_rounds + rounds > budget.limits.max_kdf_rounds:
        budget.passwords.refused = True
        return False
    budget.kdf_rounds += rounds
    return True


def _7z_main_folders(archive: Any) -> list[Any]:
    """The folders (compressed streams) of an open 7z's data."""
    streams = getattr(archive.header, "main_streams", None)
    unpackinfo = getattr(streams, "unpackinfo", None)
    return list(getattr(unpackinfo, "folders", None) or [])


def _7z_header_folders(data: bytes) -> list[Any]:
    """The folders of a 7z's encoded (compressed, maybe encrypted) header, read without a
    password: their coders are stored in the clear. [] if the header is not encoded.

    A header that cannot be read is one folder of the slowest key py7zr accepts (2**24
    rounds): trying it is then never cheaper than it could turn out.
    """
    from py7zr.archiveinfo import HeaderStreamsInfo, SignatureHeader

    slowest = [_Folder([{"method": _7Z_AES, "properties": bytes([24])}])]
    try:
        fp = io.BytesIO(data)
        sig = SignatureHeader.retrieve(fp)
        start = 32 + sig.nextheaderofs
        if not 0 <= sig.nextheadersize <= len(data) - start:
            return slowest
        header = io.BytesIO(data[start : start + sig.nextheadersize])
        if header.read(1) != b"\x17":  # PROPERTY.ENCODED_HEADER
            return []
        return list(HeaderStreamsInfo.retrieve(header).unpackinfo.folders or [])
    except Exception:
        return slowest


@dataclass(frozen=True, slots=True)
class _Folder:
    """Stands in for a py7zr folder whose coders could not be read."""

    coders: list[dict[str, Any]]


_OPENERS: dict[ArchiveKind, Callable[[Part, _Budget], list[Part]]] = {
    "zip": _open_zip,
    "zip-embedded": lambda p, b: _open_zip(p, b, embedded=True),
    "tar": _open_tar,
    "gzip": lambda p, b: _open_stream(p, b, "gzip"),
    "bz2": lambda p, b: _open_stream(p, b, "bz2"),
    "xz": lambda p, b: _open_stream(p, b, "xz"),
    "7z": _open_7z,
}
