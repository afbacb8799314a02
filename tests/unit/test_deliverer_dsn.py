"""DSNs: RFC 3464 structure, status codes, and who never gets one."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

from deliverer.dsn import (
    bounce_allowed,
    build_dsn,
    sender_authentication,
    status_code,
    wants_dsn,
)
from deliverer.smtp import RecipientResult
from mxgate.tenants import RecipientCheck, Route, Tenant
from schemas import EngineVerdict, WorkKind

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


# -- no backscatter: a DSN only to a verified recipient's or an authenticated sender --------


def _auth(engine: str, **detail: str) -> EngineVerdict:
    return EngineVerdict(
        engine=engine, kind="auth", engine_version="1", rules_version="r", outcome="clean",
        symbols=(), detail=detail,
    )  # fmt: skip


def test_the_sender_is_authenticated_by_spf_pass_or_an_aligned_dkim_signature() -> None:
    sender = "alice@sender.test"
    spf_pass = _auth("spf", result="pass", domain="sender.test", **{"smtp.mailfrom": "sender.test"})
    assert sender_authentication([spf_pass], sender) == "spf"
    assert sender_authentication([_auth("spf", result="pass", domain="sender.test")], sender)
    assert (
        sender_authentication([_auth("spf", result="softfail", domain="sender.test")], sender) == ""
    )
    # SPF passing for another domain (a HELO name, a forwarder) says nothing about this sender.
    assert sender_authentication([_auth("spf", result="pass", domain="relay.test")], sender) == ""
    dkim = _auth("dkim", result="pass", **{"mail.sender.test/k": "pass", "evil.test/k": "pass"})
    assert sender_authentication([dkim], sender) == "dkim"
    assert sender_authentication([dkim], "bob@mail.sender.test") == "dkim"  # relaxed alignment
    unaligned = _auth("dkim", result="pass", **{"evil.test/k": "pass", "sender.test/k": "fail bh"})
    assert sender_authentication([unaligned], sender) == ""
    tld = _auth("dkim", result="pass", **{"test/k": "pass"})
    assert sender_authentication([tld], sender) == ""
    shadow = EngineVerdict(
        engine="spf", kind="auth", engine_version="1", rules_version="r", outcome="clean",
        symbols=(), detail={"result": "pass", "domain": "sender.test"}, shadow=True,
    )  # fmt: skip
    assert sender_authentication([shadow], sender) == ""  # shadow verdicts never decide
    assert sender_authentication([spf_pass], "") == ""


def _tenant(recipients: RecipientCheck | None) -> Tenant:
    """A tenant with that ``recipients`` table (None: without one, the default)."""
    table = {} if recipients is None else {"recipients": recipients}
    return Tenant(name="t", domains=("example.test",), route=Route(host="h"), **table)


def test_a_bounce_is_reported_only_for_a_verified_recipient_or_an_authenticated_sender() -> None:
    listed = _tenant(RecipientCheck(mode="static", addresses=("known@example.test", "@catch.test")))
    assert bounce_allowed("", listed, "Known@example.test")
    assert not bounce_allowed("", listed, "someone@catch.test")  # a catch-all verified nothing
    opted_out = _tenant(RecipientCheck(mode="none"))  # unknown users accepted at RCPT
    assert not bounce_allowed("", opted_out, "known@example.test")
    assert bounce_allowed("spf", opted_out, "known@example.test")
    assert bounce_allowed("", _tenant(RecipientCheck(mode="callout")), "x@example.test")
    assert bounce_allowed("", _tenant(None), "x@example.test")  # no table: callout, verified
    lenient = RecipientCheck(mode="callout", on_error="accept")  # may accept unverified
    assert not bounce_allowed("", _tenant(lenient), "x@example.test")
    assert not bounce_allowed("", None, "x@example.test")
