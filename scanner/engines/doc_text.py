"""The text of OOXML documents, for content rules.

Not an engine (no ``ENGINE``): :mod:`scanner.engines.content_rules` adds this text to what
its needles are searched in, so that a rule (GTUBE, a phishing phrase) inside a docx, xlsx
or pptx is found although the package is a zip of XML.

Read: Word's body, headers, footers, footnotes and comments (``word/*.xml``, ``w:t``),
Excel's shared strings and inline strings (``xl/sharedStrings.xml``, ``xl/worksheets/*.xml``),
PowerPoint's slides and notes (``ppt/slides/*.xml``, ``ppt/notesSlides/*.xml``, ``a:t``). The
runs of a paragraph are joined without a blank (Word splits words across runs), paragraphs
end with a line break. Bounded: at most ``_MAX_MEMBERS`` members of ``_MAX_MEMBER`` bytes,
``limit`` bytes of text; a member with a DTD is not read (OOXML has none, and entities are
how a DTD would add text). Never raises.
"""

from __future__ import annotations

import html
import re
import zipfile
from io import BytesIO

__all__ = ["ooxml_text"]

_MAX_MEMBERS = 500
_MAX_MEMBER = 16 * 1024 * 1024
_TEXT_MAX = 4 * 1024 * 1024
_PARTS = re.compile(
    r"^(?:word/(?:document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml"
    r"|xl/sharedStrings\.xml|xl/worksheets/[^/]+\.xml"
    r"|ppt/(?:slides|notesSlides)/[^/]+\.xml)$",
    re.IGNORECASE,
)


def ooxml_text(data: bytes, limit: int = _TEXT_MAX) -> bytes:
    """The UTF-8 text of the OOXML package ``data`` (empty if it is none), at most ``limit``."""
    out = bytearray()
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            infos = [i for i in z.infolist()[: _MAX_MEMBERS * 4] if _PARTS.match(i.filename)]
            for info in infos[:_MAX_MEMBERS]:
                if len(out) >= limit or info.file_size > _MAX_MEMBER:
                    continue
                try:
                    with z.open(info) as f:
                        xml = f.read(_MAX_MEMBER + 1)
                except Exception:
                    continue
                if len(xml) > _MAX_MEMBER or b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
                    continue
                _member_text(xml, out, limit)
    except Exception:
        pass
    return bytes(out[:limit])


def _member_text(xml: bytes, out: bytearray, limit: int) -> None:
    """Append the text runs of ``xml`` to ``out``: one regular-expression pass over the
    ``<t>`` elements (any prefix: ``w:t``, ``a:t``, ``t``) and the paragraph ends, entities
    decoded. Several times faster than a parser on a large document, and linear (a tag's
    attributes end at the first ``>``, a run's text at the first ``<``)."""
    for m in _RUN.finditer(xml):
        text = m.group(1)
        if text is None:
            out += b"\n"  # the end of a paragraph, shared string or cell
        elif text:
            if b"&" in text:
                text = html.unescape(text.decode("utf-8", "replace")).encode("utf-8")
            out += text
        if len(out) >= limit:
            return


_RUN = re.compile(
    rb"<(?:[A-Za-z_][\w.-]*:)?t(?:\s[^<>]*)?>([^<]*)</(?:[A-Za-z_][\w.-]*:)?t>"
    rb"|</(?:[A-Za-z_][\w.-]*:)?(?:p|si|is|tc)>"
)
