"""Encrypted documents opened with Excel's default password or one the message carries, then
analysed like any other; without the password they stay ``office:encrypted``."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from support import maldoc_samples as ms
from support import office_samples

from mxgate.tenants import Policy
from scanner.engines.common import Finding
from scanner.engines.office import OfficeEngine
from scanner.mime import parse
from scanner.policy import decide


def _office(name: str, data: bytes, body: str = "see attached", subject: str = "") -> Finding:
    m = EmailMessage()
    m["Subject"] = subject
    m.set_content(body)
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return OfficeEngine().inspect(parse(m.as_bytes(), message_id="m", tenant="t"))


def test_a_document_encrypted_with_the_body_password_is_decrypted_and_analysed() -> None:
    doc = ms.encrypted(office_samples.docm(), "Invoice2026")
    f = _office("invoice.docm", doc, "Hello,\nthe invoice is attached.\nPassword: Invoice2026\n")
    assert "office:encrypted" not in f.symbols
    assert {"office:decrypted:body-password", "office:vba-autoexec"} <= set(f.symbols)
    assert f.detail["office:decrypted:body-password"].endswith("invoice.docm")
    assert "password found in the message" in f.detail["office:decrypted:body-password:where"]
    d = decide([f], Policy())
    assert d.action == "quarantine"  # for the macro, now that it can be seen
    assert "office:office:vba-autoexec" in d.reasons


def test_velvetsweatshop_is_tried_first() -> None:
    doc = ms.encrypted(ms.xlsm_xlm(), "VelvetSweatshop")
    f = _office("budget.xlsm", doc)
    assert set(f.symbols) == {
        "office:decrypted:default-password",
        "office:xlm-macro",
        "office:xlm-auto-open",
    }


def test_a_decrypted_plain_document_is_delivered() -> None:
    doc = ms.encrypted(office_samples.docx(), "kw-7781")
    f = _office("salary.docx", doc, "Kennwort: kw-7781")
    assert f.symbols == ("office:decrypted:body-password",)
    assert decide([f], Policy()).action == "deliver"  # a sign to combine, like archives'


def test_without_the_password_it_stays_encrypted_and_held() -> None:
    doc = ms.encrypted(office_samples.docm(), "not-in-the-mail")
    f = _office("invoice.docm", doc, "Password: something-else")
    assert f.symbols == ("office:encrypted",)
    assert decide([f], Policy()).action == "quarantine"


def _count_key_derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords msoffcrypto derives a key from, from now on in this test."""
    import msoffcrypto

    tried: list[str] = []
    orig = msoffcrypto.OfficeFile

    def counting(f: Any) -> Any:
        office_file = orig(f)
        load_key = office_file.load_key

        def count(*args: Any, **kwargs: Any) -> Any:
            tried.append(kwargs.get("password", ""))
            return load_key(*args, **kwargs)

        office_file.load_key = count
        return office_file

    monkeypatch.setattr(msoffcrypto, "OfficeFile", counting)
    return tried


def test_password_trials_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from scanner.engines import office

    # Many candidate words, none right: at most _MAX_PASSWORD_TRIALS key derivations.
    body = "\n".join(f"password: wrong{i}" for i in range(100))
    doc = ms.encrypted(office_samples.docx(), "right")
    tried = _count_key_derivations(monkeypatch)
    monkeypatch.setattr(office, "_PASSWORD_SECONDS", 3600.0)  # the count bounds, not the clock
    f = _office("a.docx", doc, body)
    assert f.symbols == ("office:encrypted",)
    assert len(tried) == office._MAX_PASSWORD_TRIALS
    assert tried[:2] == ["VelvetSweatshop", "wrong0"]
    # And the clock: with no time left, nothing is tried.
    tried.clear()
    monkeypatch.setattr(office, "_PASSWORD_SECONDS", -1.0)
    assert _office("a.docx", doc, "password: right").symbols == ("office:encrypted",)
    assert tried == []


def test_a_crafted_key_derivation_is_not_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = ms.encrypted(office_samples.docx(), "Secret1")
    assert doc.count(b'spinCount="100000"') == 1  # the password key encryptor
    crafted = doc.replace(b'spinCount="100000"', b'spinCount="999999"')
    tried = _count_key_derivations(monkeypatch)
    f = _office("a.docx", crafted, "Password: Secret1")
    assert f.symbols == ("office:encrypted",)
    assert tried == []
    # The same document with Office's own count opens.
    assert "office:decrypted:body-password" in _office("a.docx", doc, "Password: Secret1").symbols
    assert tried == ["VelvetSweatshop", "Secret1"]
