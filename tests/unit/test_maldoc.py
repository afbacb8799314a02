"""Maldoc shapes beyond macros: remote templates, RTF objects, embedded packages, PDF active
content, HTML smuggling and OneNote; each with a benign look-alike that is not flagged."""

from __future__ import annotations

import zlib
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st
from support import maldoc_samples as ms
from support import samples

from mxgate.tenants import Policy
from scanner.engines.attachments import AttachmentsEngine
from scanner.engines.common import Finding
from scanner.engines.office import OfficeEngine
from scanner.engines.pdf import PdfEngine
from scanner.mime import parse
from scanner.policy import decide


def _mail(name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
    m = EmailMessage()
    m.set_content("see attached")
    main, sub = ctype.split("/")
    m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes()


def _office(name: str, data: bytes) -> Finding:
    return OfficeEngine().inspect(parse(_mail(name, data), message_id="m", tenant="t"))


def _held(f: Finding) -> bool:
    return decide([f], Policy()).action == "quarantine"


# --- 1. remote-template injection --------------------------------------------------------------


def test_external_template_is_found_with_its_url_and_held() -> None:
    f = _office("offer.docx", ms.docx_template("https://cdn.example.net/t/offer.dotm"))
    assert f.symbols == ("office:external-template",)
    assert f.detail["office:external-template"].endswith("offer.docx")
    assert f.detail["office:external-template:target"] == "https://cdn.example.net/t/offer.dotm"
    assert _held(f)


def test_external_ole_object_and_frame_relationships_are_found() -> None:
    f = _office("a.docx", ms.docx_template("http://x.example/o.rtf", kind="oleObject"))
    assert f.symbols == ("office:external-relationship:oleObject",)
    assert _held(f)
    f = _office("b.docx", ms.docx_template("http://x.example/f.html", kind="frame"))
    assert f.symbols == ("office:external-relationship:frame",)


def test_internal_template_and_external_hyperlink_are_not_flagged() -> None:
    assert _office("t.docx", ms.docx_template("template.dotx", external=False)).symbols == ()
    assert _office("h.docx", ms.docx_hyperlink()).symbols == ()


def test_a_rels_part_with_a_dtd_is_not_parsed() -> None:
    # Entity expansion starts with a DTD; OOXML never has one, so such a part is skipped.
    doc = ms.docx_template("http://evil.example/t.dotm")
    import io
    import zipfile

    src, buf = zipfile.ZipFile(io.BytesIO(doc)), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("settings.xml.rels"):
                data = data.replace(
                    b"<Relationships", b'<!DOCTYPE r [<!ENTITY a "b">]><Relationships'
                )
            out.writestr(info.filename, data)
    assert _office("t.docx", buf.getvalue()).symbols == ()


# --- 2. OLE objects in RTF, embedded packages --------------------------------------------------


def test_rtf_equation_object_is_found_and_held() -> None:
    f = _office("scan.doc", ms.rtf_equation())  # RTF is found by its bytes, not its name
    assert set(f.symbols) == {"office:rtf-object", "office:rtf-equation"}
    assert _held(f)


def test_rtf_package_with_an_executable_is_found() -> None:
    f = _office("order.rtf", ms.rtf_package("invoice.exe"))
    assert "office:embedded-executable" in f.symbols
    assert _held(f)
    # A package of a text file is still an object in RTF (held) but not an executable.
    f = _office("order.rtf", ms.rtf_package("notes.txt", b"hello"))
    assert f.symbols == ("office:rtf-object",)


def test_rtf_without_objects_is_clean() -> None:
    assert _office("letter.rtf", ms.rtf()).symbols == ()


def test_embedded_package_in_ole_and_ooxml_is_found() -> None:
    f = _office("report.doc", ms.ole_with_package("readme.lnk"))
    assert f.symbols == ("office:embedded-executable",)
    assert _held(f)
    f = _office("report.docx", ms.docx_with_embedded("update.js"))
    assert f.symbols == ("office:embedded-executable",)


def test_embedded_package_of_a_document_is_not_flagged() -> None:
    assert _office("report.docx", ms.docx_with_embedded("notes.txt", b"hi")).symbols == ()
    assert _office("report.doc", ms.ole_with_package("figures.csv", b"1,2")).symbols == ()


# --- 3. PDF active content ---------------------------------------------------------------------


def _pdf(name: str, data: bytes) -> Finding:
    return PdfEngine().inspect(parse(_mail(name, data), message_id="m", tenant="t"))


def test_pdf_javascript_is_found_and_held() -> None:
    f = _pdf("invoice.pdf", ms.pdf_javascript())
    assert set(f.symbols) == {"pdf:javascript", "pdf:open-action"}
    assert f.detail["pdf:javascript"].endswith("invoice.pdf")
    d = decide([f], Policy())
    assert d.action == "quarantine"
    assert "pdf:pdf:javascript" in d.reasons
    assert "pdf:pdf:open-action" not in d.reasons  # an open action alone is common: not held


def test_pdf_launch_and_embedded_file_are_held() -> None:
    f = _pdf("a.pdf", ms.pdf_launch())
    assert set(f.symbols) == {"pdf:launch", "pdf:open-action"}
    assert _held(f)
    f = _pdf("b.bin", ms.pdf_embedded_file())  # by its bytes, whatever the name
    assert f.symbols == ("pdf:embedded-file",)
    assert _held(f)
    # A tenant that takes PDF invoices with attached XML loosens it.
    assert decide([f], Policy(blocked_pdf=("javascript", "launch"))).action == "deliver"


def test_pdf_javascript_inside_a_compressed_object_stream_is_found() -> None:
    data = ms.pdf_hidden_in_object_stream()
    assert b"JavaScript" not in data  # a byte scan alone misses it
    assert "pdf:javascript" in _pdf("x.pdf", data).symbols


def test_hex_escaped_names_are_decoded() -> None:
    data = ms.pdf_javascript().replace(b"/JavaScript", b"/J#61vaScript").replace(b"/JS ", b"/J#53 ")
    assert "pdf:javascript" in _pdf("x.pdf", data).symbols


def test_a_flate_bomb_object_stream_is_bounded_and_reported() -> None:
    bomb = zlib.compress(b"\0" * (80 * 1024 * 1024), 9)  # ~80 KiB that inflates to 80 MiB
    objstm = (
        b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %d >>\nstream\n" % len(bomb)
        + bomb
        + b"\nendstream"
    )
    f = _pdf("x.pdf", ms.pdf([objstm]))
    assert f.symbols == ("pdf:limit",)
    assert _held(f)  # part of it was never looked into: fail closed
    # A bomb in front does not hide the object stream behind it.
    hidden = ms.pdf_hidden_in_object_stream()
    at = hidden.index(b"4 0 obj")
    both = hidden[:at] + b"9 0 obj\n" + objstm + b"\nendobj\n" + hidden[at:]
    assert set(_pdf("x.pdf", both).symbols) == {"pdf:limit", "pdf:javascript", "pdf:open-action"}


def test_pdf_without_active_content_is_clean() -> None:
    assert _pdf("report.pdf", ms.pdf_plain()).symbols == ()
    assert _pdf("notes.txt", b"see /JavaScript in the manual").symbols == ()  # not a PDF


# --- 4. HTML smuggling, 5. OneNote and disk images ---------------------------------------------


def _attachments(name: str, data: bytes, ctype: str = "application/octet-stream") -> Finding:
    raw = _mail(name, data, ctype)
    return AttachmentsEngine().inspect(parse(raw, message_id="m", tenant="t"))


def test_html_smuggling_is_found_and_held() -> None:
    link_only = b'<html><a href="data:application/zip;base64,UEsDBA==" download="a.zip">a</a>'
    for sample in (ms.HTML_SMUGGLING, ms.HTML_SMUGGLING_MS, ms.HTML_DATA_URI_DOWNLOAD, link_only):
        f = _attachments("Invoice_0931.html", sample, "text/html")
        assert "attachment:html-smuggling" in f.symbols, sample[:60]
        assert f.detail["attachment:html-smuggling"].endswith("Invoice_0931.html")
        assert _held(f)


def test_html_smuggling_found_by_content_and_in_an_archive() -> None:
    # libmagic calls it HTML whatever the name; inside a zip it is a member with a name.
    assert "attachment:html-smuggling" in _attachments("doc.dat", ms.HTML_SMUGGLING).symbols
    z = samples.zip_bytes({"view.htm": ms.HTML_SMUGGLING})
    assert "attachment:html-smuggling" in _attachments("a.zip", z, "application/zip").symbols


def test_html_without_a_smuggling_script_is_not_flagged() -> None:
    for sample in (ms.HTML_PLAIN, ms.HTML_SCRIPT_NO_PAYLOAD):
        f = _attachments("newsletter.html", sample, "text/html")
        assert "attachment:html-smuggling" not in f.symbols
        assert not _held(f)
    # A script that decodes base64 for display, with no download sink.
    page = b"<html><script>document.title = atob('SGVsbG8=');</script></html>"
    assert "attachment:html-smuggling" not in _attachments("a.html", page, "text/html").symbols
    # A chart made from a Blob for display next to an inline image (a data: URI in markup).
    page = (
        b'<html><body><img src="data:image/png;base64,iVBORw0KGgo="><script>'
        b"var b = new Blob(['<svg/>'], {type: 'image/svg+xml'});"
        b"document.getElementById('c').src = URL.createObjectURL(b);</script></body></html>"
    )
    assert "attachment:html-smuggling" not in _attachments("a.html", page, "text/html").symbols
    # A download link to a web address is not smuggling.
    page = b'<html><script>x=1</script><a download href="https://example.com/a.pdf">a</a></html>'
    assert "attachment:html-smuggling" not in _attachments("a.html", page, "text/html").symbols


def test_a_mail_body_with_the_script_is_not_an_attachment() -> None:
    m = EmailMessage()
    m.set_content("text")
    m.add_alternative(ms.HTML_SMUGGLING.decode(), subtype="html")
    f = AttachmentsEngine().inspect(parse(m.as_bytes(), message_id="m", tenant="t"))
    assert "attachment:html-smuggling" not in f.symbols


def test_onenote_is_typed_by_its_guid_and_held() -> None:
    f = _attachments("Scan_0042.one", ms.onenote())
    assert "attachment:type:onenote" in f.symbols
    assert _held(f)
    f = _attachments("Scan_0042.pdf", ms.onenote())  # a decoy name: the bytes decide
    assert {"attachment:type:onenote", "attachment:type-mismatch"} <= set(f.symbols)


def test_bytes_that_only_resemble_onenote_are_not_typed_so() -> None:
    near = bytes([ms.ONENOTE_GUID[0] ^ 1]) + ms.onenote()[1:]
    assert "attachment:type:onenote" not in _attachments("x.one", near).symbols


def test_disk_images_are_typed_by_their_bytes_whatever_the_name() -> None:
    iso = bytes(0x8001) + b"CD001\x01" + bytes(2048)
    fixed_vhd = bytes(64 * 1024) + b"conectix" + bytes(504)  # fixed VHD: a footer only
    vhdx = b"vhdxfile" + bytes(64 * 1024)
    for name, data in (("a.dat", iso), ("b.dat", fixed_vhd), ("c.dat", vhdx)):
        f = _attachments(name, data)
        assert "attachment:type:disk-image" in f.symbols, name
        assert _held(f)
    assert "attachment:type:disk-image" not in _attachments("d.dat", bytes(70 * 1024)).symbols


def test_embedded_package_is_found_in_the_docx_itself_when_not_unpacked() -> None:
    # The engine reads a docx's embedded OLE files itself: a docx the unpacker did not open
    # (a limit) still shows what it embeds.
    from scanner.engines.office import _embedded

    assert _embedded(ms.docx_with_embedded("update.js")) == ["embedded-executable"]
    assert _embedded(ms.docx_with_embedded("notes.txt", b"hi")) == []


def test_equation_editor_object_in_a_docx_is_found_and_held() -> None:
    f = _office("calc.docx", ms.docx_with_equation())
    assert f.symbols == ("office:equation-object",)
    assert _held(f)
    # An embedded object of another class (a worksheet) is not.
    assert _office("calc.docx", ms.docx_with_equation(equation=False)).symbols == ()


def test_files_embedded_in_onenote_are_typed_and_held() -> None:
    exe = b"MZ\x90\x00" + bytes(56) + b"\x80\x00\x00\x00" + bytes(64) + b"PE\0\0" + bytes(400)
    one = ms.onenote_with_files(ms.PNG, ms.HTA, ms.BAT, ms.LNK, exe)
    f = _attachments("Invoice.one", one)
    embedded = {s for s in f.symbols if s.startswith("attachment:onenote-embedded:")}
    assert embedded == {
        "attachment:onenote-embedded:hta",
        "attachment:onenote-embedded:script",
        "attachment:onenote-embedded:lnk",
        "attachment:onenote-embedded:executable",
    }
    # Where: the section's path, then the block's number and offset in it.
    assert f.detail["attachment:onenote-embedded:hta"].split("!")[-1].startswith("onenote:2@")
    assert f.detail["attachment:onenote-embedded:hta"].endswith(
        f"@{one.index(ms.FILE_DATA_GUID, one.index(ms.FILE_DATA_GUID) + 1)}"
    )
    d = decide([f], Policy())
    assert "attachment:attachments:onenote-embedded:hta" in d.reasons


def test_onenote_with_an_embedded_image_has_no_embedded_finding() -> None:
    f = _attachments("Notes.one", ms.onenote_with_files(ms.PNG, b"Meeting notes, plain text."))
    assert not [s for s in f.symbols if s.startswith("attachment:onenote-embedded")]
    # A truncated block (cbLength past the end) is read as far as it goes.
    cut = ms.onenote_with_files(ms.HTA)[:-200]
    assert "attachment:onenote-embedded:hta" in _attachments("a.one", cut).symbols


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_onenote_blocks_of_random_bytes_never_raise(data: bytes) -> None:
    # Random bytes behind a section header and a FileDataStoreObject GUID (any cbLength).
    one = ms.ONENOTE_GUID + bytes(16) + ms.FILE_DATA_GUID + data + ms.FILE_DATA_GUID + data[:40]
    f = _attachments("x.one", one)
    assert f.outcome == "match"  # type:onenote at least
