"""The scanner service: MessageReceived in, exactly one MessageScanned out (rule 4).

Each batch is read, scanned and decided, and the decisions are produced together with the
input offsets in one Kafka transaction. The body is fetched once and parsed once per message;
the parsed message goes to every enabled engine concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import Message

import schemas
from mxgate import catalog
from mxgate.blobstore import BlobCorrupt, BlobMissing, BlobStore, open_store
from mxgate.kafka import Output, TransactionalLoop
from mxgate.process import run_until_signalled
from mxgate.settings import Settings
from mxgate.tenants import Policy, Tenants
from mxgate.timeutil import utcnow
from scanner import mime
from scanner.engines.base import Engine, Finding
from scanner.engines.registry import build_engines
from scanner.policy import Decision, decide
from scanner.runner import run_engines

log = structlog.get_logger("mxgate.scanner")


def verdict_record(f: Finding) -> dict[str, Any]:
    """A finding as an EngineVerdict record."""
    return {
        "engine": f.engine,
        "kind": f.kind,
        "engine_version": f.engine_version,
        "rules_version": f.rules_version,
        "outcome": f.outcome,
        "score": float(f.score),
        "symbols": list(f.symbols),
        "duration_ms": float(f.duration_ms),
        "error": f.error,
    }


class Scanner:
    """Decides messages: fetch, parse, run engines, apply the tenant's policy."""

    def __init__(
        self,
        settings: Settings,
        tenants: Tenants,
        store: BlobStore,
        engines: Sequence[Engine],
        name: str = "scanner",
    ) -> None:
        self.settings = settings
        self.tenants = tenants
        self.store = store
        self.engines = list(engines)
        self.name = name
        self.scanned_topic = catalog.name(catalog.SCANNED, settings.kafka.topic_prefix)

    async def scan(self, received: dict[str, Any]) -> dict[str, Any]:
        """Decide one received message; returns the MessageScanned record."""
        mid = received["message_id"]
        tenant = self.tenants.by_name(received["tenant"])
        policy = tenant.policy if tenant else Policy()
        findings: list[Finding] = []
        defects: list[str] = []
        try:
            raw = await self.store.get(received["object_key"])
        except (BlobMissing, BlobCorrupt) as e:
            # Nothing safe can be delivered: hold it, with the reason on record.
            decision = Decision(
                action="quarantine",
                reasons=(f"store:{type(e).__name__}",),
                spam_score=0.0,
                policy_version=policy.version,
            )
            log.error("body unreadable", message_id=mid, error=str(e))
        else:
            parsed = await asyncio.to_thread(
                mime.parse,
                raw,
                message_id=mid,
                tenant=received["tenant"],
                mail_from=received["mail_from"],
                rcpt_to=tuple(received["rcpt_to"]),
                client_ip=received["client_ip"],
                helo=received["helo"],
            )
            defects = list(parsed.defects)
            findings = await run_engines(
                self.engines, parsed, self.settings.scanner.engine_timeout
            )
            decision = decide(findings, policy)
        log.info(
            "decided",
            message_id=mid,
            tenant=received["tenant"],
            action=decision.action,
            reasons=list(decision.reasons),
        )
        return {
            "message_id": mid,
            "tenant": received["tenant"],
            "scanned_at": utcnow(),
            "scanner": self.name,
            "action": decision.action,
            "reasons": list(decision.reasons),
            "spam_score": float(decision.spam_score),
            "policy_version": decision.policy_version,
            "verdicts": [verdict_record(f) for f in findings],
            "active_engines": [e.name for e in self.engines],
            "mail_from": received["mail_from"],
            "rcpt_to": list(received["rcpt_to"]),
            "object_key": received["object_key"],
            "sha256": received["sha256"],
            "size": received["size"],
            "received_at": received["received_at"],
            "client_ip": received["client_ip"],
            "helo": received["helo"],
            "defects": defects,
        }

    async def handle(self, batch: Sequence[Message]) -> list[Output]:
        """Scan a batch concurrently; undecodable input is logged and skipped, never fatal."""
        items: list[dict[str, Any]] = []
        for m in batch:
            try:
                name, rec = schemas.decode(m.value() or b"")
            except schemas.SchemaError as e:
                log.error("undecodable input skipped", offset=m.offset(), error=str(e))
                continue
            if name == schemas.MESSAGE_RECEIVED:
                items.append(rec)
        results = await asyncio.gather(*(self.scan(r) for r in items))
        return [
            Output(self.scanned_topic, r["message_id"], schemas.encode(schemas.MESSAGE_SCANNED, r))
            for r in results
        ]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the scanner group member until ``stop`` is set."""
    tenants = Tenants.load(settings.tenants_file)
    store = open_store(settings.store)
    engines = build_engines(settings.scanner)
    scanner = Scanner(settings, tenants, store, engines, name=settings.kafka.instance_id)
    loop = TransactionalLoop(
        settings.kafka,
        "scanner",
        [catalog.name(catalog.RECEIVED, settings.kafka.topic_prefix)],
        scanner.handle,
        batch_size=settings.scanner.batch_size,
    )
    log.info("scanner started", engines=[e.name for e in engines])
    try:
        await loop.run(stop)
    finally:
        for e in engines:
            await e.aclose()
        await store.aclose()
        log.info("scanner stopped")


def run(settings: Settings) -> None:
    """Blocking entry point for ``mxgate run scanner``: SIGTERM/SIGINT drain and exit."""
    run_until_signalled(lambda stop: serve(settings, stop))
