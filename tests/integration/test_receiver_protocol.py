"""The front door over real sockets: ESMTP, enhanced codes, smuggling, STARTTLS injection,
PROXY v1/v2, recipient verification, limits, DNSBL, timeouts, vanishing clients, metrics,
and hypothesis fuzzing of commands against the running server. Real Kafka (the session's
secured broker: the receiver connects as its own principal with only its ACLs), real fs store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from support.bus import Bus
from support.dnsserver import DnsServer
from support.pipeline import free_port
from support.sink import SinkThread

from mxgate import catalog
from mxgate.errors import ConfigError
from mxgate.kafka import create_topics, read_events
from mxgate.settings import ReceiverSettings, Settings, StoreSettings
from receiver.server import serve

pytestmark = pytest.mark.integration

TENANTS = """
[tenants.example]
domains = ["example.test"]
route = { host = "127.0.0.1", port = 1 }
recipients = { mode = "none" }  # nothing at port 1 could verify a recipient
[tenants.verified]
domains = ["verified.test"]
route = { host = "127.0.0.1", port = 1 }
recipients = { mode = "static", addresses = ["known@verified.test"] }
"""


class Receiver:
    """The receiver's ``serve`` on its own uvloop thread, on its own topics and store, as the
    receiver's principal."""

    def __init__(
        self,
        tmp: Path,
        bus: Bus,
        metrics_port: int = 0,
        tenants_text: str = TENANTS,
        **receiver: Any,
    ) -> None:
        tenants = tmp / "tenants.toml"
        tenants.write_text(tenants_text)
        self.port = free_port()
        self.settings = Settings(
            tenants_file=tenants,
            metrics_port=metrics_port,
            kafka=bus.settings("receiver", topic_prefix=f"t{uuid.uuid4().hex[:10]}."),
            store=StoreSettings(path=tmp / "store"),
            receiver=ReceiverSettings(port=self.port, recipient_cache=tmp / "rcpt", **receiver),
        )
        # What the test itself reads and sets up, it does as the super user.
        self.admin = self.settings.model_copy(
            update={"kafka": bus.as_role(self.settings.kafka, "admin")}
        )
        create_topics(self.admin.kafka, [catalog.RECEIVED])
        ks = self.settings.kafka
        bus.grant(ks.topic_prefix, ks.group_prefix, len(self.settings.deliverer.retry_schedule))
        self.store = tmp / "store"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            task = asyncio.ensure_future(serve(self.settings, self._stop, ready))
            await asyncio.wait(
                [task, asyncio.ensure_future(ready.wait())], return_when="FIRST_COMPLETED"
            )
            if task.done():
                task.result()  # a start-up error: reported by start()
            self._ready.set()
            await task

        try:
            uvloop.run(main())
        except BaseException as e:  # reported by stop() / start()
            self._error = e
            self._ready.set()

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(60), "receiver did not start"
        if self._error:
            error, self._error = self._error, None  # reported here, not again by stop()
            raise error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(90)
        assert not self._thread.is_alive(), "receiver did not stop"
        if self._error:
            raise self._error

    def events(self) -> list[Any]:
        return list(read_events(self.admin))

    def objects(self) -> list[Path]:
        return [p for p in self.store.rglob("*") if p.is_file() and not p.name.startswith(".")]


