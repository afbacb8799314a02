"""Passwords for encrypted archives, taken from the message (issue 13).

Candidate extraction over the languages phishing mail writes in, then the unpacker: ZipCrypto,
WinZip AES and 7z (header-encrypted or not) opened with the password from the body and
scanned like any member; a wrong password stays ``archive-encrypted``; and the trials of one
message are capped, counted by the tries actually made (no clocks).
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import zlib
from email.message import EmailMessage
from typing import Any

import pytest
from support import samples
from support.zipcrypto import zipcrypto_zip

from mxgate.tenants import Policy
from scanner import mime
from scanner.archive_passwords import BodyText, PasswordTrials, body_text, candidates
from scanner.engines.attachments import AttachmentsEngine
from scanner.engines.common import Finding, ParsedMessage
from scanner.engines.yara_engine import YaraEngine
from scanner.mime import UnpackLimits, parse, scan_finding
from scanner.policy import decide

EICAR_RULE = "virus:yara:EICAR_Test_File"


def _plain(text: str, charset: str = "utf-8") -> BodyText:
    return BodyText("text/plain", charset, text.encode(charset))


# --- candidates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "password"),
    [
        ("Password: x7!kQ", "x7!kQ"),
        ("PW: invoice2026", "invoice2026"),
        ("pwd=Zz9_1", "Zz9_1"),
        ("The password is invoice2026.", "invoice2026"),
        ("Passcode (case sensitive): AbC-77", "AbC-77"),
        ("Password:\r\n\r\n  on-the-next-line\r\n", "on-the-next-line"),
        ('Password: "two words"', "two words"),
        ("Kennwort: geheim1", "geheim1"),
        ("Das Passwort lautet: Rechnung-2026", "Rechnung-2026"),
        ("Le mot de passe : soleil42", "soleil42"),
        ("Mot de passe: été2026", "été2026"),
        ("La contraseña es: clave99", "clave99"),
        ("A senha é 7788aa", "7788aa"),
        ("Het wachtwoord is geheimpje", "geheimpje"),
        ("Hasło: tajne1", "tajne1"),
        ("Пароль: qwerty7", "qwerty7"),
        ("パスワード\uff1aabc123", "abc123"),  # a fullwidth colon
        ("解凍パスワードは「abc 123」です。", "abc 123"),
        ("パスワードはpass2026です", "pass2026"),
        ("密码\uff1amima888", "mima888"),
        ("解压密码是 jieya66", "jieya66"),
        ("비밀번호: 1234ab", "1234ab"),
        ("비밀번호는 5678cd", "5678cd"),
    ],
)
def test_the_word_after_a_password_cue_comes_first(text: str, password: str) -> None:
    found = candidates("", [_plain(f"Hello,\r\nsee the attachment.\r\n{text}\r\nRegards\r\n")])
    assert found[0] == password, found


def test_the_subject_counts_and_the_charset_is_honoured() -> None:
    japanese = "請求書を送ります。\r\nパスワード\uff1akaitou77\r\n"
    body = BodyText("text/plain", "iso-2022-jp", japanese.encode("iso-2022-jp"))
    found = candidates("Invoice 4471 - PW: 5531zz", [body])
    assert found[:2] == ("kaitou77", "5531zz")


def test_html_is_reduced_to_its_text() -> None:
    html = (
        "<html><head><style>p { pw: no }</style></head><body><p>Your file.</p>"
        "<table><tr><td>Password:</td><td><b>h7#x&amp;1</b></td></tr></table></body></html>"
    )
    body = BodyText("text/html", "utf-8", html.encode())
    assert "Password:\nh7#x&1" in body_text(body).replace("\n\n", "\n")
    assert candidates("", [body])[0] == "h7#x&1"


def test_quoted_strings_and_short_tokens_are_the_fallback() -> None:
    text = "Hi,\r\nuse 's3cr3t' to open it, don't lose it.\r\nq9w8e7\r\nsee https://x.test/a\r\n"
    found = candidates("", [_plain(text)])
    assert found[0] == "s3cr3t"
    assert "q9w8e7" in found
    assert not any("://" in f for f in found)
    assert "t lose it" not in " ".join(found)  # an apostrophe inside a word quotes nothing


def test_cues_inside_other_words_are_not_cues() -> None:
    found = candidates("", [_plain("pwned: abc\r\npassport: xyz\r\n")])
    assert "abc" not in found[:1] and "xyz" not in found[:1]


def test_non_text_parts_are_skipped_and_the_candidates_capped() -> None:
    words = " ".join(f"tok{i:04d}" for i in range(500))
    many = [_plain(f"Password: a{i}\r\n{words}") for i in range(20)]
    found = candidates("", [BodyText("application/pdf", None, b"Password: pdfword"), *many])
    assert "pdfword" not in found
    assert len(found) == 20
    assert len(candidates("", many, limit=5)) == 5


def test_hostile_text_does_not_hide_the_cue_after_it() -> None:
    # Inputs that made overlapping quantifiers (blanks after a cue, "<" runs, unclosed
    # <script>) scan to the end from every start: ~19 s and ~2.6 s before they were bounded.
    blanks = "pw" + " " * 30000 + "\r\nPassword: real1\r\n"
    assert candidates("", [_plain(blanks)])[0] == "real1"
    markup = "<" * 30000 + "<script>" * 3000 + "</script>Password: real2"
    assert candidates("", [BodyText("text/html", "utf-8", markup.encode())])[0] == "real2"
    unclosed = "<script>" * 3000 + "Password: hidden"  # a browser shows none of it either
    assert "hidden" not in candidates("", [BodyText("text/html", "utf-8", unclosed.encode())])
    closed = "<" * 30000 + "<script>x</script>" * 1000 + "<p>Password: real3</p>"
    assert candidates("", [BodyText("text/html", "utf-8", closed.encode())])[0] == "real3"


def test_trials_are_counted_and_a_working_password_goes_first() -> None:
    calls = []

    def source() -> list[str]:
        calls.append(1)
        return ["a", "b", "c"]

    trials = PasswordTrials(source, max_trials=2)
    assert not calls  # nothing is extracted until an encrypted archive asks
    assert trials.candidates == ("a", "b", "c")
    trials.worked("c")
    assert trials.candidates == ("c", "a", "b") and len(calls) == 1
    assert trials.take() and trials.take() and not trials.take()
    assert trials.trials == 2 and trials.refused


# --- the unpacker --------------------------------------------------------------------------


@functools.cache
def _yara() -> YaraEngine:
    return YaraEngine()


def _message(text: str, name: str, data: bytes, ctype: str = "application/zip") -> bytes:
    """A message whose body is ``text``, with one attachment."""
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@x.test", "b@example.test", "files"
    m.set_content(text)
    main, sub = ctype.split("/")
    m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes()


def _decide(msg: ParsedMessage, policy: Policy | None = None) -> tuple[str, tuple[str, ...]]:
    async def engines() -> list[Finding]:
        return [await _yara().check(msg), await AttachmentsEngine().check(msg)]

    findings = asyncio.run(engines())
    unscannable = scan_finding(msg)
    decision = decide([*([unscannable] if unscannable else []), *findings], policy or Policy())
    return decision.action, decision.reasons


def _aes_zip(members: dict[str, bytes], password: str) -> bytes:
    import pyzipper

    buf = io.BytesIO()
    with pyzipper.AESZipFile(
        buf, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as zf:
        zf.setpassword(password.encode())
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _seven_zip(members: dict[str, bytes], password: str, *, header_encryption: bool) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(
        buf, "w", password=password, header_encryption=header_encryption
    ) as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return buf.getvalue()


def test_the_hand_written_zipcrypto_is_what_zipfile_reads() -> None:
    import zipfile

    for deflate in (True, False):
        data = zipcrypto_zip({"a.txt": b"hello " * 50}, "pw", deflate=deflate)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.read("a.txt", pwd=b"pw") == b"hello " * 50
            with pytest.raises(RuntimeError):
                zf.read("a.txt", pwd=b"not it!")


@pytest.mark.parametrize(
    ("build", "ctype"),
    [
        (lambda: zipcrypto_zip({"eicar.com": samples.eicar()}, "x7!kQ"), "application/zip"),
        (lambda: _aes_zip({"eicar.com": samples.eicar()}, "x7!kQ"), "application/zip"),
        (
            lambda: _seven_zip({"eicar.com": samples.eicar()}, "x7!kQ", header_encryption=True),
            "application/x-7z-compressed",
        ),
        (
            lambda: _seven_zip({"eicar.com": samples.eicar()}, "x7!kQ", header_encryption=False),
            "application/x-7z-compressed",
        ),
    ],
    ids=["zipcrypto", "aes", "7z-header-encrypted", "7z"],
)
def test_the_password_in_the_body_opens_the_archive_and_eicar_is_found(
    build: Any, ctype: str
) -> None:
    raw = _message("Hello,\r\nPassword: x7!kQ\r\n", "invoice.bin", build(), ctype)
    msg = parse(raw, message_id="m", tenant="t")
    assert "archive-password:found" in msg.defects
    assert "archive-encrypted" not in msg.defects
    (member,) = [p for p in msg.parts if p.depth == 1]
    assert member.path.endswith("/invoice.bin!eicar.com") and member.data == samples.eicar()
    action, reasons = _decide(msg)
    assert action == "quarantine" and EICAR_RULE in reasons


def test_a_decrypted_clean_archive_is_delivered_with_the_phishing_sign_on_record() -> None:
    data = zipcrypto_zip({"report.txt": b"quarterly numbers\n"}, "invoice2026")
    msg = parse(_message("PW: invoice2026\r\n", "r.zip", data), message_id="m", tenant="t")
    finding = AttachmentsEngine().inspect(msg)
    assert "attachment:archive-password-in-body" in finding.symbols
    assert "attachment:archive-encrypted" not in finding.symbols
    action, reasons = _decide(msg)
    assert action == "deliver", reasons
    # A tenant that wants such mail held lists the symbol.
    strict = Policy(blocked_attachments=(*Policy().blocked_attachments, "archive-password-in-body"))
    action, reasons = _decide(msg, strict)
    assert action == "quarantine"
    assert "attachment:attachments:archive-password-in-body" in reasons


@pytest.mark.parametrize("kind", ["zipcrypto", "aes", "7z"])
def test_a_wrong_password_leaves_it_encrypted_and_held(kind: str) -> None:
    members = {"eicar.com": samples.eicar()}
    data = {
        "zipcrypto": lambda: zipcrypto_zip(members, "right-one"),
        "aes": lambda: _aes_zip(members, "right-one"),
        "7z": lambda: _seven_zip(members, "right-one", header_encryption=True),
    }[kind]()
    msg = parse(_message("Password: wrong-one\r\n", "a.bin", data), message_id="m", tenant="t")
    assert "archive-encrypted" in msg.defects
    assert "archive-password:found" not in msg.defects
    assert not any(p.depth == 1 for p in msg.parts)
    action, reasons = _decide(msg)
    assert action == "quarantine" and "attachment:attachments:archive-encrypted" in reasons


def test_one_password_opens_every_member_and_is_tried_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    members = {f"f{i}.txt": b"x%d" % i for i in range(5)} | {"eicar.com": samples.eicar()}
    data = zipcrypto_zip(members, "sesame99")
    opens = _count_zip_opens(monkeypatch)
    raw = _message("Hi\r\nalpha beta gamma delta\r\nPassword: sesame99\r\n", "a.zip", data)
    msg = parse(raw, message_id="m", tenant="t")
    assert {p.filename for p in msg.parts if p.depth == 1} == set(members)
    assert opens[0] == "sesame99" and opens[1:] == ["sesame99"] * (len(members) - 1)


def _count_zip_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the unpacker will try on an encrypted zip member, in order."""
    log: list[str] = []
    original = mime._EncryptedZip.open

    def counting(zf: Any, info: Any, password: str) -> Any:
        log.append(password)
        return original(zf, info, password)

    monkeypatch.setattr(mime._EncryptedZip, "open", counting)
    return log


