"""The scanner service: MessageReceived in, exactly one MessageScanned out, in one transaction.

Each batch is read, scanned and decided, and the decisions are produced together with the
input offsets in one Kafka transaction. The body is fetched once and parsed once per message
(within the parse budget, :mod:`scanner.mime`); the parsed message goes to every enabled engine
concurrently. A parse that left content unscanned adds an ``unscannable`` verdict of the
``mime`` pseudo-engine, and every antivirus verdict that is missing (error, timeout, disabled,
circuit open, queue wait) is recorded too: the tenant's policy decides, failing closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Sequence

import structlog
from confluent_kafka import Producer

import schemas
from mxgate import catalog
from mxgate.blobstore import BlobCorrupt, BlobMissing, BlobStore, open_store
from mxgate.enginecontrol import ControlWatcher, publish_status
from mxgate.kafka import Incoming, Output, TransactionalLoop, producer_config
from mxgate.metrics import serve_metrics
from mxgate.process import run_until_signalled
from mxgate.settings import Settings
from mxgate.tenants import Policy, Tenants
from mxgate.timeutil import utcnow
from scanner import mime
from scanner.budget import DecodedBudget
from scanner.combiner import SpamModel
from scanner.engines.common import Engine, Finding, ParsedMessage
from scanner.engines.registry import build_engines
from scanner.policy import Decision, decide
from scanner.runner import Controls, EngineRunner, run_engines

log = structlog.get_logger("mxgate.scanner")


def verdict_record(f: Finding, shadow: bool = False) -> schemas.EngineVerdict:
    """A finding as an EngineVerdict (``shadow``: from a shadow engine), its structured
    ``detail`` included: what the deliverer builds Authentication-Results from."""
    return schemas.EngineVerdict(
        engine=f.engine,
        kind=f.kind,
        engine_version=f.engine_version,
        rules_version=f.rules_version,
        outcome=f.outcome,
        score=float(f.score),
        symbols=tuple(f.symbols),
        duration_ms=float(f.duration_ms),
        error=f.error,
        shadow=shadow,
        # An Avro map of strings: a stray non-string value must not fail the whole batch.
        detail={str(k): str(v) for k, v in f.detail.items()},
    )


class Scanner:
    """Decides messages: fetch, parse, run engines, apply the tenant's policy."""

    def __init__(
        self,
        settings: Settings,
        tenants: Tenants,
        store: BlobStore,
        engines: Sequence[Engine],
        name: str = "scanner",
        shadow: Sequence[Engine] = (),
        policy: Policy | None = None,
        controls: Controls | None = None,
        spam_model: SpamModel | None = None,
    ) -> None:
        self.settings = settings
        # The trained spam combiner (mxgate train writes it; restart the scanner to pick a new
        # one up), else the packaged default one (scanner/models/). A damaged model file fails
        # the start.
        self.spam_model = spam_model or SpamModel.load_or_default(settings.scanner.spam.model_path)
        self.tenants = tenants
        self.store = store
        self.engines = list(engines)
        self.name = name
        # Shadow engines run on every message; their verdicts are recorded, never decided on.
        self.shadow = list(shadow)
        # A fixed policy for every tenant instead of the tenant's own (replay --policy).
        self.policy = policy
        self.scanned_topic = catalog.name(catalog.SCANNED, settings.kafka.topic_prefix)
        sc = settings.scanner
        # Breakers, runtime switches (``controls``: the control topic's view) and the verdict
        # cache live in the runner, shared by every message this scanner decides.
        self.runner = EngineRunner(
            self.engines,
            timeout=sc.engine_timeout,
            timeouts=sc.engine_timeouts,
            breaker_failures=sc.breaker_failures,
            breaker_cooldown=sc.breaker_cooldown,
            cache_entries=sc.cache_entries,
            controls=controls,
        )
        # Bounds what parsing holds across the messages scanned at once (scanner.budget).
        self.decoded = DecodedBudget(sc.decoded_bytes)

    def weigh(self, i: Incoming) -> int:
        """Bytes a record's scan holds: the body of a MessageReceived (the batch budget)."""
        return i.event.size if isinstance(i.event, schemas.MessageReceived) else 0

    async def scan(
        self, received: schemas.MessageReceived, deadline: float | None = None
    ) -> schemas.MessageScanned:
        """Decide one received message; returns its MessageScanned. ``deadline`` (event loop
        time) is when hold rescans must have ended: by default ``hold_deadline`` from now."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.settings.scanner.hold_deadline
        mid = received.message_id
        tenant = self.tenants.by_name(received.tenant)
        policy = self.policy or (tenant.policy if tenant else Policy())
        findings: list[Finding] = []
        active: list[str] = []
        shadow_findings: list[Finding] = []
        defects: list[str] = []
        try:
            raw = await self.store.get(received.object_key)
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

            def parse() -> Awaitable[ParsedMessage]:
                return asyncio.to_thread(
                    mime.parse,
                    raw,
                    message_id=mid,
                    tenant=received.tenant,
                    mail_from=received.mail_from,
                    rcpt_to=received.rcpt_to,
                    client_ip=received.client_ip,
                    helo=received.helo,
                )

            # The decoded parts count against the scanner's decoded budget until the verdict.
            async with self.decoded.parsed(parse) as parsed:
                defects = list(parsed.defects)
                run, shadow_findings = await asyncio.gather(
                    self.runner.run(parsed),
                    run_engines(self.shadow, parsed, self.settings.scanner.engine_timeout),
                )
                findings, active = run.findings, run.active
                # A parse that failed, hit a limit or ran out of budget is a verdict of its own.
                unscannable = mime.scan_finding(parsed)
                if unscannable is not None:
                    findings = [unscannable, *findings]
                findings, decision = await self._hold(parsed, findings, policy, deadline)
                del parsed  # nothing keeps the parts once the budget lets the next parse in
        log.info(
            "decided",
            message_id=mid,
            tenant=received.tenant,
            action=decision.action,
            reasons=list(decision.reasons),
        )
        return schemas.MessageScanned(
            message_id=mid,
            tenant=received.tenant,
            scanned_at=utcnow(),
            scanner=self.name,
            action=decision.action,
            reasons=tuple(decision.reasons),
            spam_score=float(decision.spam_score),
            policy_version=decision.policy_version,
            verdicts=(
                *(verdict_record(f) for f in findings),
                *(verdict_record(f, shadow=True) for f in shadow_findings),
            ),
            active_engines=tuple(active),
            mail_from=received.mail_from,
            rcpt_to=received.rcpt_to,
            object_key=received.object_key,
            sha256=received.sha256,
            size=received.size,
            received_at=received.received_at,
            client_ip=received.client_ip,
            helo=received.helo,
            defects=tuple(defects),
        )

    async def _hold(
        self, parsed: ParsedMessage, findings: list[Finding], policy: Policy, deadline: float
    ) -> tuple[list[Finding], Decision]:
        """Apply a ``hold`` policy: rescan the failed antivirus engines a few times, then decide.

        The batch's Kafka transaction stays open meanwhile, so the hold is bounded twice: by the
        policy (``hold_rescans`` x ``hold_rescan_delay`` plus the scans) and by ``deadline``. A
        rescan that could end past the deadline (its delay plus the slowest engine's timeout) is
        not made: the decision is final then, with reason ``av-hold-deadline``.
        """
        loop = asyncio.get_running_loop()
        decision = self._decide(findings, policy, final=policy.hold_rescans == 0)
        for attempt in range(policy.hold_rescans):
            if not decision.rescan:
                break
            worst = max(self.runner.timeout_of(e) for e in decision.rescan)
            if loop.time() + policy.hold_rescan_delay + worst > deadline:
                final = self._decide(findings, policy, final=True)
                reasons = (*final.reasons, "av-hold-deadline")
                return self._recorded(findings, final), dataclasses.replace(final, reasons=reasons)
            await asyncio.sleep(policy.hold_rescan_delay)
            again = await self.runner.run(parsed, only=decision.rescan)
            fresh = {f.engine: f for f in again.findings}
            findings = [fresh.get(f.engine, f) for f in findings]
            decision = self._decide(findings, policy, final=attempt == policy.hold_rescans - 1)
        return self._recorded(findings, decision), decision

    def _decide(self, findings: list[Finding], policy: Policy, *, final: bool) -> Decision:
        return decide(findings, policy, final=final, spam_model=self.spam_model)

    def _recorded(self, findings: list[Finding], decision: Decision) -> list[Finding]:
        """The findings as recorded: the combiner's model version and probability go into the
        ``detail`` of each antispam verdict it read (``spam_model``, ``spam_probability``), so
        every decision names the model that judged it without a schema change."""
        if self.spam_model is None or decision.spam_probability is None:
            return findings
        known = set(self.spam_model.engines)
        extra = {
            "spam_model": decision.spam_model,
            "spam_probability": f"{decision.spam_probability:.6f}",
        }
        return [
            dataclasses.replace(f, detail={**f.detail, **extra})
            if f.kind == "antispam" and f.engine in known
            else f
            for f in findings
        ]

    async def handle(self, batch: Sequence[Incoming]) -> list[Output]:
        """Scan a batch's received messages concurrently (other events are not ours)."""
        items = [i.event for i in batch if isinstance(i.event, schemas.MessageReceived)]
        # One deadline for the whole batch: its messages share one open transaction.
        deadline = asyncio.get_running_loop().time() + self.settings.scanner.hold_deadline
        results = await asyncio.gather(*(self.scan(r, deadline) for r in items))
        return [Output(self.scanned_topic, r.message_id, r) for r in results]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the scanner group member until ``stop`` is set."""
    tenants = Tenants.load(settings.tenants_file)
    store = open_store(settings.store)
    engines = build_engines(settings.scanner)
    shadow = build_engines(
        settings.scanner.model_copy(update={"engines": settings.scanner.shadow_engines})
    )
    # Ops' runtime engine switches: followed from the control topic, applied per message.
    watcher = ControlWatcher(settings.kafka).start()
    scanner = Scanner(
        settings,
        tenants,
        store,
        engines,
        name=settings.kafka.instance_id,
        shadow=shadow,
        controls=watcher,
    )
    for e in engines:
        await e.start()  # isolated engines: spawn workers now, not on the first message
    reporter = asyncio.create_task(_report_status(settings, scanner, stop))
    loop = TransactionalLoop(
        settings.kafka,
        "scanner",
        [catalog.name(catalog.RECEIVED, settings.kafka.topic_prefix)],
        scanner.handle,
        batch_size=settings.scanner.batch_size,
        batch_bytes=settings.scanner.batch_bytes,
        weigh=scanner.weigh,
    )
    log.info("scanner started", engines=[e.name for e in engines])
    try:
        await loop.run(stop)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        watcher.stop()
        for e in [*engines, *shadow]:
            await e.aclose()
        await store.aclose()
        log.info("scanner stopped")


async def _report_status(settings: Settings, scanner: Scanner, stop: asyncio.Event) -> None:
    """Publish this scanner's engine status on the control topic every ``control_refresh``."""
    producer = Producer(producer_config(settings.kafka, message_timeout=15.0))
    try:
        while not stop.is_set():
            try:
                publish_status(producer, settings.kafka, scanner.name, scanner.runner.status())
            except Exception as e:  # status is advisory: never let it stop scanning
                log.warning("engine status not published", error=repr(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.scanner.control_refresh)
    finally:
        await asyncio.to_thread(producer.flush, 5.0)


def run(settings: Settings) -> None:
    """Blocking entry point for ``mxgate run scanner``: SIGTERM/SIGINT drain and exit.

    With ``scanner.metrics_port`` set, the process's metrics are served from before the first
    record until the drain ends; a port that cannot be bound stops the start (ConfigError).
    """
    ms = settings.scanner
    with serve_metrics(ms.metrics_host, ms.metrics_port, "MXGATE_SCANNER__METRICS_PORT"):
        run_until_signalled(lambda stop: serve(settings, stop))
