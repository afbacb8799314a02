"""DSNs: RFC 3464 structure, status codes, and who never gets one."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

from deliverer.dsn import build_dsn, status_code, wants_dsn
from deliverer.smtp import RecipientResult
from schemas import WorkKind

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _dsn(failed: list[RecipientResult]) -> email.message.EmailMessage:
    raw = build_dsn(
        hostname="gw.test",
        message_id="01JDSNTEST0000000000000000",
        mail_from="alice@sender.test",
        failed=failed,
        remote="10.0.0.1:25",
        original=b"Subject: quarterly\r\nFrom: alice@sender.test\r\n\r\nsecret body\r\n",
        arrival=NOW,
        now=NOW,
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def test_dsn_is_a_multipart_report_with_delivery_status_per_recipient() -> None:
    msg = _dsn(
        [
            RecipientResult("bob@example.test", "bounced", 550, "5.1.1 no such user"),
            RecipientResult("carol@example.test", "expired", 451, "4.2.0 mailbox busy"),
        ]
    )
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "alice@sender.test"
    assert msg["Auto-Submitted"] == "auto-replied"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    per_message, *per_rcpt = parts[1].get_payload()
    assert per_message["Reporting-MTA"] == "dns; gw.test"
    assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in per_rcpt] == [
        ("rfc822; bob@example.test", "failed", "5.1.1"),
        ("rfc822; carol@example.test", "failed", "4.2.0"),
    ]
    assert per_rcpt[0]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert per_rcpt[0]["Remote-MTA"] == "dns; 10.0.0.1"
    # The original's headers come back, its body never does.
    returned = parts[2].get_payload()
    assert "Subject: quarterly" in returned
    assert b"secret body" not in msg.as_bytes()


def test_status_codes() -> None:
    assert status_code(RecipientResult("a@b", "bounced", 550, "rejected")) == "5.0.0"
    assert status_code(RecipientResult("a@b", "bounced", 554, "5.7.1 spam")) == "5.7.1"
    assert status_code(RecipientResult("a@b", "expired", 0, "connect refused")) == "4.4.7"
    assert status_code(RecipientResult("a@b", "expired", 452, "4.2.2 full")) == "4.2.2"


def test_no_dsn_to_the_null_sender_nor_for_spam_or_virus_verdicts() -> None:
    decision = WorkKind.DECISION
    assert wants_dsn(decision, "deliver", "alice@sender.test")
    assert wants_dsn(WorkKind.RELEASE, "release", "<alice@sender.test>")
    assert not wants_dsn(decision, "deliver", "")
    assert not wants_dsn(decision, "deliver", "<>")
    assert not wants_dsn(decision, "tag", "alice@sender.test")  # spam: likely forged sender
    assert not wants_dsn(decision, "quarantine", "alice@sender.test")
    assert not wants_dsn(decision, "discard", "alice@sender.test")
    assert not wants_dsn(WorkKind.DSN, "dsn", "alice@sender.test")  # never a DSN about a DSN
    assert not wants_dsn(WorkKind.DIGEST, "digest", "alice@sender.test")
