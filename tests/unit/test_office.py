"""The office engine (oletools) on documents the tests build."""

from __future__ import annotations

from email.message import EmailMessage

from support import office_samples, samples

from scanner.engines.office import OfficeEngine
from scanner.mime import parse

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
