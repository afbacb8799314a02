"""Text at the edges of the deliverer: replies with bytes that are not UTF-8, SMTPUTF8 senders
and recipients, addresses with control characters. None of them may make an event, the dedupe
record or a DSN raise (the batch would re-run forever and deliver again each time)."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
from email import policy
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import schemas
from deliverer import smtp
from deliverer.dedupe import DeliveredLog
from deliverer.dsn import build_dsn
from deliverer.pool import Pool
from deliverer.service import Deliverer
from deliverer.smtp import RecipientResult
from deliverer.text import REPLY_LIMIT, safe_address, safe_reply
from mxgate.blobstore import FsBlobStore
from mxgate.settings import DelivererSettings
from mxgate.tenants import Tenants

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _is_safe_reply(text: str) -> bool:
    return all(ch == "\n" or (ch.isascii() and ch.isprintable()) for ch in text)


# What aiosmtplib hands over: the reply's bytes decoded with surrogateescape, lines joined by \n.
wire_replies = st.lists(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=4
).map(lambda lines: b"\n".join(lines).decode("utf-8", "surrogateescape"))


@given(wire_replies)
def test_safe_reply_is_printable_ascii_and_idempotent(text: str) -> None:
    out = safe_reply(text)
    assert _is_safe_reply(out)
    out.encode("ascii")  # never raises
    assert safe_reply(out) == out


@given(st.text(max_size=300))
def test_safe_reply_accepts_any_str(text: str) -> None:
    out = safe_reply(text)
    assert _is_safe_reply(out) and len(out) <= REPLY_LIMIT


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300))
def test_printable_ascii_replies_are_kept_as_they_are(text: str) -> None:
    assert safe_reply(text) == text


def test_undecodable_bytes_show_as_their_wire_bytes() -> None:
    wire = b"2.0.0 ok \xff\xfe queued\r\x00".decode("utf-8", "surrogateescape")
    assert safe_reply(wire) == "2.0.0 ok \\xff\\xfe queued\\x0d\\x00"
    assert safe_reply("ok \u00fc") == "ok \\xc3\\xbc"
    assert safe_reply("x" * 5000).endswith("[truncated]")
    assert len(safe_reply("x" * 5000)) == REPLY_LIMIT


@given(st.text(max_size=60))
def test_safe_address_always_encodes_and_keeps_printable_addresses(addr: str) -> None:
    out = safe_address(addr)
    out.encode("utf-8")
    assert out.isprintable()
    if addr.isprintable():
        assert out == addr


def test_safe_address_escapes_control_characters_and_undecodable_bytes() -> None:
    assert safe_address("jörg@example.test") == "jörg@example.test"
    assert safe_address("a@b.test\r\nBcc: x") == "a@b.test\\x0d\\x0aBcc: x"
    assert safe_address("a\udcff@b.test") == "a\\xff@b.test"


def test_recipient_results_are_safe_whoever_builds_them() -> None:
    r = RecipientResult("a\udcff@b.test", "delivered", 250, "2.0.0 ok \udcff\udcfe queued")
    assert r.reply == "2.0.0 ok \\xff\\xfe queued"
    assert r.recipient == "a\\xff@b.test"
    assert str(smtp.ConnectFailed("greeting: 220 hi \udcff")) == "greeting: 220 hi \\xff"


def test_delivery_event_with_a_garbage_reply_encodes() -> None:
    r = RecipientResult("bob@example.test", "delivered", 250, "ok \udcff")
    event = {
        "message_id": "01JTEXTEDGE000000000000000",
        "tenant": "example",
        "attempted_at": NOW,
        "attempt": 1,
        "remote_host": "127.0.0.1:25",
        "action": "deliver",
        "recipients": [
            {"recipient": r.recipient, "status": r.status, "reply_code": r.code, "reply": r.reply}
        ],
        "next_attempt_at": None,
    }
    _, back = schemas.decode(schemas.encode(schemas.DELIVERY_ATTEMPTED, event))
    assert back["recipients"][0]["reply"] == "ok \\xff"


def test_dedupe_record_takes_garbage_replies_and_addresses(tmp_path: Path) -> None:
    log = DeliveredLog(tmp_path / "delivered")
    try:
        log.mark("M1", "bob@example.test", "250 ok \udcff\udcfe")
        assert log.delivered("M1", "BOB@example.test")
        log.mark("M1", "a\udcff@b.test", "250 ok")
        # The escaped form (what the event carries, and a rebuild reads back) is the same key.
        assert log.delivered("M1", "a\udcff@b.test") and log.delivered("M1", "a\\xff@b.test")
        log.intend("M2", ["jörg@example.test", "c\udcff@d.test"])
        assert log.in_doubt("M2", "JÖRG@example.test") and log.in_doubt("M2", "c\udcff@d.test")
        log.settle("M2", ["jörg@example.test", "c\udcff@d.test"])
        assert not log.in_doubt("M2", "c\udcff@d.test")
    finally:
        log.close()


def _dsn(
    sender: str, rcpt: str, reply: str, original: bytes = b"Subject: q\r\n\r\nbody\r\n"
) -> tuple[bytes, email.message.EmailMessage]:
    raw = build_dsn(
        hostname="gw.test",
        message_id="01JDSNTEST0000000000000000",
        mail_from=sender,
        failed=[
            RecipientResult(rcpt, "bounced", 550, reply),
            RecipientResult("carol@example.test", "bounced", 550, "5.1.1 no such user"),
        ],
        remote="10.0.0.1:25",
        original=original,
        arrival=NOW,
        now=NOW,
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    return raw, email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def test_dsn_for_an_smtputf8_sender_uses_utf8_headers() -> None:
    raw, msg = _dsn("jörg@sender.test", "bob@example.test", "5.1.1 no such user")
    assert msg["To"] == "jörg@sender.test"
    assert "To: jörg@sender.test\r\n".encode() in raw


def test_dsn_for_an_smtputf8_recipient_is_a_global_delivery_status() -> None:
    _, msg = _dsn("alice@sender.test", "jörg@example.test", "5.1.1 gone \udcff")
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/global-delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_content()
    if isinstance(blocks, bytes):  # policy.default hands unknown message/* over as bytes
        blocks = blocks.decode("utf-8")
    assert "Final-Recipient: utf-8; jörg@example.test\n" in blocks.replace("\r\n", "\n")
    assert "Diagnostic-Code: smtp; 550 5.1.1 gone \\xff" in blocks
    assert "Final-Recipient: rfc822; carol@example.test" in blocks
    assert "Status: 5.1.1" in blocks


def test_dsn_of_mail_with_8bit_headers_returns_them_escaped() -> None:
    _, msg = _dsn("alice@sender.test", "bob@example.test", "no", b"Subject: \xff\xfe\r\n\r\nb")
    returned = list(msg.iter_parts())[2].get_payload()
    assert "Subject: \\xff\\xfe" in returned


def test_dsn_ascii_form_is_unchanged() -> None:
    raw, msg = _dsn("alice@sender.test", "bob@example.test", "5.1.1 no such user")
    assert list(msg.iter_parts())[1].get_content_type() == "message/delivery-status"
    assert raw.isascii()


async def _garbage_smtp_server(reply_to_data: bytes) -> tuple[asyncio.Server, int]:
    """A minimal SMTP peer on 127.0.0.1 that answers the end of DATA with ``reply_to_data``."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(reply_to_data + b"\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-peer.test hi \xff\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                in_data = True
                writer.write(b"354 go\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.1.0 ok \xc3\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_attempt_against_a_peer_replying_8bit_garbage_records_the_delivery(
    tmp_path: Path,
) -> None:
    server, port = await _garbage_smtp_server(b"250 2.0.0 ok \xff\xfe queued")
    settings = DelivererSettings(state_path=tmp_path / "state", mta_sts_enabled=False)
    tenants = Tenants.from_mapping(
        {
            "tenants": {
                "example": {
                    "domains": ["example.test"],
                    "route": {"host": "127.0.0.1", "port": port},
                }
            }
        }
    )
    store = FsBlobStore(tmp_path / "store")
    delivered = DeliveredLog(tmp_path / "delivered")
    d = Deliverer(settings, tenants, store, delivered, "t.", pool=Pool(settings))
    try:
        ref = await store.put(b"Subject: hi\r\nFrom: a@b.test\r\n\r\nhello\r\n")
        w = schemas.DeliveryRetry(
            message_id="01JTEXTEDGE000000000000000", tenant="example", action="deliver",
            reasons=(), mail_from="alice@sender.test", rcpt_to=("bob@example.test",),
            object_key=ref.key, received_at=NOW, client_ip="192.0.2.1", helo="client.test",
            attempt=1, due_at=NOW, first_attempt_at=NOW,
        )  # fmt: skip
        outputs = await d.attempt(w)
        (attempted,) = [o.event for o in outputs]
        assert isinstance(attempted, schemas.DeliveryAttempted)
        (r,) = attempted.recipients
        assert (r.status, r.reply_code) == ("delivered", 250)
        assert r.reply == "2.0.0 ok \\xff\\xfe queued"
        assert delivered.delivered(w.message_id, "bob@example.test")
    finally:
        await d.aclose()
        delivered.close()
        server.close()
        await server.wait_closed()
