"""Excel 4.0 (XLM) macros and spreadsheet formulas that run commands, for the office engine.

Not an engine of its own (no ``ENGINE``): :mod:`scanner.engines.office` calls these on the
parts it opens. Each function returns ``(symbol, where)`` pairs, ``where`` naming the member,
sheet, defined name or cell that raised it. Symbols (without the ``office:`` prefix):

- ``xlm-macro`` — an Excel 4.0 macro sheet: an OOXML part of a macrosheet content or
  relationship type (``xl/macrosheets/*.xml``, the xlsb binary ``xl/macrosheets/*.bin``), a
  BIFF8 ``BOUNDSHEET`` record of sheet type 1 (``.xls``), or a SYLK ``O;...;E`` option;
- ``xlm-auto-open`` — a defined name that Excel runs on open or close (``Auto_Open``,
  ``_xlnm.Auto_Open``, ``Auto_Open2``..., ``Auto_Close``): in ``xl/workbook.xml``, in the
  xlsb ``xl/workbook.bin`` (``BrtName`` records), in a BIFF8 ``NAME`` record (built-in name
  1 or 2, or spelled out), or a SYLK ``NN`` record;
- ``dde-csv`` — a CSV cell that Excel evaluates as a formula (it starts with ``=``, ``+``,
  ``-`` or ``@``) and that runs a command: DDE (``=cmd|' /C calc'!A0``), ``DDE(``/``DDEAUTO(``,
  or a function call naming a command interpreter (``@SUM(1)*cmd...``, ``powershell``,
  ``mshta``...);
- ``sylk`` — a SYLK file (``ID;`` header) whose cell or name formulas (``E`` fields) run
  commands: DDE, ``EXEC``, ``CALL``, ``REGISTER``, ``RUN``, or a command interpreter.

Pure standard library and linear scans, bounded by ``_MAX_TEXT`` bytes, ``_MAX_RECORDS``
records and ``_MAX_XML`` bytes per XML part; random bytes give ``[]``, never an exception.
"""

from __future__ import annotations

import csv
import re
import struct
import xml.etree.ElementTree as ET
import zipfile

__all__ = ["biff8", "csv_formulas", "is_sylk", "ooxml", "sylk"]

_MAX_TEXT = 8 * 1024 * 1024
_MAX_RECORDS = 200_000
_MAX_XML = 8 * 1024 * 1024
_MAX_WHERE = 200
_MAX_HINTS = 100_000
_MAX_CELL = 32 * 1024
_MACROSHEET_TYPES = ("macrosheet", "xlmacrosheet", "xlintlmacrosheet", "intlmacrosheet")
_CT_TAG = "{http://schemas.openxmlformats.org/package/2006/content-types}Override"
_REL_TAG = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
# Interpreters and LOLBins that a formula has no business naming.
_COMMANDS = (
    r"cmd|command|powershell|pwsh|mshta|rundll32|regsvr32|wscript|cscript|certutil|bitsadmin|"
    r"msiexec|msexcel|conhost|bash"
)
# DDE: application|topic!item ("cmd|' /C calc'!A0", "MSEXCEL|'\..\cmd.exe'!''").
_DDE_PIPE = re.compile(rb"[A-Za-z0-9_.$\\]+\s*\|[^\r\n]*!")
_DDE_FUNC = re.compile(rb"\bDDE(?:AUTO)?\s*\(", re.IGNORECASE)
_COMMAND = re.compile(rb"\b(?:" + _COMMANDS.encode() + rb")(?:\.exe)?\b", re.IGNORECASE)
_CALL = re.compile(rb"[A-Za-z_.]\s*\(")
# What a CSV scan looks for first, in the lowered text: a pipe, a DDE function or an
# interpreter's name. Literals only (no IGNORECASE, no word boundaries), which the regex engine
# skips to by their first bytes: several times faster on a large CSV without any.
_CSV_HINT = re.compile(rb"\||dde|" + _COMMANDS.encode())
_XLM_FUNC = re.compile(
    rb"\b(?:EXEC|CALL|REGISTER|RUN|DDE|DDEAUTO|FORMULA(?:\.FILL)?|HALT|URLDownloadToFileA?)\s*\(",
    re.IGNORECASE,
)


def _auto_open(name: str) -> bool:
    n = name.strip().lower()
    if n.startswith("_xlnm."):
        n = n[6:]
    return n.startswith(("auto_open", "auto_close"))


