"""One SMTP transaction to a customer's server, with each recipient's outcome classified."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

Status = Literal["delivered", "deferred", "bounced", "expired"]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """Outcome of one recipient in one attempt."""

    recipient: str
    status: Status
    code: int
    reply: str


def classify(code: int) -> Status:
    """2xx delivered, 5xx bounced, everything else (4xx, no answer) deferred."""
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "bounced"
    return "deferred"


async def send(
    host: str,
    port: int,
    mail_from: str,
    recipients: Sequence[str],
    data: bytes,
    *,
    helo: str,
    connect_timeout: float,
    command_timeout: float,
) -> list[RecipientResult]:
    """Deliver ``data`` to ``recipients`` in one transaction; never raises for SMTP trouble."""
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        local_hostname=helo,
        timeout=command_timeout,
        use_tls=False,
        start_tls=False,
    )

    def everyone(code: int, reply: str) -> list[RecipientResult]:
        return [RecipientResult(r, classify(code), code, reply) for r in recipients]

    try:
        await client.connect(timeout=connect_timeout)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        return everyone(0, f"connect to {host}:{port} failed: {e}")
    try:
        try:
            refused, reply_text = await client.sendmail(mail_from, list(recipients), data)
        except aiosmtplib.SMTPRecipientsRefused as e:
            return [
                RecipientResult(r.recipient, classify(r.code), r.code, r.message)
                for r in e.recipients
            ]
        except aiosmtplib.SMTPResponseException as e:
            return everyone(e.code, e.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            # Connection lost or timed out mid-transaction: the remote never said 250 for
            # the data, so a retry is safe.
            return everyone(0, f"{type(e).__name__}: {e}")
        out = []
        for r in recipients:
            if r in refused:
                code, msg = refused[r]
                out.append(RecipientResult(r, classify(code), code, msg))
            else:
                out.append(RecipientResult(r, "delivered", 250, reply_text))
        return out
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
