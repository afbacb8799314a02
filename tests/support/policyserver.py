"""A real HTTPS server on 127.0.0.1 that serves an MTA-STS policy, for tests.

It stands in for ``mta-sts.<domain>``: the test DNS server points that name at 127.0.0.1
and the client verifies the certificate the server presents (issued by a test CA)::

    with PolicyServer(ca.server_context("mta-sts.acme.test")) as web:
        web.policy = "version: STSv1\\nmode: enforce\\nmx: mx.acme.test\\nmax_age: 86400\\n"
        ... fetch https://mta-sts.acme.test:{web.port}/.well-known/mta-sts.txt ...

What a misbehaving policy host does is set per attribute: ``status``, ``content_type``,
``location`` (sent with a 3xx), ``policy`` (str or bytes). Every request is recorded in
``requests`` as (path, Host header, SNI name the client sent).
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading

__all__ = ["WELL_KNOWN", "PolicyServer"]

WELL_KNOWN = "/.well-known/mta-sts.txt"


class PolicyServer:
    """HTTPS on a free 127.0.0.1 port; one thread per connection, stopped by :meth:`stop`."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.policy: str | bytes = ""
        self.status = 200
        self.content_type = "text/plain"
        self.location = ""
        self.requests: list[tuple[str, str, str | None]] = []
        self.handshake_errors: list[str] = []
        self.port = 0
        self._sni = threading.local()
        self._context = context
        context.sni_callback = self._on_sni
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self._sni.name = name

    def start(self) -> PolicyServer:
        """Listen and serve in a background thread."""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a client that stalls cannot pin a server thread forever

            def do_GET(self) -> None:
                outer.requests.append(
                    (self.path, self.headers.get("Host", ""), getattr(outer._sni, "name", None))
                )
                body = outer.policy.encode() if isinstance(outer.policy, str) else outer.policy
                if self.path != WELL_KNOWN:
                    body = b"not found"
                    self.send_response(404)
                else:
                    self.send_response(outer.status)
                if outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean; requests are recorded above

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: socket.socket, client_address: tuple) -> None:  # type: ignore[override]
                # The handshake runs here, in the connection's thread, so a client that
                # refuses our certificate fails only its own connection.
                request.settimeout(10)
                try:
                    tls = outer._context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    outer.handshake_errors.append(str(e))
                    return
                try:
                    self.RequestHandlerClass(tls, client_address, self)
                finally:
                    tls.close()

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and join the server thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
