"""A real receiver session on a loopback port, for tests that speak raw SMTP to it.

:func:`receiver` runs ``GatewaySMTP`` + ``ReceiverHandler`` (a real filesystem store, a
recording publisher in place of Kafka) on its own event-loop thread; :class:`Client` is a raw
client that sends exact bytes and reads whole replies. Shared by the session fuzz tests and
the slow-sender tests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemas
from mxgate.blobstore import FsBlobStore
from mxgate.settings import ReceiverSettings
from mxgate.tenants import Tenants
from receiver.handler import ReceiverHandler
from receiver.metrics import ReceiverMetrics
from receiver.smtp import Gateway, GatewaySMTP

__all__ = ["TENANTS", "Client", "LoopbackReceiver", "Publisher", "receiver", "wait_until"]

TENANTS = {"tenants": {"acme": {"domains": ["acme.test"], "route": {"host": "127.0.0.1"}}}}


class Publisher:
    """Records every produced event (the broker's ack is immediate); ``forbid`` makes a
    produce fail the test, for sessions that must never accept a message."""

    def __init__(self, forbid: bool = False) -> None:
        self.forbid = forbid
        self.events: list[Any] = []

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        if self.forbid:
            raise AssertionError("no message is accepted in these tests")
        self.events.append(schemas.decode_event(value))


@dataclass
class LoopbackReceiver:
    """A running receiver: its port, gateway, store directory and publisher."""

    port: int
    gateway: Gateway
    store: Path
    publisher: Publisher
    loop: asyncio.AbstractEventLoop
    clients: list[Client] = field(default_factory=list)

    def client(self, ip: str = "", *, greet: bool = True, timeout: float = 30) -> Client:
        """A new client session (closed when the receiver stops)."""
        c = Client(self.port, ip, greet=greet, timeout=timeout)
        self.clients.append(c)
        return c

    def rejections(self, check: str, reason: str) -> float:
        """The receiver's rejection counter for ``check``/``reason``."""
        value = self.gateway.metrics.registry.get_sample_value(
            "mxgate_receiver_rejections_total", {"check": check, "reason": reason}
        )
        return value or 0.0

    def temp_files(self) -> list[Path]:
        """Bodies being written (the store's incoming directory)."""
        incoming = self.store / ".incoming"
        return list(incoming.iterdir()) if incoming.exists() else []

    def stored(self, key: str) -> bytes:
        """The body stored under ``key`` (read and integrity-checked by the real store)."""
        return asyncio.run(FsBlobStore(self.store).get(key))


@contextmanager
def receiver(
    tmp_path: Path,
    store: Path | None = None,
    publisher: Publisher | None = None,
    **overrides: Any,
) -> Iterator[LoopbackReceiver]:
    """A receiver with settings ``overrides`` on its own event loop thread.

    Per-IP connection and rate limits are lifted (every client is 127.0.0.1) unless
    overridden. On exit every client is closed and every session waited for.
    """
    settings: dict[str, Any] = {
        "max_connections_per_ip": 1000,
        "connection_rate_per_ip": 100_000,
        "message_rate_per_ip": 100_000,
    }
    rs = ReceiverSettings(**(settings | overrides))
    metrics = ReceiverMetrics()
    publisher = publisher or Publisher()
    store = store or tmp_path / "store"
    handler = ReceiverHandler(
        rs, Tenants.from_mapping(TENANTS), FsBlobStore(store), publisher, "received",
        metrics=metrics,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    gateway = Gateway(rs, metrics)
    server = loop.run_until_complete(
        loop.create_server(lambda: GatewaySMTP(handler, gateway, loop), "127.0.0.1", 0)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    r = LoopbackReceiver(server.sockets[0].getsockname()[1], gateway, store, publisher, loop)
    try:
        yield r
    finally:
        for c in r.clients:
            c.close()
        wait_until(lambda: not gateway.sessions, "every session closed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state of the receiver (a liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.01)


class Client:
    """A raw SMTP client: exact bytes out, whole replies in.

    ``ip`` sends a PROXY v1 header first (the receiver takes the client IP from it);
    ``greet`` reads and checks the 220 banner; ``timeout`` bounds every socket read, so a
    session that stops answering fails the test instead of hanging it.
    """

    def __init__(self, port: int, ip: str = "", *, greet: bool = True, timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ip:
            self.sock.sendall(f"PROXY TCP4 {ip} 192.0.2.1 40000 25\r\n".encode())
        self.buf = b""
        if greet:
            assert self.reply().startswith("220 ")

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
        """Send ``line`` + CRLF and read its reply."""
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def envelope(self) -> None:
        """EHLO, MAIL and one RCPT that the receiver accepts."""
        assert self.cmd(b"EHLO client.test").startswith("250")
        assert self.cmd(b"MAIL FROM:<a@sender.test>").startswith("250 ")
        assert self.cmd(b"RCPT TO:<bob@acme.test>").startswith("250 ")

    def data(self) -> str:
        """The envelope, then DATA; its reply."""
        self.envelope()
        return self.cmd(b"DATA")

    def closed(self) -> bool:
        """True when the server closed the connection (after any reply already read)."""
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()
