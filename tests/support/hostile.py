"""A generated hostile-mail corpus: each message hides a malware payload behind a parser trick.

Every case carries the EICAR test file, usually zipped inside a base64 attachment, so that only
a parser that really decoded and unpacked the message lets an antivirus engine see it. What a
case must end in is the test's business (:mod:`tests.unit.test_hostile_mail`): held back with a
reason, never delivered. Built in memory, deterministic, no files.

``CASES`` maps a case name to a builder; :func:`corpus` builds them all.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable

from support import quines
from support.samples import eicar, zip_bytes
from support.zipcrypto import zipcrypto_zip

__all__ = ["CASES", "concatenated_gzip", "corpus", "deep_nesting", "many_parts"]

_HEAD = b"From: a@evil.test\r\nTo: c@example.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _zipped_eicar_part(boundary: bytes, name: bytes = b"invoice.zip") -> bytes:
    """A base64 attachment part holding a zip of ``eicar.com``, opened by ``--boundary``."""
    return (
        b"--" + boundary + b"\r\n"
        b"Content-Type: application/zip\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="'
        + name
        + b'"\r\n\r\n'
        + _b64(zip_bytes({"eicar.com": eicar()}))
    )


def _mixed(boundary: bytes, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(parts) + (b"--" + boundary + b"--\r\n" if close else b"")
    return _HEAD + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n' + body


def deep_nesting(levels: int = 1200) -> bytes:
    """A first part nested ``levels`` multiparts deep, then a zipped EICAR as its sibling."""
    opening = b"".join(
        b'--d%d\r\nContent-Type: multipart/mixed; boundary="d%d"\r\n\r\n' % (i, i + 1)
        for i in range(levels)
    )
    closing = b"".join(b"--d%d--\r\n" % i for i in range(levels, 0, -1))
    inner = b"--d%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % levels
    return (
        _HEAD
        + b'Content-Type: multipart/mixed; boundary="d0"\r\n\r\n'
        + opening
        + inner
        + closing
        + _zipped_eicar_part(b"d0")
        + b"--d0--\r\n"
    )


def many_parts(count: int = 10_000) -> bytes:
    """``count`` small text parts, then a zipped EICAR after them."""
    filler = b"".join(
        b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count)
    )
    return _mixed(b"p", filler, _zipped_eicar_part(b"p"))


def zip_bomb() -> bytes:
    """A zip whose first member expands 64 MiB of zeros at a ratio far past the limit, with
    ``eicar.com`` beside it."""
    bomb = zip_bytes({"zeros.bin": bytes(64 * 1024 * 1024), "eicar.com": eicar()})
    part = (
        b"--z\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="bomb.zip"\r\n\r\n' + _b64(bomb)
    )
    return _mixed(b"z", part)


def gzip_bomb() -> bytes:
    """EICAR followed by 64 MiB of zeros, gzipped: only the start fits under the ratio cap."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [c.compress(eicar())]
    chunks += [c.compress(bytes(1024 * 1024)) for _ in range(64)]
    data = b"".join([*chunks, c.flush()])
    part = (
        b"--g\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="log.txt.gz"\r\n\r\n' + _b64(data)
    )
    return _mixed(b"g", part)


def concatenated_gzip(members: int = 20_000, payload: bytes | None = None) -> bytes:
    """A gzip of ``members`` concatenated members (tiny ones), the last holding ``payload``
    (default: a zip of EICAR): the shape that made unpacking quadratic."""
    tiny = gzip.compress(b"", mtime=0)
    last = gzip.compress(zip_bytes({"eicar.com": eicar()}) if payload is None else payload, mtime=0)
    return tiny * (members - 1) + last


def _concatenated_gzip_message() -> bytes:
    part = (
        b"--c\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="data.zip.gz"\r\n\r\n'
        + _b64(concatenated_gzip())
    )
    return _mixed(b"c", part)