@pytest.fixture
def receiver(kafka, tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        workdir = tmp_path / f"r{len(started)}"
        workdir.mkdir()
        r = Receiver(workdir, kafka, **kw)
        started.append(r)
        return r.start()

    yield make
    for r in started:
        r.stop()


class Client:
    """A raw SMTP client: sends exact bytes, reads whole replies."""

    def __init__(self, port: int, proxy_header: bytes = b"", source: str = "") -> None:
        # ``source``: the loopback address to connect from (another 127.x peer).
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=30, source_address=(source, 0) if source else None
        )
        if proxy_header:
            self.sock.sendall(proxy_header)
        self.buf = b""

    def reply(self) -> str:
        """One complete (possibly multi-line) reply; '' when the server closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "\r\n".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\r\n".join(lines)

    def cmd(self, line: bytes | str) -> str:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def transaction(c: Client, rcpt: str = "bob@example.test") -> None:
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250 2.1.0")
    assert c.cmd(f"RCPT TO:<{rcpt}>").startswith("250 2.1.5")
    assert c.cmd("DATA").startswith("354")


def assert_enhanced(reply: str) -> None:
    for line in reply.split("\r\n"):
        assert re.match(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ", line), line
        assert line[0] == line[4], line


# -- protocol ---------------------------------------------------------------------------------


def test_ehlo_extensions_and_enhanced_codes_everywhere(receiver) -> None:
    r = receiver(max_bad_commands=100)
    c = Client(r.port)
    assert c.reply().startswith("220 mxgate.local ESMTP")
    ehlo = c.cmd("EHLO client.test").split("\r\n")
    exts = {line[4:].split()[0] for line in ehlo[1:]}
    assert {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} <= exts
    assert "STARTTLS" not in exts and "AUTH" not in exts  # no certificate configured
    for line in [
        "NOOP",
        "HELP",
        "VRFY bob",
        "EXPN list",
        "RCPT TO:<bob@example.test>",
        "DATA",
        "MAIL FROM:<not an address",
        "MAIL FROM:<alice@sender.test> BOGUS=1",
        "MAIL FROM:<alice@sender.test> SIZE=999999999999",
        "MAIL FROM:<alice@sender.test>",
        "MAIL FROM:<alice@sender.test>",
        "RCPT TO:<bob@elsewhere.test>",
        "RCPT TO:<x@[300.1.1.1]>",
        "DATA",
        "RSET",
        "XYZZY",
        "AUTH PLAIN AGFiYwBkZWY=",
    ]:
        assert_enhanced(c.cmd(line))
    bye = c.cmd("QUIT")
    assert bye.startswith("221 2.0.0")
    c.close()


def test_nul_bytes_8bit_junk_and_long_commands(receiver) -> None:
    r = receiver(max_bad_commands=50)
    c = Client(r.port)
    c.reply()
    assert c.cmd(b"EH\x00LO x").startswith("500 5.5.2")
    assert c.cmd(b"\xff\xfe\xfd").startswith("500 5.5.2")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd(b"MAIL FROM:<\xff\xfe@sender.test>").startswith("553 5.6.7")
    assert c.cmd("MAIL FROM:<j\u00f6rg@sender.test>").startswith("553 5.6.7")  # no SMTPUTF8
    assert c.cmd("MAIL FROM:<j\u00f6rg@sender.test> SMTPUTF8").startswith("250")
    assert c.cmd("NOOP " + "x" * 600).startswith("500 5.5.6")
    assert c.cmd("RCPT TO:<" + "x" * 9000 + "@example.test>").startswith("500 5.5.6")
    assert c.cmd("NOOP").startswith("250 2.0.0")  # the session survived all of it
    c.close()


def test_too_many_errors_close_with_421(receiver) -> None:
    r = receiver(max_bad_commands=3)
    c = Client(r.port)
    c.reply()
    for _ in range(3):
        assert c.cmd("XYZZY").startswith("502 5.5.2")
    assert c.reply().startswith("421 4.7.0")
    assert c.closed()
    c.close()


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\n.\r"],
    ids=["LF.LF", "LF.CRLF", "CR.CR", "CRLF.LF", "LF.CR"],
)
def test_smuggled_end_of_data_is_body_text(receiver, smuggle: bytes) -> None:
    r = receiver()
    c = Client(r.port)
    c.reply()
    transaction(c)
    smuggled = (
        b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nforged"
    )
    body = b"Subject: outer\r\n\r\nhello" + smuggle + smuggled + b"\r\n.\r\n"
    c.sock.sendall(body)
    first = c.reply()
    assert first.startswith("250 2.0.0 Ok: queued as"), first
    # Nothing else was answered: the smuggled commands never ran.
    assert c.cmd("NOOP").startswith("250 2.0.0")
    c.close()
    events = r.events()
    assert len(events) == 1
    assert events[0].mail_from == "alice@sender.test"
    assert events[0].rcpt_to == ("bob@example.test",)
    stored = (r.store / events[0].object_key).read_bytes()
    # The bytes after the bare-CR/LF dot stayed in the body (a leading dot is unstuffed).
    assert smuggled + b"\r\n" in stored and stored.startswith(b"Subject: outer")


def test_dot_stuffing_and_pipelining(receiver) -> None:
    r = receiver()
    c = Client(r.port)
    c.reply()
    c.sock.sendall(
        b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\n"
        b"RCPT TO:<nobody@elsewhere.test>\r\nDATA\r\n"
    )
    replies = [c.reply() for _ in range(5)]
    assert replies[1].startswith("250 2.1.0") and replies[2].startswith("250 2.1.5")
    assert replies[3].startswith("550 5.7.1") and replies[4].startswith("354")
    c.sock.sendall(b"Subject: dots\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
    assert c.reply().startswith("250 2.0.0")
    assert c.reply().startswith("221 2.0.0")
    c.close()
    (event,) = r.events()
    stored = (r.store / event.object_key).read_bytes()
    assert stored == b"Subject: dots\r\n\r\n.leading dot\r\n"


# -- STARTTLS ---------------------------------------------------------------------------------


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    crt, key = tmp_path / "mx.crt", tmp_path / "mx.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=mxgate.local", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_starttls_discards_pipelined_plaintext(receiver, cert: tuple[Path, Path]) -> None:
    r = receiver(tls_cert=cert[0], tls_key=cert[1])
    c = Client(r.port)
    c.reply()
    assert "STARTTLS" in c.cmd("EHLO client.test")
    # The injected commands ride in the same packet as STARTTLS, in plaintext.
    c.sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\nRSET\r\n")
    assert c.reply().startswith("220 2.0.0")
    tls = _client_tls().wrap_socket(c.sock, server_hostname="mxgate.local")
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    c.sock, c.buf = tls, b""  # type: ignore[assignment]
    # The first reply inside TLS answers our EHLO, not the injected commands.
    ehlo = c.cmd("EHLO client.test")
    assert ehlo.startswith("250-mxgate.local") and "STARTTLS" not in ehlo
    assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250 2.1.0")  # no nested MAIL
    assert c.cmd("RCPT TO:<bob@example.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: tls\r\n\r\nsecret\r\n.").startswith("250 2.0.0")
    c.cmd("QUIT")
    c.close()
    (event,) = r.events()
    assert event.tls.version in ("TLSv1.2", "TLSv1.3")


def _old_tls_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks only ``version``, with the ciphers old stacks offer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are, rightly
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _permissive_handshake(cert: tuple[Path, Path], client: ssl.SSLContext) -> str:
    """Handshake ``client`` against a server that allows TLS 1.0: proves the client can."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(*cert)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server.wrap_socket(conn, server_side=True):
                pass

        t = threading.Thread(target=accept)
        t.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client.wrap_socket(raw) as tls,
        ):
            version = tls.version() or ""
        t.join(10)
    return version


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"]
)
def test_tls_below_1_2_is_refused(receiver, cert: tuple[Path, Path], version) -> None:
    client = _old_tls_client(version)
    assert _permissive_handshake(cert, client) in ("TLSv1", "TLSv1.1")  # the client can
    r = receiver(tls_cert=cert[0], tls_key=cert[1])
    c = Client(r.port)
    c.reply()
    assert "STARTTLS" in c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220 2.0.0")
    # The server ends the handshake (an alert or, with uvloop's TLS, a close): never a session.
    with pytest.raises(ssl.SSLError, match=r"(?i)protocol.version|unsupported.protocol|EOF"):
        client.wrap_socket(c.sock, server_hostname="mxgate.local")
    c.close()
    # Refusing an old client costs nobody else anything: the next session gets TLS 1.2+.
    assert _starttls_peer_cert(r.port)


