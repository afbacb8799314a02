"""Attachment policy: what every attachment really is, and the tricks that hide it.

Reports, never decides: each notable fact is a symbol ``attachment:<what>`` on a ``match``
finding, and the tenant's ``Policy.blocked_attachments`` says which of them act
(:func:`scanner.policy.decide`). Symbols:

- ``attachment:type:<category>`` — the *true* type from the bytes (libmagic through
  python-magic), whatever the name or declared Content-Type say: ``executable``, ``script``,
  ``disk-image``, ``office``, ``office-macro`` (a macro-enabled OOXML or OLE with a VBA
  storage), ``pdf``, ``archive``, ``html``; scripts that libmagic calls plain text are
  recognised by their name (``.js``, ``.vbs``, ``.ps1``, ...), which is what Windows runs them by;
  ``onenote`` (a OneNote section, found by its file-type GUID: a container for embedded
  scripts and programs that runs them on a click); disk images are also found by their VHD
  (``conectix``) and VHDX (``vhdxfile``) signatures, which libmagic does not know;
- ``attachment:onenote-embedded:<type>`` — a file embedded in a OneNote section (the
  ``FileDataStoreObject`` blocks of [MS-ONESTORE] 2.6.13, GUID
  ``{BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC}``) that runs code when its icon is double-clicked,
  which is how OneNote carried payloads in 2023: ``executable``, ``script`` (batch,
  PowerShell, VBScript, JScript ...), ``hta``, ``lnk``, ``disk-image``, ``office-macro``.
  The bytes are typed like any attachment (libmagic, plus the shortcut header and HTA and
  script markers); ``detail`` names the section and the block (``<path>!onenote:<n>@<offset>``).
  At most ``_ONENOTE_FILES`` blocks are read;
- ``attachment:html-smuggling`` — an HTML (or SVG) attachment whose script assembles a file in
  the browser and offers it as a download (``new Blob``, ``msSaveOrOpenBlob``,
  ``createObjectURL``, ``a.download=``) from a payload it carries (``atob(...)``, a
  ``data:...;base64,`` URI or a long base64 string), or a link with a ``download`` attribute
  to a ``data:...;base64,`` URI: the file is built past the gateway,
  which only ever sees HTML. Looked for in the first ``_HTML_BYTES`` of the part, and only in
  parts with a file name (attachments and archive members: a mail body's script never runs);
- ``attachment:type-mismatch`` — the name says a harmless type but the bytes are an
  executable/script/disk image (``invoice.pdf`` that is an ``MZ`` file);
- ``attachment:double-extension`` — ``invoice.pdf.exe`` and the like;
- ``attachment:rlo-filename`` — a bidi control (U+202E and friends) in a name, which makes
  ``cod.exe`` display as ``exe.doc``;
- ``attachment:archive-encrypted``, ``attachment:archive-limit:<which>``,
  ``attachment:archive-corrupt``, ``attachment:archive-unsupported`` — from the unpacker's
  defects (:mod:`scanner.mime`), so a zip bomb is a verdict and not an outage;
- ``attachment:archive-password-in-body`` — an encrypted archive opened with a password the
  message itself carries (defect ``archive-password:found``): its inside was scanned, but
  shipping an archive and its password together is how malware gets past gateways, so it is
  a phishing sign of its own (not in the default ``blocked_attachments``); and
  ``attachment:archive-password:limit`` when the password trials ran out.

No settings. ``detail`` maps each symbol to the first part path that raised it.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable

import magic

from scanner.engines.common import (
    EngineBase,
    EngineSpec,
    Finding,
    NoSettings,
    ParsedMessage,
    Part,
)
from scanner.mime import RAW_PATH

__all__ = ["ENGINE", "AttachmentsEngine", "category", "true_type"]

# libmagic MIME type -> category. Prefix entries end with "/" or "-".
_MIME_CATEGORY: dict[str, str] = {
    "application/x-dosexec": "executable",
    "application/x-msdownload": "executable",
    "application/x-executable": "executable",
    "application/x-pie-executable": "executable",
    "application/x-sharedlib": "executable",
    "application/x-mach-binary": "executable",
    "application/x-elf": "executable",
    "application/vnd.microsoft.portable-executable": "executable",
    "application/x-msi": "executable",
    "application/java-archive": "executable",
    "application/x-java-applet": "executable",
    "text/x-shellscript": "script",
    "text/x-python": "script",
    "text/x-perl": "script",
    "text/x-msdos-batch": "script",
    "application/javascript": "script",
    "text/javascript": "script",
    "application/x-iso9660-image": "disk-image",
    "application/x-apple-diskimage": "disk-image",
    "application/x-virtualbox-vhd": "disk-image",
    "application/x-vhd": "disk-image",
    "application/x-qemu-disk": "disk-image",
    "application/vnd.efi.img": "disk-image",
    "application/pdf": "pdf",
    "application/zip": "archive",
    "application/x-7z-compressed": "archive",
    "application/x-rar": "archive",
    "application/vnd.rar": "archive",
    "application/gzip": "archive",
    "application/x-tar": "archive",
    "application/x-bzip2": "archive",
    "application/x-xz": "archive",
    "application/x-ole-storage": "office",
    "application/cdfv2": "office",
    "application/msword": "office",
    "application/vnd.ms-excel": "office",
    "application/vnd.ms-powerpoint": "office",
    "application/vnd.openxmlformats-officedocument.": "office",
    "application/vnd.ms-word.document.macroenabled": "office-macro",
    "application/vnd.ms-excel.sheet.macroenabled": "office-macro",
}
# What Windows executes by name even when the bytes look like text.
_SCRIPT_EXT = {
    ".js",
    ".jse",
    ".vbs",
    ".vbe",
    ".wsf",
    ".wsh",
    ".ps1",
    ".psm1",
    ".bat",
    ".cmd",
    ".hta",
    ".scr",
    ".lnk",
    ".sct",
    ".jar",
}
_EXEC_EXT = {".exe", ".com", ".pif", ".scr", ".msi", ".dll", ".cpl", ".bat", ".cmd"} | _SCRIPT_EXT
_IMAGE_EXT = {".iso", ".img", ".vhd", ".vhdx", ".dmg"}
_DECOY_EXT = {
    ".pdf",
    ".doc",
    ".docx",
    ".xls",
    ".xlsx",
    ".ppt",
    ".pptx",
    ".txt",
    ".rtf",
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".zip",
    ".htm",
    ".html",
    ".csv",
    ".odt",
}
_DANGEROUS = {"executable", "script", "disk-image", "onenote"}
# Bidi controls that reorder how a name is displayed.
_BIDI = {
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
}
# Unpacker defects whose symbol says what they mean to a policy rather than how they arose.
_DEFECT_SYMBOLS = {"archive-password:found": "archive-password-in-body"}
# libmagic reads at most this much of a part (its own default is 1 MiB).
_MAGIC_BYTES = 1024 * 1024
# [MS-ONESTORE] 2.3.1 guidFileType of a .one section, {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3},
# as stored (little-endian GUID) at the start of the file.
_ONENOTE = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")
# [MS-ONESTORE] 2.6.13 FileDataStoreObject: guidHeader, cbLength (uint64), unused (uint32),
# reserved (uint64), then the file's bytes.
_FILE_DATA = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")
_ONENOTE_FILES = 100
_ONENOTE_EMBEDDED = {"executable", "script", "hta", "lnk", "disk-image", "office-macro"}
# [MS-SHLLINK] 2.1: HeaderSize 0x4C and the shell link CLSID.
_LNK = bytes.fromhex("4c0000000114020000000000c000000000000046")
_HTA = re.compile(
    rb"<hta:application|<script[^>]{0,200}vbscript|ActiveXObject|WScript\.Shell", re.I
)
_SCRIPT_TEXT = re.compile(
    rb"^\s*@?echo\s+off|\bcmd(?:\.exe)?\s+/[ck]\b|\bpowershell(?:\.exe)?\s+-|"
    rb"\bWScript\.|\bCreateObject\s*\(|\bStart-Process\b|\bInvoke-Expression\b",
    re.I | re.M,
)
# HTML smuggling: how much of an HTML part is read, the names of HTML files, and what marks a
# file built in the browser: a place to put it (sink) and bytes it carries (payload).
_HTML_BYTES = 8 * 1024 * 1024
_HTML_EXT = {".htm", ".html", ".xhtml", ".shtml", ".svg", ".mht", ".mhtml"}
_SINK = re.compile(
    rb"new\s+Blob\s*\(|msSaveOrOpenBlob|msSaveBlob|createObjectURL|\.download\s*=|"
    rb"setAttribute\s*\(\s*['\"]download['\"]",
)
_PAYLOAD = re.compile(
    rb"\batob\s*\(|data:[\w.+-]+/[\w.+-]+(?:;[\w=.-]+)*;base64,|['\"`][A-Za-z0-9+/]{2048,}={0,2}['\"`]"
)


def true_type(data: bytes) -> str:
    """The MIME type libmagic gives ``data`` (``application/octet-stream`` if it cannot tell)."""
    try:
        return str(magic.from_buffer(data[:_MAGIC_BYTES], mime=True)).lower()
    except Exception:
        return "application/octet-stream"


def category(mime_type: str, filename: str | None = None) -> str | None:
    """The category of a true MIME type (and a name, for scripts libmagic sees as text)."""
    mt = mime_type.lower()
    cat = _MIME_CATEGORY.get(mt)
    if cat is None:
        for prefix, c in _MIME_CATEGORY.items():
            if prefix.endswith((".", "/")) and mt.startswith(prefix):
                cat = c
                break
    ext = _ext(filename)
    if cat == "office" and ext in (".docm", ".xlsm", ".pptm", ".dotm", ".xltm"):
        cat = "office-macro"
    if cat is None and mt.startswith("text/") and ext in _SCRIPT_EXT:
        cat = "script"
    return cat


def _ext(filename: str | None) -> str:
    if not filename:
        return ""
    base = filename.rsplit("/", 1)[-1].rsplit("!", 1)[-1].strip().lower().rstrip(". ")
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def _exts(filename: str) -> list[str]:
    base = filename.rsplit("/", 1)[-1].rsplit("!", 1)[-1].strip().lower().rstrip(". ")
    return ["." + p for p in base.split(".")[1:] if p]


class AttachmentsEngine(EngineBase):
    """The ``attachments`` policy engine. Stateless; safe to call concurrently."""

    name = "attachments"
    kind = "policy"
    cacheable = True

    @property
    def version(self) -> str:
        """libmagic's version (its database decides the true types)."""
        try:
            return f"libmagic-{magic.version()}"
        except Exception:
            return "libmagic"

    @property
    def rules_version(self) -> str:
        """This module's rule set version (bump when the tables above change)."""
        return "attachments-4"

    async def check(self, message: ParsedMessage) -> Finding:
        """Classify every part and archive member; ``match`` with symbols if anything shows."""
        return await asyncio.to_thread(self.inspect, message)

    def inspect(self, message: ParsedMessage) -> Finding:
        """The synchronous work of :meth:`check`."""
        found: dict[str, str] = {}

        def hit(symbol: str, path: str) -> None:
            found.setdefault(f"attachment:{symbol}", path)

        for part in message.parts:
            if part.path == RAW_PATH:
                continue
            self._part(part, hit)
        for d in message.defects:
            if d.startswith("archive-"):
                hit(_DEFECT_SYMBOLS.get(d, d), "defects")
        symbols = tuple(found)
        return self.finding("match" if symbols else "clean", symbols=symbols, detail=found)

    def _part(self, part: Part, hit: Callable[[str, str], None]) -> None:
        name = part.filename or ""
        if name and any(c in _BIDI for c in name):
            hit("rlo-filename", part.path)
        # NFKC first: fullwidth dots and letters render like the ASCII ones.
        shown = unicodedata.normalize("NFKC", "".join(c for c in name if c not in _BIDI))
        exts = _exts(shown) if shown else []
        if len(exts) >= 2 and exts[-1] in _EXEC_EXT | _IMAGE_EXT and exts[-2] in _DECOY_EXT:
            hit("double-extension", part.path)
        if not part.data:
            return
        mime_type = true_type(part.data)
        cat = category(mime_type, shown or None)
        if cat is None:
            cat = _signature(part.data)
        if cat is None and exts and exts[-1] in _SCRIPT_EXT:
            cat = "script"
        if cat is None and exts and exts[-1] in _IMAGE_EXT and len(part.data) > 32 * 1024:
            cat = "disk-image"  # raw .img files have no magic; the name is what opens them
        if cat is not None:
            hit(f"type:{cat}", part.path)
        if cat in _DANGEROUS and exts and exts[-1] in _DECOY_EXT:
            hit("type-mismatch", part.path)
        if cat == "onenote":
            for where, what in _onenote_embedded(part):
                hit(f"onenote-embedded:{what}", where)
        if name and (
            mime_type in ("text/html", "image/svg+xml") or (exts and exts[-1] in _HTML_EXT)
        ):
            if _smuggles(part.data[:_HTML_BYTES]):
                hit("html-smuggling", part.path)


