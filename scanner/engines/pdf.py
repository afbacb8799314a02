"""PDF active content: what a PDF runs or carries when it is opened.

Reports ``match`` findings with symbols ``pdf:<what>`` that the tenant's ``Policy.blocked_pdf``
turns into an action (:func:`scanner.policy.decide`):

- ``pdf:javascript`` — a ``/JavaScript`` action or ``/JS`` script;
- ``pdf:launch`` — a ``/Launch`` action (runs a program or opens a file);
- ``pdf:embedded-file`` — an attached file (``/EmbeddedFile``, ``/EmbeddedFiles``);
- ``pdf:open-action`` — an action run on open or on an event (``/OpenAction``, ``/AA``):
  common in harmless PDFs too (a zoom level, a first page), so a sign to combine, not held;
- ``pdf:limit`` — a decoding budget ran out (or the part was too big to scan): what is past
  it was not looked into. Real object streams are small (dictionaries, not page content), so
  this is a crafted file, and the default policy holds it (fail closed).

A PDF is found by its bytes (``%PDF-`` in its first KiB, as readers accept), whatever its
name. The scan is of the names in the file (``/JavaScript`` and its ``#xx``-escaped spellings
such as ``/J#61vaScript``), plus those inside FlateDecode object streams (``/Type /ObjStm``),
where PDF 1.5+ files (and malware hiding from byte scanners) keep their dictionaries. Content
streams (page text and drawing) are not decoded: actions cannot live there. Decoding is
bounded: at most ``_MAX_OBJSTM`` object streams, ``_MAX_INFLATE`` bytes from one and
``_MAX_INFLATED`` in all per part, and parts over ``_MAX_BYTES`` are not scanned, so a
flate bomb costs a bounded amount of memory and time. No PDF library is installed in the
venv and none is needed for this: the scan looks for names, it does not render.

No settings. ``detail``: each symbol -> the first part path that raised it.
"""

from __future__ import annotations

import asyncio
import re
import zlib

from scanner.engines.common import (
    EngineBase,
    EngineSpec,
    Finding,
    NoSettings,
    ParsedMessage,
)
from scanner.mime import RAW_PATH

__all__ = ["ENGINE", "PdfEngine", "active_content"]

_MAX_BYTES = 50 * 1024 * 1024
_MAX_OBJSTM = 1000
_MAX_INFLATE = 8 * 1024 * 1024
_MAX_INFLATED = 64 * 1024 * 1024
# A name token: "/" then regular characters (PDF 32000-1 7.2.2: not whitespace or delimiter).
_NAME = re.compile(rb"/([^\x00\t\n\f\r ()<>\[\]{}/%]{1,127})")
_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
_WHAT: dict[bytes, str] = {
    b"JavaScript": "javascript",
    b"JS": "javascript",
    b"Launch": "launch",
    b"EmbeddedFile": "embedded-file",
    b"EmbeddedFiles": "embedded-file",
    b"OpenAction": "open-action",
    b"AA": "open-action",
}
# An object stream's dictionary, then its data: "<< ... /Type /ObjStm ... >> stream\r\n".
_STREAM = re.compile(rb"stream\r?\n")
_DICT_BEFORE = 2048  # how far before "stream" its dictionary is looked for


def _decoded_names(data: bytes) -> set[bytes]:
    """Every name in ``data``, ``#xx`` escapes decoded (``/J#61vaScript`` is ``JavaScript``)."""
    out: set[bytes] = set()
    for m in _NAME.finditer(data):
        raw = m.group(1)
        out.add(_HEX.sub(lambda h: bytes([int(h.group(1), 16)]), raw) if b"#" in raw else raw)
    return out


def _names(data: bytes) -> set[str]:
    return {_WHAT[n] for n in _decoded_names(data) if n in _WHAT}


