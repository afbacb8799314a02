"""scanner.mime: one parse, decoded parts, archives opened by content, never an exception."""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import samples

from scanner.engines.common import ParsedMessage
from scanner.mime import RAW_PATH, UnpackLimits, parse

CORPUS = Path("/work/shared/corpus/spamassassin-2002")
EICAR = samples.eicar()
FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def p(raw: bytes, **kw: object) -> ParsedMessage:
    return parse(raw, message_id="m1", tenant="t1", **kw)  # type: ignore[arg-type]


def by_path(msg: ParsedMessage) -> dict[str, bytes]:
    return {part.path: part.data for part in msg.parts}


def mail(body_part: bytes) -> bytes:
    """A message whose one attachment is ``body_part`` (base64, application/octet-stream)."""
    from email.message import EmailMessage

    m = EmailMessage()
    m["From"] = "a@b.test"
    m["To"] = "c@d.test"
    m["Subject"] = "x"
    m.set_content("see attachment\n")
    m.add_attachment(body_part, maintype="application", subtype="octet-stream", filename="blob.bin")
    return m.as_bytes()


def nested_zip(levels: int, payload: bytes = EICAR) -> bytes:
    data = payload
    for i in range(levels):
        data = samples.zip_bytes({f"level{levels - i}.zip" if i else "eicar.com": data})
    return data


# --- the samples ---------------------------------------------------------------------------


def test_metadata_and_raw_part() -> None:
    raw = samples.clean_message(3)
    msg = parse(
        raw,
        message_id="m",
        tenant="t",
        mail_from="a@x.test",
        rcpt_to=("b@y.test",),
        client_ip="192.0.2.1",
        helo="x.test",
    )
    assert (msg.message_id, msg.tenant, msg.mail_from, msg.rcpt_to) == (
        "m",
        "t",
        "a@x.test",
        ("b@y.test",),
    )
    assert (msg.client_ip, msg.helo) == ("192.0.2.1", "x.test")
    assert msg.raw == raw
    assert msg.parts[-1].path == RAW_PATH and msg.parts[-1].data == raw
    assert dict(msg.headers)["Subject"] == "Status report #3"
    assert msg.defects == ()


def test_clean_message_parts() -> None:
    msg = p(samples.clean_message(1))
    assert [(x.path, x.content_type) for x in msg.parts] == [
        ("1", "text/plain"),
        ("2/report-1.csv", "text/csv"),
        ("raw", "message/rfc822"),
    ]
    assert by_path(msg)["2/report-1.csv"] == b"week,items\n1,7\n"
    assert msg.parts[1].filename == "report-1.csv"


def test_eicar_plain_body() -> None:
    assert by_path(p(samples.eicar_plain()))["1"].rstrip() == EICAR


def test_eicar_base64_image_is_decoded() -> None:
    msg = p(samples.eicar_base64_as_image())
    part = next(x for x in msg.parts if x.filename == "holiday.jpg")
    assert part.content_type == "image/jpeg"
    assert part.data == EICAR


def test_eicar_qp_is_decoded() -> None:
    raw = samples.eicar_qp()
    assert EICAR not in raw  # only a decoder sees it
    assert by_path(p(raw))["1"].rstrip() == EICAR


def test_zip_named_pdf_is_opened_by_content() -> None:
    msg = p(samples.eicar_zip())
    member = by_path(msg)["2/report.pdf!eicar.com"]
    assert member == EICAR
    (part,) = [x for x in msg.parts if x.path.endswith("!eicar.com")]
    assert part.depth == 1 and part.filename == "eicar.com"


def test_zip_in_zip() -> None:
    msg = p(samples.eicar_zip_in_zip())
    paths = by_path(msg)
    assert paths["2/documents.zip!inner.zip!eicar.com"] == EICAR
    assert paths["2/documents.zip!readme.txt"] == b"see inner.zip\n"
    depths = {x.path: x.depth for x in msg.parts}
    assert depths["2/documents.zip!inner.zip!eicar.com"] == 2


def test_gtube_text() -> None:
    assert samples.gtube() in by_path(p(samples.gtube_message()))["1"]


def test_zip_bomb_is_a_defect_not_an_outage() -> None:
    raw = samples.zip_bomb()
    assert len(raw) < 200 * 1024
    msg = p(raw)
    assert "archive-limit:ratio" in msg.defects
    # Declared sizes are judged before reading: the bomb's member is never inflated.
    assert not any(x.path.endswith("!payload.bin") for x in msg.parts)
    assert sum(len(x.data) for x in msg.parts) < 1024 * 1024