def malformed_base64() -> bytes:
    """The zip's base64 peppered with characters outside the alphabet and broken padding."""
    text = _b64(zip_bytes({"eicar.com": eicar()})).decode()
    noisy = "".join(ch + ("!*" if i % 7 == 3 else "") for i, ch in enumerate(text)) + "=%=\r\n"
    part = (
        b"--b\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="scan.zip"\r\n\r\n' + noisy.encode()
    )
    return _mixed(b"b", part)


def malformed_qp() -> bytes:
    """A zipped EICAR in quoted-printable behind invalid escapes (``=ZZ``, a lone ``=``)."""
    # istext=False: CR and LF in the zip are escaped, so line breaks are only the soft ones.
    qp = binascii.b2a_qp(zip_bytes({"eicar.com": eicar()}), istext=False).replace(b"\n", b"\r\n")
    part = (
        b"--q\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b'Content-Disposition: attachment; filename="scan.bin"\r\n\r\n'
        b"=ZZ=G1 junk = here=\r\n" + qp
    )
    return _mixed(b"q", part)


def broken_boundary() -> bytes:
    """A declared boundary the body never uses; the parts use another one."""
    head = _HEAD + b'Content-Type: multipart/mixed; boundary="declared"\r\n\r\n'
    body = b"--actual\r\nContent-Type: text/plain\r\n\r\nhi\r\n" + _zipped_eicar_part(b"actual")
    return head + body + b"--actual--\r\n"


def unclosed_boundary() -> bytes:
    """The closing delimiter is missing and the last part runs to the end."""
    return _mixed(b"u", b"--u\r\n\r\ntext\r\n", _zipped_eicar_part(b"u"), close=False)


def nul_and_8bit_headers() -> bytes:
    """NUL and raw 8-bit bytes in the headers, a NUL in the file name."""
    head = (
        b"From: \xff\xfe evil <a@evil.test>\r\nTo: c@example.test\r\n"
        b"Subject: caf\xe9 \x00 \xc3\x28\r\nX-Null: a\x00b\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="n"\r\n\r\n'
    )
    return head + _zipped_eicar_part(b"n", name=b"doc\x00.pdf\xff.zip") + b"--n--\r\n"


def rfc2231_filename() -> bytes:
    """RFC 2231 continuations and charsets spelling ``invoice.pdf.exe``, against a plain name."""
    part = (
        b'--r\r\nContent-Type: application/octet-stream; name="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="invoice.pdf";\r\n'
        b" filename*0*=utf-8'en'invoice%2Epdf; filename*1*=%E2%80%AE;\r\n"
        b' filename*2="exe.zip"\r\n\r\n' + _b64(zip_bytes({"eicar.com": eicar()}))
    )
    return _mixed(b"r", part)


def duplicate_content_type() -> bytes:
    """Two Content-Type headers: the first says text/plain, the second is the real multipart."""
    head = (
        _HEAD + b'Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
    )
    return head + b"--x\r\n\r\nhello\r\n" + _zipped_eicar_part(b"x") + b"--x--\r\n"


def zip_nested_too_deep(levels: int = 8) -> bytes:
    """EICAR inside zips nested deeper than the unpacking depth limit."""
    data = eicar()
    name = b"eicar.com".decode()
    for i in range(levels):
        data, name = zip_bytes({name: data}), f"level{i}.zip"
    part = (
        b"--k\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="nest.zip"\r\n\r\n' + _b64(data)
    )
    return _mixed(b"k", part)


