"""A local capture SMTP server: the customer mail server of `mxgate up` and of the tests.

Every message it accepts is written, exactly as received, to ``<folder>/<recipient>/<n>.eml``
so a newcomer can see what mxgate delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class Captured:
    """One delivered message as the capture server saw it."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes


class CaptureHandler:
    """aiosmtpd handler that keeps every message (in memory and, optionally, in a folder)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.messages: list[Captured] = []
        self._seq = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message and answer 250."""
        data = envelope.original_content or b""
        msg = Captured(envelope.mail_from or "", tuple(envelope.rcpt_tos), data)
        self.messages.append(msg)
        if self.folder is not None:
            await asyncio.to_thread(self._write, msg)
        return "250 2.0.0 Ok: captured"

    def _write(self, msg: Captured) -> None:
        assert self.folder is not None
        n = next(self._seq)
        for rcpt in msg.rcpt_to:
            box = self.folder / rcpt.replace("/", "_")
            box.mkdir(parents=True, exist_ok=True)
            path = box / f"{os.getpid()}-{n:08d}.eml"
            path.write_bytes(msg.data)


async def start_capture(
    handler: CaptureHandler, host: str = "127.0.0.1", port: int = 0
) -> tuple[asyncio.AbstractServer, int]:
    """Start a capture server on the running loop; returns the server and its port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=True, hostname="capture.local", loop=loop),
        host=host,
        port=port,
    )
    return server, server.sockets[0].getsockname()[1]
