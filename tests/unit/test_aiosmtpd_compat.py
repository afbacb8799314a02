"""Pins every aiosmtpd private member the receiver relies on (receiver.aiosmtpd_compat).

aiosmtpd is pinned at 1.4.6; an upgrade that renames, removes or re-signs one of these fails
here, loudly, instead of in a live SMTP session.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtpd
import aiosmtpd.smtp
import pytest
from aiosmtpd.smtp import SMTP

from receiver.aiosmtpd_compat import PRIVATE_MEMBERS, CompatSMTP
from receiver.replies import _BY_TEXT


def test_the_pinned_version() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"aiosmtpd==1.4.6"' in pyproject and aiosmtpd.__version__ == "1.4.6"


def _params(func: Callable[..., object]) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(func).parameters if p != "self")


@pytest.mark.parametrize(
    "name", [n for n, (kind, _) in PRIVATE_MEMBERS.items() if kind != "attribute"]
)
def test_private_methods_exist_with_their_signatures(name: str) -> None:
    kind, params = PRIVATE_MEMBERS[name]
    member = inspect.getattr_static(SMTP, name)
    assert callable(member)
    assert inspect.iscoroutinefunction(member) == (kind == "coroutine")
    assert _params(member) == params


@dataclass
class _Seen:
    attributes: set[str] = field(default_factory=set)
    methods: object = None
    line: bytes = b""
    discarded: tuple[bool, bool] = (False, False)
    limited: bool = False
    auth: object = None
    ehlo: object = None
    state: tuple[float | None, bool, bool, str] = (0.0, False, True, "")
    timeouts: int = 0


class _Probe(CompatSMTP):
    """Serves one loopback connection and records what aiosmtpd gave it."""

    def __init__(self, seen: _Seen, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(object(), line_length_limit=64, loop=loop)
        self.seen = seen

    async def run_session(self) -> None:
        seen = self.seen
        seen.attributes = {n for n in PRIVATE_MEMBERS if hasattr(self, n)}
        seen.methods = dict(self._smtp_methods)
        seen.line = await self.reader.readuntil(b"\n")
        seen.discarded = (self.discard_buffered_input(), self.discard_buffered_input())
        try:
            await self.reader.readuntil(b"\n")  # 100 bytes: over the 64 the reader was sized for
        except asyncio.LimitOverrunError:
            seen.limited = True
        self.drop_command("AUTH")
        seen.auth, seen.ehlo = self.command("AUTH"), self.command("EHLO")
        seen.state = (self.proxy_timeout, self.tls_handshake_okay, self.tls_active, self.ident)
        self.reset_timeout(0.01)
        await asyncio.sleep(0.2)  # the timer fires on_timeout through aiosmtpd's _timeout_cb
        self.close_writer()

    def on_timeout(self) -> None:
        self.seen.timeouts += 1


async def test_a_loopback_session_through_every_pinned_member() -> None:
    loop = asyncio.get_running_loop()
    seen = _Seen()
    server = await loop.create_server(lambda: _Probe(seen, loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"EHLO a\r\nRCPT TO:<x@y>\r\n")  # one segment: the second line is buffered
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"X" * 100 + b"\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the session closed it
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    # Every pinned member is there once a connection is made (methods and attributes alike).
    assert seen.attributes == set(PRIVATE_MEMBERS)
    assert isinstance(seen.methods, dict) and "AUTH" in seen.methods
    assert seen.line == b"EHLO a\r\n" and seen.discarded == (True, False)
    assert seen.limited
    assert seen.auth is None and seen.ehlo is not None
    assert seen.state[:3] == (None, True, False) and seen.state[3].startswith("Python SMTP")
    assert seen.timeouts == 1


def test_the_texts_enhance_rewrites_are_aiosmtpd_s() -> None:
    """replies.enhance recognises aiosmtpd's own reply texts; each must still be there."""
    source = inspect.getsource(aiosmtpd.smtp)
    for code, prefix, _ in _BY_TEXT:
        if prefix in ("Cannot VRFY", "Command line too long", "Line too long"):
            continue  # our own texts (smtp.py), not aiosmtpd's
        assert re.search(rf"['\"]{code} {re.escape(prefix)}", source), (code, prefix)