def tar_bomb(members: int = 3000) -> bytes:
    """A tar of ``members`` empty files (past the member allowance), ``eicar.com`` after them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(members):
            tf.addfile(tarfile.TarInfo(f"f{i:05d}"), io.BytesIO(b""))
        info = tarfile.TarInfo("eicar.com")
        info.size = len(eicar())
        tf.addfile(info, io.BytesIO(eicar()))
    part = (
        b"--t\r\nContent-Type: application/x-tar\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="backup.tar"\r\n\r\n' + _b64(buf.getvalue())
    )
    return _mixed(b"t", part)


def seven_zip_bomb(zeros: int = 32 * 1024 * 1024) -> bytes:
    """A 7z whose first member is ``zeros`` zero bytes (a ratio far past the limit), then
    ``eicar.com``."""
    import py7zr  # only this case needs it

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        archive.writestr(bytes(zeros), "zeros.bin")
        archive.writestr(eicar(), "eicar.com")
    part = (
        b"--s\r\nContent-Type: application/x-7z-compressed\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="bomb.7z"\r\n\r\n' + _b64(buf.getvalue())
    )
    return _mixed(b"s", part)


def _uu_lines(data: bytes) -> list[bytes]:
    return [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]


def uuencoded() -> bytes:
    """EICAR uuencoded (``begin 644 eicar.com`` ... ``end``) in the middle of a text/plain body."""
    block = b"\r\n".join([b"begin 644 eicar.com", *_uu_lines(eicar()), b"`", b"end"])
    body = b"Please find the file below.\r\n\r\n" + block + b"\r\n\r\nRegards\r\n"
    return _HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body


def uuencoded_broken_lines() -> bytes:
    """A zipped EICAR uuencoded behind broken lines: trailing blanks stripped (as mailers do),
    a junk line in the block, no ``end``; quoted-printable on top."""
    lines = [line.rstrip(b" ") for line in _uu_lines(zip_bytes({"eicar.com": eicar()}))]
    lines.insert(len(lines) // 2, b"this line is not uuencoded {~}")
    block = b"\r\n".join([b"begin 0644 invoice.zip", *lines])
    qp = binascii.b2a_qp(b"See attached.\r\n" + block + b"\r\n", istext=True)
    return (
        _HEAD
        + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + qp.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    )


def _part(boundary: bytes, name: bytes, ctype: bytes, data: bytes) -> bytes:
    """A base64 attachment part, opened by ``--boundary``."""
    return (
        b"--" + boundary + b"\r\nContent-Type: " + ctype + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n\r\n' + _b64(data)
    )


def _attachment(boundary: bytes, name: bytes, ctype: bytes, data: bytes) -> bytes:
    """A whole message with one base64 attachment."""
    return _mixed(boundary, _part(boundary, name, ctype, data))


def tar_sparse_bomb(realsize: int = 90 * 1024 * 1024) -> bytes:
    """A tar whose first member is a PAX 1.0 sparse file: one stored byte standing for
    ``realsize`` bytes of holes (a ratio of ~10^8), then ``eicar.com``."""
    sparse = tarfile.TarInfo("zeros.bin")
    sparse.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "zeros.bin",
        "GNU.sparse.realsize": str(realsize),
    }
    # The member's data: the sparse map (segment count, then offset and size, one a line)
    # padded to a block, then the one stored byte.
    body = (b"1\n%d\n1\n" % (realsize - 1)).ljust(512, b"\0") + b"\0"
    sparse.size = len(body)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(sparse, io.BytesIO(body))
        info = tarfile.TarInfo("eicar.com")
        info.size = len(eicar())
        tf.addfile(info, io.BytesIO(eicar()))
    return _attachment(b"s", b"disk.tar", b"application/x-tar", buf.getvalue())


def tar_huge_declared(size: int = 8 * 1024**3) -> bytes:
    """A tar member declaring 8 GiB (a base-256 size field) whose data is just ``eicar.com``."""
    info = tarfile.TarInfo("eicar.com")
    info.size = size
    data = info.tobuf(format=tarfile.GNU_FORMAT) + eicar().ljust(512, b"\0") + bytes(1024)
    return _attachment(b"h", b"huge.tar", b"application/x-tar", data)


def seven_zip() -> bytes:
    """``eicar.com`` in a 7z archive (written by py7zr)."""
    import py7zr  # only the 7z cases need it

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        archive.writestr(eicar(), "eicar.com")
    return _attachment(b"7", b"invoice.7z", b"application/x-7z-compressed", buf.getvalue())


def bzip2_bomb() -> bytes:
    """EICAR followed by 32 MiB of zeros, bzip2-compressed."""
    c = bz2.BZ2Compressor(9)
    data = c.compress(eicar()) + c.compress(bytes(32 * 1024 * 1024)) + c.flush()
    return _attachment(b"j", b"log.txt.bz2", b"application/x-bzip2", data)


def xz_bomb() -> bytes:
    """EICAR followed by 64 MiB of zeros, xz-compressed."""
    c = lzma.LZMACompressor(preset=0)
    data = c.compress(eicar()) + c.compress(bytes(64 * 1024 * 1024)) + c.flush()
    return _attachment(b"x", b"log.txt.xz", b"application/x-xz", data)


def zip_recursive() -> bytes:
    """A zipped EICAR nested 1000 zips deep: to the parser, as endless as a zip quine."""
    return _attachment(b"qz", b"r.zip", b"application/zip", quines.zip_recursive(eicar()))


def gzip_recursive() -> bytes:
    """EICAR gzipped 1000 times over: as endless as a gzip quine."""
    return _attachment(b"qg", b"r.gz", b"application/gzip", quines.gzip_recursive(eicar()))


def zip_quine() -> bytes:
    """A true zip quine (its one member is itself) and, beside it, a zipped EICAR: a quine can
    hold only itself, so the payload rides in a sibling attachment."""
    quine = _part(b"qq", b"r.zip", b"application/zip", quines.zip_quine())
    return _mixed(b"qq", quine, _zipped_eicar_part(b"qq"))


def gzip_quine() -> bytes:
    """A true gzip quine (it decompresses to itself) and, beside it, a zipped EICAR."""
    quine = _part(b"qq", b"r.gz", b"application/gzip", quines.gzip_quine())
    return _mixed(b"qq", quine, _zipped_eicar_part(b"qq"))


def uuencoded_bad_mode() -> bytes:
    """A uuencoded zipped EICAR whose begin line has a mode that is not octal (``9x9``) and
    whose last line is cut short: lenient readers still find the file. (Junk lines inside a
    block are the ``uuencode-broken-lines`` case.)"""
    lines = _uu_lines(zip_bytes({"eicar.com": eicar()}))
    lines[-1] = lines[-1][:-3]
    block = b"\r\n".join([b"begin 9x9 invoice.zip", *lines, b"`", b"end"])
    return _HEAD + b"Content-Type: text/plain\r\n\r\nsee below\r\n" + block + b"\r\n"


def seven_zip_encrypted() -> bytes:
    """``eicar.com`` in a password-protected 7z with encrypted headers (py7zr, AES): nothing
    inside can be scanned without the password, which travels in the body as phishing mail
    has it."""
    import py7zr  # only the 7z cases need it

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password="invoice2026", header_encryption=True) as z:
        z.writestr(eicar(), "eicar.com")
    return _mixed(
        b"e7",
        b"--e7\r\nContent-Type: text/plain\r\n\r\nThe password is invoice2026\r\n",
        _part(b"e7", b"invoice.7z", b"application/x-7z-compressed", buf.getvalue()),
    )


def _with_password_text(boundary: bytes, text: bytes, name: bytes, data: bytes) -> bytes:
    """A text part (``text``) and an encrypted archive attachment."""
    return _mixed(
        boundary,
        b"--" + boundary + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text,
        _part(boundary, name, b"application/zip", data),
    )


def zip_zipcrypto_password_in_body() -> bytes:
    """``eicar.com`` in a ZipCrypto (traditional PKWARE) zip, its password in the body."""
    data = zipcrypto_zip({"eicar.com": eicar()}, "x7!kQ")
    text = b"Hello,\r\nthe invoice is attached.\r\nPassword: x7!kQ\r\n"
    return _with_password_text(b"zc", text, b"invoice.zip", data)


def zip_aes_password_in_body() -> bytes:
    """``eicar.com`` in a WinZip AES-256 zip (pyzipper), its password in the body in German."""
    import pyzipper  # only the AES case needs it

    buf = io.BytesIO()
    with pyzipper.AESZipFile(
        buf, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as zf:
        zf.setpassword(b"Rechnung-2026")
        zf.writestr("eicar.com", eicar())
    text = b"Guten Tag,\r\ndas Kennwort lautet: Rechnung-2026\r\n"
    return _with_password_text(b"za", text, b"rechnung.zip", buf.getvalue())


def zip_wrong_password_in_body() -> bytes:
    """``eicar.com`` in a ZipCrypto zip whose body names a password that does not open it."""
    data = zipcrypto_zip({"eicar.com": eicar()}, "x7!kQ")
    text = b"Password: not-the-one\r\n"
    return _with_password_text(b"zw", text, b"invoice.zip", data)


def _deflated_eicar_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("eicar.com", date_time=(2020, 1, 1, 0, 0, 0)), eicar())
    return buf.getvalue()


def zip_unsupported_method() -> bytes:
    """A deflated ``eicar.com`` whose zip headers name method 9 (Deflate64, which 7-Zip and
    Windows read and Python's zipfile does not): the member is never decompressed here."""
    data = bytearray(_deflated_eicar_zip())
    # The method is a 2-byte field at offset 8 of a local header and 10 of a central one.
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = data.find(sig)
        data[i + at : i + at + 2] = (9).to_bytes(2, "little")
    return _attachment(b"u9", b"invoice.zip", b"application/zip", bytes(data))


def zip_without_directory() -> bytes:
    """A deflated ``eicar.com`` zip cut before its central directory: the local header and the
    data are whole, which ``unzip -FF`` and 7-Zip recover, but no reader that needs the
    directory opens it."""
    data = _deflated_eicar_zip()
    return _attachment(b"cd", b"invoice.zip", b"application/zip", data[: data.find(b"PK\x01\x02")])


CASES: dict[str, Callable[[], bytes]] = {
    "deep-nesting-1200": deep_nesting,
    "parts-10000": many_parts,
    "zip-bomb": zip_bomb,
    "gzip-bomb": gzip_bomb,
    "concatenated-gzip": _concatenated_gzip_message,
    "malformed-base64": malformed_base64,
    "malformed-qp": malformed_qp,
    "broken-boundary": broken_boundary,
    "unclosed-boundary": unclosed_boundary,
    "nul-8bit-headers": nul_and_8bit_headers,
    "rfc2231-filename": rfc2231_filename,
    "duplicate-content-type": duplicate_content_type,
    "zip-nested-too-deep": zip_nested_too_deep,
    "tar-bomb": tar_bomb,
    "7z-bomb": seven_zip_bomb,
    "uuencode": uuencoded,
    "uuencode-broken-lines": uuencoded_broken_lines,
    "uuencode-bad-mode": uuencoded_bad_mode,
    "tar-sparse-bomb": tar_sparse_bomb,
    "tar-huge-declared": tar_huge_declared,
    "7z-eicar": seven_zip,
    "bzip2-bomb": bzip2_bomb,
    "xz-bomb": xz_bomb,
    "zip-recursive-1000": zip_recursive,
    "gzip-recursive-1000": gzip_recursive,
    "zip-quine": zip_quine,
    "gzip-quine": gzip_quine,
    "7z-encrypted": seven_zip_encrypted,
    "zip-zipcrypto-password-in-body": zip_zipcrypto_password_in_body,
    "zip-aes-password-in-body": zip_aes_password_in_body,
    "zip-wrong-password-in-body": zip_wrong_password_in_body,
    "zip-unsupported-method": zip_unsupported_method,
    "zip-without-directory": zip_without_directory,
}
"""Case name -> builder of the raw message."""


def corpus() -> dict[str, bytes]:
    """Every case, built."""
    return {name: build() for name, build in CASES.items()}
