"""The SMTP protocol of the front door: an aiosmtpd ``SMTP`` subclass.

What it changes in aiosmtpd, and why (every aiosmtpd private member it needs is reached
through :mod:`receiver.aiosmtpd_compat`, where a unit test pins them):

* the session loop (``run_session``, aiosmtpd's ``_handle_client``): after the optional
  PROXY header and before the banner it admits the connection (connection limits, rates,
  DNSBL) for the *real* client IP; it counts errors and closes abusive sessions with 421;
  it refuses NUL bytes; it answers 421 on idle timeout and on shutdown instead of silently closing;
* every reply goes through ``replies.enhance`` (RFC 3463 codes);
* EHLO advertises PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, STARTTLS;
* DATA: only ``<CRLF>.<CRLF>`` ends a body (bare LF / bare CR forms of the dot stay body
  text: SMTP smuggling), a whole-body deadline, a minimum data rate, size and line-length
  limits, bodies in flight bounded by slots, slots per IP and a byte budget (a slot taken
  at the first body line, not at DATA), the body streamed to the store in chunks as it
  arrives (never held whole), and the accept shielded from a vanishing client so a drain
  can wait for it;
* STARTTLS: aiosmtpd already discards plaintext pipelined behind STARTTLS (the reader's
  buffer is cleared when the TLS transport comes up; CVE-2011-0411 class). We keep that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import TLSSetupException, syntax

from mxgate.blobstore import BlobError, BlobWriter
from mxgate.settings import ReceiverSettings
from receiver.addresses import helo_check
from receiver.aiosmtpd_compat import CompatSMTP
from receiver.checks import CheckResult, decide, record
from receiver.dnsbl import DnsblChecker
from receiver.handler import HEAD_BYTES, STORE_FAILED, ReceivedBody
from receiver.limits import BodySlot, ConnectionLimits, DataRate, InflightGate
from receiver.metrics import ReceiverMetrics
from receiver.proxy import TrustedProxies, client_address, peer_ip
from receiver.replies import enhance
from receiver.tls import TlsCertificate

__all__ = ["Gateway", "GatewaySMTP"]

log = structlog.get_logger("mxgate.receiver")

COMMAND_LIMIT = 512  # RFC 5321 4.5.3.1.4, CRLF included
# MAIL/RCPT grow with ESMTP parameters and UTF-8 addresses (RFC 1869 allows extensions).
ADDRESS_COMMAND_LIMIT = 2048
_CLOSED = ""  # _read_body: the session was already answered and closed


@dataclass
class Gateway:
    """What all sessions of one receiver process share: settings, limits, metrics, state."""

    settings: ReceiverSettings
    metrics: ReceiverMetrics
    dnsbl: DnsblChecker | None = None
    tls: TlsCertificate | None = None
    limits: ConnectionLimits = field(init=False)
    inflight: InflightGate = field(init=False)
    proxies: TrustedProxies = field(init=False)
    sessions: set[GatewaySMTP] = field(default_factory=set)
    accepting: set[asyncio.Task[Any]] = field(default_factory=set)
    draining: bool = False
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.limits = ConnectionLimits(
            s.max_connections, s.max_connections_per_ip, s.connection_rate_per_ip
        )
        self.inflight = InflightGate(s.max_inflight, s.max_inflight_per_ip, s.max_inflight_bytes)
        self.proxies = TrustedProxies(s.proxy_trusted if s.proxy_protocol else ())

    async def admit(self, ip: str) -> CheckResult | None:
        """None when ``ip`` may talk to us (its slot is then taken), else the refusing result.

        The connect-time checks in order: limits, then DNSBL (not asked for a client the
        limits already refuse).
        """
        results = [self.limits.open(ip)]
        if results[0].accepted and self.dnsbl is not None and self.dnsbl.zones:
            listing = await self.dnsbl.check(ip)
            if listing.failed:
                log.warning("dnsbl lookup failed", client=ip, zones=list(listing.failed))
            results.append(listing.outcome(ip, self.settings.dnsbl_threshold))
            if not results[-1].accepted:
                self.limits.close(ip)
        for result in results:
            record(self.metrics, result)
        return decide(results)

    def session_closed(self, session: GatewaySMTP) -> None:
        """Forget a session; wake a drain waiting for the last one."""
        self.sessions.discard(session)
        if self.draining and not self.sessions:
            self.all_closed.set()

    def drain(self) -> None:
        """Stop taking new commands: idle sessions get 421 now, busy ones after their turn."""
        self.draining = True
        for s in list(self.sessions):
            s.close_if_idle()
        if not self.sessions:
            self.all_closed.set()

    async def wait_drained(self, timeout: float) -> None:
        """Wait for the sessions to end (at most ``timeout``), then cut the rest with 421."""
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), timeout)
        for s in list(self.sessions):
            s.shutdown("421 4.3.2 Service shutting down, try again later")
        if self.accepting:
            await asyncio.wait(list(self.accepting), timeout=self.settings.accept_timeout + 5)


class GatewaySMTP(CompatSMTP):
    """One SMTP session of the front door."""

    def __init__(self, handler: Any, gateway: Gateway, loop: asyncio.AbstractEventLoop) -> None:
        s = gateway.settings
        super().__init__(
            handler,
            line_length_limit=s.max_line_length,
            data_size_limit=s.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=s.hostname,
            ident="ESMTP mxgate",
            tls_context=gateway.tls.context() if gateway.tls else None,
            timeout=s.command_timeout,
            proxy_protocol_timeout=s.proxy_timeout if s.proxy_protocol else None,
            loop=loop,
        )
        # An inbound MX offers no AUTH; aiosmtpd would otherwise answer it.
        self.drop_command("AUTH")
        self.gateway = gateway
        self.client_ip = ""
        self.client_port = 0
        self._admitted = False
        self._errors = 0
        self._busy = False  # a command is being handled
        self._rate_timer: asyncio.TimerHandle | None = None
        self.received_body: ReceivedBody | None = None  # read by the handler's DATA hook
        self.rejected_rcpts: list[str] = []
        self.tls_established = False

    # -- replies ------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Send one reply, with an enhanced status code, counting it."""
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        text = enhance(text)
        await self._push_raw(text)

    async def _push_raw(self, text: str) -> None:
        """Send a reply exactly as given (banner, EHLO lines)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.gateway.metrics.reply(text)
        if text[:1] == "5":
            self._errors += 1
        await super().push(text)

    def on_timeout(self) -> None:
        """Idle or slow client: say why with 421 (RFC 5321 4.5.3.2), then close."""
        log.info("session timeout", client=self.client_ip)
        self.shutdown(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    def shutdown(self, reply: str) -> None:
        """Write ``reply`` and close the connection (used from callbacks: no await)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.gateway.metrics.reply(reply)
        with contextlib.suppress(Exception):
            cast(asyncio.WriteTransport, transport).write(reply.encode() + b"\r\n")
        transport.close()

    def close_if_idle(self) -> None:
        """On drain: a session waiting for a command outside a transaction gets 421 now."""
        if not self._busy and (self.envelope is None or not self.envelope.mail_from):
            self.shutdown("421 4.3.2 Service shutting down, try again later")

    # -- connection -----------------------------------------------------------------------

    def connection_lost(self, error: Exception | None) -> None:
        """Release the connection's limit slots (once, even after STARTTLS)."""
        if self._admitted:
            self._admitted = False
            self.gateway.limits.close(self.client_ip)
            self.gateway.metrics.sessions_active.dec()
        self.gateway.session_closed(self)
        super().connection_lost(error)

    async def run_session(self) -> None:
        """The session: PROXY header, admission, banner, then the command loop."""
        assert self.session is not None and self.transport is not None
        if self.proxy_timeout is not None and self.gateway.proxies.trusts(peer_ip(self.session)):
            self.reset_timeout(self.proxy_timeout)
            proxy = await get_proxy(self.reader)
            self.session.proxy_data = proxy
            if not proxy:
                # The peer is a load balancer that broke the protocol: no SMTP reply.
                log.warning("invalid PROXY header", peer=self.session.peer, error=proxy.error)
                self.transport.close()
                return
        self.client_ip, self.client_port = client_address(self.session)
        if self.gateway.draining:
            self.shutdown("421 4.3.2 Service shutting down, try again later")
            return
        refusal = await self.gateway.admit(self.client_ip)
        if refusal is not None:
            log.info("connection refused", client=self.client_ip, check=refusal.check,
                     reason=refusal.reason, reply=refusal.reply)  # fmt: skip
            self.shutdown(refusal.reply)
            return
        self._admitted = True
        self.gateway.sessions.add(self)
        self.gateway.metrics.sessions.inc()
        self.gateway.metrics.sessions_active.inc()
        self.reset_timeout()
        await self._push_raw(f"220 {self.hostname} {self.ident}")
        try:
            await self._command_loop()
        except (asyncio.CancelledError, ConnectionError):
            # The client went away (or the session was shut down): nothing to answer.
            self.close_writer()
            raise

    async def _read_command(self) -> bytes | None:
        """One command line, or None after answering an over-long one."""
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            await self.reader.read(error.consumed)
            while True:
                try:
                    await self.reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as e:
                    await self.reader.read(e.consumed)
            await self.push("500 5.5.6 Command line too long")
            return None

    async def _command_loop(self) -> None:
        assert self.session is not None
        max_errors = self.gateway.settings.max_bad_commands
        while self.transport is not None and not self.transport.is_closing():
            if self._errors >= max_errors:
                self.gateway.metrics.rejections.labels("errors", "too_many_errors").inc()
                self.shutdown("421 4.7.0 Too many errors, closing connection")
                return
            if self.gateway.draining and (self.envelope is None or not self.envelope.mail_from):
                self.shutdown("421 4.3.2 Service shutting down, try again later")
                return
            raw = await self._read_command()
            if raw is None:
                continue
            self._busy = True
            try:
                await self._dispatch(raw)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception:
                log.exception("session error", client=self.client_ip)
                await self.push("451 4.3.0 Temporary local problem, please try again later")
            finally:
                self._busy = False

    async def _dispatch(self, raw: bytes) -> None:
        """Parse one command line and run its ``smtp_*`` method."""
        line = raw.rstrip(b"\r\n")
        if b"\x00" in line:
            await self.push("500 5.5.2 Error: NUL character in command")
            return
        if not line:
            await self.push("500 5.5.2 Error: bad syntax")
            return
        command_bytes, _, arg_bytes = line.partition(b" ")
        try:
            command = command_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            await self.push("500 5.5.2 Error: bad syntax")
            return
        if command == "PROXY":
            # A PROXY header from a peer that is no trusted proxy (or after the banner): a
            # client trying to choose its own address. Refused, on record, never believed.
            assert self.session is not None
            log.warning("PROXY header from an untrusted peer refused", peer=peer_ip(self.session))
            self.gateway.metrics.rejections.labels("proxy", "untrusted_proxy").inc()
            self.shutdown("554 5.7.0 PROXY header accepted only from trusted proxies")
            return
        limit = ADDRESS_COMMAND_LIMIT if command in ("MAIL", "RCPT") else COMMAND_LIMIT
        if len(raw) > limit:
            await self.push("500 5.5.6 Command line too long")
            return
        # UTF-8 kept losslessly (surrogateescape); addresses.address_problem refuses non-UTF-8.
        arg = arg_bytes.strip().decode("utf-8", "surrogateescape") or None
        method = self.command(command)
        if method is None:
            await self.push(f"502 5.5.2 Error: command {command[:20]!r} not recognized")
            return
        if not self.tls_handshake_okay and command != "QUIT":
            await self.push("554 5.7.0 Command refused due to lack of security")
            return
        self.reset_timeout()
        await method(arg)

    # -- commands -------------------------------------------------------------------------

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        """EHLO: the extensions of an inbound MX (RFC 2034, 2920, 1870, 6152, 6531, 3207)."""
        if not await self._helo_ok("EHLO", hostname):
            return
        assert self.session is not None and hostname is not None
        self.reset_transaction()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [self.hostname, "PIPELINING", f"SIZE {self.data_size_limit}", "8BITMIME"]
        lines += ["SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self.tls_context is not None and not self.tls_active:
            lines.append("STARTTLS")
        for i, ext in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            await self._push_raw(f"250{sep}{ext}")

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        """HELO: plain SMTP."""
        if not await self._helo_ok("HELO", hostname):
            return
        assert self.session is not None and hostname is not None
        self.reset_transaction()
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self._push_raw(f"250 {self.hostname}")

    async def _helo_ok(self, verb: str, hostname: str | None) -> bool:
        """Run the ``helo`` check; answer its refusal (the session keeps its last HELO)."""
        result = helo_check(verb, hostname)
        record(self.gateway.metrics, result)
        if not result.accepted:
            await self.push(result.reply)
        return result.accepted

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        """STARTTLS, refused when already in TLS; pipelined plaintext is discarded."""
        if self.tls_active:
            await self.push("503 5.5.1 Error: TLS already active")
            return
        # Commands pipelined behind STARTTLS arrived in plaintext: they must never be taken
        # as said inside TLS (CVE-2011-0411). aiosmtpd also clears the buffer once TLS is
        # up; dropping here makes the intent explicit and logs the attempt.
        if self.discard_buffered_input():
            log.warning("plaintext pipelined after STARTTLS discarded", client=self.client_ip)
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as e:
            # An old or broken client (TLS 1.0/1.1, no shared cipher) is not our error: it is
            # counted and the connection closed; it may retry without STARTTLS.
            self.gateway.metrics.rejections.labels("tls", "handshake_failed").inc()
            log.info("STARTTLS handshake failed", client=self.client_ip, reason=str(e.__cause__))
            if self.transport is not None:
                self.transport.close()
            return
        self.tls_established = True

    async def smtp_MAIL(self, arg: str | None) -> None:
        """MAIL: a new transaction forgets the last one's refused recipients."""
        self.rejected_rcpts = []
        await super().smtp_MAIL(arg)

    async def smtp_RSET(self, arg: str | None) -> None:
        """RSET."""
        self.rejected_rcpts = []
        await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str | None) -> None:
        """VRFY is not answered on an MX (it would be an address-harvesting oracle)."""
        await self.push("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        """DATA: read the body safely, then let the handler make it durable."""
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        if not self.envelope.rcpt_tos:
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        gw = self.gateway
        early = gw.inflight.check(self.client_ip)
        if not early.accepted:
            # Every slot (or this IP's share, or the byte budget) is taken: say so before
            # the client sends a body it would have to send again.
            record(gw.metrics, early)
            await self.push(early.reply)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.reset_timeout(gw.settings.data_timeout)
        self.received_body = None
        reading = _BodyRead(gw, self.event_handler.open_body())
        self._start_rate_watch(reading)
        accepting = False
        try:
            problem = await self._read_body(reading)
            self._stop_rate_watch()
            if problem == _CLOSED:
                return
            if problem is not None:
                self.end_transaction()
                await self.push(problem)
                return
            self.received_body = ReceivedBody(reading.writer, bytes(reading.head), reading.size)
            # The timer must not cut the session while the body is made durable.
            self.cancel_timeout()
            accepting = True
            status = await self._accept(reading)
            self.end_transaction()
            self.reset_timeout()
            await self.push(status)
        finally:
            # received_body stays set: the accept task may not have read it yet when a
            # vanishing client cancels this coroutine (the next DATA replaces it).
            self._stop_rate_watch()
            if not accepting:
                # Never handed to the handler (refused, vanished, cut for slowness): drop
                # the spooled bytes and give the slot back here.
                await reading.writer.abort()
                reading.release()

    def _start_rate_watch(self, reading: _BodyRead) -> None:
        """Check the minimum data rate once per window, from a timer (a client that sends
        nothing at all must be caught too)."""
        s = self.gateway.settings
        if not s.min_data_rate:
            return
        loop = asyncio.get_running_loop()

        def tick() -> None:
            result = reading.rate.check()
            if result.accepted:
                self._rate_timer = loop.call_later(s.min_data_rate_window, tick)
                return
            self._rate_timer = None
            record(self.gateway.metrics, result)
            log.info("data too slow", client=self.client_ip, check=result.check,
                     reason=result.reason, received=reading.size)  # fmt: skip
            self.shutdown(result.reply)

        self._rate_timer = loop.call_later(s.min_data_rate_window, tick)

    def _stop_rate_watch(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None

    async def _accept(self, reading: _BodyRead) -> str:
        """Run the handler's DATA hook in a task the client cannot cancel by vanishing.

        Once the last dot arrived the message is complete; finishing its accept (and so
        either writing both object and event or neither) is what SIGTERM drain waits for.
        The body's slot is held until that task ends, even if the session is gone.
        """
        task = asyncio.ensure_future(self.call_handler_hook("DATA"))
        self.gateway.accepting.add(task)
        task.add_done_callback(self.gateway.accepting.discard)
        task.add_done_callback(lambda _t: reading.release())
        return str(await asyncio.shield(task))

    async def _read_body(self, reading: _BodyRead) -> str | None:
        """Stream the dot-unstuffed body up to ``<CRLF>.<CRLF>`` into ``reading.writer``;
        None, or the reply refusing it.

        Lines are split on CRLF only, so ``<LF>.<LF>``, ``<LF>.<CR><LF>`` and ``<CR>.<CR>``
        are body text, never an end of data (SMTP smuggling). After a size or line-length
        violation the rest is read and dropped, then refused (RFC 5321 4.2.5). The body slot
        is taken when the first line arrives; a refusal of the slot (or of the byte budget)
        answers 451 and closes the session, since the client is mid-body.
        """
        try:
            return await self._read_lines(reading)
        finally:
            self.gateway.metrics.bytes.inc(reading.raw)

    async def _read_lines(self, reading: _BodyRead) -> str | None:
        limit = self.data_size_limit or 0
        max_line = self.gateway.settings.max_line_length
        problem: str | None = None
        in_long_line = False
        size = 0
        while True:
            try:
                line = await self.reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as e:
                # Drop the over-long line as it comes: memory stays bounded by the limit.
                chunk = await self.reader.read(e.consumed)
                size += len(chunk)
                reading.feed(len(chunk))
                in_long_line = True
                if problem is None:
                    problem = "500 5.5.6 Line too long (see RFC 5321 4.5.3.1.6)"
                    await reading.drop()
                continue
            size += len(line)
            reading.feed(len(line))
            if reading.slot is None:
                refusal = reading.enter(self.gateway, self.client_ip)
                if refusal is not None:
                    return self._refuse_mid_body(refusal)
            if in_long_line:  # the tail of an over-long line, never an end of data
                in_long_line = False
                continue
            if line == b".\r\n":
                break
            if problem is not None:
                continue
            if limit and size > limit:
                problem = "552 5.3.4 Message size exceeds fixed maximum message size"
                await reading.drop()
            elif len(line) > max_line:
                problem = "500 5.5.6 Line too long (see RFC 5321 4.5.3.1.6)"
                await reading.drop()
            else:
                refusal = await reading.add(line[1:] if line[:1] == b"." else line)
                if refusal is not None:
                    return self._refuse_mid_body(refusal)
                problem = reading.store_problem
        if problem is None:
            await reading.flush()
            problem = reading.store_problem
        return problem

    def _refuse_mid_body(self, result: CheckResult) -> str:
        """Answer a slot or budget refusal in the middle of a body, and close the session
        (reading the rest only to refuse it would keep the connection for nothing)."""
        record(self.gateway.metrics, result)
        log.info("body refused", client=self.client_ip, check=result.check,
                 reason=result.reason, reply=result.reply)  # fmt: skip
        self.shutdown(result.reply)
        return _CLOSED


class _BodyRead:
    """The state of one body being read: its slot, rate, writer, buffer and head."""

    CHUNK = 256 * 1024  # bytes gathered before one write to the store (one thread hop)

    def __init__(self, gateway: Gateway, writer: BlobWriter) -> None:
        s = gateway.settings
        self.writer = writer
        self._metrics = gateway.metrics
        self.rate = DataRate(s.min_data_rate, s.min_data_rate_window)
        self.raw = 0  # bytes read from the client, kept or not
        self.slot: BodySlot | None = None
        self.buf = bytearray()
        self.head = bytearray()
        self.size = 0  # unstuffed body bytes kept
        self.dropped = False
        self.store_problem: str | None = None  # the reply for a failed store write

    def enter(self, gateway: Gateway, ip: str) -> CheckResult | None:
        """Take the body slot (at the first line); the refusal, if any."""
        slot = gateway.inflight.enter(ip)
        if isinstance(slot, CheckResult):
            return slot
        self.slot = slot
        self._metrics.inflight.inc()
        return None

    def feed(self, n: int) -> None:
        """``n`` raw bytes arrived from the client."""
        self.raw += n
        self.rate.feed(n)

    def release(self) -> None:
        """Give the slot (and its bytes) back, once."""
        if self.slot is not None and not self.slot.released:
            self.slot.release()
            self._metrics.inflight.dec()

    async def add(self, data: bytes) -> CheckResult | None:
        """Keep ``data``; a full buffer goes to the store. The budget's refusal, if any."""
        assert self.slot is not None
        grown = self.slot.grow(len(data))
        if not grown.accepted:
            return grown
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.buf += data
        self.size += len(data)
        if len(self.buf) >= self.CHUNK:
            await self.flush()
        return None

    async def flush(self) -> None:
        """Write the buffer to the store (time spent there is not the client's).

        A store failure is not raised: the client is mid-body, so the rest is read and
        dropped and the failure answered after the final dot (``store_problem``).
        """
        if not self.buf or self.dropped:
            return
        chunk, self.buf = bytes(self.buf), bytearray()
        t0 = time.monotonic()
        try:
            await self.writer.write(chunk)
        except BlobError as e:
            log.error("accept failed", reply="451", stage="store", error=str(e))
            self.store_problem = STORE_FAILED
            self._metrics.messages.labels("deferred").inc()
            await self.drop()
        self.rate.stalled(time.monotonic() - t0)

    async def drop(self) -> None:
        """The body is refused: stop keeping it (the rest is read and discarded)."""
        self.dropped = True
        self.buf = bytearray()
        await self.writer.abort()
