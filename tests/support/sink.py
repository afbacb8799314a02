"""A real SMTP sink (aiosmtpd) on its own thread, standing in for a customer's mail server.

Fault modes make it answer like a troubled server: ``tempfail`` (451 to DATA), ``reject``
(550 to DATA), ``drop`` (close the connection mid-DATA), ``stall`` (never answer DATA),
``garbage`` (accept the message, but answer DATA with a 250 holding bytes that are not UTF-8),
``close-mid-reply`` (accept the message, write ``250 2.0.0 qu`` with no CRLF and close),
``double-250`` (accept the message and answer DATA with two 250 lines in one write),
``late-double-250`` (accept the message, answer 250, and a moment later send a second,
unsolicited 250 on the same connection). ``users`` (a set of lowercase addresses) makes it
refuse every other recipient with 550 5.1.1 at RCPT, as a server that knows its users does.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Literal

from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.capture import Captured, CaptureHandler, start_capture

Fault = Literal[
    "none",
    "tempfail",
    "reject",
    "drop",
    "stall",
    "garbage",
    "close-mid-reply",
    "double-250",
    "late-double-250",
]

GARBAGE_REPLY = b"250 2.0.0 ok \xff\xfe queued"
CUT_REPLY = b"250 2.0.0 qu"  # no CRLF: the connection closes in the middle of the line
# aiosmtpd adds the final CRLF; both lines go out in one write, so they arrive together.
DOUBLE_REPLY = b"250 2.0.0 ok\r\n250 2.0.0 again"
LATE_REPLY = b"250 2.0.0 again\r\n"
LATE_DELAY = 0.2  # seconds between the 250 and the unsolicited second one


class FaultyHandler(CaptureHandler):
    """A capture handler that can misbehave on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: Fault = "none"
        self.fault_count = 0  # how many transactions the fault applies to; 0 = forever
        self.late_replies = 0  # unsolicited 250s written by ``late-double-250``
        self.users: set[str] | None = None  # None: every recipient exists
        self.rcpts_asked: list[str] = []  # every RCPT address, callouts included

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpts_asked.append(address)
        if self.users is not None and address.lower() not in self.users:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"  # aiosmtpd's own reply when a handler has no handle_RCPT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str | bytes:
        fault = self.fault
        if fault != "none" and self.fault_count:
            self.fault_count -= 1
            if self.fault_count == 0:
                self.fault = "none"
        if fault == "tempfail":
            return "451 4.3.0 try again later"
        if fault == "reject":
            return "550 5.7.1 rejected by test sink"
        if fault == "drop":
            assert server.transport is not None
            server.transport.abort()
            return "421 4.3.0 dropped"
        if fault == "stall":
            await asyncio.sleep(3600)
        if fault == "garbage":
            await super().handle_DATA(server, session, envelope)
            return GARBAGE_REPLY  # aiosmtpd writes a bytes status as it is
        if fault == "close-mid-reply":
            await super().handle_DATA(server, session, envelope)
            assert server.transport is not None
            # On loopback the write goes out at once; close() flushes anything left, then
            # the transport drops what aiosmtpd still pushes (as in ``drop``).
            server.transport.write(CUT_REPLY)
            server.transport.close()
            return "421 4.3.0 closed"
        if fault == "double-250":
            await super().handle_DATA(server, session, envelope)
            return DOUBLE_REPLY
        if fault == "late-double-250":
            await super().handle_DATA(server, session, envelope)
            transport = server.transport
            assert transport is not None

            def late() -> None:
                if not transport.is_closing():
                    transport.write(LATE_REPLY)
                    self.late_replies += 1

            asyncio.get_running_loop().call_later(LATE_DELAY, late)
            return "250 2.0.0 ok"
        return await super().handle_DATA(server, session, envelope)


class SinkThread:
    """Runs a FaultyHandler SMTP server on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.handler = FaultyHandler()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> SinkThread:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(start_capture(self.handler), self._loop)
        self._server, self.port = fut.result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def messages(self) -> list[Captured]:
        return list(self.handler.messages)

    def copies_per_recipient(self) -> Counter[tuple[str, str]]:
        """(X-MXGate id, recipient) -> number of copies received."""
        out: Counter[tuple[str, str]] = Counter()
        for m in self.messages:
            mid = mxgate_id(m.data)
            for r in m.rcpt_to:
                out[(mid, r)] += 1
        return out


def mxgate_id(data: bytes) -> str:
    """The message ID from the X-MXGate trace header of a delivered message."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n"):
        if line.startswith("X-MXGate:"):
            for part in line.split(";"):
                k, _, v = part.strip().partition("=")
                if k == "id":
                    return v
    return ""


class TlsCountingHandler(CaptureHandler):
    """A capture handler that counts the messages that arrived over TLS."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_sessions = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Count TLS sessions, then capture as usual."""
        if session.ssl is not None:
            self.tls_sessions += 1
        return await super().handle_DATA(server, session, envelope)
