"""The aiosmtpd handler: who may send to whom, and the durable accept (rules 2 and 7).

250 is answered only after the body is durable in the object store *and* the MessageReceived
event is acknowledged by Kafka. Any failure before that answers 451 4.3.0 so the sender retries.

The body reaches the handler already streamed into a :class:`~mxgate.blobstore.BlobWriter`
(``GatewaySMTP`` writes each chunk as it arrives, see :meth:`ReceiverHandler.open_body`); the
DATA hook commits it (fsync + rename, or the S3 upload) and then produces the event. A plain
aiosmtpd ``SMTP`` that fills ``envelope.original_content`` still works through ``put``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, Protocol

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

import schemas
from mxgate import catalog
from mxgate.blobstore import BlobError, BlobRef, BlobStore, BlobWriter
from mxgate.ids import new_message_id
from mxgate.kafka import KafkaUnavailable
from mxgate.settings import ReceiverSettings
from mxgate.tenants import Tenant, Tenants
from mxgate.timeutil import utcnow
from receiver import replies
from receiver.addresses import address_problem
from receiver.checks import CheckResult, accept, record, refuse, reply_for
from receiver.decisions import DecisionWatcher
from receiver.greylist import Greylist
from receiver.limits import RateWindow
from receiver.metrics import ReceiverMetrics
from receiver.recipients import RecipientVerifier

log = structlog.get_logger("mxgate.receiver")


class Publisher(Protocol):
    """Anything that produces a record and returns once the broker acknowledged it."""

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        """Produce and wait for the broker's definite answer (ack or failure)."""
        ...


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID header of ``raw``, or None (headers only; never raises)."""
    try:
        head = raw.split(b"\r\n\r\n", 1)[0][:65536]
        value = BytesHeaderParser(policy=compat32).parsebytes(head).get("Message-ID")
    except Exception:
        return None
    return str(value).strip()[:998] if value else None


@dataclass
class ReceivedBody:
    """A body the session streamed into ``writer`` (not yet committed).

    ``head`` is its first bytes (up to ``HEAD_BYTES``), enough for the Message-ID header.
    """

    writer: BlobWriter
    head: bytes
    size: int


HEAD_BYTES = 65536
STORE_FAILED = "451 4.3.0 Temporary local problem (storage): please try again later"


class ReceiverHandler:
    """aiosmtpd hooks for an inbound MX."""

    def __init__(
        self,
        settings: ReceiverSettings,
        tenants: Tenants,
        store: BlobStore,
        publisher: Publisher,
        received_topic: str,
        metrics: ReceiverMetrics | None = None,
        verifier: RecipientVerifier | None = None,
        decisions: DecisionWatcher | None = None,
        rejected_topic: str = "",
        greylist: Greylist | None = None,
    ) -> None:
        self.settings = settings
        self.tenants = tenants
        self.store = store
        self.publisher = publisher
        self.topic = received_topic
        self.metrics = metrics or ReceiverMetrics()
        self.verifier = verifier
        self.decisions = decisions
        self.rejected_topic = rejected_topic
        self.greylist = greylist
        self.message_rate = RateWindow(settings.message_rate_per_ip)

    async def rcpt_checks(
        self, envelope: Envelope, address: str, ip: str = ""
    ) -> list[CheckResult]:
        """The RCPT checks in order, up to the first refusal: address, relay, recipients
        (count, one tenant per transaction), recipient verification, then greylisting of the
        tenants that ask for it (after verification: unknown users never fill its table)."""
        problem = address_problem(address, smtputf8=bool(envelope.smtp_utf8))
        if problem is not None:
            return [refuse("address", "bad_address", problem)]
        results = [accept("address")]
        tenant = self.tenants.for_address(address)
        if tenant is None:
            return [*results, refuse("relay", "relay", replies.RELAY_DENIED)]
        results.append(accept("relay"))
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return [*results, refuse("recipients", "too_many", replies.TOO_MANY_RECIPIENTS)]
        if envelope.rcpt_tos:
            first = self.tenants.for_address(envelope.rcpt_tos[0])
            if first is not None and first.name != tenant.name:
                return [*results, refuse("recipients", "other_tenant", replies.OTHER_TENANT)]
        results.append(accept("recipients"))
        if self.verifier is not None:
            results.append(await self.verifier.check(tenant, address))
            if not results[-1].accepted:
                return results
        if self.greylist is not None and tenant.greylisting.enabled:
            sender = envelope.mail_from or "<>"
            results.append(await self.greylist.check(tenant, ip, sender, address))
        return results

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept only existing recipients at a tenant's domain; one tenant per transaction."""
        results = await self.rcpt_checks(envelope, address, getattr(server, "client_ip", ""))
        for result in results:
            record(self.metrics, result)
        reply = reply_for(results, "250 2.1.5 Recipient ok")
        if results[-1].accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        elif results[-1].check != "recipients" or results[-1].reason != "other_tenant":
            # Refused for good in this transaction (another tenant's recipient is only
            # deferred to a transaction of its own): the log of the accept lists it.
            rejected = getattr(server, "rejected_rcpts", None)
            if rejected is not None:
                rejected.append(address)
        return reply

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Record the envelope sender ("<>" for the null sender), within the message rate."""
        results = self.mail_checks(envelope, address, getattr(server, "client_ip", ""))
        for result in results:
            record(self.metrics, result)
        if results[-1].accepted:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply_for(results, "250 2.1.0 Sender ok")

    def mail_checks(self, envelope: Envelope, address: str, ip: str) -> list[CheckResult]:
        """The MAIL checks in order, up to the first refusal: address, message rate."""
        problem = address_problem(address, smtputf8=bool(envelope.smtp_utf8), null_ok=True)
        if problem is not None:
            return [refuse("address", "bad_address", problem)]
        if not self.message_rate.hit(ip):
            return [
                accept("address"),
                refuse("rate", "message_rate", replies.message_rate_exceeded(ip)),
            ]
        return [accept("address"), accept("rate")]

    def open_body(self) -> BlobWriter:
        """A streaming put into this handler's store, for the session to fill as DATA arrives."""
        return self.store.writer()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the body, produce MessageReceived, and only then answer 250."""
        body: ReceivedBody | None = getattr(server, "received_body", None)
        if body is None:
            raw: bytes = envelope.original_content or b""
            head, size = raw[:HEAD_BYTES], len(raw)
        else:
            raw, head, size = b"", body.head, body.size
        try:
            return await self._handle_body(server, session, envelope, body, raw, head, size)
        finally:
            if body is not None:
                await body.writer.abort()  # no-op once committed

    async def _handle_body(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        body: ReceivedBody | None,
        raw: bytes,
        head: bytes,
        size: int,
    ) -> str:
        received_at = utcnow()
        t0 = time.perf_counter()
        tenant = self.tenants.for_address(envelope.rcpt_tos[0])
        mid = new_message_id()
        client_ip, client_port = _client(server, session)
        tls = _tls(session)
        hmid = header_message_id(head)  # parsed once: the log line and the event both carry it
        bound = log.bind(
            message_id=mid,
            client=client_ip,
            helo=session.host_name,
            tls=tls.version if tls else None,
            mail_from=envelope.mail_from,
            rcpt=list(envelope.rcpt_tos),
            rejected=list(getattr(server, "rejected_rcpts", [])),
            size=size,
            header_message_id=hmid,
        )
        result = await self._accept(
            bound, body, raw, mid, tenant, envelope, session, received_at, client_ip, client_port,
            tls, hmid,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
        ok = result.startswith("250")
        self.metrics.messages.labels("accepted" if ok else "deferred").inc()
        if ok:
            self.metrics.accept_latency.observe(elapsed)
        return result

    async def _accept(
        self,
        bound: Any,
        body: ReceivedBody | None,
        raw: bytes,
        mid: str,
        tenant: Any,
        envelope: Envelope,
        session: Session,
        received_at: Any,
        client_ip: str,
        client_port: int,
        tls: schemas.TlsInfo | None,
        hmid: str | None,
    ) -> str:
        """Store, produce, answer: the durable accept of one complete body."""
        t0 = time.perf_counter()
        if tenant is None:  # tenants reloaded between RCPT and DATA
            bound.warning("accept refused", reply="451", reason="tenant vanished")
            return "451 4.3.0 Temporary local problem: recipient domain no longer configured"
        try:
            async with asyncio.timeout(self.settings.accept_timeout):
                ref: BlobRef = await (body.writer.commit() if body else self.store.put(raw))
            # No asyncio timeout around the produce: librdkafka's message.timeout.ms (set from
            # accept_timeout) ends every produce with a definite report. Answering 451 while the
            # record might still land would let a later stage act on a message the sender
            # retries: a duplicate.
            accepted_at = utcnow()
            event = schemas.encode_event(
                schemas.MessageReceived(
                    message_id=mid,
                    tenant=tenant.name,
                    received_at=received_at,
                    accepted_at=accepted_at,
                    receiver=self.settings.hostname,
                    client_ip=client_ip,
                    client_port=client_port,
                    helo=session.host_name or "",
                    tls=tls,
                    mail_from=envelope.mail_from or "",
                    rcpt_to=tuple(envelope.rcpt_tos),
                    size=ref.size,
                    sha256=ref.sha256,
                    object_key=ref.key,
                    header_message_id=hmid,
                )
            )
            waiting = (
                self.decisions.expect(mid)
                if self.decisions is not None and tenant.session_reject is not None
                else None
            )
            try:
                await self.publisher.produce(self.topic, mid, event)
            except BaseException:
                if waiting is not None:
                    self.decisions.forget(mid)  # type: ignore[union-attr]
                raise
        except BlobError as e:
            bound.error("accept failed", reply="451", stage="store", error=str(e))
            return STORE_FAILED
        except KafkaUnavailable as e:
            bound.error("accept failed", reply="451", stage="kafka", error=str(e))
            return "451 4.3.0 Temporary local problem (queue): please try again later"
        except TimeoutError:
            bound.error("accept failed", reply="451", stage="timeout")
            return "451 4.3.0 Temporary local problem (timeout): please try again later"
        accept_ms = round((time.perf_counter() - t0) * 1000, 2)
        if waiting is not None:
            refusal = await self._decision_reply(bound, tenant, mid, waiting)
            if refusal is not None:
                return refusal
        bound.info("accepted", reply="250", tenant=tenant.name, sha256=ref.sha256,
                   accept_ms=accept_ms)  # fmt: skip
        return f"250 2.0.0 Ok: queued as {mid}"

    async def _decision_reply(
        self, bound: Any, tenant: Tenant, mid: str, waiting: asyncio.Future[schemas.MessageScanned]
    ) -> str | None:
        """Wait (bounded) for the decision; the 550 to give, or None to answer 250.

        The message is already durable and its event acknowledged, so whatever happens here the
        pipeline carries on: a 550 only tells the sender what the decision was, now.
        """
        assert tenant.session_reject is not None and self.decisions is not None
        t0 = time.perf_counter()
        try:
            decision = await asyncio.wait_for(waiting, tenant.session_reject.wait)
        except (TimeoutError, asyncio.CancelledError):
            self.decisions.forget(mid)
            bound.info("session decision wait expired", wait=tenant.session_reject.wait)
            return None
        waited = (time.perf_counter() - t0) * 1000
        action = decision.action
        if action not in tenant.session_reject.actions:
            bound.info("session decision allows", action=action, waited_ms=round(waited, 1))
            return None
        why = ", ".join(decision.reasons) or action
        reply = f"550 5.7.1 Message refused ({why}); id {mid}"
        try:
            await self.publisher.produce(
                self.rejected_topic,
                mid,
                schemas.encode_event(
                    schemas.MessageRejected(
                        message_id=mid,
                        tenant=tenant.name,
                        rejected_at=utcnow(),
                        action=action,
                        reasons=decision.reasons,
                        reply=reply,
                        waited_ms=waited,
                    )
                ),
            )
        except KafkaUnavailable as e:
            # The refusal stands (the decision is recorded on the scanned topic); only the
            # record of the 550 itself is missing, and the log line below keeps it.
            bound.error("rejection not recorded", error=str(e))
        bound.info("rejected in session", reply="550", action=action,
                   reasons=list(decision.reasons), waited_ms=round(waited, 1))  # fmt: skip
        self.metrics.rejections.labels("decision", "in-session").inc()
        return reply


def _client(server: SMTP, session: Session) -> tuple[str, int]:
    """The real client address: the gateway's (PROXY-aware) one, else the TCP peer."""
    ip = getattr(server, "client_ip", "")
    if ip:
        return ip, int(getattr(server, "client_port", 0))
    peer: Any = session.peer or ("", 0)
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)


def _tls(session: Session) -> schemas.TlsInfo | None:
    info = session.ssl
    if not info:
        return None
    cipher = info.get("cipher") or ("", "", 0)
    return schemas.TlsInfo(version=str(cipher[1] or ""), cipher=str(cipher[0] or ""))


def received_topic(prefix: str) -> str:
    """The received topic's full name for a deployment prefix."""
    return catalog.name(catalog.RECEIVED, prefix)