def _signature(data: bytes) -> str | None:
    """Categories of containers libmagic does not know."""
    if data[:16] == _ONENOTE:
        return "onenote"
    if data[:8] in (b"conectix", b"vhdxfile") or data[-512:-504] == b"conectix":
        return "disk-image"  # dynamic VHD header / VHDX signature / fixed VHD footer
    return None


def _onenote_embedded(part: Part) -> list[tuple[str, str]]:
    """(where, type) of each file embedded in a OneNote section that runs code."""
    out: list[tuple[str, str]] = []
    data = part.data
    pos = data.find(_FILE_DATA)
    n = 0
    while pos >= 0 and n < _ONENOTE_FILES:
        n += 1
        start = pos + 36
        if start > len(data):
            break
        size = int.from_bytes(data[pos + 16 : pos + 24], "little")
        blob = data[start : start + min(size, len(data) - start)]
        what = _embedded_type(blob)
        if what in _ONENOTE_EMBEDDED:
            out.append((f"{part.path}!onenote:{n}@{pos}", what))
        pos = data.find(_FILE_DATA, start + len(blob) if blob else start)
    return out


def _embedded_type(blob: bytes) -> str | None:
    """What an embedded file is, from its bytes alone (OneNote keeps the name elsewhere)."""
    if not blob:
        return None
    if blob[:20] == _LNK:
        return "lnk"
    mime_type = true_type(blob)
    cat = category(mime_type) or _signature(blob)
    if cat in ("executable", "disk-image", "office-macro"):
        return cat
    head = blob[:_MAGIC_BYTES]
    if mime_type.startswith("text/") or cat in ("html", "script"):
        if _HTA.search(head):
            return "hta"
        if cat == "script" or _SCRIPT_TEXT.search(head):
            return "script"
    return cat


