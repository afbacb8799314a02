"""SMTP client side (aiosmtplib): opening a connection under a TLS policy and running one
mail transaction on it, with each recipient's outcome classified."""

from __future__ import annotations

import ssl
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from deliverer.text import safe_address, safe_reply

OUT_OF_STEP = "replies out of step with commands"

Status = Literal["delivered", "deferred", "bounced", "expired"]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """Outcome of one recipient in one attempt. ``recipient`` and ``reply`` are made safe on
    construction (see :mod:`deliverer.text`): every reply, whichever path built it (a server's
    reply, an exception's text), can go into an event, the dedupe record and a DSN."""

    recipient: str
    status: Status
    code: int
    reply: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", safe_address(self.recipient))
        object.__setattr__(self, "reply", safe_reply(self.reply))


def classify(code: int) -> Status:
    """2xx delivered, 5xx bounced, everything else (4xx, no answer) deferred."""
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "bounced"
    return "deferred"


class ConnectFailed(Exception):
    """No usable session with this host (refused, timed out, greeting not 2xx, TLS policy not
    met). Nothing was sent, so the next host of the route may be tried."""

    def __init__(self, message: str) -> None:
        # The text may quote the server's greeting or EHLO reply; it is logged and recorded.
        super().__init__(safe_reply(message))


def tls_context(policy: str, ca_file: str | None) -> ssl.SSLContext:
    """The client context for a route's TLS policy.

    ``opportunistic`` and ``required`` encrypt without authenticating the server (RFC 7435:
    an unverified channel still beats clear text, and most MX certificates would fail
    verification); ``verified`` checks the chain and the host name.
    """
    if policy == "verified":
        return ssl.create_default_context(cafile=ca_file)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_session(
    host: str,
    port: int,
    *,
    helo: str,
    tls: str,
    tls_ca_file: str | None,
    connect_timeout: float,
    command_timeout: float,
) -> aiosmtplib.SMTP:
    """Connect, EHLO and STARTTLS as the policy asks; raises :class:`ConnectFailed`."""

    async def connect() -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=helo,
            timeout=command_timeout,
            use_tls=False,
            start_tls=False,
        )
        try:
            await client.connect(timeout=connect_timeout)
            await client.ehlo()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            client.close()
            raise ConnectFailed(f"connect to {host}:{port} failed: {e}") from e
        _watch(client)
        return client

    client = await connect()
    if not client.supports_extension("starttls"):
        if tls == "opportunistic":
            return client
        client.close()
        raise ConnectFailed(f"{host}:{port} does not offer STARTTLS; route requires TLS ({tls})")
    try:
        await client.starttls(
            server_hostname=host,
            tls_context=tls_context(tls, tls_ca_file),
            timeout=command_timeout,
        )
        await client.ehlo()
    except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as e:
        client.close()
        if tls != "opportunistic":
            raise ConnectFailed(f"{host}:{port} STARTTLS failed ({tls}): {e}") from e
        # Opportunistic: a failed handshake falls back to clear text on a new connection.
        client = await connect()
    return client


