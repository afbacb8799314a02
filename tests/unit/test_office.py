"""The office engine (oletools) on documents the tests build."""

from __future__ import annotations

from email.message import EmailMessage

from support import office_samples, samples

from mxgate.tenants import Policy
from scanner.engines.office import OfficeEngine
from scanner.mime import parse
from scanner.policy import decide

DOCX = "vnd.openxmlformats-officedocument.wordprocessingml.document"


def _mail(name: str, data: bytes, sub: str = DOCX) -> bytes:
    m = EmailMessage()
    m.set_content("see attached")
    m.add_attachment(data, maintype="application", subtype=sub, filename=name)
    return m.as_bytes()


def _symbols(raw: bytes) -> tuple[str, ...]:
    return OfficeEngine().inspect(parse(raw, message_id="m", tenant="t")).symbols


def test_plain_document_is_clean() -> None:
    assert _symbols(_mail("letter.docx", office_samples.docx())) == ()
    assert _symbols(samples.clean_message()) == ()


def test_dde_field_is_found() -> None:
    assert "office:dde" in _symbols(_mail("invoice.docx", office_samples.docx_dde()))


def test_dde_found_inside_a_zip_under_a_misleading_name() -> None:
    z = samples.zip_bytes({"photo.jpg": office_samples.docx_dde()})
    assert "office:dde" in _symbols(_mail("photos.zip", z, "zip"))


def test_encrypted_document_is_flagged() -> None:
    raw = _mail("salary.docx", office_samples.docx_encrypted())
    assert _symbols(raw) == ("office:encrypted",)


def test_garbage_that_looks_like_ole_is_a_finding_not_a_crash() -> None:
    junk = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 4000
    s = _symbols(_mail("broken.doc", junk, "msword"))
    assert s in ((), ("office:unparsable",))


# --- VBA and XLM macros (documents built from the specifications, see office_samples) ---------

DOCM = "vnd.ms-word.document.macroEnabled.12"
AUTO = {"office:vba-autoexec", "office:vba-suspicious"}


def _engine_finding(raw: bytes):  # type: ignore[no-untyped-def]
    return OfficeEngine().inspect(parse(raw, message_id="m", tenant="t"))


def test_spec_built_containers_read_back_with_the_reference_readers() -> None:
    import io

    import olefile
    from oletools.olevba import decompress_stream

    text = bytes(range(256)) * 40  # 10240 bytes: two raw chunks and a compressed one
    assert decompress_stream(bytearray(office_samples.ovba_compress(text))) == text
    assert decompress_stream(bytearray(office_samples.ovba_compress(b""))) == b""
    big = bytes(range(256)) * 20  # >= 4096: regular sectors, the rest: the mini stream
    blob = office_samples.cfb(
        {"A/B/small": b"tiny", "big": big, "A/c": b""}, office_samples.CLSID_EXCEL97
    )
    with olefile.OleFileIO(io.BytesIO(blob)) as ole:
        assert sorted(ole.listdir()) == [["A", "B", "small"], ["A", "c"], ["big"]]
        assert ole.openstream("A/B/small").read() == b"tiny"
        assert ole.openstream("big").read() == big
        assert ole.root.clsid == office_samples.CLSID_EXCEL97.upper()


def test_docm_with_autoopen_and_shell_is_found_and_blocked() -> None:
    f = _engine_finding(_mail("invoice.docm", office_samples.docm(), DOCM))
    assert f.outcome == "match" and set(f.symbols) == AUTO
    d = decide([f], Policy())
    assert d.action == "quarantine" and "office:office:vba-autoexec" in d.reasons


def test_legacy_doc_with_document_open_is_found() -> None:
    raw = _mail("report.doc", office_samples.doc_with_macro(), "msword")
    assert set(_symbols(raw)) == AUTO


def test_macro_document_found_inside_a_zip_under_a_misleading_name() -> None:
    z = samples.zip_bytes({"scan.pdf": office_samples.docm()})
    assert set(_symbols(_mail("scans.zip", z, "zip"))) == AUTO


def test_harmless_macro_is_reported_but_not_blocked_by_default() -> None:
    f = _engine_finding(
        _mail("greet.docm", office_samples.docm({"Module1": office_samples.HARMLESS_MODULE}), DOCM)
    )
    assert f.symbols == ("office:vba-macro",)
    assert decide([f], Policy()).action == "deliver"
    assert decide([f], Policy(blocked_office=("vba-macro",))).action == "quarantine"


def test_xlm_macro_sheet_is_found() -> None:
    xls = "vnd.ms-excel"
    assert _symbols(_mail("budget.xls", office_samples.xls(), xls)) == ("office:xlm-macro",)
    both = office_samples.xls(vba={"Module1": office_samples.AUTOEXEC_MODULE})
    assert set(_symbols(_mail("budget.xls", both, xls))) == AUTO | {"office:xlm-macro"}


def test_macro_free_documents_are_clean() -> None:
    plain = office_samples.xls(macro_sheet=False)
    assert _symbols(_mail("budget.xls", plain, "vnd.ms-excel")) == ()
    assert _symbols(_mail("letter.docx", office_samples.docx())) == ()
