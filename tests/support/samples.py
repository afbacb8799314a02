"""Builders for test messages, as the raw bytes an SMTP client would send (RFC 5322, CRLF).

Every builder is deterministic (fixed Date and Message-ID unless given), so the same call gives
the same bytes, and takes ``sender`` / ``recipient``. The EICAR and GTUBE test strings are
assembled at run time with ``str.join`` (which the compiler does not fold into a constant), so
neither this file nor its bytecode carries them and trips a scanner on the developer's machine.
"""

from __future__ import annotations

import functools
import io
import zipfile
import zlib
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime

__all__ = [
    "DEFAULT_RECIPIENT",
    "DEFAULT_SENDER",
    "clean_message",
    "eicar",
    "eicar_base64_as_image",
    "eicar_plain",
    "eicar_qp",
    "eicar_zip",
    "eicar_zip_in_zip",
    "gtube",
    "gtube_message",
    "malformed_mime",
    "zip_bomb",
    "zip_bytes",
]

DEFAULT_SENDER = "alice@sender.test"
"""Envelope/From address used when none is given."""
DEFAULT_RECIPIENT = "bob@example.test"
"""Envelope/To address used when none is given."""

_DATE = format_datetime(datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC))
_SMTP = email_policy.SMTP  # CRLF line endings, as on the wire
_ZIP_DATE = (2026, 11, 28, 12, 0, 0)


def eicar() -> bytes:
    """The 68-byte EICAR anti-virus test string."""
    return "".join(
        ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-TEST-FILE!$H+H*"]
    ).encode("ascii")


def gtube() -> bytes:
    """The SpamAssassin GTUBE test string."""
    return "".join(
        ["XJS*C4JDBQADN1.NSBN3*2IDNEN*", "GTUBE-STANDARD-", "ANTI-UBE-TEST-EMAIL*C.34X"]
    ).encode("ascii")


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive (deflated) holding ``members``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            # A fixed timestamp: the same members give the same bytes.
            zf.writestr(
                zipfile.ZipInfo(name, date_time=_ZIP_DATE), data, compress_type=zipfile.ZIP_DEFLATED
            )
    return buf.getvalue()


def _message(
    subject: str, *, kind: str, sender: str, recipient: str, message_id: str | None
) -> EmailMessage:
    msg = EmailMessage(policy=_SMTP)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = _DATE
    msg["Message-ID"] = message_id or f"<{kind}@samples.mxgate.test>"
    return msg


def _bytes(msg: EmailMessage) -> bytes:
    if msg.is_multipart():
        # The stdlib picks a random boundary; a fixed one keeps the builders deterministic.
        msg.set_boundary("=_mxgate-sample-boundary_=")
    return msg.as_bytes()