def _object_streams(data: bytes) -> tuple[list[bytes], bool]:
    """The decoded FlateDecode object streams of ``data``, and whether a budget ran out."""
    out: list[bytes] = []
    total = 0
    seen = 0
    limited = False
    for m in _STREAM.finditer(data):
        if data[max(0, m.start() - 3) : m.start()] == b"end":
            continue  # "endstream"
        head = data[max(0, m.start() - _DICT_BEFORE) : m.start()]
        # The stream's own dictionary: what follows the previous object (nested dictionaries
        # such as /DecodeParms are inside it).
        cut = max(head.rfind(b"endobj"), head.rfind(b"endstream"))
        names = _decoded_names(head[cut + 1 :] if cut >= 0 else head)
        if b"ObjStm" not in names or b"FlateDecode" not in names:
            continue
        seen += 1
        if seen > _MAX_OBJSTM or total >= _MAX_INFLATED:
            return out, True
        end = data.find(b"endstream", m.end())
        body = data[m.end() : end if end >= 0 else len(data)]
        room = min(_MAX_INFLATE, _MAX_INFLATED - total)
        try:
            inflater = zlib.decompressobj()
            plain = inflater.decompress(body, room)
        except zlib.error:
            continue  # damaged: readers skip it too
        total += len(plain)
        out.append(plain)
        # A stream past its budget is scanned as far as it was inflated and the next ones
        # still are: a bomb in front must not hide the stream behind it.
        limited = limited or bool(inflater.unconsumed_tail)
    return out, limited


def active_content(data: bytes) -> tuple[set[str], bool]:
    """What ``data`` (a PDF) runs or carries, as symbol suffixes, and whether a budget ran out."""
    found = _names(data)
    streams, limited = _object_streams(data)
    for plain in streams:
        found |= _names(plain)
    return found, limited


class PdfEngine(EngineBase):
    """The ``pdf`` policy engine. Stateless; safe to call concurrently."""

    name = "pdf"
    kind = "policy"
    cacheable = True

    @property
    def version(self) -> str:
        """This module's scan version (no library involved)."""
        return "pdf-1"

    @property
    def rules_version(self) -> str:
        """The names looked for are this module's: the same version."""
        return self.version

    async def check(self, message: ParsedMessage) -> Finding:
        """Scan every PDF part; ``match`` with what it runs or carries."""
        return await asyncio.to_thread(self.inspect, message)

    def inspect(self, message: ParsedMessage) -> Finding:
        """The synchronous work of :meth:`check`."""
        found: dict[str, str] = {}
        for part in message.parts:
            if part.path == RAW_PATH or b"%PDF-" not in part.data[:1024]:
                continue
            if len(part.data) > _MAX_BYTES:
                found.setdefault("pdf:limit", part.path)
                continue
            what, limited = active_content(part.data)
            for w in sorted(what):
                found.setdefault(f"pdf:{w}", part.path)
            if limited:
                found.setdefault("pdf:limit", part.path)
        symbols = tuple(found)
        return self.finding("match" if symbols else "clean", symbols=symbols, detail=found)


def build(settings: NoSettings) -> PdfEngine:
    """The engine (it reads no settings: the tenant's policy says which symbols act)."""
    return PdfEngine()


ENGINE = EngineSpec(PdfEngine, NoSettings, build)
"""The registry's entry for ``pdf``."""


# --- text, for content rules ------------------------------------------------------------------

_TEXT_MAX_STREAMS = 2000
_TEXT_MAX_INFLATED = 16 * 1024 * 1024
_TEXT_MAX = 4 * 1024 * 1024
# Python steps (a string, an operator, a parenthesis or escape) per PDF: what bounds the CPU
# time of a stream crafted to be all tokens (~1 s here); real pages take ~3-5 a line of text.
_TEXT_MAX_STEPS = 500_000
# Filters a content stream may have that this module decodes (none, or Flate alone).
_SKIP_NAMES = {b"Image", b"DCTDecode", b"JPXDecode", b"CCITTFaxDecode", b"JBIG2Decode",
               b"LZWDecode", b"ASCII85Decode", b"ASCIIHexDecode", b"RunLengthDecode",
               b"Crypt"}  # fmt: skip
_TEXT_OPS = {b"Tj", b"TJ", b"'", b'"'}
_DELIMS = b"()<>[]{}/%"
_WS = b"\x00\t\n\f\r "
_ESC = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}