def test_zip_bomb_total_bytes_limit() -> None:
    limits = UnpackLimits(max_ratio=10_000, max_total_bytes=8 * 1024 * 1024)
    msg = p(samples.zip_bomb(), limits=limits)
    assert "archive-limit:bytes" in msg.defects
    assert sum(len(x.data) for x in msg.parts if x.depth) <= limits.max_total_bytes


def test_malformed_mime_yields_parts_and_defects() -> None:
    msg = p(samples.malformed_mime())
    assert msg.parts[-1].path == RAW_PATH
    assert len(msg.parts) >= 4
    assert "header-error:message-id" in msg.defects
    assert "mime:CloseBoundaryNotFoundDefect" in msg.defects
    assert "encoding-broken" in msg.defects
    # Broken base64 keeps both the best-effort decode and the bytes as received.
    paths = by_path(msg)
    assert paths["1#encoded"].startswith(b"SGVsbG8g!!")
    assert paths["1"].startswith(b"Hello ")
    # One unparsable header does not cost the others.
    headers = dict(msg.headers)
    assert headers["From"] == samples.DEFAULT_SENDER
    assert "Subject" in headers


# --- MIME edge cases ---------------------------------------------------------------------


def test_single_part_without_headers() -> None:
    msg = p(b"just a body\r\n")
    assert [x.path for x in msg.parts] == ["1", RAW_PATH]


def test_empty_input() -> None:
    msg = p(b"")
    assert msg.parts[-1] == msg.parts[-1].__class__(RAW_PATH, None, "message/rfc822", b"")


def test_attached_message_is_walked() -> None:
    inner = samples.eicar_base64_as_image()
    from email.message import EmailMessage
    from email.parser import BytesParser
    from email.policy import default

    outer = EmailMessage()
    outer["Subject"] = "fwd"
    outer.set_content("forwarded\n")
    outer.add_attachment(BytesParser(policy=default).parsebytes(inner))
    msg = p(outer.as_bytes())
    assert any(x.data == EICAR and x.filename == "holiday.jpg" for x in msg.parts)


def test_headers_carry_no_surrogates() -> None:
    msg = p(b"Subject: caf\xe9 \xff\r\nX-A: b\r\n\r\nbody\r\n")
    for name, value in msg.headers:
        name.encode("utf-8")
        value.encode("utf-8")
    assert dict(msg.headers)["X-A"] == "b"


def test_invalid_base64_keeps_raw_payload() -> None:
    raw = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"****not base64 at all****\r\n"
    )
    msg = p(raw)
    assert "encoding-broken" in msg.defects
    assert any(x.data.startswith(b"****not") for x in msg.parts if x.path != RAW_PATH)


# --- archives ----------------------------------------------------------------------------


def test_depth_limit() -> None:
    deep = nested_zip(8)
    msg = p(mail(deep))
    assert "archive-limit:depth" in msg.defects
    assert not any(x.data == EICAR for x in msg.parts)
    assert max(x.depth for x in msg.parts) == UnpackLimits().max_depth


def test_depth_within_limit() -> None:
    msg = p(mail(nested_zip(4)))
    assert any(x.data == EICAR for x in msg.parts)
    assert not any(d.startswith("archive-limit") for d in msg.defects)


def test_member_limit() -> None:
    many = samples.zip_bytes({f"f{i}.txt": b"x" for i in range(20)})
    msg = p(mail(many), limits=UnpackLimits(max_members=5))
    assert "archive-limit:members" in msg.defects
    assert sum(1 for x in msg.parts if x.depth == 1) == 5


def _encrypt_flag(zip_data: bytes) -> bytes:
    """Set the 'encrypted' flag bit in every local and central header (zipfile cannot write
    encrypted archives, and the reader only needs the flag)."""
    data = bytearray(zip_data)
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = data.find(sig)
        while i != -1:
            data[i + flag_at] |= 0x1
            i = data.find(sig, i + 4)
    return bytes(data)


def test_encrypted_member() -> None:
    enc = _encrypt_flag(samples.zip_bytes({"secret.exe": b"MZ" + bytes(100)}))
    msg = p(mail(enc))
    assert "archive-encrypted" in msg.defects
    assert not any(x.path.endswith("!secret.exe") for x in msg.parts)