def _xml_root(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> ET.Element | None:
    """The parsed member, or None: too big, a DTD (OOXML has none; entity attacks start
    with one), or not XML."""
    if info.file_size > _MAX_XML:
        return None
    try:
        with z.open(info) as f:
            data = f.read(_MAX_XML + 1)
        if len(data) > _MAX_XML or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
            return None
        return ET.fromstring(data)
    except Exception:
        return None


def ooxml(z: zipfile.ZipFile) -> list[tuple[str, str]]:
    """XLM macro sheets and auto-open names in an OOXML package (xlsm, xlsb, xltm ...)."""
    out: list[tuple[str, str]] = []
    try:
        infos = z.infolist()[:10_000]
    except Exception:
        return out
    by_name = {i.filename.lower(): i for i in infos}
    for info in infos:
        low = info.filename.lower()
        if low.startswith("xl/macrosheets/") and not info.is_dir():
            out.append(("xlm-macro", info.filename))
    ct = by_name.get("[content_types].xml")
    root = _xml_root(z, ct) if ct is not None else None
    if root is not None:
        for el in root.iter(_CT_TAG):
            kind = el.get("ContentType", "").lower()
            if "macrosheet" in kind:
                out.append(("xlm-macro", el.get("PartName", "")[:_MAX_WHERE]))
    for low, info in by_name.items():
        if not low.endswith(".rels"):
            continue
        root = _xml_root(z, info)
        if root is None:
            continue
        for rel in root.iter(_REL_TAG):
            if rel.get("Type", "").rsplit("/", 1)[-1].lower() in _MACROSHEET_TYPES:
                out.append(("xlm-macro", f"{info.filename}:{rel.get('Target', '')}"[:_MAX_WHERE]))
    for low, info in by_name.items():
        if low.endswith("workbook.xml"):
            root = _xml_root(z, info)
            if root is None:
                continue
            for el in root.iter():
                if el.tag.endswith("}definedName") and _auto_open(el.get("name", "")):
                    out.append(("xlm-auto-open", f"{info.filename}:{el.get('name')}"[:_MAX_WHERE]))
        elif low.endswith("workbook.bin") and info.file_size <= _MAX_XML:
            try:
                data = z.read(info)
            except Exception:
                continue
            for name in _xlsb_names(data):
                if _auto_open(name):
                    out.append(("xlm-auto-open", f"{info.filename}:{name}"[:_MAX_WHERE]))
    return _unique(out)


def _xlsb_names(data: bytes) -> list[str]:
    """The defined names of an xlsb workbook part ([MS-XLSB] 2.4.680 BrtName, record 39:
    flags, chKey, itab, then an XLNameWideString; built-in names (flag 0x20) have no
    ``_xlnm.`` prefix in the file)."""
    names: list[str] = []
    pos, n = 0, len(data)
    for _ in range(_MAX_RECORDS):
        if pos >= n:
            break
        rtype, pos = _varint(data, pos, 2)
        size, pos = _varint(data, pos, 4)
        if rtype < 0 or size < 0 or pos + size > n:
            break
        if rtype == 39 and size >= 13:
            (cch,) = struct.unpack_from("<I", data, pos + 9)
            if cch <= 255 and 13 + 2 * cch <= size:
                raw = data[pos + 13 : pos + 13 + 2 * cch]
                names.append(raw.decode("utf-16-le", "replace"))
        pos += size
    return names


def _varint(data: bytes, pos: int, most: int) -> tuple[int, int]:
    """A BIFF12 record type (at most 2 bytes) or size (4): 7 bits a byte, high bit = more."""
    value = 0
    for i in range(most):
        if pos >= len(data):
            return -1, pos
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    return value, pos


def biff8(workbook: bytes) -> list[tuple[str, str]]:
    """XLM macro sheets (BOUNDSHEET ``dt`` 1) and auto-open names (NAME) in the globals
    substream of a BIFF8 ``Workbook`` stream ([MS-XLS] 2.4.28, 2.4.150)."""
    out: list[tuple[str, str]] = []
    pos, n = 0, len(workbook)
    for _ in range(_MAX_RECORDS):
        if pos + 4 > n:
            break
        rtype, size = struct.unpack_from("<HH", workbook, pos)
        body = workbook[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if rtype == 0x000A:  # EOF of the globals substream: sheets and names are before it
            break
        if rtype == 0x0085 and len(body) >= 8:
            hidden, dt, cch, high = body[4], body[5], body[6], body[7] & 1
            if dt == 0x01:
                raw = body[8 : 8 + cch * (2 if high else 1)]
                name = raw.decode("utf-16-le" if high else "latin-1", "replace")
                state = {1: " (hidden)", 2: " (very hidden)"}.get(hidden & 3, "")
                out.append(("xlm-macro", f"sheet {name}{state}"[:_MAX_WHERE]))
        elif rtype == 0x0018 and len(body) >= 15:
            grbit, cch = struct.unpack_from("<H", body, 0)[0], body[3]
            high = body[14] & 1
            raw = body[15 : 15 + cch * (2 if high else 1)]
            name = raw.decode("utf-16-le" if high else "latin-1", "replace")
            if grbit & 0x0020 and name[:1] in ("\x01", "\x02"):
                name = "Auto_Open" if name[0] == "\x01" else "Auto_Close"
            if _auto_open(name):
                out.append(("xlm-auto-open", f"name {name}"[:_MAX_WHERE]))
    return _unique(out)


def _decode_head(data: bytes) -> bytes:
    """The first ``_MAX_TEXT`` bytes, UTF-16 text (Excel's "Unicode text") made 8-bit."""
    head = data[:_MAX_TEXT]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return head.decode("utf-16").encode("utf-8", "replace")
        except UnicodeError:
            return head
    return head


def csv_formulas(data: bytes) -> list[tuple[str, str]]:
    """``dde-csv`` for the first CSV cell that Excel would evaluate into a command.

    Only lines with a hint (a pipe, ``DDE``, an interpreter's name) are split into cells, with
    each delimiter Excel may use (``,``, ``;``, tab) and CSV quoting, so a formula quoted for
    its commas (``"=CALL(""Shell32"",...)"``) is one cell and plain text naming ``cmd`` is not a
    formula.
    """
    text = _decode_head(data)
    done = -1
    for i, m in enumerate(_CSV_HINT.finditer(text.lower())):
        if i >= _MAX_HINTS:
            break
        if m.start() < done:
            continue  # this line was split already
        # The line around the hint, within _MAX_CELL bytes either side: a long run of pipes
        # without a line break must not make each hint scan back to the start.
        lo = max(0, m.start() - _MAX_CELL)
        start = max(text.rfind(b"\n", lo, m.start()) + 1, lo)
        end = text.find(b"\n", m.start(), m.start() + _MAX_CELL)
        end = end if end >= 0 else min(len(text), m.start() + _MAX_CELL)
        done = end
        line = text[start:end].decode("latin-1")
        for delimiter in ",;\t":
            try:
                cells = next(csv.reader([line], delimiter=delimiter), [])
            except csv.Error:
                continue
            for cell in cells:
                head = cell.strip().lstrip("'")
                if head[:1] in ("=", "+", "-", "@") and _runs_command(head.encode("latin-1")):
                    return [("dde-csv", head[:_MAX_WHERE])]
    return []


def _runs_command(formula: bytes) -> bool:
    if _DDE_PIPE.search(formula) or _DDE_FUNC.search(formula):
        return True
    return bool(_COMMAND.search(formula) and _CALL.search(formula))


def is_sylk(data: bytes) -> bool:
    """A SYLK file: its first record is ``ID;`` (``ID;P``, ``ID;PWXL;N;E``)."""
    return data[:3] == b"ID;"


def sylk(data: bytes) -> list[tuple[str, str]]:
    """Macro sheets, auto-open names and command formulas in a SYLK file."""
    out: list[tuple[str, str]] = []
    for line in _decode_head(data).splitlines()[:_MAX_RECORDS]:
        fields = line.replace(b";;", b"\0").split(b";")
        kind = fields[0]
        if kind == b"O" and any(f[:1] == b"E" for f in fields[1:]):
            out.append(("xlm-macro", "O;E (macro sheet)"))
        elif kind == b"NN":
            for f in fields[1:]:
                if f[:1] == b"N" and _auto_open(f[1:].decode("latin-1")):
                    out.append(("xlm-auto-open", "NN;" + f[1:_MAX_WHERE].decode("latin-1")))
        if kind in (b"C", b"F", b"NN"):
            for f in fields[1:]:
                expr = f[1:].replace(b"\0", b";")
                if f[:1] == b"E" and (_runs_command(b"=" + expr) or _XLM_FUNC.search(expr)):
                    out.append(("sylk", line[:_MAX_WHERE].decode("latin-1")))
                    break
    return _unique(out)


def _unique(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for symbol, where in found:
        seen.setdefault(symbol, where)
    return list(seen.items())