def text(data: bytes, limit: int = _TEXT_MAX) -> bytes:
    """The strings a PDF's content streams show (the ``Tj``, ``TJ``, ``'`` and ``"`` text
    operators), one line per operator, at most ``limit`` bytes: for content rules, so that a
    needle inside a compressed page is found. Strings are as stored: text in fonts with their
    own encodings (CID fonts) is not mapped to Unicode. Bounded in streams, inflated bytes and
    parsing steps (``_TEXT_MAX_STEPS``); never raises."""
    out = bytearray()
    total = 0
    steps = [_TEXT_MAX_STEPS]
    for i, m in enumerate(_STREAM.finditer(data)):
        if i >= _TEXT_MAX_STREAMS or total >= _TEXT_MAX_INFLATED or len(out) >= limit:
            break
        if steps[0] <= 0:
            break
        if data[max(0, m.start() - 3) : m.start()] == b"end":
            continue
        head = data[max(0, m.start() - _DICT_BEFORE) : m.start()]
        cut = max(head.rfind(b"endobj"), head.rfind(b"endstream"))
        names = _decoded_names(head[cut + 1 :] if cut >= 0 else head)
        if names & _SKIP_NAMES or b"ObjStm" in names:
            continue
        end = data.find(b"endstream", m.end())
        body = data[m.end() : end if end >= 0 else len(data)]
        if b"FlateDecode" in names:
            try:
                body = zlib.decompressobj().decompress(body, _TEXT_MAX_INFLATED - total)
            except zlib.error:
                continue
        total += len(body)
        _show_text(body, out, limit, steps)
    return bytes(out[:limit])


def _show_text(content: bytes, out: bytearray, limit: int, steps: list[int] | None = None) -> None:
    """Append the strings of ``content``'s text operators to ``out``.

    A regular expression jumps to the next string or text operator; strings are read to their
    closing parenthesis (nesting and escapes counted) by another that jumps to the next
    parenthesis or backslash. Strings since the last operator are joined (a ``TJ`` array's
    pieces, kerning numbers skipped), each operator ends a line. Every byte is passed once:
    an unclosed ``(`` ends the stream's text, it is not retried from the next byte.
    """
    budget = steps if steps is not None else [_TEXT_MAX_STEPS]
    pending: list[bytes] = []
    pos, n = 0, len(content)
    while budget[0] > 0:
        budget[0] -= 1
        m = _SHOW.search(content, pos)
        if m is None:
            return
        first = content[m.start()]
        pos = m.end()
        if first == 0x28:  # "(" literal string
            body, pos = _literal(content, pos, budget)
            pending.append(body)
        elif first == 0x3C:  # "<" hex string, "<<" a dictionary
            if content[pos : pos + 1] == b"<":
                pos += 1
                continue
            end = content.find(b">", pos)
            if end < 0:
                return
            digits = bytes(b for b in content[pos:end] if b not in _WS)
            try:
                pending.append(bytes.fromhex(digits.decode("ascii") + "0" * (len(digits) % 2)))
            except ValueError:
                pass
            pos = end + 1
        elif pending:  # a text operator
            out += b"".join(pending) + b"\n"
            pending.clear()
            if len(out) >= limit:
                return
        if pos >= n:
            return


# The start of a string, or a text operator (a whole token).
_SHOW = re.compile(rb"[(<]|(?<![^\s\])>])(?:Tj|TJ|'|\")(?![^\s\[(<])")
_LITERAL_SPECIAL = re.compile(rb"[()\\]")


def _literal(content: bytes, i: int, budget: list[int]) -> tuple[bytes, int]:
    """The literal string starting after its "(" at ``i``, and the index past its ")"; each
    parenthesis or escape costs a step of ``budget``, and the string ends when it runs out."""
    out = bytearray()
    depth, n = 1, len(content)
    while i < n and budget[0] > 0:
        budget[0] -= 1
        m = _LITERAL_SPECIAL.search(content, i)
        if m is None:
            out += content[i:]
            break
        out += content[i : m.start()]
        c = content[m.start()]
        i = m.start() + 1
        if c == 0x5C:  # backslash
            if i >= n:
                break
            e = content[i]
            if e in _ESC:
                out.append(_ESC[e])
            elif 0x30 <= e <= 0x37:
                j = i
                while j < n and j < i + 3 and 0x30 <= content[j] <= 0x37:
                    j += 1
                out.append(int(content[i:j], 8) & 0xFF)
                i = j
                continue
            elif e not in b"\r\n":  # a backslash before a line break continues the line
                out.append(e)
            i += 1
        elif c == 0x28:
            depth += 1
            out.append(c)
        else:
            depth -= 1
            if depth == 0:
                return bytes(out), i
            out.append(c)
    return bytes(out), n