def test_corrupt_zip() -> None:
    broken = samples.zip_bytes({"eicar.com": EICAR})[:40]
    msg = p(mail(broken))
    assert "archive-corrupt" in msg.defects


def test_zip_member_crc_mismatch_keeps_bytes() -> None:
    good = bytearray(zipfile_stored({"a.txt": b"hello world"}))
    i = good.find(b"hello world")
    good[i] = ord("j")
    msg = p(mail(bytes(good)))
    assert "archive-corrupt" in msg.defects


def zipfile_stored(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_appended_to_other_data() -> None:
    polyglot = b"%PDF-1.4\n% not really a pdf\n" + samples.zip_bytes({"eicar.com": EICAR})
    msg = p(mail(polyglot))
    assert any(x.data == EICAR and x.path.endswith("!eicar.com") for x in msg.parts)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_tar() -> None:
    msg = p(mail(tar_bytes({"dir/eicar.com": EICAR})))
    assert by_path(msg)["2/blob.bin!dir/eicar.com"] == EICAR


def test_tar_gz() -> None:
    tgz = gzip.compress(tar_bytes({"eicar.com": EICAR}), mtime=0)
    msg = p(mail(tgz))
    assert any(x.data == EICAR and x.depth == 2 for x in msg.parts)


@pytest.mark.parametrize(
    "compress",
    [lambda b: gzip.compress(b, mtime=0), bz2.compress, lzma.compress],
    ids=["gzip", "bz2", "xz"],
)
def test_compressed_streams(compress) -> None:  # type: ignore[no-untyped-def]
    msg = p(mail(compress(EICAR)))
    assert any(x.data == EICAR and x.depth == 1 for x in msg.parts)


def test_multi_member_gzip() -> None:
    data = gzip.compress(b"first ", mtime=0) + gzip.compress(b"second", mtime=0)
    msg = p(mail(data))
    assert any(x.data == b"first second" for x in msg.parts)


def _gzip_of_zeros(mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    return b"".join([*(c.compress(chunk) for _ in range(mib)), c.flush()])


def test_gzip_bomb_is_cut_at_the_ratio_cap() -> None:
    bomb = _gzip_of_zeros(64)
    limits = UnpackLimits()
    msg = p(mail(bomb), limits=limits)
    assert "archive-limit:ratio" in msg.defects
    (member,) = [x for x in msg.parts if x.depth == 1]
    assert len(member.data) == max(len(bomb) * int(limits.max_ratio), limits.ratio_floor)


def test_gzip_bomb_total_bytes_limit() -> None:
    msg = p(mail(_gzip_of_zeros(64)), limits=UnpackLimits(max_total_bytes=100_000))
    assert "archive-limit:bytes" in msg.defects
    (member,) = [x for x in msg.parts if x.depth == 1]
    assert len(member.data) == 100_000


def test_truncated_gzip_keeps_prefix() -> None:
    data = gzip.compress(EICAR * 100, mtime=0)[:-30]
    msg = p(mail(data))
    (member,) = [x for x in msg.parts if x.depth == 1]
    assert member.data.startswith(EICAR)


def test_small_highly_compressible_member_is_not_a_bomb() -> None:
    # 500 KiB of zeros is far beyond 100:1 but under ratio_floor: ordinary, not a defect.
    msg = p(mail(samples.zip_bytes({"zeros.bin": bytes(500 * 1024)})))
    assert not msg.defects
    assert any(len(x.data) == 500 * 1024 for x in msg.parts)


def test_max_depth_zero_opens_nothing() -> None:
    msg = p(samples.eicar_zip(), limits=UnpackLimits(max_depth=0))
    assert "archive-limit:depth" in msg.defects
    assert not any(x.depth for x in msg.parts)


# --- real mail -----------------------------------------------------------------------------


def corpus_files(kind: str, n: int) -> list[Path]:
    return sorted((CORPUS / kind).iterdir())[:n]


@pytest.mark.skipif(not CORPUS.exists(), reason="shared corpus not present")
@pytest.mark.parametrize("kind", ["ham", "spam"])
def test_real_corpus_parses(kind: str) -> None:
    for f in corpus_files(kind, 300):
        raw = f.read_bytes().split(b"\n", 1)[1]  # drop the mbox "From " line
        msg = p(raw)
        assert msg.parts[-1].data == raw
        assert not any(d.startswith("mime-error") for d in msg.defects), f.name


# --- fuzzing -------------------------------------------------------------------------------


def assert_well_formed(raw: bytes, msg: ParsedMessage) -> None:
    assert msg.raw == raw
    assert msg.parts[-1].path == RAW_PATH and msg.parts[-1].data == raw
    assert all(isinstance(x.data, bytes) for x in msg.parts)
    for name, value in msg.headers:
        (name + value).encode("utf-8")  # no smuggled surrogates
    for d in msg.defects:
        d.encode("utf-8")


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    assert_well_formed(raw, p(raw))


HEADER_NAMES = [
    "From",
    "To",
    "Subject",
    "Message-ID",
    "Date",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "MIME-Version",
    "X-Other",
    "Received",
    "Reply-To",
    "Cc",
]
HEADER_VALUES = [
    "a@b.test",
    "<x@y>",
    "<<<@@>>>",
    "=?utf-8?q?caf=C3=A9?=",
    "=?bogus?b?!!?=",
    "",
    ":::",
    'multipart/mixed; boundary="B"',
    "multipart/mixed",
    "multipart/alternative; boundary=B",
    "text/plain; charset=utf-8",
    'text/plain; charset="',
    "message/rfc822",
    'application/zip; name="a.zip"',
    "base64",
    "quoted-printable",
    "8bit",
    "x-uue",
    "bogus",
    "attachment; filename*=utf-8''%E2%82",
    'attachment; filename="a\x00b"',
    '"unterminated',
    "(comment",
    "Sat, 99 Foo 2026 99:99:99",
    "a@",
    "@",
    "\\",
]
BODIES = [
    b"hello\r\n",
    b"SGVsbG8gd29ybGQ=\r\n",
    b"SGVsbG8!!",
    b"=E2=82=AC =ZZ=\r\n",
    b"--B\r\n",
    b"--B--\r\n",
    b"\xff\xfe\x00",
    b"begin 644 x\r\n#86)C\r\n`\r\nend\r\n",
]


ARCHIVES = [
    samples.zip_bytes({"a.txt": b"hello" * 50, "b/c.bin": bytes(300)}),
    nested_zip(3),
    tar_bytes({"x": b"1" * 700, "y": b"2"}),
    gzip.compress(tar_bytes({"x": b"1"}), mtime=0),
    bz2.compress(b"hello" * 100),
    lzma.compress(b"hello" * 100),
]


@st.composite
def near_mime(draw: st.DrawFn) -> bytes:
    """Plausible MIME built from realistic pieces, then damaged."""

    def headers() -> bytes:
        items = draw(
            st.lists(
                st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES)), max_size=8
            )
        )
        return b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogateescape") for k, v in items)

    out = headers() + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
    for _ in range(draw(st.integers(0, 4))):
        out += b"--B\r\n" + headers() + b"\r\n" + draw(st.sampled_from(BODIES))
        if draw(st.booleans()):
            blob = draw(st.sampled_from(ARCHIVES))
            out += b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(blob)
    if draw(st.booleans()):
        out += b"--B--\r\n"
    # Mutations: flip, delete and insert bytes at random places.
    data = bytearray(out)
    for op, pos, byte in draw(
        st.lists(
            st.tuples(
                st.sampled_from(["flip", "del", "ins"]), st.integers(0, 10_000), st.integers(0, 255)
            ),
            max_size=6,
        )
    ):
        if not data:
            break
        i = pos % len(data)
        if op == "flip":
            data[i] = byte
        elif op == "del":
            del data[i]
        else:
            data.insert(i, byte)
    return bytes(data)


