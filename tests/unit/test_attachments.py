"""The attachments engine: true types from content, name tricks, archive defects."""

from __future__ import annotations

import io
from email.message import EmailMessage

import py7zr
from hypothesis import given, settings
from hypothesis import strategies as st
from support import samples

from scanner.engines.attachments import AttachmentsEngine
from scanner.mime import parse

# A minimal PE header: libmagic calls it an MS-DOS/PE executable.
MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


_mail = samples.with_attachments


def _symbols(raw: bytes) -> set[str]:
    f = AttachmentsEngine().inspect(parse(raw, message_id="m", tenant="t"))
    assert (f.outcome == "match") == bool(f.symbols)
    return set(f.symbols)


def test_clean_text_mail_is_clean() -> None:
    assert _symbols(samples.clean_message()) == set()


def test_executable_found_by_content_whatever_the_name_and_type() -> None:
    s = _symbols(_mail(("holiday.jpg", MZ, "image/jpeg")))
    assert "attachment:type:executable" in s
    assert "attachment:type-mismatch" in s
    assert "attachment:type:executable" in _symbols(_mail(("x.bin", ELF, "text/plain")))


def test_executable_inside_zip_in_zip() -> None:
    inner = samples.zip_bytes({"setup.exe": MZ})
    outer = samples.zip_bytes({"inner.zip": inner})
    s = _symbols(_mail(("docs.zip", outer, "application/zip")))
    assert {"attachment:type:executable", "attachment:type:archive"} <= s


def test_double_extension_and_rlo_names() -> None:
    assert "attachment:double-extension" in _symbols(
        _mail(("invoice.pdf.exe", MZ, "application/octet-stream"))
    )
    # "report\u202efdp.exe" displays as "reportexe.pdf"
    s = _symbols(_mail(("report\u202efdp.exe", MZ, "application/octet-stream")))
    assert "attachment:rlo-filename" in s


def test_script_by_name_when_bytes_look_like_text() -> None:
    s = _symbols(_mail(("run.js", b"var s = new ActiveXObject('WScript.Shell');\n", "text/plain")))
    assert "attachment:type:script" in s


def test_pdf_is_typed_and_not_flagged_as_a_trick() -> None:
    s = _symbols(_mail(("report.pdf", PDF, "application/pdf")))
    assert s == {"attachment:type:pdf"}


def test_zip_bomb_and_encrypted_archives_are_findings() -> None:
    assert any(x.startswith("attachment:archive-limit") for x in _symbols(samples.zip_bomb()))
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password="secret") as z:
        z.writestr(MZ, "payload.exe")
    s = _symbols(_mail(("secret.7z", buf.getvalue(), "application/x-7z-compressed")))
    assert "attachment:archive-encrypted" in s


def test_executable_inside_7z() -> None:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        z.writestr(MZ, "payload.exe")
    s = _symbols(_mail(("files.7z", buf.getvalue(), "application/octet-stream")))
    assert "attachment:type:executable" in s


@settings(max_examples=150, deadline=None)
@given(name=st.text(max_size=80), data=st.binary(max_size=2048))
def test_any_name_and_bytes_give_a_finding(name: str, data: bytes) -> None:
    m = EmailMessage()
    m.set_content("x")
    try:
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        raw = m.as_bytes()
    except Exception:
        raw = b"Content-Type: application/octet-stream\r\n\r\n" + data
    f = AttachmentsEngine().inspect(parse(raw, message_id="m", tenant="t"))
    assert f.outcome in ("clean", "match")