def clean_message(
    i: int = 0,
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """An ordinary message, different for every ``i`` (text body plus a small text attachment)."""
    msg = _message(
        f"Status report #{i}",
        kind=f"clean.{i}",
        sender=sender,
        recipient=recipient,
        message_id=message_id,
    )
    msg.set_content(
        f"Hello Bob,\n\nhere is status report number {i}. Nothing unusual this week;\n"
        "the numbers are in the attached file.\n\nRegards,\nAlice\n"
    )
    msg.add_attachment(
        f"week,items\n{i},{i * 7}\n".encode(),
        maintype="text",
        subtype="csv",
        filename=f"report-{i}.csv",
    )
    return _bytes(msg)


def eicar_plain(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """EICAR as the whole text/plain body, 7bit."""
    msg = _message(
        "plain test", kind="eicar-plain", sender=sender, recipient=recipient, message_id=message_id
    )
    msg.set_content(eicar().decode("ascii") + "\n", cte="7bit")
    return _bytes(msg)


def eicar_base64_as_image(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """EICAR, base64-encoded, disguised as ``holiday.jpg`` with Content-Type image/jpeg."""
    msg = _message(
        "holiday pictures",
        kind="eicar-image",
        sender=sender,
        recipient=recipient,
        message_id=message_id,
    )
    msg.set_content("Pictures from the holiday attached.\n")
    msg.add_attachment(eicar(), maintype="image", subtype="jpeg", filename="holiday.jpg")
    return _bytes(msg)


def eicar_zip(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """A zip holding ``eicar.com``, attached as ``report.pdf`` (application/pdf)."""
    msg = _message(
        "quarterly report",
        kind="eicar-zip",
        sender=sender,
        recipient=recipient,
        message_id=message_id,
    )
    msg.set_content("The report is attached.\n")
    msg.add_attachment(
        zip_bytes({"eicar.com": eicar()}),
        maintype="application",
        subtype="pdf",
        filename="report.pdf",
    )
    return _bytes(msg)


def eicar_zip_in_zip(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """``documents.zip`` holding ``inner.zip`` holding ``eicar.com``."""
    msg = _message(
        "documents",
        kind="eicar-zip-in-zip",
        sender=sender,
        recipient=recipient,
        message_id=message_id,
    )
    msg.set_content("All documents attached.\n")
    inner = zip_bytes({"eicar.com": eicar()})
    outer = zip_bytes({"readme.txt": b"see inner.zip\n", "inner.zip": inner})
    msg.add_attachment(outer, maintype="application", subtype="zip", filename="documents.zip")
    return _bytes(msg)


def eicar_qp(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """EICAR as a quoted-printable text part, every non-alphanumeric byte escaped and the line
    broken with a soft line break, so only a decoder sees the test string."""
    msg = _message(
        "qp test", kind="eicar-qp", sender=sender, recipient=recipient, message_id=message_id
    )
    encoded = "".join(chr(b) if chr(b).isalnum() else f"={b:02X}" for b in eicar())
    body = encoded[:40] + "=\r\n" + encoded[40:] + "\r\n"
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "text/plain; charset=us-ascii"
    msg["Content-Transfer-Encoding"] = "quoted-printable"
    msg.set_payload(body)
    return _bytes(msg)


def gtube_message(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """A text message carrying GTUBE in its body."""
    msg = _message(
        "Cheap offer just for you",
        kind="gtube",
        sender=sender,
        recipient=recipient,
        message_id=message_id,
    )
    msg.set_content(
        "This is the GTUBE, the Generic Test for Unsolicited Bulk Email.\n\n"
        + gtube().decode("ascii")
        + "\n\nIf your filter works, this message is spam.\n"
    )
    return _bytes(msg)


@functools.cache
def _bomb_zip(expanded: int) -> bytes:
    # Stream zeros through the compressor in 1 MiB chunks: the expanded data never exists in
    # memory, and deflate turns 64 MiB of zeros into about 64 KiB.
    buf = io.BytesIO()
    with zipfile.ZipFile(
        buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=zlib.Z_BEST_COMPRESSION
    ) as zf:
        info = zipfile.ZipInfo("payload.bin", date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        chunk = bytes(1024 * 1024)
        with zf.open(info, "w", force_zip64=True) as w:
            for _ in range(expanded // len(chunk)):
                w.write(chunk)
    return buf.getvalue()


def zip_bomb(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
    expanded_mib: int = 64,
) -> bytes:
    """A zip whose one member expands to ``expanded_mib`` MiB of zeros (~1000:1), attached as
    ``invoice.zip``; under 100 KiB on the wire."""
    msg = _message(
        "invoice", kind="zip-bomb", sender=sender, recipient=recipient, message_id=message_id
    )
    msg.set_content("Invoice attached.\n")
    msg.add_attachment(
        _bomb_zip(expanded_mib * 1024 * 1024),
        maintype="application",
        subtype="zip",
        filename="invoice.zip",
    )
    return _bytes(msg)


def malformed_mime(
    *,
    sender: str = DEFAULT_SENDER,
    recipient: str = DEFAULT_RECIPIENT,
    message_id: str | None = None,
) -> bytes:
    """A clean but broken message: raw 8-bit and unparsable headers, a boundary that never
    closes, a part with invalid base64, a multipart without a boundary and a bogus encoding."""
    mid = message_id or "<malformed@samples.mxgate.test>"
    lines = [
        f"From: {sender}",
        f"To: {recipient}",
        "Subject: broken =?utf-8?q?=E2=82?= caf\xe9 =?bogus?x?zz?=",
        f"Date: {_DATE}",
        f"Message-ID: {mid}",
        "Message-ID: <<<@@>>>",
        "Content-Disposition: attachment; filename*=x''%ZZ",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="outer"; boundary="again"',
        "X-Folded: first line",
        "\tcontinues here",
        "Broken header line without a colon",
        "",
        "preamble",
        "--outer",
        "Content-Type: text/plain; charset=no-such-charset",
        "Content-Transfer-Encoding: base64",
        "",
        "SGVsbG8g!!d29ybGQ*=bad",
        "--outer",
        "Content-Type: multipart/alternative",
        "",
        "a nested multipart that declares no boundary",
        "--outer",
        'Content-Type: application/octet-stream; name="x\x00y.bin"',
        "Content-Transfer-Encoding: x-made-up",
        "",
        "opaque bytes \xff\xfe",
        "--outer",
        "Content-Type: text/html",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "<p>cut off =ZZ =4",
        # no closing --outer--
    ]
    return "\r\n".join(lines).encode("latin-1")


def with_attachments(*attachments: tuple[str, bytes, str]) -> bytes:
    """A short message carrying ``(filename, data, content type)`` attachments."""
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@x.test", "b@example.test", "files"
    m.set_content("see attached")
    for name, data, ctype in attachments:
        main, sub = ctype.split("/")
        m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes()