def _starttls_peer_cert(port: int) -> bytes:
    """The certificate a fresh session's STARTTLS presents (DER)."""
    c = Client(port)
    c.reply()
    assert "STARTTLS" in c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").startswith("220 2.0.0")
    tls = _client_tls().wrap_socket(c.sock, server_hostname="mxgate.local")
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    der = tls.getpeercert(binary_form=True)
    tls.close()
    assert der
    return der


def _new_pair(crt: Path, key: Path, cn: str) -> None:
    """Write a new certificate and key over ``crt``/``key``, each renamed into place."""
    tmp_crt, tmp_key = crt.with_suffix(".new.crt"), key.with_suffix(".new.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={cn}", "-keyout", str(tmp_key), "-out", str(tmp_crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    os.replace(tmp_key, key)
    os.replace(tmp_crt, crt)


def test_a_pair_that_does_not_load_is_a_config_error_naming_the_keys(
    receiver, cert: tuple[Path, Path]
) -> None:
    cert[1].write_text("not a key")
    with pytest.raises(ConfigError, match="MXGATE_RECEIVER__TLS_CERT/TLS_KEY"):
        receiver(tls_cert=cert[0], tls_key=cert[1])


def test_a_certificate_without_its_key_is_refused_at_load(cert: tuple[Path, Path]) -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        ReceiverSettings(tls_cert=cert[0])


def test_a_renewed_certificate_serves_without_a_restart(receiver, cert: tuple[Path, Path]) -> None:
    r = receiver(tls_cert=cert[0], tls_key=cert[1])
    first = _starttls_peer_cert(r.port)
    _new_pair(*cert, cn="renewed.mxgate.local")
    renewed = _starttls_peer_cert(r.port)
    assert renewed != first
    assert renewed == ssl.PEM_cert_to_DER_cert(cert[0].read_text())
    # A botched renewal (a certificate that does not parse) keeps the last good pair serving.
    cert[0].write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    assert _starttls_peer_cert(r.port) == renewed
    assert r._thread.is_alive()


# -- PROXY protocol ---------------------------------------------------------------------------


def _proxy_v2(src: str, sport: int, dst: str, dport: int) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


# The load balancer connects from 127.0.0.2; a client reaching the port directly, from 127.0.0.1.
PROXY = "127.0.0.2"
TRUSTED = {"proxy_protocol": True, "proxy_trusted": (f"{PROXY}/32",)}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_gives_the_real_client(receiver, version: str) -> None:
    r = receiver(**TRUSTED)
    header = (
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40123 25\r\n"
        if version == "v1"
        else _proxy_v2("203.0.113.7", 40123, "192.0.2.1", 25)
    )
    c = Client(r.port, proxy_header=header, source=PROXY)
    assert c.reply().startswith("220")
    transaction(c)
    assert c.cmd(b"Subject: p\r\n\r\nx\r\n.").startswith("250 2.0.0")
    c.close()
    (event,) = r.events()
    assert (event.client_ip, event.client_port) == ("203.0.113.7", 40123)


def test_missing_proxy_header_from_a_trusted_proxy_closes_without_banner(receiver) -> None:
    r = receiver(**TRUSTED, proxy_timeout=3)
    c = Client(r.port, source=PROXY)
    c.sock.sendall(b"EHLO client.test\r\n")
    assert c.reply() == ""
    c.close()


def test_a_proxy_header_from_an_untrusted_peer_is_refused(receiver) -> None:
    r = receiver(**TRUSTED)
    c = Client(r.port, proxy_header=b"PROXY TCP4 203.0.113.7 192.0.2.1 40123 25\r\n")
    assert c.reply().startswith("220")  # served as itself: no header was expected from it
    assert c.reply().startswith("554 5.7.0")
    assert c.reply() == ""  # and closed
    c.close()
    # A v2 header from it is no header either: its signature ends in QUIT, so the session ends.
    c = Client(r.port, proxy_header=_proxy_v2("203.0.113.7", 40123, "192.0.2.1", 25))
    replies = [c.reply() for _ in range(5)]  # the banner, 500 for the signature's lines, 221
    assert replies[0].startswith("220") and replies[-1].startswith("221"), replies
    assert c.reply() == ""
    c.close()
    # Without a header it is an ordinary client, known by its own address.
    c = Client(r.port)
    assert c.reply().startswith("220")
    transaction(c)
    assert c.cmd(b"Subject: p\r\n\r\nx\r\n.").startswith("250 2.0.0")
    c.close()
    (event,) = r.events()
    assert event.client_ip == "127.0.0.1"


def test_proxy_protocol_without_trusted_proxies_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="proxy_trusted"):
        ReceiverSettings(proxy_protocol=True)
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.0/33' is not a CIDR"):
        ReceiverSettings(proxy_protocol=True, proxy_trusted=("10.0.0.0/33",))


# -- who may send what to whom ----------------------------------------------------------------


def test_unknown_recipient_gets_550_5_1_1(receiver) -> None:
    r = receiver()
    c = Client(r.port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<alice@sender.test>")
    assert c.cmd("RCPT TO:<stranger@verified.test>").startswith("550 5.1.1")
    assert c.cmd("RCPT TO:<Known@verified.test>").startswith("250 2.1.5")
    c.close()


def test_a_tenant_without_a_recipients_table_verifies_by_callout(receiver) -> None:
    """The default: the receiver asks the tenant's own server (a real SMTP peer that knows its
    users) and answers as it does, caching the answer; a tenant that opted out accepts anyone;
    a tenant whose server cannot be reached gets 451 4.4.1, never 250 nor a 5xx."""
    peer = SinkThread().start()
    peer.handler.users = {"alice@callout.test"}
    try:
        r = receiver(
            tenants_text=(
                "[tenants.callout]\n"
                'domains = ["callout.test"]\n'
                f'route = {{ host = "127.0.0.1", port = {peer.port} }}\n'
                "[tenants.open]\n"
                'domains = ["open.test"]\n'
                f'route = {{ host = "127.0.0.1", port = {peer.port} }}\n'
                'recipients = { mode = "none" }\n'
                "[tenants.down]\n"
                'domains = ["down.test"]\n'
                f'route = {{ host = "127.0.0.1", port = {free_port()} }}\n'
            )
        )
        c = Client(r.port)
        c.reply()
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<x@sender.test>")
        assert c.cmd("RCPT TO:<bob@callout.test>").startswith("550 5.1.1")
        assert c.cmd("RCPT TO:<Alice@callout.test>").startswith("250 2.1.5")
        assert peer.handler.rcpts_asked == ["bob@callout.test", "alice@callout.test"]
        assert c.cmd("RCPT TO:<bob@callout.test>").startswith("550 5.1.1")
        assert len(peer.handler.rcpts_asked) == 2  # answered from the cache
        assert c.cmd("RSET").startswith("250")
        c.cmd("MAIL FROM:<x@sender.test>")
        assert c.cmd("RCPT TO:<bob@open.test>").startswith("250 2.1.5")
        assert len(peer.handler.rcpts_asked) == 2  # opted out: nobody is asked
        assert c.cmd("RSET").startswith("250")
        c.cmd("MAIL FROM:<x@sender.test>")
        assert c.cmd("RCPT TO:<bob@down.test>").startswith("451 4.4.1 ")
        assert c.cmd("QUIT").startswith("221")
        c.close()
        assert peer.messages == []  # a callout never sends a message
    finally:
        peer.stop()


def test_limits_answer_with_their_codes(receiver) -> None:
    r = receiver(max_recipients=2, max_message_size=2048, max_connections_per_ip=2)
    a, b = Client(r.port), Client(r.port)
    a.reply(), b.reply()
    third = Client(r.port)
    assert third.reply().startswith("421 4.7.0 Too many connections from 127.0.0.1")
    assert third.closed()
    a.cmd("EHLO client.test")
    assert a.cmd("MAIL FROM:<alice@sender.test> SIZE=4096").startswith("552 5.3.4")
    a.cmd("MAIL FROM:<alice@sender.test>")
    a.cmd("RCPT TO:<u1@example.test>")
    a.cmd("RCPT TO:<u2@example.test>")
    assert a.cmd("RCPT TO:<u3@example.test>").startswith("452 4.5.3")
    assert a.cmd("DATA").startswith("354")
    a.sock.sendall(b"Subject: big\r\n\r\n" + b"x" * 100 + b"\r\n" * 30)
    a.sock.sendall(b"y" * 80 + b"\r\n" + (b"z" * 70 + b"\r\n") * 40 + b".\r\n")
    assert a.reply().startswith("552 5.3.4")
    assert a.cmd("NOOP").startswith("250")
    for c in (a, b, third):
        c.close()
    assert r.events() == [] and r.objects() == []


def test_line_too_long_in_data(receiver) -> None:
    r = receiver(max_line_length=1000)
    c = Client(r.port)
    c.reply()
    transaction(c)
    c.sock.sendall(b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\nok\r\n.\r\n")
    assert c.reply().startswith("500 5.5.6")
    assert c.cmd("NOOP").startswith("250")
    c.close()
    assert r.events() == []


def test_command_timeout_answers_421(receiver) -> None:
    r = receiver(command_timeout=1)
    c = Client(r.port)
    c.reply()
    c.sock.settimeout(20)
    assert c.reply().startswith("421 4.4.2")
    assert c.closed()
    c.close()


def test_slow_data_is_cut_off(receiver) -> None:
    r = receiver(data_timeout=1)
    c = Client(r.port)
    c.reply()
    transaction(c)
    c.sock.sendall(b"Subject: slow\r\n")
    c.sock.settimeout(20)
    assert c.reply().startswith("421 4.4.2")
    assert c.closed()
    c.close()
    assert r.events() == [] and r.objects() == []


def test_client_vanishing_mid_data_leaves_nothing(receiver) -> None:
    r = receiver()
    for _ in range(3):
        c = Client(r.port)
        c.reply()
        transaction(c)
        c.sock.sendall(b"Subject: gone\r\n\r\n" + b"partial line\r\n" * 50)
        c.close()
    # The server is fine afterwards, and the only event is the completed message.
    c = Client(r.port)
    c.reply()
    transaction(c)
    assert c.cmd(b"Subject: done\r\n\r\nok\r\n.").startswith("250 2.0.0")
    c.close()
    assert len(r.events()) == 1 and len(r.objects()) == 1


def test_dnsbl_rejects_listed_and_never_blocks_on_dns_failure(receiver) -> None:
    with DnsServer({"1.0.0.127.bl.test": {"A": ["127.0.0.2"]}}, zones=["bl.test"]) as dns_server:
        r = receiver(dnsbl_zones=("bl.test",), dns_servers=(dns_server.address,), dnsbl_timeout=0.5)
        c = Client(r.port)
        assert c.reply().startswith("554 5.7.1 Service unavailable; client [127.0.0.1] blocked")
        assert c.closed()
        c.close()
        dns_server.fault = "drop"
        c = Client(r.port)
        assert c.reply().startswith("220")
        c.close()
        dns_server.fault = None
        del dns_server.records["1.0.0.127.bl.test."]
        c = Client(r.port)
        assert c.reply().startswith("220")
        c.close()


def test_metrics_are_served(receiver) -> None:
    port = free_port()
    r = receiver(metrics_port=port)
    c = Client(r.port)
    c.reply()
    transaction(c)
    assert c.cmd(b"Subject: m\r\n\r\nx\r\n.").startswith("250")
    c.cmd("XYZZY")
    c.close()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'mxgate_receiver_replies_total{code="250"}' in text
    assert 'mxgate_receiver_replies_total{code="502"} 1.0' in text
    assert "mxgate_receiver_sessions_total 1.0" in text
    assert "mxgate_receiver_accept_seconds_count 1.0" in text


# -- fuzzing ----------------------------------------------------------------------------------

_VERBS = ["HELO", "EHLO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "VRFY", "QUIT",
          "STARTTLS", "BDAT", "AUTH", "", "\x00", "MAIL", "RCPT"]  # fmt: skip


@pytest.fixture
def fuzz_receiver(receiver) -> Receiver:
    return receiver(max_bad_commands=1000, max_connections_per_ip=1000)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(_VERBS),
            st.binary(max_size=80) | st.text(max_size=60).map(lambda s: s.encode("utf-8")),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fuzzed_commands_get_well_formed_replies(fuzz_receiver: Receiver, lines) -> None:
    c = Client(fuzz_receiver.port)
    try:
        assert c.reply().startswith("220")
        c.cmd("EHLO fuzz.test")
        c.cmd("MAIL FROM:<a@sender.test>")
        for verb, arg in lines:
            raw = verb.encode() + (b" " if verb and not verb.endswith(":") else b"") + arg
            raw = raw.replace(b"\r", b"").replace(b"\n", b"")
            if raw.upper().startswith((b"DATA", b"STARTTLS", b"QUIT", b"BDAT")):
                continue  # mode switches; covered by their own tests
            reply = c.cmd(raw)
            assert reply, f"server closed on {raw!r}"
            last = reply.split("\r\n")[-1]
            assert re.match(r"^\d{3} ", last), last
            if not last.startswith("250 ") or not raw.upper().startswith((b"EHLO", b"HELO")):
                assert re.match(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} ", last), (raw, last)
        assert c.cmd("NOOP").startswith("250 2.0.0")
    finally:
        c.close()
