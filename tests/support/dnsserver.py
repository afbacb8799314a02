"""A tiny authoritative DNS server on loopback for tests, speaking real DNS (UDP and TCP).

Built on dnspython's wire format, so what the code under test talks to is a real server::

    with DnsServer({"2.0.0.127.bl.test": {"A": ["127.0.0.2"]},
                    "example.test": {"TXT": ['"v=spf1 -all"'], "MX": ["10 mx.example.test."]}},
                   zones=["bl.test", "example.test"]) as dns_server:
        resolver_address = f"127.0.0.1:{dns_server.port}"

Names are relative to the root (a trailing dot is optional). A name inside one of ``zones``
with no records is NXDOMAIN; a name with records but not of the asked type is NOERROR with
no answer; a name outside every zone is REFUSED. ``fault`` switches the whole server to
``"servfail"`` (answers SERVFAIL) or ``"drop"`` (never answers: a timeout) at run time.
``records`` may be changed while the server runs (``server.records[name] = {...}``).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsServer"]

Fault = Literal["servfail", "drop"] | None


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text if text.endswith(".") else text + ".")


class DnsServer:
    """Serves ``records`` (name -> {type -> [rdata text]}) authoritatively on 127.0.0.1."""

    def __init__(
        self,
        records: Mapping[str, Mapping[str, Sequence[str]]],
        zones: Iterable[str] | None = None,
        ttl: int = 60,
    ) -> None:
        self.records: dict[str, dict[str, list[str]]] = {
            _name(k).to_text(): {t.upper(): list(v) for t, v in rr.items()}
            for k, rr in records.items()
        }
        self.zones = [_name(z) for z in (zones or [])] or [dns.name.root]
        self.ttl = ttl
        self.fault: Fault = None
        self.queries: list[tuple[str, str]] = []  # (name, type) asked, in order
        self.port = 0
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- answering ------------------------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format (None: drop it)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None  # not DNS: a real server drops it too
        if self.fault == "drop":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.fault == "servfail" or not query.question:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        q = query.question[0]
        qname, qtype = q.name.to_text(), dns.rdatatype.to_text(q.rdtype)
        self.queries.append((qname.lower(), qtype))
        if not any(q.name.is_subdomain(z) for z in self.zones):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        node = self.records.get(qname.lower()) or self.records.get(qname)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        for rdtext in node.get(qtype, []):
            rd = dns.rdata.from_text(dns.rdataclass.IN, q.rdtype, rdtext)
            rrset = response.find_rrset(
                response.answer, q.name, dns.rdataclass.IN, q.rdtype, create=True
            )
            rrset.add(rd, self.ttl)
        return response.to_wire()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> DnsServer:
        """Listen on one free port, UDP and TCP, on 127.0.0.1."""
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                out = outer.answer(data)
                if out is None:
                    return
                if len(out) > 512:  # classic UDP limit: truncate, the client retries on TCP
                    msg = dns.message.from_wire(out)
                    msg.answer = []
                    msg.flags |= dns.flags.TC
                    out = msg.to_wire()
                sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                head = sock.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = sock.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = outer.answer(data)
                if out is not None:
                    sock.sendall(struct.pack("!H", len(out)) + out)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        # Find a port free for both protocols.
        for _ in range(20):
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = socketserver.ThreadingTCPServer(("127.0.0.1", port), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        udp.daemon_threads = tcp.daemon_threads = True
        self._udp, self._tcp, self.port = udp, tcp, port
        for srv in (udp, tcp):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1})
            t.daemon = True
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop both listeners and join their threads."""
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, the form mxgate's ``dns_servers`` settings take."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
