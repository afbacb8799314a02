"""The deliverer service: carries out decisions and records every attempt (rules 1 and 6).

It consumes the scanned topic and the retry tiers. Deliver and tag decisions go to the tenant's
route with trace headers prepended; quarantine and discard decisions are recorded. Deferred
recipients move to the next retry tier in the same Kafka transaction that commits the input,
so retry state lives in Kafka, never only in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Message

import schemas
from deliverer import smtp
from deliverer.dedupe import DeliveredLog
from deliverer.headers import trace_headers
from mxgate import catalog
from mxgate.blobstore import BlobCorrupt, BlobMissing, BlobStore, open_store
from mxgate.kafka import Hold, Output, TransactionalLoop
from mxgate.process import run_until_signalled
from mxgate.settings import DelivererSettings, Settings
from mxgate.tenants import Tenants
from mxgate.timeutil import utcnow

log = structlog.get_logger("mxgate.deliverer")

DELIVERABLE = frozenset({"deliver", "tag"})


@dataclass(frozen=True, slots=True)
class Work:
    """Recipients of one message to attempt now."""

    message_id: str
    tenant: str
    action: str
    reasons: tuple[str, ...]
    spam_score: float
    mail_from: str
    rcpt_to: tuple[str, ...]
    object_key: str
    received_at: dt.datetime
    client_ip: str
    helo: str
    attempt: int
    first_attempt_at: dt.datetime

    @classmethod
    def from_scanned(cls, r: dict[str, Any], now: dt.datetime) -> Work:
        """First attempt for a MessageScanned record."""
        return cls(
            r["message_id"], r["tenant"], r["action"], tuple(r["reasons"]), r["spam_score"],
            r["mail_from"], tuple(r["rcpt_to"]), r["object_key"], r["received_at"],
            r["client_ip"], r["helo"], 1, now,
        )  # fmt: skip

    @classmethod
    def from_retry(cls, r: dict[str, Any]) -> Work:
        """A later attempt for a DeliveryRetry record."""
        return cls(
            r["message_id"], r["tenant"], r["action"], tuple(r["reasons"]), r["spam_score"],
            r["mail_from"], tuple(r["rcpt_to"]), r["object_key"], r["received_at"],
            r["client_ip"], r["helo"], r["attempt"], r["first_attempt_at"],
        )  # fmt: skip

    def retry_record(self, rcpts: Sequence[str], due_at: dt.datetime) -> dict[str, Any]:
        """The DeliveryRetry record for the next attempt of ``rcpts``."""
        return {
            "message_id": self.message_id,
            "tenant": self.tenant,
            "action": self.action,
            "reasons": list(self.reasons),
            "spam_score": self.spam_score,
            "mail_from": self.mail_from,
            "rcpt_to": list(rcpts),
            "object_key": self.object_key,
            "received_at": self.received_at,
            "client_ip": self.client_ip,
            "helo": self.helo,
            "attempt": self.attempt + 1,
            "due_at": due_at,
            "first_attempt_at": self.first_attempt_at,
        }


def retry_tier_for(attempt: int, schedule: Sequence[float]) -> int:
    """Tier index after failed attempt number ``attempt`` (1-based); the last tier repeats."""
    return min(attempt - 1, len(schedule) - 1)


class Deliverer:
    """Turns decisions and retry items into SMTP transactions and events."""

    def __init__(
        self,
        settings: DelivererSettings,
        tenants: Tenants,
        store: BlobStore,
        delivered: DeliveredLog,
        topic_prefix: str = "",
    ) -> None:
        self.settings = settings
        self.tenants = tenants
        self.store = store
        self.delivered = delivered
        self.prefix = topic_prefix
        self.delivery_topic = catalog.name(catalog.DELIVERY, topic_prefix)
        self.quarantine_topic = catalog.name(catalog.QUARANTINE, topic_prefix)
        self.tier_topics = [
            catalog.name(catalog.retry_tier(i), topic_prefix)
            for i in range(len(settings.retry_schedule))
        ]
        # One slow customer server must not take every connection (issue 5 refines this).
        self._limits: dict[str, asyncio.Semaphore] = {}

    def input_topics(self) -> list[str]:
        """The scanned topic and every retry tier."""
        return [catalog.name(catalog.SCANNED, self.prefix), *self.tier_topics]

    def hold(self, m: Message) -> Hold | None:
        """Retry items wait in their tier until due."""
        if m.topic() == catalog.name(catalog.SCANNED, self.prefix):
            return None
        try:
            _, rec = schemas.decode(m.value() or b"")
        except schemas.SchemaError:
            return None
        wait = (rec["due_at"] - utcnow()).total_seconds()
        return Hold(wait) if wait > 0 else None

    async def handle(self, batch: Sequence[Message]) -> list[Output]:
        """Carry out a batch concurrently; returns the events to commit with it."""
        now = utcnow()
        jobs = []
        outputs: list[Output] = []
        for m in batch:
            try:
                name, rec = schemas.decode(m.value() or b"")
            except schemas.SchemaError as e:
                log.error("undecodable input skipped", topic=m.topic(), error=str(e))
                continue
            if name == schemas.MESSAGE_SCANNED:
                if rec["action"] in DELIVERABLE:
                    jobs.append(self.attempt(Work.from_scanned(rec, now)))
                else:
                    outputs.append(self.quarantined(rec, now))
            elif name == schemas.DELIVERY_RETRY:
                jobs.append(self.attempt(Work.from_retry(rec)))
        for outs in await asyncio.gather(*jobs):
            outputs.extend(outs)
        return outputs

    def quarantined(self, r: dict[str, Any], now: dt.datetime) -> Output:
        """Record a held-back (or discarded) message; nothing is delivered."""
        log.info("quarantined", message_id=r["message_id"], action=r["action"])
        rec = {
            "message_id": r["message_id"],
            "tenant": r["tenant"],
            "quarantined_at": now,
            "action": r["action"],
            "reasons": r["reasons"],
            "mail_from": r["mail_from"],
            "rcpt_to": r["rcpt_to"],
            "object_key": r["object_key"],
            "size": r["size"],
        }
        return Output(
            self.quarantine_topic, r["message_id"], schemas.encode(schemas.MESSAGE_QUARANTINED, rec)
        )

    async def attempt(self, w: Work) -> list[Output]:
        """One attempt for the recipients in ``w``: SMTP, dedupe record, events, retries."""
        s = self.settings
        tenant = self.tenants.by_name(w.tenant)
        already = [r for r in w.rcpt_to if self.delivered.delivered(w.message_id, r)]
        todo = [r for r in w.rcpt_to if r not in already]
        results = [
            smtp.RecipientResult(r, "delivered", 250, "accepted before a restart (dedupe record)")
            for r in already
        ]
        remote = "-"
        if todo and tenant is None:
            results += [
                smtp.RecipientResult(r, "deferred", 0, "no route: tenant unknown") for r in todo
            ]
        elif todo:
            assert tenant is not None
            remote = f"{tenant.route.host}:{tenant.route.port}"
            try:
                raw = await self.store.get(w.object_key)
            except (BlobMissing, BlobCorrupt) as e:
                results += [
                    smtp.RecipientResult(r, "bounced", 0, f"body unreadable: {e}") for r in todo
                ]
            else:
                data = (
                    trace_headers(
                        message_id=w.message_id,
                        action=w.action,
                        reasons=w.reasons,
                        spam_score=w.spam_score,
                        helo=w.helo,
                        client_ip=w.client_ip,
                        hostname=s.hostname,
                        recipients=todo,
                        received_at=w.received_at,
                    )
                    + raw
                )
                sem = self._limits.setdefault(
                    remote, asyncio.Semaphore(s.max_connections_per_route)
                )
                async with sem:
                    sent = await smtp.send(
                        tenant.route.host,
                        tenant.route.port,
                        w.mail_from,
                        todo,
                        data,
                        helo=s.hostname,
                        connect_timeout=s.connect_timeout,
                        command_timeout=s.command_timeout,
                    )
                for r in sent:
                    if r.status == "delivered":
                        self.delivered.mark(w.message_id, r.recipient, f"{r.code} {r.reply}")
                results += sent
        return self._record(w, remote, results)

    def _record(self, w: Work, remote: str, results: list[smtp.RecipientResult]) -> list[Output]:
        s = self.settings
        now = utcnow()
        deferred = [r.recipient for r in results if r.status == "deferred"]
        outputs: list[Output] = []
        next_at: dt.datetime | None = None
        if deferred:
            tier = retry_tier_for(w.attempt, s.retry_schedule)
            due = now + dt.timedelta(seconds=s.retry_schedule[tier])
            if (due - w.first_attempt_at).total_seconds() > s.expire_after:
                results = [
                    smtp.RecipientResult(r.recipient, "expired", r.code, r.reply)
                    if r.status == "deferred"
                    else r
                    for r in results
                ]
            else:
                next_at = due
                outputs.append(
                    Output(
                        self.tier_topics[tier],
                        w.message_id,
                        schemas.encode(schemas.DELIVERY_RETRY, w.retry_record(deferred, due)),
                    )
                )
        event = {
            "message_id": w.message_id,
            "tenant": w.tenant,
            "attempted_at": now,
            "attempt": w.attempt,
            "remote_host": remote,
            "action": w.action,
            "recipients": [
                {
                    "recipient": r.recipient,
                    "status": r.status,
                    "reply_code": r.code,
                    "reply": r.reply,
                }
                for r in results
            ],
            "next_attempt_at": next_at,
        }
        log.info(
            "delivery attempted",
            message_id=w.message_id,
            attempt=w.attempt,
            remote=remote,
            outcomes={r.recipient: f"{r.status} {r.code}" for r in results},
        )
        outputs.insert(
            0,
            Output(
                self.delivery_topic, w.message_id, schemas.encode(schemas.DELIVERY_ATTEMPTED, event)
            ),
        )
        return outputs


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the deliverer group member until ``stop`` is set."""
    tenants = Tenants.load(settings.tenants_file)
    store = open_store(settings.store)
    ds = settings.deliverer
    delivered = DeliveredLog(ds.state_path / settings.kafka.instance_id / "delivered")
    d = Deliverer(ds, tenants, store, delivered, settings.kafka.topic_prefix)
    loop = TransactionalLoop(
        settings.kafka, "deliverer", d.input_topics(), d.handle, ds.batch_size, hold=d.hold
    )
    log.info("deliverer started", topics=d.input_topics())
    try:
        await loop.run(stop)
    finally:
        delivered.close()
        await store.aclose()
        log.info("deliverer stopped")


def run(settings: Settings) -> None:
    """Blocking entry point for ``mxgate run deliverer``: SIGTERM/SIGINT drain and exit."""
    run_until_signalled(lambda stop: serve(settings, stop))
