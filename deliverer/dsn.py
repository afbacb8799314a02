"""Delivery Status Notifications (RFC 3464) for bounced and expired recipients.

Built with the stdlib ``email`` package: a ``multipart/report; report-type=delivery-status``
with a human-readable part, the ``message/delivery-status`` fields (one per-message block, one
block per failed recipient) and the original message's header block (``text/rfc822-headers``,
never the body: the body may be what got it rejected). The DSN is sent from the null sender,
so it can never cause another DSN.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid

from deliverer.smtp import RecipientResult
from deliverer.text import safe_address, safe_reply
from mxgate.tenants import Tenant
from schemas import EngineVerdict, WorkKind

# Stands in for the UTF-8 delivery-status blocks while the generator runs (see build_dsn).
_PLACEHOLDER = "x-mxgate-global-delivery-status-placeholder"
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def sender_authentication(verdicts: Sequence[EngineVerdict], mail_from: str) -> str:
    """How the envelope sender was authenticated by the scan: ``"spf"`` (SPF passed for MAIL
    FROM's domain), ``"dkim"`` (a DKIM signature of that domain, or of a parent or child of it,
    verified), or ``""`` (neither, or no auth engine ran). A DSN goes only to an authenticated
    sender unless the recipient was verified at RCPT time (:func:`bounce_allowed`)."""
    domain = mail_from.strip().strip("<>").rpartition("@")[2].lower().rstrip(".")
    if not domain:
        return ""
    for v in verdicts:
        if v.shadow:
            continue
        if v.engine == "spf" and v.detail.get("result") == "pass":
            # Older verdicts name only the checked domain: for a sender with a domain, it is
            # MAIL FROM's (RFC 7208 section 2.4).
            checked = v.detail.get("smtp.mailfrom") or v.detail.get("domain", "")
            if checked.lower().rstrip(".") == domain:
                return "spf"
    for v in verdicts:
        if v.shadow or v.engine != "dkim":
            continue
        for key, value in v.detail.items():
            signer, slash, _selector = key.partition("/")
            if slash and value.split(" ", 1)[0] == "pass" and _aligned(signer.lower(), domain):
                return "dkim"
    return ""


def _aligned(signer: str, domain: str) -> bool:
    # Relaxed alignment without a public-suffix list: the same domain, or one a subdomain of
    # the other with at least two labels on the shorter side (a key under a bare TLD or a
    # public suffix cannot be published by an attacker anyway).
    signer = signer.rstrip(".")
    if not signer or "." not in signer:
        return False
    return signer == domain or domain.endswith("." + signer) or signer.endswith("." + domain)


def recipient_verified(tenant: Tenant | None, recipient: str) -> bool:
    """True when the receiver verified ``recipient`` exists before it answered RCPT: a static
    list naming the address itself (a ``@domain`` entry is a catch-all, no check), or a
    callout (the default) that answers 451 when it cannot ask (``on_error="tempfail"``); never
    for a tenant that opted out (``mode = "none"``). Judged on the tenant's configuration as
    it is now."""
    check = tenant.recipients if tenant is not None else None
    if check is None or check.mode == "none":
        return False
    if check.mode == "static":
        return recipient.strip().strip("<>").lower() in check.addresses
    return check.on_error == "tempfail"


def bounce_allowed(sender_auth: str, tenant: Tenant | None, recipient: str) -> bool:
    """Whether a DSN about ``recipient`` may go to the envelope sender (no backscatter, owner's
    rule 7): only when the recipient was verified at RCPT time or the sender authenticated."""
    return bool(sender_auth) or recipient_verified(tenant, recipient)


def wants_dsn(kind: WorkKind, action: str, mail_from: str) -> bool:
    """True when a failure of this work item should be reported to its envelope sender.

    Only for mail decided ``deliver`` and for quarantine releases. Never for a spam (tag) or
    virus verdict: the sender of such mail is usually forged, and a DSN would be backscatter;
    never for mail the gateway wrote itself (DSNs, digests, from the null sender anyway).
    """
    sender = mail_from.strip().strip("<>")
    wanted = kind is WorkKind.RELEASE or (kind is WorkKind.DECISION and action == "deliver")
    return wanted and "@" in sender


def status_code(result: RecipientResult) -> str:
    """The RFC 3463 status for a failed recipient: the server's enhanced code when it gave
    one, 4.4.7 for an expiry, otherwise 5.0.0."""
    m = _ENHANCED.search(result.reply)
    if result.status == "expired":
        return f"4.{m.group(2)}.{m.group(3)}" if m and m.group(1) == "4" else "4.4.7"
    if m and m.group(1) == "5":
        return m.group(0)
    return "5.0.0"


def build_dsn(
    *,
    hostname: str,
    message_id: str,
    mail_from: str,
    failed: Sequence[RecipientResult],
    remote: str,
    original: bytes,
    arrival: dt.datetime,
    now: dt.datetime,
) -> bytes:
    """The DSN for ``failed`` recipients of one message, as CRLF bytes ready to send.

    An SMTPUTF8 sender or recipient (``jörg@…``) gets an RFC 6533 DSN: UTF-8 header fields,
    ``utf-8`` address types and ``message/global-delivery-status``; ASCII mail the classic form.
    """
    mail_from = safe_address(mail_from)
    utf8 = not (mail_from + "".join(r.recipient for r in failed)).isascii()
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    report["To"] = mail_from
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid("dsn", domain=hostname)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-reply to this
    lines = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to the following recipients:",
        "",
    ]
    for r in failed:
        why = "gave up after retrying" if r.status == "expired" else "rejected"
        lines.append(f"  <{r.recipient}>: {why}: {r.code or ''} {r.reply}".rstrip())
    lines += ["", f"Message reference: {message_id}"]
    report.attach(MIMEText("\n".join(lines) + "\n", "plain", "utf-8"))

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {hostname}"
    per_message["X-MXGate-Queue-ID"] = message_id
    per_message["Arrival-Date"] = format_datetime(arrival)
    blocks = [per_message]
    remote_host = remote.rsplit(":", 1)[0] if remote and remote != "-" else ""
    for r in failed:
        b = Message()
        addr_type = "rfc822" if r.recipient.isascii() else "utf-8"
        b["Final-Recipient"] = f"{addr_type}; {r.recipient}"
        b["Action"] = "failed"
        b["Status"] = status_code(r)
        if remote_host:
            b["Remote-MTA"] = f"dns; {remote_host}"
        if r.code:
            b["Diagnostic-Code"] = f"smtp; {r.code} {_oneline(r.reply)}"
        else:
            b["Diagnostic-Code"] = f"x-mxgate; {_oneline(r.reply)}"
        b["Last-Attempt-Date"] = format_datetime(now)
        blocks.append(b)
    status = Message()
    global_status = b""
    if utf8:
        status["Content-Type"] = "message/global-delivery-status"
        status["Content-Transfer-Encoding"] = "8bit"
        # The generator renders only message/delivery-status as a list of blocks and writes
        # any other message/* payload as strict ASCII: a placeholder, replaced after.
        global_status = b"".join(b.as_bytes(policy=SMTPUTF8) for b in blocks)
        status.set_payload(_PLACEHOLDER)
    else:
        status["Content-Type"] = "message/delivery-status"
        payload: list[Message | str] = [*blocks]  # set_payload's list type is invariant
        status.set_payload(payload)
    report.attach(status)

    headers = Message()
    headers["Content-Type"] = "text/rfc822-headers"
    head = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    # 8-bit bytes in the original's headers come back as \xNN: the part stays ASCII.
    headers.set_payload(head.decode("ascii", "backslashreplace").replace("\r\n", "\n") + "\n")
    report.attach(headers)
    if not utf8:
        return report.as_bytes(policy=SMTP)
    raw = report.as_bytes(policy=SMTPUTF8)
    return raw.replace(_PLACEHOLDER.encode("ascii") + b"\r\n", global_status, 1)


def _oneline(text: str) -> str:
    # safe_reply again: a result built elsewhere is already safe; this keeps the header ASCII.
    return " ".join(safe_reply(text).split())[:500]
