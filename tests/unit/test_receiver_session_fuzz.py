"""SMTP sessions against a real receiver (GatewaySMTP + ReceiverHandler on loopback).

Every reply must be a complete, well-formed reply with an enhanced status code (EHLO's 250
lines and DATA's 354 aside), never the 451 of an internal error, and the session never drops a
command without answering it. The argument fuzz never reaches DATA, so nothing is stored or
produced there; the DATA fuzz sends generated bodies (dot-stuffing or not, bare LF/CR, NUL,
8-bit, long lines, a missing end of data) and checks that every 250 after DATA is a message
actually stored and published, byte for byte what the client meant, and nothing else is.
Every socket read is bounded by a timeout, so a session that stops answering fails.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.loopback_receiver import Client, LoopbackReceiver, Publisher, receiver

import schemas
from receiver.addresses import helo_check
from receiver.checks import accept

WELL_FORMED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3}( |$)")
INTERNAL_ERROR = "451 4.3.0 Temporary local problem"
A_LABELS = "(A-labels for a UTF-8 domain)"


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackReceiver]:
    """One receiver for the module; its publisher records what DATA sessions accept. Lines
    are held to RFC 5321's 1000 octets (the default allows more), so the fuzz crosses it."""
    tmp = tmp_path_factory.mktemp("fuzz")
    with receiver(tmp, max_bad_commands=100_000, max_line_length=1000) as r:
        yield r


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A receiver that must never accept a message (MAIL and RCPT only)."""
    tmp = tmp_path_factory.mktemp("fuzz-envelope")
    with receiver(tmp, publisher=Publisher(forbid=True), max_bad_commands=100_000) as r:
        yield r.port


def _session(port: int) -> Client:
    return Client(port, greet=False, timeout=10)


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
    c = _session(port)
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

    c = _session(port)
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


# --- sessions with DATA ------------------------------------------------------------------------

_PLAIN = st.binary(max_size=60).map(lambda b: b.replace(b"\r\n", b""))
_LINE = st.one_of(
    _PLAIN,
    st.just(b""),
    _PLAIN.map(lambda b: b"." + b),  # needs stuffing
    st.sampled_from([b".", b"..", b". ", b"\n.\n", b"\r.\r", b"\n.\r\n."]),  # smuggling forms
    _PLAIN.map(lambda b: b + b"\n" + b),  # bare LF
    _PLAIN.map(lambda b: b + b"\r" + b),  # bare CR
    st.just(b"nul\x00byte"),
    st.just("caf\u00e9 \u2603".encode() + b"\xff\xfe"),  # 8-bit, some not UTF-8
    st.integers(990, 1010).map(lambda n: b"y" * n),  # around the 1000-octet line limit
    st.just(b"z" * 5000),
)


@st.composite
def _body(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """Body lines (CRLF not included) as the receiver will split them, and whether the
    client dot-stuffs them (a line that is exactly "." is always stuffed: it would end
    the body early, which is another session, not a body)."""
    return draw(st.lists(_LINE, max_size=12)), draw(st.booleans())


def _wire(lines: list[bytes], stuff: bool) -> bytes:
    out = []
    # A piece may hold a CRLF itself (the smuggling forms): the receiver splits on CRLF only.
    for line in b"\r\n".join(lines).split(b"\r\n"):
        if line.startswith(b".") and (stuff or line == b"."):
            line = b"." + line
        out.append(line + b"\r\n")
    return b"".join(out)


def _meant(wire: bytes) -> bytes:
    """What the receiver must store for ``wire``: each CRLF line with one leading dot removed."""
    lines = wire.split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def _check_any(raw: bytes, reply: str) -> None:
    """Like _check, for any command; 354 (no enhanced code applies) included."""
    lines = reply.split("\r\n")
    assert all(re.match(r"^[2-5]\d\d([- ]|$)", line) for line in lines), (raw, reply)
    last = lines[-1]
    if not last.startswith("354"):
        assert WELL_FORMED.match(last), (raw, last)
    assert not last.startswith(INTERNAL_ERROR), (raw, last)


@settings(max_examples=60, deadline=None)
# The paths every run must take: NUL, an over-long line then a good message, the smuggling
# forms, no end of data.
@example(messages=[([b"nul\x00byte"], True)], terminated=True, bdat=False)
@example(messages=[([b"y" * 1005], True), ([b"ok"], True)], terminated=True, bdat=True)
@example(messages=[([b"\n.\n", b"\r.\r", b".x"], False)], terminated=True, bdat=False)
@example(messages=[([b"ok"], True), ([b"a", b"b"], True)], terminated=False, bdat=False)
@given(
    messages=st.lists(_body(), min_size=1, max_size=3),
    terminated=st.booleans(),
    bdat=st.booleans(),
)
def test_fuzzed_data_sessions_reply_well_and_every_250_is_stored(
    loopback: LoopbackReceiver,
    messages: list[tuple[list[bytes], bool]],
    terminated: bool,
    bdat: bool,
) -> None:
    events = loopback.publisher.events
    c = _session(loopback.port)
    try:
        assert c.reply().startswith("220 ")
        assert c.cmd(b"EHLO fuzz.test").startswith("250")
        if bdat:  # CHUNKING is not advertised: BDAT is a refused command, not a body
            reply = c.cmd(b"BDAT 12 LAST")
            _check_any(b"BDAT", reply)
            assert reply[:1] == "5", reply
        for i, (lines, stuff) in enumerate(messages):
            last = i == len(messages) - 1
            for raw in (b"MAIL FROM:<a@sender.test>", b"RCPT TO:<bob@acme.test>"):
                reply = c.cmd(raw)
                assert reply.startswith("250 "), (raw, reply)
            reply = c.cmd(b"DATA")
            _check_any(b"DATA", reply)
            assert reply.startswith("354"), reply
            wire = _wire([b"Subject: fuzz", *lines], stuff)
            before = len(events)
            if last and not terminated:
                # No end of data: QUIT is body text, and the client then stops sending.
                c.sock.sendall(wire + b"QUIT\r\n")
                c.sock.shutdown(socket.SHUT_WR)
                reply = c.reply()  # bounded by the socket timeout: the session must not hang
                if reply:
                    _check_any(b"<eof mid-body>", reply)
                    assert not reply.startswith("250"), reply
                assert len(events) == before, "a body without its end of data was accepted"
                return
            c.sock.sendall(wire + b".\r\n")
            reply = c.reply()
            if not reply:  # the receiver closed the session (NUL bytes): nothing accepted
                assert len(events) == before
                return
            _check_any(b"<end of data>", reply)
            if reply.startswith("250 "):
                assert len(events) == before + 1, reply
                event = events[-1]
                assert isinstance(event, schemas.MessageReceived)
                body = loopback.stored(event.object_key)
                assert hashlib.sha256(body).hexdigest() == event.sha256
                assert body == _meant(wire)
            else:
                assert len(events) == before, reply
        assert c.cmd(b"QUIT").startswith("221 ")
    finally:
        c.close()
