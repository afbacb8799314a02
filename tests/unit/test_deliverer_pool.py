"""The connection pool against real SMTP servers (aiosmtpd on loopback): reuse, fault
classification, TLS policies, and per-destination isolation."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from support.leftovers import collect_unclosed_sockets
from support.pipeline import free_port
from support.sink import SinkThread, TlsCountingHandler

from deliverer.pool import Pool
from deliverer.routes import Destination
from deliverer.smtp import OUT_OF_STEP, ConnectFailed
from mxgate.settings import DelivererSettings

MSG = b"From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n"


def _settings(**kw: object) -> DelivererSettings:
    return DelivererSettings(**({"connect_timeout": 5, "command_timeout": 30} | kw))  # type: ignore[arg-type]


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    s = SinkThread().start()
    yield s
    s.stop()


async def test_connections_are_reused(sink: SinkThread) -> None:
    pool = Pool(_settings())
    dest = Destination("127.0.0.1", sink.port)
    for i in range(3):
        res = await pool.send(dest, "a@sender.test", [f"u{i}@example.test"], MSG)
        assert [r.status for r in res] == ["delivered"]
    assert pool.stats()[dest.key] == (1, 2)
    assert len(sink.messages) == 3
    await pool.aclose()


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("tempfail", "deferred", 451), ("reject", "bounced", 550), ("drop", "deferred", 0)],
)
async def test_faults_are_classified(sink: SinkThread, fault: str, status: str, code: int) -> None:
    sink.handler.fault = fault  # type: ignore[assignment]
    pool = Pool(_settings())
    res = await pool.send(Destination("127.0.0.1", sink.port), "a@s.test", ["b@example.test"], MSG)
    assert [(r.status, r.code) for r in res] == [(status, code)]
    assert sink.messages == []
    await pool.aclose()


@pytest.mark.parametrize(
    ("fault", "first"), [("close-mid-reply", "2.0.0 qu"), ("double-250", "2.0.0 ok")]
)
async def test_a_cut_or_repeated_reply_is_delivered_once_and_its_session_never_reused(
    sink: SinkThread, fault: str, first: str
) -> None:
    sink.handler.fault, sink.handler.fault_count = fault, 1  # type: ignore[assignment]
    pool = Pool(_settings())
    dest = Destination("127.0.0.1", sink.port)
    (r,) = await pool.send(dest, "a@s.test", ["b@example.test"], MSG)
    assert (r.status, r.code) == ("delivered", 250) and r.reply.startswith(first), r
    # The next transaction runs on a new session and reads its own reply, not the extra 250.
    (r2,) = await pool.send(dest, "a@s.test", ["c@example.test"], MSG)
    assert (r2.status, r2.code, r2.reply) == ("delivered", 250, "2.0.0 Ok: captured"), r2
    assert pool.stats()[dest.key] == (2, 0)
    assert [m.rcpt_to for m in sink.messages] == [("b@example.test",), ("c@example.test",)]
    await pool.aclose()


async def test_a_late_second_250_is_never_read_as_the_next_reply(sink: SinkThread) -> None:
    """The stray 250 arrives while the session waits in the pool: the session is marked out of
    step (``reusable``), and the next transaction opens a new one and reads its own replies."""
    sink.handler.fault, sink.handler.fault_count = "late-double-250", 1
    pool = Pool(_settings())
    dest = Destination("127.0.0.1", sink.port)
    (r,) = await pool.send(dest, "a@s.test", ["b@example.test"], MSG)
    assert (r.status, r.code, r.reply) == ("delivered", 250, "2.0.0 ok"), r
    for _ in range(200):  # up to 10 s for the stray line to go out
        if sink.handler.late_replies:
            break
        await asyncio.sleep(0.05)
    assert sink.handler.late_replies == 1
    await asyncio.sleep(0.2)  # and to be read by the idle session
    (r2,) = await pool.send(dest, "a@s.test", ["c@example.test"], MSG)
    assert (r2.status, r2.code, r2.reply) == ("delivered", 250, "2.0.0 Ok: captured"), r2
    assert pool.stats()[dest.key] == (2, 0)  # a second connection: the first was not reused
    assert [m.rcpt_to for m in sink.messages] == [("b@example.test",), ("c@example.test",)]
    await pool.aclose()


async def test_a_stray_250_during_the_next_transaction_sends_nothing(sink: SinkThread) -> None:
    """The late 250 lands after the next MAIL is written, before its reply: every later reply
    pairs with the wrong command, and the message must be deferred unsent, never recorded
    delivered on a stale 250."""
    sink.handler.fault, sink.handler.fault_count = "late-double-250", 1
    pool = Pool(_settings(idle_timeout=60))
    dest = Destination("127.0.0.1", sink.port)
    (r,) = await pool.send(dest, "a@s.test", ["b@example.test"], MSG)
    assert r.status == "delivered", r
    ((client, _),) = pool.slot(dest).idle
    proto, mail = client.protocol, client.mail
    assert proto is not None

    async def mail_then_stale(*a: object, **kw: object) -> object:
        # The race by hand: a reply is pending when the stray line arrives.
        proto._response_pending = True
        proto.data_received(b"250 2.0.0 again\r\n")
        return await mail(*a, **kw)  # type: ignore[arg-type]

    client.mail = mail_then_stale  # type: ignore[method-assign]
    (r2,) = await pool.send(dest, "a@s.test", ["c@example.test"], MSG)
    assert (r2.status, r2.code) == ("deferred", 0), r2
    assert r2.reply.startswith(OUT_OF_STEP), r2
    assert [m.rcpt_to for m in sink.messages] == [("b@example.test",)]
    assert not client.is_connected
    await pool.aclose()


async def test_a_stalled_destination_does_not_hold_another(sink: SinkThread) -> None:
    stalled = SinkThread().start()
    stalled.handler.fault = "stall"
    pool = Pool(_settings(command_timeout=5, max_connections_per_route=1))
    try:
        slow = asyncio.ensure_future(
            pool.send(Destination("127.0.0.1", stalled.port), "a@s.test", ["x@acme.test"], MSG)
        )
        # A second message to the stalled server queues behind its only connection ...
        queued = asyncio.ensure_future(
            pool.send(Destination("127.0.0.1", stalled.port), "a@s.test", ["y@acme.test"], MSG)
        )
        # ... while another destination is served at once.
        res = await pool.send(Destination("127.0.0.1", sink.port), "a@s.test", ["b@ex.test"], MSG)
        assert [r.status for r in res] == ["delivered"]
        assert not slow.done() and not queued.done()
        # The stalled transaction times out: deferred, since the server never said 250.
        stalled_results = await slow
        assert [(r.status, r.code) for r in stalled_results] == [("deferred", 0)]
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
    finally:
        await pool.aclose()
        stalled.stop()


# -- TLS policies -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def tls_sink(cert: tuple[Path, Path]) -> Iterator[tuple[TlsCountingHandler, int]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    handler = TlsCountingHandler()
    port = free_port()
    c = Controller(handler, hostname="127.0.0.1", port=port, tls_context=ctx)
    c.start()
    try:
        yield handler, port
    finally:
        c.stop()
        collect_unclosed_sockets()


async def test_opportunistic_uses_starttls_when_offered(
    tls_sink: tuple[TlsCountingHandler, int],
) -> None:
    handler, port = tls_sink
    pool = Pool(_settings())
    res = await pool.send(Destination("127.0.0.1", port), "a@s.test", ["b@ex.test"], MSG)
    await pool.aclose()
    assert [r.status for r in res] == ["delivered"]
    assert handler.tls_sessions == 1


async def test_opportunistic_falls_back_to_clear_text(sink: SinkThread) -> None:
    pool = Pool(_settings())
    res = await pool.send(Destination("127.0.0.1", sink.port), "a@s.test", ["b@ex.test"], MSG)
    await pool.aclose()
    assert [r.status for r in res] == ["delivered"]


async def test_required_tls_never_sends_in_clear(sink: SinkThread) -> None:
    pool = Pool(_settings())
    with pytest.raises(ConnectFailed, match="STARTTLS"):
        await pool.send(Destination("127.0.0.1", sink.port, "required"), "a@s", ["b@ex.test"], MSG)
    assert sink.messages == []


async def test_verified_tls_checks_the_certificate(
    tls_sink: tuple[TlsCountingHandler, int], cert: tuple[Path, Path]
) -> None:
    handler, port = tls_sink
    pool = Pool(_settings())
    with pytest.raises(ConnectFailed, match="verified"):
        # Self-signed and not in the system CAs: refused.
        await pool.send(Destination("127.0.0.1", port, "verified"), "a@s", ["b@ex.test"], MSG)
    trusted = Destination("127.0.0.1", port, "verified", tls_ca_file=str(cert[0]))
    res = await pool.send(trusted, "a@s.test", ["b@ex.test"], MSG)
    await pool.aclose()
    assert [r.status for r in res] == ["delivered"]
    assert handler.tls_sessions == 1 and len(handler.messages) == 1