async def transaction(
    client: aiosmtplib.SMTP,
    mail_from: str,
    recipients: Sequence[str],
    data: bytes,
    before_data: Callable[[list[str]], None] | None = None,
) -> list[RecipientResult]:
    """One MAIL/RCPT/DATA transaction on an open session.

    Raises ``aiosmtplib.SMTPServerDisconnected`` only when the session was lost before MAIL was
    answered (nothing sent: safe to redo on a new connection); every later problem becomes a
    per-recipient result. A lost connection or timeout after DATA is a deferral: the remote may
    or may not have the message (RFC 1047); retrying risks a duplicate, giving up risks a loss.
    ``before_data(accepted)`` runs just before the message is sent (the caller notes the intent).
    """

    def everyone(rcpts: Sequence[str], code: int, reply: str) -> list[RecipientResult]:
        return [RecipientResult(r, classify(code), code, reply) for r in rcpts]

    # The null sender arrives as "<>" from the receiver; aiosmtplib wants "" (it adds <>).
    mail_from = mail_from.strip()
    if mail_from.startswith("<") and mail_from.endswith(">"):
        mail_from = mail_from[1:-1]
    smtputf8 = not (mail_from + "".join(recipients)).isascii()
    options = []
    if client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if smtputf8 and client.supports_extension("smtputf8"):
        options.append("SMTPUTF8")
    encoding = "utf-8" if smtputf8 else "ascii"
    try:
        await client.mail(mail_from, options=options, encoding=encoding)
    except aiosmtplib.SMTPServerDisconnected:
        raise
    except aiosmtplib.SMTPResponseException as e:
        await _rset(client)
        return everyone(recipients, e.code, e.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        client.close()
        return everyone(recipients, 0, f"{type(e).__name__}: {e}")
    out: dict[str, RecipientResult] = {}
    accepted: list[str] = []
    try:
        for r in recipients:
            try:
                await client.rcpt(r, encoding=encoding)
                accepted.append(r)
            except aiosmtplib.SMTPResponseException as e:
                out[r] = RecipientResult(r, classify(e.code), e.code, e.message)
        if not accepted:
            await _rset(client)
            return [out[r] for r in recipients]
        if not reusable(client):
            # A reply came that no command asked for (a late second 250 of the last
            # transaction): the replies above may belong to other commands. Nothing is sent
            # yet, so deferring is safe; the session is dropped.
            client.close()
            return everyone(recipients, 0, f"{OUT_OF_STEP} (unsolicited reply); nothing sent")
        if before_data is not None:
            before_data(accepted)
        proto = client.protocol  # kept: aiosmtplib drops it once the connection is lost
        try:
            resp = await client.data(data)
        except aiosmtplib.SMTPServerDisconnected:
            # A peer that closed in the middle of a 2xx reply line ("250 2.0.0 qu") has taken
            # the message: count it delivered, like any 250, rather than a deferral whose retry
            # would bring a second copy. (A cut 2xx to the DATA command itself, before the
            # message, would be misread the same way; no server answers DATA with 2xx.)
            code, text = _cut_reply(proto)
            if not 200 <= code < 300:
                raise
            for r in accepted:
                out[r] = RecipientResult(r, "delivered", code, f"{text} [reply cut: peer closed]")
        except aiosmtplib.SMTPResponseException as e:
            if isinstance(e, aiosmtplib.SMTPDataError) and e.code == 250:
                # aiosmtplib raises on a 250 only when it answers the DATA command in place of
                # 354: a stale reply, and the message was not sent. Never "delivered".
                client.close()
                reply = f"{OUT_OF_STEP} (250 to DATA); not sent: {safe_reply(e.message)}"
                for r in accepted:
                    out[r] = RecipientResult(r, "deferred", 0, reply)
                return [out[r] for r in recipients]
            for r in accepted:
                out[r] = RecipientResult(r, classify(e.code), e.code, e.message)
        else:
            for r in accepted:
                out[r] = RecipientResult(r, "delivered", resp.code, resp.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        client.close()
        for r in recipients:
            if r not in out:
                out[r] = RecipientResult(r, "deferred", 0, f"{type(e).__name__}: {e}")
    return [out[r] for r in recipients]


def _unread(proto: SMTPProtocol | None) -> bytes:
    """What ``proto`` has read from the peer and no reply has consumed yet.

    aiosmtplib (pinned in pyproject.toml) has no public way to see it: this is the one place
    that reaches its private ``_buffer``, and tests/unit/test_deliverer_pool.py fails if an
    upgrade moves it."""
    return bytes(proto._buffer) if proto is not None else b""


def _cut_reply(proto: SMTPProtocol | None) -> tuple[int, str]:
    """The code and text of the unfinished reply line left in ``proto``'s buffer
    (0 when there is no three-digit code)."""
    partial = _unread(proto)
    if len(partial) < 3 or not partial[:3].isdigit() or partial[3:4] not in (b"", b" "):
        return 0, ""
    return int(partial[:3]), partial[4:].strip().decode("utf-8", "surrogateescape")


# Protocols that got bytes no command asked for (a late second 250). aiosmtplib drops them when
# no reply is pending, and takes them as the next command's reply when one is: either way the
# peer's dialogue is no longer ours, and the session must not carry another transaction.
_desynced: weakref.WeakSet[SMTPProtocol] = weakref.WeakSet()


def _watch(client: aiosmtplib.SMTP) -> None:
    """Note unsolicited bytes on ``client``'s connection (see :func:`reusable`). Wraps
    aiosmtplib's ``data_received``, whose own check (private state, as in :func:`_unread`)
    decides what it drops."""
    proto = client.protocol
    if proto is None:
        return
    received = proto.data_received

    def data_received(data: bytes) -> None:
        waiter = proto._response_waiter
        if data and (not proto._response_pending or waiter is None or waiter.done()):
            _desynced.add(proto)
        received(data)

    proto.data_received = data_received  # type: ignore[method-assign]


def reusable(client: aiosmtplib.SMTP) -> bool:
    """True when the session may go back to the pool: still connected, and nothing read but
    not yet consumed. A peer that answered twice in one write ("250 ok\\r\\n250 again") leaves
    the second line in aiosmtplib's buffer, where it would be taken as the reply to the next
    MAIL and shift every later reply by one (a DATA refused with RCPT's 250 reads as
    delivered: a message never sent)."""
    proto = client.protocol
    return (
        client.is_connected and proto is not None and proto not in _desynced and not _unread(proto)
    )


async def _rset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


async def close_session(client: aiosmtplib.SMTP) -> None:
    """QUIT politely; drop the connection when the peer is already gone."""
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()