def _smuggles(html: bytes) -> bool:
    """A script that builds a download from a payload the page carries (see the module doc).

    Tags are found with ``find`` rather than a regular expression: hostile markup (``<a ``
    repeated without a ``>``) makes per-position bounded regex scans quadratic; this is linear.
    """
    low = html.lower()
    # Markup that hands over a file carried in the page: <a download href="data:...;base64,">
    # in one tag (a script may click it, or the user does).
    pos = low.find(b"<a")
    while pos >= 0:
        gt = low.find(b">", pos)
        tag = low[pos : gt if gt >= 0 else len(low)]
        if tag[2:3].isspace() and b"download" in tag and b"data:" in tag and b";base64," in tag:
            return True
        if gt < 0:
            break
        pos = low.find(b"<a", gt)
    scripts: list[bytes] = []
    pos = low.find(b"<script")
    while pos >= 0:
        gt = low.find(b">", pos)
        if gt < 0:
            break
        end = low.find(b"</script", gt)
        scripts.append(html[gt + 1 : end if end >= 0 else len(html)])
        if end < 0:
            break
        pos = low.find(b"<script", end)
    code = b"\n".join(scripts)
    return bool(_SINK.search(code) and _PAYLOAD.search(code))


def build(settings: NoSettings) -> AttachmentsEngine:
    """The engine (it reads no settings: the tenant's policy says which symbols act)."""
    return AttachmentsEngine()


ENGINE = EngineSpec(AttachmentsEngine, NoSettings, build)
"""The registry's entry for ``attachments``."""