def test_many_candidates_and_many_encrypted_members_stay_within_the_trial_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 300 encrypted members, none of which any of the 20+ candidates opens.
    data = zipcrypto_zip({f"m{i}.exe": b"MZ%d" % i for i in range(300)}, "unguessable-9")
    words = "\r\n".join(f"Password: guess{i} token{i}x" for i in range(200))
    opens = _count_zip_opens(monkeypatch)
    msg = parse(_message(words, "a.zip", data), message_id="m", tenant="t")
    assert len(opens) == UnpackLimits().max_password_trials == 50
    assert len(set(opens)) == UnpackLimits().max_password_candidates == 20
    assert {"archive-encrypted", "archive-password:limit"} <= set(msg.defects)
    assert _decide(msg)[0] == "quarantine"
    # A smaller allowance is honoured exactly.
    opens.clear()
    limits = UnpackLimits(max_password_trials=7)
    parse(_message(words, "a.zip", data), message_id="m", tenant="t", limits=limits)
    assert len(opens) == 7


def test_trials_stop_when_the_parse_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    data = zipcrypto_zip({f"m{i}.exe": b"MZ%d" % i for i in range(300)}, "unguessable-9")
    words = "\r\n".join(f"Password: guess{i}" for i in range(20))
    opens = _count_zip_opens(monkeypatch)
    ticks = itertools.count()  # every deadline check is one second later
    msg = parse(
        _message(words, "a.zip", data),
        message_id="m",
        tenant="t",
        limits=UnpackLimits(max_seconds=40.0),
        clock=lambda: float(next(ticks)),
    )
    assert "budget:time" in msg.defects
    assert 0 < len(opens) < 40
    assert _decide(msg)[0] == "quarantine"


