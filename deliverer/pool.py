"""Connection reuse and a concurrency cap per destination.

Each destination (host, port, TLS policy) has its own semaphore and its own idle connections,
so a slow or stalled customer server uses up only its own slots; other destinations are never
queued behind it. Idle sessions are reused for the next transaction (saving the TCP, banner,
EHLO and STARTTLS round trips) and closed after ``idle_timeout`` seconds.

Destinations under an MTA-STS policy (:mod:`deliverer.mta_sts`): in ``enforce`` mode the
route already asks for verified TLS, and a failure is reported and raised as
:class:`smtp.ConnectFailed` (the recipient is deferred, never sent in clear); in ``testing``
mode a verified session is tried first, and when only the certificate or STARTTLS fails the
finding is reported and the route's own TLS policy delivers as usual.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiosmtplib

from deliverer import mta_sts, smtp
from deliverer.routes import Destination
from mxgate.settings import DelivererSettings


@dataclass(slots=True)
class _Slot:
    """One destination's connection cap and idle sessions."""

    sem: asyncio.Semaphore
    idle: list[tuple[aiosmtplib.SMTP, float]] = field(default_factory=list)
    opened: int = 0  # connections opened, for stats and tests
    reused: int = 0


class Pool:
    """Sends transactions to destinations over capped, reused SMTP sessions."""

    def __init__(self, settings: DelivererSettings) -> None:
        self.settings = settings
        self._slots: dict[str, _Slot] = {}

    def slot(self, dest: Destination) -> _Slot:
        """The cap and idle list of ``dest`` (created on first use)."""
        s = self._slots.get(dest.key)
        if s is None:
            cap = dest.max_connections or self.settings.max_connections_per_route
            s = self._slots[dest.key] = _Slot(asyncio.Semaphore(cap))
        return s

    def stats(self) -> dict[str, tuple[int, int]]:
        """destination key -> (connections opened, transactions on a reused connection)."""
        return {k: (s.opened, s.reused) for k, s in self._slots.items()}

    async def send(
        self,
        dest: Destination,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        before_data: Callable[[list[str]], None] | None = None,
    ) -> list[smtp.RecipientResult]:
        """One transaction to ``dest``; raises :class:`smtp.ConnectFailed` when no session
        could be opened (nothing sent: the caller may try the next destination)."""
        slot = self.slot(dest)
        async with slot.sem:
            client = self._take_idle(slot)
            try:
                results: list[smtp.RecipientResult] | None = None
                if client is not None:
                    slot.reused += 1
                    try:
                        results = await smtp.transaction(
                            client, mail_from, recipients, data, before_data
                        )
                    except aiosmtplib.SMTPServerDisconnected:
                        # The server closed the idle session before MAIL: nothing was sent.
                        client.close()
                if results is None:
                    client = None
                    client = await self._open(dest)
                    slot.opened += 1
                    try:
                        results = await smtp.transaction(
                            client, mail_from, recipients, data, before_data
                        )
                    except aiosmtplib.SMTPServerDisconnected as e:
                        raise smtp.ConnectFailed(f"{dest}: disconnected before MAIL: {e}") from e
            except BaseException:
                # Cancelled (shutdown) or failed: never leave a half-used session behind.
                if client is not None:
                    client.close()
                raise
            assert client is not None  # the try either set it or raised
            # Not client.is_connected alone: a session holding unsolicited bytes is closed.
            if smtp.reusable(client) and self.settings.idle_timeout > 0:
                slot.idle.append((client, time.monotonic()))
            else:
                await smtp.close_session(client)
            return results

    def _take_idle(self, slot: _Slot) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while slot.idle:
            client, since = slot.idle.pop()
            # A late, unsolicited reply that came while idle makes the session unusable too.
            if smtp.reusable(client) and now - since < self.settings.idle_timeout:
                return client
            client.close()
        return None

    async def _open(self, dest: Destination) -> aiosmtplib.SMTP:
        if dest.mta_sts == "testing" and dest.tls != "verified":
            try:
                return await self._session(dest, "verified")
            except smtp.ConnectFailed as e:
                if not _tls_failure(e):
                    raise  # the host is down: a second connection would not help
                finding = mta_sts.tls_finding(e.__cause__)
                mta_sts.report(finding, domain=dest.policy_domain, mode="testing",
                               host=dest.host, detail=str(e))  # fmt: skip
        try:
            return await self._session(dest, dest.tls)
        except smtp.ConnectFailed as e:
            if dest.mta_sts != "enforce":
                raise
            if _tls_failure(e):
                mta_sts.report(mta_sts.tls_finding(e.__cause__), domain=dest.policy_domain,
                               mode="enforce", host=dest.host, detail=str(e))  # fmt: skip
            # Said in the reply, so the deferral's reason names the policy that refused.
            raise smtp.ConnectFailed(f"MTA-STS enforce ({dest.policy_domain}): {e}") from e

    async def _session(self, dest: Destination, tls: str) -> aiosmtplib.SMTP:
        s = self.settings
        return await smtp.open_session(
            dest.host,
            dest.port,
            helo=s.hostname,
            tls=tls,
            tls_ca_file=dest.tls_ca_file,
            connect_timeout=s.connect_timeout,
            command_timeout=s.command_timeout,
        )

    async def prune(self) -> None:
        """Close sessions idle longer than ``idle_timeout``."""
        now = time.monotonic()
        for slot in self._slots.values():
            keep = []
            for client, since in slot.idle:
                if smtp.reusable(client) and now - since < self.settings.idle_timeout:
                    keep.append((client, since))
                elif client.is_connected and not smtp.reusable(client):
                    client.close()  # QUIT's reply could not be told from the stray bytes
                else:
                    await smtp.close_session(client)
            slot.idle = keep

    async def aclose(self) -> None:
        """QUIT every idle session."""
        for slot in self._slots.values():
            idle, slot.idle = slot.idle, []
            await asyncio.gather(*(smtp.close_session(c) for c, _ in idle))


def _tls_failure(e: smtp.ConnectFailed) -> bool:
    """True when the host answered but TLS failed (no STARTTLS offered, STARTTLS refused,
    handshake or certificate refused), as opposed to the host being unreachable.

    :func:`smtp.open_session` raises "no STARTTLS" without a cause and chains every other
    failure to its error; aiosmtplib reports an unreachable host (refused, timed out, bad
    greeting) as ``SMTPConnectError``.
    """
    cause = e.__cause__
    if isinstance(cause, aiosmtplib.SMTPConnectError):
        return False
    return not (
        isinstance(cause, OSError)
        and not isinstance(cause, ssl.SSLError | aiosmtplib.SMTPException)
    )
