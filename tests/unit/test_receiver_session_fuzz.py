"""HELO/EHLO/MAIL/RCPT arguments against a real receiver session (GatewaySMTP on loopback).

Every reply must be a complete, well-formed reply with an enhanced status code (EHLO's 250
lines aside), never the 451 of an internal error, and the session never drops a command
without answering it. MAIL and RCPT never reach DATA, so nothing is stored or produced.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mxgate.blobstore import FsBlobStore
from mxgate.settings import ReceiverSettings
from mxgate.tenants import Tenants
from receiver.addresses import helo_check
from receiver.checks import accept
from receiver.handler import ReceiverHandler
from receiver.metrics import ReceiverMetrics
from receiver.smtp import Gateway, GatewaySMTP

TENANTS = {"tenants": {"acme": {"domains": ["acme.test"], "route": {"host": "127.0.0.1"}}}}
WELL_FORMED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3}( |$)")
INTERNAL_ERROR = "451 4.3.0 Temporary local problem"
A_LABELS = "(A-labels for a UTF-8 domain)"


class _NoPublisher:
    """No DATA is sent here: a produce would be a bug in the test itself."""

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        raise AssertionError("no message is accepted in these tests")


class _Session:
    """A raw client: exact bytes out, whole replies in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def reply(self) -> str:
        """One complete reply; '' when the server closed first."""
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return ""
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines).decode("utf-8", "replace")

    def cmd(self, line: bytes) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One receiver (GatewaySMTP + ReceiverHandler) on its own event loop thread."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    rs = ReceiverSettings(
        max_bad_commands=100_000,
        max_connections_per_ip=1000,
        connection_rate_per_ip=100_000,
        message_rate_per_ip=100_000,
    )
    metrics = ReceiverMetrics()
    handler = ReceiverHandler(
        rs, Tenants.from_mapping(TENANTS), FsBlobStore(tmp / "store"), _NoPublisher(),
        "received", metrics=metrics,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    gateway = Gateway(rs, metrics)
    server = loop.run_until_complete(
        loop.create_server(lambda: GatewaySMTP(handler, gateway, loop), "127.0.0.1", 0)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def _check(raw: bytes, reply: str) -> None:
    assert reply, f"session dropped without answering {raw!r}"
    lines = reply.split("\r\n")
    assert all(re.match(r"^\d{3}[- ]", line) for line in lines), (raw, reply)
    last = lines[-1]
    if not (last.startswith("250 ") and raw[:4].upper() in (b"EHLO", b"HELO")):
        assert WELL_FORMED.match(last), (raw, last)
    assert not last.startswith(INTERNAL_ERROR), (raw, last)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"EHLO", "501 5.5.2 Syntax: EHLO hostname"),
        (b"HELO   ", "501 5.5.2 Syntax: HELO hostname"),
        (b"EHLO caf\xc3\xa9.test", f"501 5.5.2 EHLO argument must be ASCII {A_LABELS}"),
        (b"HELO \xff\xfe.test", "501 5.5.2 HELO argument is not valid UTF-8"),
        (b"EHLO a\x01b.test", "501 5.5.2 Control character in EHLO argument"),
        (b"HELO a\x7fb", "501 5.5.2 Control character in HELO argument"),
        (b"EHLO a\tb", "501 5.5.2 Control character in EHLO argument"),
    ],
)  # fmt: skip
def test_malformed_helo_gets_501_5_5_2(port: int, line: bytes, reply: str) -> None:
    c = _Session(port)
    try:
        assert c.reply().startswith("220 ")
        assert c.cmd(line) == reply
        # The refusal leaves no HELO behind, and the session goes on.
        assert c.cmd(b"MAIL FROM:<a@sender.test>") == "503 5.5.1 Error: send HELO first"
        assert c.cmd(b"HELO client.test").startswith("250 ")
    finally:
        c.close()


def test_helo_check_results() -> None:
    assert helo_check("EHLO", "mx.sender.test") == accept("helo")
    assert helo_check("EHLO", "[192.0.2.1]") == accept("helo")
    refused = helo_check("HELO", None)
    assert (refused.check, refused.verdict, refused.reason) == ("helo", "reject", "missing")
    assert helo_check("EHLO", "a\udcffb").reason == "not_utf8"
    assert helo_check("EHLO", "a\x1bb").reason == "control"
    assert helo_check("EHLO", "ünï.test").reason == "non_ascii"


_ARG = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")) | st.text(
    max_size=80
).map(lambda s: s.replace("\r", "").replace("\n", "").encode("utf-8"))


@settings(max_examples=200, deadline=None)
# The email parser under aiosmtpd raised IndexError on this one (a 451 internal error).
@example(helo=(b"HELO", b"x.test"), mail=b"\x01@", rcpts=[b"\x01@"], angle=False)
@given(
    helo=st.tuples(st.sampled_from([b"HELO", b"EHLO", b"helo", b"Ehlo"]), _ARG),
    mail=_ARG,
    rcpts=st.lists(_ARG, min_size=1, max_size=3),
    angle=st.booleans(),
)
def test_fuzzed_arguments_always_get_a_well_formed_reply(
    port: int, helo: tuple[bytes, bytes], mail: bytes, rcpts: list[bytes], angle: bool
) -> None:
    def wrap(arg: bytes) -> bytes:
        return b"<" + arg + b">" if angle else arg

    c = _Session(port)
    try:
        assert c.reply().startswith("220 ")
        verb, arg = helo
        for raw in (verb + b" " + arg, b"EHLO fuzz.test", b"MAIL FROM:" + wrap(mail)):
            _check(raw, c.cmd(raw))
        for rcpt in rcpts:
            raw = b"RCPT TO:" + wrap(rcpt)
            _check(raw, c.cmd(raw))
        assert c.cmd(b"RSET") == "250 2.0.0 OK"
        assert c.cmd(b"QUIT").startswith("221 ")
    finally:
        c.close()