@FUZZ
@given(near_mime())
def test_fuzz_near_valid_mime(raw: bytes) -> None:
    assert_well_formed(raw, p(raw))


@st.composite
def damaged_archive(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(ARCHIVES))
    data = bytearray(base)
    for pos, byte in draw(
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8)
    ):
        data[pos % len(data)] = byte
    cut = draw(st.integers(0, len(data)))
    return bytes(data[: cut or len(data)])


@FUZZ
@given(damaged_archive())
def test_fuzz_damaged_archives(blob: bytes) -> None:
    raw = mail(blob)
    msg = p(raw, limits=UnpackLimits(max_total_bytes=4 * 1024 * 1024))
    assert_well_formed(raw, msg)
    assert sum(len(x.data) for x in msg.parts if x.depth) <= 4 * 1024 * 1024


@pytest.mark.parametrize("cte", ["base64 ", "BASE64", "base64 (obfuscated)", " Base64\t"])
def test_transfer_encoding_spellings_are_decoded(cte: str) -> None:
    body = base64.encodebytes(EICAR)
    raw = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + body
    )
    assert by_path(p(raw))["1"] == EICAR


def test_rfc2047_filename_is_decoded() -> None:
    raw = (
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9.zip?="\r\n'
        b"\r\nx"
    )
    (part, _) = p(raw).parts
    assert part.filename == "r\u00e9sum\u00e9.zip"