def _count_7z_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password py7zr will be asked to open a 7z with, in order."""
    import py7zr

    log: list[str] = []
    original = py7zr.SevenZipFile

    def counting(*args: Any, password: str | None = None, **kw: Any) -> Any:
        if password is not None:
            log.append(password)
        return original(*args, password=password, **kw)

    monkeypatch.setattr(py7zr, "SevenZipFile", counting)
    return log


def test_7z_trials_are_bounded_by_their_key_derivation_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _seven_zip({"eicar.com": samples.eicar()}, "not-in-the-body", header_encryption=True)
    words = "\r\n".join(f"Password: guess{i}" for i in range(20))
    opens = _count_7z_opens(monkeypatch)
    # The header's one key is 2**19 rounds: an allowance of three such keys is three trials.
    limits = UnpackLimits(max_kdf_rounds=3 * 2**19)
    msg = parse(_message(words, "a.7z", data), message_id="m", tenant="t", limits=limits)
    assert len(opens) == 3
    assert {"archive-encrypted", "archive-password:limit"} <= set(msg.defects)


def _declare_kdf_power(data: bytes, power: int) -> bytes:
    """``data`` (a header-encrypted py7zr 7z) with its header's key declared at 2**power
    rounds, and the start header's CRCs fixed to match."""
    out = bytearray(data)
    next_offset = int.from_bytes(out[12:20], "little")
    next_size = int.from_bytes(out[20:28], "little")
    start = 32 + next_offset
    at = out.find(b"\x06\xf1\x07\x01", start, start + next_size)
    assert at > 0
    prop = at + 4 + 1  # the coder id, then the properties' size, then the first property byte
    out[prop] = (out[prop] & 0xC0) | power
    out[28:32] = zlib.crc32(out[start : start + next_size]).to_bytes(4, "little")
    out[8:12] = zlib.crc32(out[12:32]).to_bytes(4, "little")
    return bytes(out)


def test_a_7z_that_declares_a_slow_key_gets_no_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _seven_zip({"eicar.com": samples.eicar()}, "x7!kQ", header_encryption=True)
    slow = _declare_kdf_power(data, 24)  # 32x 7-Zip's default, the most py7zr accepts
    assert mime._kdf_rounds(mime._7z_header_folders(slow)) == 2**24
    assert mime._kdf_rounds(mime._7z_header_folders(data)) == 2**19
    opens = _count_7z_opens(monkeypatch)
    msg = parse(_message("Password: x7!kQ\r\n", "a.7z", slow), message_id="m", tenant="t")
    assert opens == []
    assert {"archive-encrypted", "archive-password:limit"} <= set(msg.defects)
    assert _decide(msg)[0] == "quarantine"


def test_a_message_without_encrypted_archives_extracts_no_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    called: list[int] = []
    monkeypatch.setattr(mime, "candidates", lambda *a, **k: called.append(1) or ())
    msg = parse(samples.eicar_zip(), message_id="m", tenant="t")
    assert not called and not msg.defects