def test_too_many_parts_is_a_limit_not_a_hang() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nx\r\n" * 200
        + b"--b--\r\n"
    )
    msg = p(raw, limits=UnpackLimits(max_parts=50))
    assert "mime-limit:parts" in msg.defects
    assert len(msg.parts) <= 51
    assert msg.parts[-1].data == raw


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: text/plain; " + b"a=b; " * 20_000 + b"\r\n\r\nx",
        b"To: " + b"a@b, " * 20_000 + b"\r\n\r\nx",
        b"Subject: " + b"=?utf-8?q?a?= " * 20_000 + b"\r\n\r\nx",
        b"".join(b"X-H%d: (%s)\r\n" % (i, b"(" * 1000) for i in range(2000)) + b"\r\nx",
    ],
    ids=["content-type-params", "long-to", "encoded-words", "header-flood"],
)
def test_hostile_headers_stay_bounded(raw: bytes) -> None:
    # No timing assertion: a superlinear parser would make this test hang, not fail.
    msg = p(raw)
    assert msg.parts[-1].data == raw


# --- uuencoded blocks in text parts ----------------------------------------------------------


def _uu(data: bytes) -> list[bytes]:
    import binascii

    return [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]


def _text(body: bytes) -> bytes:
    return b"From: a@b.test\r\nContent-Type: text/plain\r\n\r\n" + body


def test_uuencoded_block_in_text_is_a_part_of_its_own() -> None:
    block = b"\r\n".join([b"begin 644 eicar.com", *_uu(EICAR), b"`", b"end"])
    raw = _text(b"hello\r\n" + block + b"\r\nbye\r\n")
    assert EICAR not in raw
    msg = p(raw)
    assert by_path(msg)["1#uu1/eicar.com"] == EICAR
    (part,) = [x for x in msg.parts if x.filename == "eicar.com"]
    assert part.content_type == "application/octet-stream"
    assert not msg.defects


def test_uuencoded_zip_is_opened() -> None:
    zipped = samples.zip_bytes({"eicar.com": EICAR})
    block = b"\r\n".join([b"begin 600 a.zip", *_uu(zipped), b"end"])
    assert by_path(p(_text(block)))["1#uu1/a.zip!eicar.com"] == EICAR


def test_uuencoded_bad_lines_are_skipped_and_recorded() -> None:
    # Stripped trailing blanks, a blank line, a junk line, an over-long line, no "end".
    lines = [x.rstrip(b" ") for x in _uu(EICAR)]
    lines[0] += b"  garbage"
    block = b"\r\n".join([b"begin 644 e.com", lines[0], b"", b"not uu at all {}", *lines[1:]])
    msg = p(_text(block))
    assert by_path(msg)["1#uu1/e.com"] == EICAR
    assert "uuencode-broken" in msg.defects


def test_many_uuencoded_blocks_are_a_limit() -> None:
    block = b"".join(b"begin 644 f%d\r\n#86)C\r\nend\r\n" % i for i in range(100))
    msg = p(_text(block))
    assert sum(1 for x in msg.parts if "#uu" in x.path) == 64
    assert "mime-limit:uuencode" in msg.defects


def test_begin_in_prose_and_in_non_text_parts_is_not_uudecoded() -> None:
    prose = p(_text(b"begin the meeting\r\nbegin 10 minutes early\r\n"))
    assert not any("#uu" in x.path for x in prose.parts) and not prose.defects
    block = b"\r\n".join([b"begin 644 eicar.com", *_uu(EICAR), b"end"])
    assert not any("#uu" in x.path for x in p(mail(block)).parts)
